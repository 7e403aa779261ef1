"""Which Playground tasks are supported, and their Gymnasium registration."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = [
    "GYM_NAMESPACE",
    "STUDY_ENVS",
    "available_envs",
    "check_config_overrides",
    "check_env_name",
    "gym_id",
    "register_gymnasium_envs",
    "task_config",
]

GYM_NAMESPACE = "Playground"

#: The eight environments of the study (docs/method.md#the-state).
STUDY_ENVS: tuple[str, ...] = (
    "BallInCup",
    "CartpoleBalance",
    "CheetahRun",
    "ReacherHard",
    "FingerSpin",
    "FingerTurnEasy",
    "WalkerRun",
    "SwimmerSwimmer6",
)


def available_envs() -> tuple[str, ...]:
    """Names of every DeepMind Control Suite task in Playground's registry."""
    from mujoco_playground import dm_control_suite

    return tuple(dm_control_suite.ALL_ENVS)


def check_env_name(env_name: str) -> str:
    """Return ``env_name`` if Playground's DM Control Suite has it.

    Raises:
        ValueError: If it does not; the message lists the available names.
    """
    names = available_envs()
    if env_name not in names:
        raise ValueError(
            f"Unknown Playground env {env_name!r}. Available DM Control Suite envs: "
            f"{', '.join(names)}"
        )
    return env_name


def check_config_overrides(env_name: str, overrides: dict | None, config: Any = None) -> dict:
    """``overrides`` as a dict, each key checked against the task's default config.

    Playground applies overrides with ``update_from_flattened_dict``, so nested
    fields are written ``"a.b"``. Checking here fails fast (no simulator is
    built) and names the key, where Playground raises a bare ``KeyError``.

    Args:
        env_name: A task name (checked here unless ``config`` is given).
        overrides: The overrides, or ``None``.
        config: The task's default config when the caller has loaded it already
            (loading it costs milliseconds; checking once needs it once).

    Raises:
        TypeError: ``overrides`` is not a mapping.
        ValueError: A key the task's config does not have; lists the valid ones.
    """
    from mujoco_playground import registry

    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise TypeError(
            f"config_overrides must be a dict, got {overrides!r} ({type(overrides).__name__})"
        )
    if config is None:
        config = registry.get_default_config(check_env_name(env_name))
    valid = set(_flat_keys(config))
    unknown = sorted(str(k) for k in overrides if k not in valid)
    if unknown:
        raise ValueError(
            f"config_overrides has keys {unknown} that {env_name}'s config does not have; "
            f"valid keys: {sorted(valid)}"
        )
    return dict(overrides)


def task_config(env_name: str, overrides: dict | None = None) -> tuple[Any, dict]:
    """The task's Playground config with ``overrides`` applied, and the checked overrides.

    One load of the default config serves the check and the result, which
    ``registry.load(env_name, config=...)`` then takes as it is.

    Raises:
        TypeError, ValueError: As :func:`check_env_name` and :func:`check_config_overrides`.
    """
    from mujoco_playground import registry

    config = registry.get_default_config(check_env_name(env_name))
    overrides = check_config_overrides(env_name, overrides, config)
    config.update_from_flattened_dict(overrides)
    return config, overrides


def _flat_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        keys.append(prefix + key)
        if hasattr(value, "items"):
            keys += _flat_keys(value, f"{prefix}{key}.")
    return keys


def gym_id(env_name: str) -> str:
    """Gymnasium id of a task, e.g. ``"Playground/CheetahRun-v0"``."""
    return f"{GYM_NAMESPACE}/{env_name}-v0"


def register_gymnasium_envs() -> None:
    """Register ``Playground/<Task>-v0`` for every DM Control Suite task (idempotent)."""
    for name in available_envs():
        if gym_id(name) in gym.registry:
            continue
        # No TimeLimit wrapper: PlaygroundEnv truncates at its own episode_length.
        gym.register(
            id=gym_id(name),
            entry_point="jacobian_wrappers.playground_env:PlaygroundEnv",
            kwargs={"env_name": name},
        )
