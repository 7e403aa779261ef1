"""Expert agents shipped with the package: SB3 policies of the study's envs (PPO, SAC).

``load_expert("ReacherHard")`` returns the SB3 model trained by
``examples/train_expert.py`` and shipped in ``jacobian_wrappers/experts/``;
``collect(env, n, path, policy="expert:ReacherHard")`` drives a collection
with its stochastic policy, as the study collected its data.
``experts/returns.json`` records how each was trained and its mean evaluation
return (stochastic policy, 10 episodes) next to the study's Table A1.1
(docs/data.md#expert-agents); an agent below its target is shipped too,
marked so, as the checkpoint that further training resumes from. The study's
agents were PPO; where PPO cannot reach the study's return within a CPU's
session the agent is SAC, and its record says ``"algorithm": "SAC"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "EXPERT_DIR",
    "STUDY_RETURNS",
    "available_experts",
    "evaluate_expert",
    "expert_record",
    "load_expert",
]

#: Where the shipped agents and their ``returns.json`` are.
EXPERT_DIR = Path(__file__).resolve().parent / "experts"

#: The study's Table A1.1: mean evaluation return of its PPO experts (stochastic policy).
STUDY_RETURNS = {
    "CartpoleBalance": 999.88,
    "BallInCup": 960.00,
    "FingerSpin": 902.56,
    "ReacherHard": 709.20,
    "SwimmerSwimmer6": 650.36,
    "FingerTurnEasy": 515.66,
    "CheetahRun": 351.75,
    "WalkerRun": 327.80,
}


def available_experts() -> tuple[str, ...]:
    """Env names with a shipped agent, sorted."""
    return tuple(sorted(p.stem for p in EXPERT_DIR.glob("*.zip")))


def expert_record(name: str) -> dict[str, Any]:
    """What ``returns.json`` says of the agent of ``name`` (return, target, steps, command).

    Raises:
        ValueError: No agent of that name (the message lists the available ones).
    """
    _check_name(name)
    records = json.loads((EXPERT_DIR / "returns.json").read_text())
    return records[name]


def _check_name(name: str) -> Path:
    path = EXPERT_DIR / f"{name}.zip"
    if not isinstance(name, str) or not path.exists():
        raise ValueError(
            f"no expert agent {name!r}; available: {', '.join(available_experts())} "
            "(train one with examples/train_expert.py)"
        )
    return path


def load_expert(name: str, env: Any = None, device: str = "cpu") -> Any:
    """The shipped SB3 agent of env ``name``.

    Args:
        name: A Playground task name (:func:`available_experts`).
        env: The env (Gymnasium env or SB3 ``VecEnv``) it will act in; its
            observation and action spaces must have the agent's shapes.
        device: Torch device of the policy.

    Returns:
        The SB3 model (``PPO``, or ``SAC`` where its record says so); act
        with ``model.predict(obs, deterministic=False)``.

    Raises:
        ValueError: An unknown name (the available ones listed), or an env
            whose observation or action shape is not the agent's (both named),
            before any step.
    """
    import stable_baselines3

    path = _check_name(name)
    algorithm = getattr(stable_baselines3, expert_record(name).get("algorithm", "PPO"))
    model = algorithm.load(path, device=device)
    if env is not None:
        for what in ("observation", "action"):
            want = model.__dict__[f"{what}_space"].shape
            got = getattr(env, f"{what}_space").shape
            if tuple(want) != tuple(got):
                raise ValueError(
                    f"the {name} expert takes {what}s of shape {tuple(want)}, the env's "
                    f"{what} space has shape {tuple(got)}"
                )
    return model


def evaluate_expert(
    model: Any, env_name: str, episodes: int = 10, seed: int = 10_000, command: str = ""
) -> dict[str, Any]:
    """Evaluate ``model`` as the study did and record it in ``returns.json``.

    The stochastic policy, ``episodes`` full episodes in a ``PlaygroundVecEnv``
    of ``episodes`` envs (SB3's ``evaluate_policy``).

    Args:
        model: The SB3 agent (saved as ``experts/<env_name>.zip``).
        env_name: Its Playground task.
        episodes: Evaluation episodes (>= 10 as the study).
        seed: Seed of the evaluation envs.
        command: The command that trained it, for the record.

    Returns:
        The record written: mean and std of the return, episodes, timesteps,
        the study's return and whether it is met.
    """
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecMonitor

    from jacobian_wrappers.vec_env import PlaygroundVecEnv

    env = VecMonitor(PlaygroundVecEnv(env_name, episodes, seed=seed, jacobians=False))
    mean, std = evaluate_policy(model, env, episodes, deterministic=False)
    target = STUDY_RETURNS.get(env_name)
    record = {
        "mean_return": round(float(mean), 2),
        "std_return": round(float(std), 2),
        "episodes": int(episodes),
        "policy": "stochastic",
        "algorithm": type(model).__name__,
        "timesteps": int(model.num_timesteps),
        "study_return": target,
        "meets_study": bool(target is not None and float(mean) >= target),
        "command": command,
    }
    table = EXPERT_DIR / "returns.json"
    records = json.loads(table.read_text()) if table.exists() else {}
    records[env_name] = record
    table.write_text(json.dumps(dict(sorted(records.items())), indent=1) + "\n")
    return record
