"""Wall time of SB3 PPO with ``SparsityCallback`` against without it, same Jacobians.

Both variants train on the same ``PlaygroundVecEnv(jacobians=True)`` (so the
env computes the same Jacobians either way); only the callback differs. Runs
alternate (with, without, with, ...) after a warm-up run that compiles
everything, and the median of each is compared, so both see the same load.

    python benchmarks/callback_overhead.py [--envs CartpoleBalance CheetahRun]
        [--timesteps 16384] [--n-envs 8] [--rounds 3] [--log-freq 100] [--heatmap-freq 1000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from stable_baselines3 import PPO

import jacobian_wrappers as jw
from callbacks import SparsityCallback


def _train(env: jw.PlaygroundVecEnv, timesteps: int, callback, logdir: str | None) -> float:
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=256, seed=0, tensorboard_log=logdir)
    start = time.perf_counter()
    model.learn(timesteps, callback=callback)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--timesteps", type=int, default=16384)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="float64", choices=jw.PRECISIONS)
    parser.add_argument("--log-freq", type=int, default=100)
    parser.add_argument("--heatmap-freq", type=int, default=1000)
    args = parser.parse_args()

    print(
        f"PPO, {args.n_envs} envs, {args.timesteps} steps, {args.precision} Jacobians every "
        f"step, TensorBoard logging on; median of {args.rounds} alternating runs"
    )
    print(f"{'env':<16} {'without (s)':>12} {'with (s)':>10} {'extra':>8}")
    for name in args.envs:
        env = jw.PlaygroundVecEnv(name, args.n_envs, precision=args.precision)
        with tempfile.TemporaryDirectory() as logdir:

            def callback() -> SparsityCallback:
                return SparsityCallback(log_freq=args.log_freq, heatmap_freq=args.heatmap_freq)

            _train(env, 2 * args.n_envs * 256, callback(), logdir)  # warm-up: compile
            with_cb, without = [], []
            for _ in range(args.rounds):
                with_cb.append(_train(env, args.timesteps, callback(), logdir))
                without.append(_train(env, args.timesteps, None, logdir))
        w, wo = statistics.median(with_cb), statistics.median(without)
        print(f"{name:<16} {wo:>12.2f} {w:>10.2f} {100 * (w / wo - 1):>7.1f}%")


if __name__ == "__main__":
    main()
