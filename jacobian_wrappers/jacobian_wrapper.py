"""``JacobianWrapper``: the exact Jacobians of every step in ``info``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from jacobian_wrappers.playground_env import PlaygroundEnv

__all__ = ["DEFAULT_INFO_KEYS", "JacobianWrapper", "resolve_info_keys"]

#: Info keys written after each step, by field of ``StepJacobians``.
DEFAULT_INFO_KEYS: Mapping[str, str] = {
    "state": "state",
    "next_state": "next_state",
    "jacobian_state": "jacobian_state",
    "jacobian_action": "jacobian_action",
    "nonsmooth": "jacobian_nonsmooth",
}


def resolve_info_keys(info_keys: Mapping[str, str] | None) -> dict[str, str]:
    """:data:`DEFAULT_INFO_KEYS` with the renames of ``info_keys``.

    Raises:
        ValueError: A rename of a field that is not in :data:`DEFAULT_INFO_KEYS`.
    """
    unknown = set(info_keys or {}) - set(DEFAULT_INFO_KEYS)
    if unknown:
        raise ValueError(
            f"info_keys has unknown entries {sorted(unknown)}; "
            f"accepted: {sorted(DEFAULT_INFO_KEYS)}"
        )
    return {**DEFAULT_INFO_KEYS, **(info_keys or {})}


class JacobianWrapper(gym.Wrapper):
    """Adds ``s_t``, ``s_{t+1}``, ``d s'/d s`` and ``d s'/d a`` to every step's ``info``.

    The Jacobians are exact: ``jax.jacfwd`` through the whole control step of
    the underlying :class:`PlaygroundEnv`, compiled once and asked of it after
    every step (:meth:`PlaygroundEnv.last_step_jacobians`); the env itself is
    not changed. They are taken with respect to the action the Playground env
    receives (after any action wrapper between the two).

    ``info`` gets, as numpy arrays: ``"state"`` ``(d_s,)``, ``"next_state"``
    ``(d_s,)``, ``"jacobian_state"`` ``(d_t, d_t)``, ``"jacobian_action"``
    ``(d_t, d_a)`` (``d_t == d_s`` unless the model has free or ball joints),
    ``"jacobian_nonsmooth"`` ``(d_t + d_a,)`` bool (the columns of
    ``[J_s | J_a]`` taken where the step is not differentiable: an action
    exactly on its control bound), and ``"jacobian_nonfinite": True`` when a
    Jacobian holds NaN or inf. Keys already in ``info`` are never overwritten.

    Args:
        env: A :class:`PlaygroundEnv`, possibly wrapped (e.g. by ``gym.make``).
        info_keys: Renames of :data:`DEFAULT_INFO_KEYS` entries.

    Raises:
        TypeError: If ``env`` is not a Playground env.
    """

    def __init__(self, env: gym.Env, info_keys: Mapping[str, str] | None = None) -> None:
        if not isinstance(env.unwrapped, PlaygroundEnv):
            raise TypeError(
                "JacobianWrapper supports jacobian_wrappers.PlaygroundEnv (also through "
                "gym.make('Playground/<Task>-v0') and other wrappers), got "
                f"{type(env.unwrapped).__name__}. For many envs at once use "
                "jacobian_wrappers.PlaygroundVecEnv(jacobians=True)."
            )
        super().__init__(env)
        self.info_keys = resolve_info_keys(info_keys)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """Step the env and add the transition's Jacobians to ``info``."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        jac = self.env.unwrapped.last_step_jacobians()
        for field, key in self.info_keys.items():
            info.setdefault(key, np.asarray(getattr(jac, field)))
        if not jac.finite:
            info.setdefault("jacobian_nonfinite", True)
        return obs, reward, terminated, truncated, info
