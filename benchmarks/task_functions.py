"""How close the task's observation and reward at a state come to the real env's.

    python benchmarks/task_functions.py CartpoleBalance CheetahRun

For each env, ``--steps`` random-action steps of ``--n-envs`` envs; after
each, :class:`jacobian_wrappers.TaskFunctions` evaluates the observation
(``observe_after``) and reward of the step from its next state and action,
compared with what the env returned
(steps that ended an episode are left out: their observation is the reset's).
Prints the largest and median error of the observation and the mean and
largest error of the reward next to the reward's spread.
"""

from __future__ import annotations

import argparse

import numpy as np


def measure(env_name: str, n_envs: int, steps: int, precision: str) -> str:
    """One line of errors for ``env_name``."""
    import jacobian_wrappers as jw

    venv = jw.PlaygroundVecEnv(
        env_name, n_envs=n_envs, seed=0, jacobians=False, precision=precision
    )
    task = jw.TaskFunctions(env_name, precision)
    venv.reset()
    rng = np.random.default_rng(0)
    obs_err, rew_err, rewards = [], [], []
    for _ in range(steps):
        a = rng.uniform(-1, 1, (n_envs, venv.action_space.shape[0]))
        obs, r, done, _ = venv.step(a)
        t = venv.last_transition
        keep = ~done
        obs_err.append(np.abs(task.observe_after(t["next_state"], a) - obs)[keep].max(axis=1))
        rew_err.append(np.abs(task.reward(t["next_state"], a) - r)[keep])
        rewards.append(r[keep])
    o, e, r = (np.concatenate(x) for x in (obs_err, rew_err, rewards))
    return (
        f"| {env_name} | {len(o)} | {o.max():.3g} | {np.median(o):.3g} "
        f"| {e.mean():.3g} | {e.max():.3g} | {r.std():.3g} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("envs", nargs="*", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args()
    print("| env | steps | obs max error | obs median error | reward mean error "
          "| reward max error | reward std |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for env_name in args.envs:
        print(measure(env_name, args.n_envs, args.steps, args.precision), flush=True)


if __name__ == "__main__":
    main()
