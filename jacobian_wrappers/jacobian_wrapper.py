"""``JacobianWrapper``: the exact Jacobians of every step in ``info``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from jacobian_wrappers.gym_mujoco import GymMujocoJacobians, is_gym_mujoco_env
from jacobian_wrappers.playground_env import PlaygroundEnv

__all__ = ["DEFAULT_INFO_KEYS", "JacobianWrapper", "resolve_info_keys"]

#: Info keys written after each step, by field of ``StepJacobians``.
DEFAULT_INFO_KEYS: Mapping[str, str] = {
    "state": "state",
    "action": "action",
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

    Wraps a :class:`PlaygroundEnv` (also through ``gym.make("Playground/<Task>-v0")``)
    or one of Gymnasium's own MuJoCo envs (``gym.make("HalfCheetah-v5")``,
    ``Hopper-v5``, ``Ant-v5``, ...). The Jacobians are those of the control
    step just taken (all substeps, the action written to the controls), in
    the tangent space of the model's state (docs/method.md):

    * Playground env: asked of the env after every step
      (:meth:`PlaygroundEnv.last_step_jacobians`, the env's own ``backend``);
    * Gymnasium MuJoCo env: the state and solver warm start are recorded before
      the step and the Jacobian of ``frame_skip`` physics steps from there is
      computed after it (:class:`~jacobian_wrappers.gym_mujoco.GymMujocoJacobians`):
      exactly through MJX of the env's own model (``backend="mjx"``, default)
      or by MuJoCo's C finite differences (``backend="mujoco"``).

    Either way they are taken with respect to the action the MuJoCo env
    receives (after any action wrapper between the two).

    ``info`` gets, as numpy arrays: ``"state"`` ``(d_s,)``, ``"action"``
    ``(d_a,)`` (as written to the controls: what ``"jacobian_action"``
    differentiates by), ``"next_state"`` ``(d_s,)``, ``"jacobian_state"``
    ``(d_t, d_t)``, ``"jacobian_action"`` ``(d_t, d_a)`` (``d_t == d_s`` unless
    the model has free or ball joints), ``"jacobian_nonsmooth"`` ``(d_t + d_a,)``
    bool (the columns of ``[J_s | J_a]`` taken where the step is not differentiable: an action
    exactly on its control bound), ``"n_contacts"`` (active contacts after the
    step), ``"jacobian_nonfinite": True`` when a Jacobian holds NaN or inf, and
    ``"jacobian_mismatch": True`` when the backend's next state leaves the
    env's own beyond round-off: the Jacobian is then of another system, and
    every column of ``"jacobian_nonsmooth"`` is set so that the statistics and
    losses leave the step out (:mod:`jacobian_wrappers.agreement`,
    docs/pitfalls.md#a-jacobian-of-another-system). Keys already in ``info``
    are never overwritten.

    Args:
        env: A Playground or Gymnasium MuJoCo env, possibly wrapped.
        info_keys: Renames of :data:`DEFAULT_INFO_KEYS` entries.
        backend: For Gymnasium MuJoCo envs: ``"mjx"`` (exact), ``"mujoco"`` (C
            finite differences) or ``None`` (default): ``"mjx"``, except for
            models MJX cannot simulate as the C step does (Ant-v5's pyramidal
            friction cone, Humanoid-v5's PGS solver), which get ``"mujoco"``
            with a warning (``gym_mujoco.default_backend``). Playground envs
            take it as ``PlaygroundEnv(backend=...)``; here it must then be ``None``.
        jacobian_method: For Gymnasium MuJoCo envs with ``"mjx"``: how the exact
            Jacobians pass the constraint solver, ``"implicit"`` (default) or
            ``"unrolled"`` (docs/env.md#exact-and-fast). Playground envs take it
            as ``PlaygroundEnv(jacobian_method=...)``; here it must then be ``None``.

    Raises:
        TypeError: If ``env`` is neither a Playground nor a Gymnasium MuJoCo env.
        ValueError: Unknown ``backend`` or ``jacobian_method``, either given for
            a Playground env, or a model MJX cannot simulate (use
            ``backend="mujoco"``).

    Example:
        >>> import gymnasium as gym
        >>> import jacobian_wrappers as jw
        >>> env = jw.JacobianWrapper(gym.make("InvertedPendulum-v5"))
        >>> env.get_wrapper_attr("gym_jacobians").backend  # MJX follows this model's C step
        'mjx'
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> info["jacobian_state"].shape, info["jacobian_action"].shape
        ((4, 4), (4, 1))
        >>> info.get("jacobian_mismatch", False)
        False
    """

    def __init__(
        self,
        env: gym.Env,
        info_keys: Mapping[str, str] | None = None,
        backend: str | None = None,
        jacobian_method: str | None = None,
    ) -> None:
        inner = env.unwrapped
        if isinstance(inner, PlaygroundEnv):
            for name, value in (("backend", backend), ("jacobian_method", jacobian_method)):
                if value is not None:
                    raise ValueError(
                        f"{name}={value!r}: a Playground env computes its own Jacobians; "
                        f"pass {name} to PlaygroundEnv(...) or gym.make(..., {name}=...)"
                    )
            #: The Jacobian source of a Gymnasium MuJoCo env, ``None`` for Playground.
            self.gym_jacobians: GymMujocoJacobians | None = None
        elif is_gym_mujoco_env(inner):
            self.gym_jacobians = GymMujocoJacobians(inner, backend, jacobian_method or "implicit")
        else:
            raise TypeError(
                "JacobianWrapper supports jacobian_wrappers.PlaygroundEnv (also through "
                "gym.make('Playground/<Task>-v0')) and Gymnasium's MuJoCo envs "
                "(gymnasium.envs.mujoco.MujocoEnv, e.g. gym.make('HalfCheetah-v5')), got "
                f"{type(inner).__name__}. For many Playground envs at once use "
                "jacobian_wrappers.PlaygroundVecEnv(jacobians=True)."
            )
        super().__init__(env)
        self.info_keys = resolve_info_keys(info_keys)

    @property
    def _labels(self) -> Any:
        return self.gym_jacobians if self.gym_jacobians is not None else self.env.unwrapped

    @property
    def jacobian_source(self) -> dict[str, Any]:
        """Env, precision, ``dt``, labels, backend, method (for ``dataset_meta``)."""
        return self._labels.jacobian_source

    @property
    def state_labels(self) -> tuple[str, ...]:
        """One label per element of ``s``."""
        return self._labels.state_labels

    @property
    def tangent_labels(self) -> tuple[str, ...]:
        """One label per row/column of ``J_s``."""
        return self._labels.tangent_labels

    @property
    def action_labels(self) -> tuple[str, ...]:
        """Actuator names, one per action element."""
        return self._labels.action_labels

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """Step the env and add the transition's Jacobians to ``info``."""
        if self.gym_jacobians is not None:
            self.gym_jacobians.capture()
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.gym_jacobians is not None:
            jac = self.gym_jacobians.jacobians()
            info.setdefault("n_contacts", self.gym_jacobians.active_contacts())
        else:
            jac = self.env.unwrapped.last_step_jacobians()
        for field, key in self.info_keys.items():
            info.setdefault(key, np.asarray(getattr(jac, field)))
        if not jac.finite:
            info.setdefault("jacobian_nonfinite", True)
        if jac.mismatch:
            info.setdefault("jacobian_mismatch", True)
        return obs, reward, terminated, truncated, info
