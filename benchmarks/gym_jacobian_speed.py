"""Steps/s of Gymnasium MuJoCo envs with Jacobians in ``info``, by backend, side by side.

For each env id: the plain env, ``JacobianWrapper(backend="mujoco")`` (C finite
differences, one thread) and ``JacobianWrapper(backend="mjx")`` (exact, jitted
MJX ``jacfwd``; the default implicit solver tangent, and ``"unrolled"``),
stepped with random actions in alternating rounds (median of 5) after warm-up
(MJX compiles on its first step). Also printed: the largest difference between
the MJX next state and the env's own C next state over the steps taken (same
state, controls and warm start).

    python benchmarks/gym_jacobian_speed.py [--envs HalfCheetah-v5 Hopper-v5 ...] [--seconds 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from jacobian_throughput import interleaved_rates

import jacobian_wrappers as jw


def stepper(env: gym.Env):
    env.reset(seed=0)
    env.action_space.seed(0)

    def step() -> None:
        if any(env.step(env.action_space.sample())[2:4]):
            env.reset()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--envs",
        nargs="+",
        default=[
            "InvertedPendulum-v5",
            "Reacher-v5",
            "Hopper-v5",
            "Walker2d-v5",
            "HalfCheetah-v5",
            "Ant-v5",
        ],
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(
        "| env | plain steps/s | mujoco (C FD) steps/s | mjx exact steps/s | mjx unrolled "
        "steps/s | C FD / plain | mjx / plain | mjx / unrolled | max abs diff s' (MJX vs C) |"
    )
    print("|---" * 9 + "|")
    for env_id in args.envs:
        mjx_env = jw.JacobianWrapper(gym.make(env_id), backend="mjx")
        diffs: list[float] = []
        step_mjx = stepper(mjx_env)

        def mjx_and_diff(step=step_mjx, env=mjx_env, diffs=diffs) -> None:
            step()
            own = env.unwrapped.data
            ref = env.gym_jacobians.backend_next_state
            if own.time > 0:  # not right after an auto-reset
                s = np.concatenate([own.qpos, own.qvel, own.act])
                diffs.append(float(np.abs(ref - s).max()))

        fns = {
            "plain": stepper(gym.make(env_id)),
            "mujoco": stepper(jw.JacobianWrapper(gym.make(env_id), backend="mujoco")),
            "mjx": mjx_and_diff,
            "unrolled": stepper(
                jw.JacobianWrapper(gym.make(env_id), backend="mjx", jacobian_method="unrolled")
            ),
        }
        r = interleaved_rates(fns, dict.fromkeys(fns, 1), len(fns) * args.seconds)
        print(
            f"| {env_id} | {r['plain']:,.0f} | {r['mujoco']:,.0f} | {r['mjx']:,.0f} "
            f"| {r['unrolled']:,.0f} | {r['mujoco'] / r['plain']:.3f} "
            f"| {r['mjx'] / r['plain']:.4f} | {r['mjx'] / r['unrolled']:.2f} "
            f"| {max(diffs):.2g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
