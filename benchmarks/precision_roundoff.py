"""How float32 round-off hides the exact zeros of the Jacobian (README's precision table).

Rolls out a random policy in float64, puts a float32 env at each visited state,
and compares the Jacobians of the same transitions.

    python benchmarks/precision_roundoff.py [--envs ReacherHard CartpoleBalance] [--steps 200]
"""

from __future__ import annotations

import argparse

import numpy as np

import jacobian_wrappers as jw
from dynamic_sparsity.analysis import DEFAULT_THRESHOLD


def compare(env_name: str, steps: int, threshold: float) -> dict:
    env64 = jw.JacobianWrapper(jw.PlaygroundEnv(env_name, precision="float64"))
    env32 = jw.JacobianWrapper(jw.PlaygroundEnv(env_name, precision="float32"))
    env64.reset(seed=0)
    env32.reset(seed=0)
    rng = np.random.default_rng(0)
    j64, j32 = [], []
    for _ in range(steps):
        action = rng.uniform(-1, 1, env64.action_space.shape)
        env32.unwrapped.set_state(env64.unwrapped.state.astype(np.float32))
        *_, i64 = env64.step(action)
        *_, i32 = env32.step(action.astype(np.float32))
        j64.append(np.concatenate([i64["jacobian_state"], i64["jacobian_action"]], axis=1))
        j32.append(np.concatenate([i32["jacobian_state"], i32["jacobian_action"]], axis=1))
    j64, j32 = np.abs(np.stack(j64)), np.abs(np.stack(j32)).astype(np.float64)
    exact = j64 < threshold  # zero in float64
    return {
        "zero64": float((j64 < threshold).mean()),
        "zero32": float((j32 < threshold).mean()),
        "median_noise": float(np.median(j32[exact])) if exact.any() else float("nan"),
        "max_noise": float(j32[exact].max()) if exact.any() else float("nan"),
        "zero32_1e-6": float((j32 < 1e-6).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["ReacherHard", "CartpoleBalance"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args()
    print(
        f"| env | sparsity float64 (<{args.threshold:g}) | sparsity float32 (<{args.threshold:g}) "
        "| float32 value of a float64 zero: median / max | sparsity float32 (<1e-6) |"
    )
    print("|---|---|---|---|---|")
    for name in args.envs:
        r = compare(name, args.steps, args.threshold)
        print(
            f"| {name} | {r['zero64']:.3f} | {r['zero32']:.3f} "
            f"| {r['median_noise']:.1e} / {r['max_noise']:.1e} | {r['zero32_1e-6']:.3f} |"
        )


if __name__ == "__main__":
    main()
