"""Wall time of SB3 PPO with ``SparsityCallback`` against without it, same Jacobians.

Both variants train on the same ``PlaygroundVecEnv(jacobians=True)`` (so the
env computes the same Jacobians either way); only the callback differs. Runs
alternate (with, without, with, ...) after a warm-up run that compiles
everything, and the median of each is compared, so both see the same load.

    python benchmarks/callback_overhead.py [--envs CartpoleBalance CheetahRun]
        [--timesteps 16384] [--n-envs 8] [--rounds 3] [--log-freq 100] [--heatmap-freq 1000]
        [--gym-envs HalfCheetah-v5] [--gym-backends mujoco mjx] [--gym-timesteps 4096]

With ``--gym-envs``, also what a user of Gymnasium's own MuJoCo envs feels: SB3
PPO on a ``DummyVecEnv`` of ``n_envs`` plain envs against the same PPO on
``JacobianWrapper`` envs (float64 Jacobians every step, by each backend) with
``SparsityCallback``, steps/s of each, alternating rounds, median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from stable_baselines3 import PPO

import jacobian_wrappers as jw
from callbacks import SparsityCallback


def _gym_rates(env_id: str, n_envs: int, backends: list[str], timesteps: int, rounds: int):
    """Steps/s of PPO on plain envs and on JacobianWrapper envs (+ SparsityCallback)."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    def venv(backend: str | None):
        def make():
            env = gym.make(env_id)
            return env if backend is None else jw.JacobianWrapper(env, backend=backend)

        return DummyVecEnv([make for _ in range(n_envs)])

    variants = {"plain": (venv(None), None)}
    for backend in backends:
        variants[backend] = (venv(backend), SparsityCallback)
    times: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as logdir:
        for rnd in range(rounds + 1):  # round 0 warms up (compiles)
            for name, (env, cb) in variants.items():
                steps = 2 * n_envs * 256 if rnd == 0 else timesteps
                took = _train(env, steps, cb() if cb else None, logdir)
                if rnd:
                    times[name].append(took)
    return {k: timesteps / statistics.median(v) for k, v in times.items()}


def _train(env, timesteps: int, callback, logdir: str | None) -> float:
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
    parser.add_argument("--gym-envs", nargs="*", default=[])
    parser.add_argument("--gym-backends", nargs="+", default=["mujoco", "mjx"])
    parser.add_argument("--gym-timesteps", type=int, default=4096)
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
    for env_id in args.gym_envs:
        rates = _gym_rates(env_id, args.n_envs, args.gym_backends, args.gym_timesteps, args.rounds)
        print(f"\nPPO on {args.n_envs} x {env_id}, steps/s (float64 Jacobians every step):")
        for name, rate in rates.items():
            label = "plain (no Jacobians)" if name == "plain" else f"JacobianWrapper {name}"
            print(f"  {label:<28} {rate:>8,.0f}  ({rate / rates['plain']:.1%} of plain)")


if __name__ == "__main__":
    main()
