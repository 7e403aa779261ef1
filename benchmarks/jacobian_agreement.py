"""Is every unflagged Jacobian the env's own? Each step against central differences.

For each Gymnasium MuJoCo env and backend: ``JacobianWrapper(gym.make(id),
backend=...)``, random actions within half the box (seeded), and at every step
the Jacobian in ``info`` against central differences of the env's own C step
(``agreement.env_step_central_difference``) at ``h = 1e-5`` and ``1e-6``. A
step is *wrong* when its Jacobian differs from the ``1e-6`` differences by more
than ten times the two differences' own disagreement (their error estimate)
plus ``1e-7`` of the largest element. Printed per env and backend: steps,
steps flagged ``jacobian_mismatch``, wrong steps flagged and unflagged (the
target: 0 unflagged), the largest relative error of an unflagged step and the
next-state errors on each side of the tolerance.

    python benchmarks/jacobian_agreement.py [--envs Ant-v5 ...] [--steps 30] [--backends mjx mujoco]
"""

from __future__ import annotations

import argparse
import time
import warnings

import gymnasium as gym
import numpy as np

import jacobian_wrappers as jw
from jacobian_wrappers.agreement import MISMATCH_TOLERANCE, error_against_central_differences
from jacobian_wrappers.gym_mujoco import GYM_V5_ENVS


def check_env(env_id: str, backend: str | None, steps: int, seed: int) -> dict:
    """Counts of flagged and wrong steps of ``steps`` random steps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        env = jw.JacobianWrapper(gym.make(env_id), backend=backend)
    inner = env.unwrapped
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    lo, hi = env.action_space.low, env.action_space.high
    out = {"steps": 0, "flagged": 0, "wrong_flagged": 0, "wrong_unflagged": 0}
    unflagged_err, err_in, err_out = [0.0], [0.0], [np.inf]
    for _ in range(steps):
        d = inner.data
        s, warm = np.concatenate([d.qpos, d.qvel, d.act]), d.qacc_warmstart.copy()
        action = (lo + hi) / 2 + (hi - lo) / 4 * rng.uniform(-1, 1, lo.shape)
        _, _, terminated, truncated, info = env.step(action)
        ctrl = inner.data.ctrl.copy()
        jac = np.concatenate([info["jacobian_state"], info["jacobian_action"]], axis=1)
        wrong, rel_err = error_against_central_differences(inner, s, warm, ctrl, jac)
        flagged = bool(info.get("jacobian_mismatch", False))
        state_err = env.gym_jacobians.next_state_error
        out["steps"] += 1
        out["flagged"] += flagged
        out["wrong_flagged"] += bool(wrong and flagged)
        out["wrong_unflagged"] += bool(wrong and not flagged)
        if flagged:
            err_out.append(state_err)
        else:
            unflagged_err.append(rel_err)
            err_in.append(state_err)
        if terminated or truncated:
            env.reset()
    out["backend"] = env.gym_jacobians.backend
    out["max_rel_err_unflagged"] = max(unflagged_err)
    out["max_state_err_unflagged"] = max(err_in)
    out["min_state_err_flagged"] = min(err_out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(GYM_V5_ENVS))
    parser.add_argument("--backends", nargs="+", default=["default", "mjx", "mujoco"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    print(f"mismatch tolerance (float64): {MISMATCH_TOLERANCE['float64']:.0e} relative")
    print(
        "| env | backend asked | used | steps | flagged | wrong, flagged | wrong, unflagged "
        "| max rel. error unflagged | max s' error unflagged | min s' error flagged |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for env_id in args.envs:
        for backend in args.backends:
            start = time.perf_counter()
            try:
                r = check_env(
                    env_id, None if backend == "default" else backend, args.steps, args.seed
                )
            except ValueError as err:
                print(f"| {env_id} | {backend} | refused: {str(err)[:80]} |", flush=True)
                continue
            print(
                f"| {env_id} | {backend} | {r['backend']} | {r['steps']} | {r['flagged']} "
                f"| {r['wrong_flagged']} | {r['wrong_unflagged']} "
                f"| {r['max_rel_err_unflagged']:.1e} | {r['max_state_err_unflagged']:.1e} "
                f"| {r['min_state_err_flagged']:.1e} |  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
