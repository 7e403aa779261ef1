"""Short SB3 PPO run on a PlaygroundVecEnv that prints the sparsity of the Jacobians it saw.

python examples/ppo_sparsity_demo.py --env CartpoleBalance --timesteps 2048 --n-envs 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecMonitor

import jacobian_wrappers as jw


class _SparsityTally(BaseCallback):
    """Counts zero elements of every Jacobian in ``infos``."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.samples = 0
        self.zero_state = 0.0
        self.zero_action = 0.0
        self.global_zero: np.ndarray | None = None

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "jacobian_state" not in info:
                continue
            zs = np.abs(info["jacobian_state"]) < self.threshold
            za = np.abs(info["jacobian_action"]) < self.threshold
            both = np.concatenate([zs, za], axis=1)
            self.global_zero = both if self.global_zero is None else self.global_zero & both
            self.zero_state += zs.mean()
            self.zero_action += za.mean()
            self.samples += 1
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartpoleBalance", choices=jw.available_envs())
    parser.add_argument("--timesteps", type=int, default=2048)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--precision", default="float64", choices=jw.PRECISIONS)
    parser.add_argument("--threshold", type=float, default=1e-15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    venv = jw.PlaygroundVecEnv(args.env, args.n_envs, seed=args.seed, precision=args.precision)
    env = VecMonitor(venv)
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=256, seed=args.seed, verbose=0)
    tally = _SparsityTally(args.threshold)
    model.learn(total_timesteps=args.timesteps, callback=tally)
    wall = time.perf_counter() - start

    labels = list(venv.tangent_labels) + list(venv.action_labels)
    d_s = len(venv.tangent_labels)
    print(f"{args.env}: PPO {model.num_timesteps} steps, {args.n_envs} envs, {wall:.1f} s")
    print(f"Jacobians seen: {tally.samples} ({args.precision}, zero when |J| < {args.threshold})")
    print(f"mean sparsity  J_s: {tally.zero_state / tally.samples:.3f}")
    print(f"mean sparsity  J_a: {tally.zero_action / tally.samples:.3f}")
    gz = tally.global_zero
    print(f"global zeros   J_s: {int(gz[:, :d_s].sum())} of {d_s * d_s}")
    print(f"global zeros   J_a: {int(gz[:, d_s:].sum())} of {gz[:, d_s:].size}")
    for i, j in zip(*np.nonzero(gz), strict=False):
        print(f"  d {venv.tangent_labels[i]} / d {labels[j]} == 0 at every step")


if __name__ == "__main__":
    main()
