"""A Gymnasium env around a MuJoCo Playground (MJX) DM Control Suite task."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import jax
import numpy as np

from jacobian_wrappers._validation import (
    check_array,
    check_backend,
    check_optional_int,
    resolve_jacobian_method,
)
from jacobian_wrappers.agreement import MISMATCH_TOLERANCE, mark_mismatch, next_state_error
from jacobian_wrappers.compilation_cache import compile_notice
from jacobian_wrappers.simulator import Simulator, TaskAttributes, get_simulator

__all__ = ["PlaygroundEnv", "StepJacobians"]


@dataclass(frozen=True)
class StepJacobians:
    """The transition just taken, with its exact Jacobians (numpy arrays).

    Attributes:
        state: ``s_t``, shape ``(d_s,)``.
        action: ``a_t`` as written to the controls (what ``jacobian_action``
            differentiates by), shape ``(d_a,)``.
        next_state: ``s_{t+1}``, shape ``(d_s,)``.
        jacobian_state: ``d s_{t+1} / d s_t``, shape ``(d_t, d_t)``.
        jacobian_action: ``d s_{t+1} / d a_t``, shape ``(d_t, d_a)``.
        nonsmooth: ``(d_t + d_a,)`` bool, columns of ``[J_s | J_a]`` taken at a
            non-differentiable point of the step (an action on its control
            bound); see ``Simulator.nonsmooth_columns``.
        finite: Whether both Jacobians are all finite.
        mismatch: Whether the backend that differentiated the step computed a
            next state other than the env's own
            (:mod:`jacobian_wrappers.agreement`): then the Jacobian is not the
            env's, and every column of ``nonsmooth`` is set.
    """

    state: np.ndarray
    action: np.ndarray
    next_state: np.ndarray
    jacobian_state: np.ndarray
    jacobian_action: np.ndarray
    nonsmooth: np.ndarray
    finite: bool
    mismatch: bool = False


class PlaygroundEnv(TaskAttributes, gym.Env):
    """A Playground DM Control Suite task as a ``gymnasium.Env``.

    The MJX implementation is forced to ``jax`` so the step can be
    differentiated; ``reset`` and ``step`` are jitted once per process and task.
    :meth:`last_step_jacobians` gives the exact Jacobians of the step just
    taken, computed on request; :class:`~jacobian_wrappers.JacobianWrapper`
    asks for them after every step and puts them in ``info``.

    Args:
        env_name: Task name, e.g. ``"CheetahRun"`` (see ``available_envs()``).
        seed: Seed of the first ``reset`` when ``reset`` is given none.
        precision: ``"float32"`` (default, for training) or ``"float64"`` (runs
            this env under JAX x64; use it for zero tests such as ``|J| < 1e-15``).
        episode_length: Steps until ``truncated``; Playground's configured
            default (1000) when ``None``.
        config_overrides: Playground config overrides (``impl`` must stay ``jax``).
        render_mode: ``None`` or ``"rgb_array"`` (needs OpenGL: EGL or OSMesa).
        compilation_cache: JAX persistent cache directory, ``None`` for the
            default, ``False`` for off (see ``enable_compilation_cache``).
        backend: Who computes :meth:`last_step_jacobians`: ``"mjx"`` (default,
            exact: ``jax.jacfwd`` through the MJX step) or ``"mujoco"`` (MuJoCo's
            C finite differences of the same step, threaded; not exact, see
            docs/env.md#backends). The env's own steps are MJX's either way.
        jacobian_method: How exact (``"mjx"``) Jacobians pass the constraint
            solver, ``"implicit"`` or ``"unrolled"``; the same Jacobians either
            way. ``None`` (default): ``"implicit"`` in float64, ``"unrolled"`` in
            float32 (see ``PlaygroundVecEnv``).

    Raises:
        TypeError: ``seed`` or ``episode_length`` not an int, ``config_overrides``
            not a dict.
        ValueError: Unknown ``env_name``, ``precision``, ``render_mode``,
            ``backend``, ``jacobian_method`` or config key, or
            ``episode_length < 1``. All checked before anything compiles.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        env_name: str,
        *,
        seed: int | None = None,
        precision: str = "float32",
        episode_length: int | None = None,
        config_overrides: dict[str, Any] | None = None,
        render_mode: str | None = None,
        compilation_cache: Any = None,
        backend: str = "mjx",
        jacobian_method: str | None = None,
    ) -> None:
        self.backend = check_backend(backend)
        self.jacobian_method = resolve_jacobian_method(jacobian_method, precision)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        seed = check_optional_int(seed, "seed")
        episode_length = check_optional_int(episode_length, "episode_length", minimum=1)
        self.sim: Simulator = get_simulator(
            env_name, precision, config_overrides, compilation_cache
        )
        self.env_name = env_name
        self.precision = precision
        self.episode_length = episode_length or self.sim.episode_length
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.sim.dt)}
        self.observation_space, self.action_space = self.sim.spaces()
        # (state before, action, s_next) of the last step, for last_step_jacobians
        self._last_step: tuple[Any, np.ndarray, np.ndarray] | None = None
        self._seed = seed
        self._key: jax.Array | None = None
        self._state: Any = None
        self._obs: np.ndarray | None = None
        self._elapsed = 0
        self._renderer = None
        if render_mode == "rgb_array":
            self._renderer = self._make_renderer()

    # ---------------------------------------------------------------- state
    @property
    def state(self) -> np.ndarray:
        """Ground-truth state ``s = concat(qpos, qvel, act)`` (docs/method.md#the-state)."""
        self._check_reset()
        return np.array(self.sim.space.get(self._state.data))

    def set_state(self, s: np.ndarray) -> np.ndarray:
        """Put the simulator at ground-truth state ``s``; returns the new observation.

        Derived quantities (body positions, contacts, sensors) and the
        observation are recomputed for ``s`` (MJX ``forward``); the episode's
        step count and task info (e.g. the target) stay.

        Raises:
            ValueError: If ``s`` has the wrong shape, is not finite, or gives a
                non-finite observation (the env then stays where it was).
        """
        self._check_reset()
        arr = check_array(s, (self.sim.space.dim,), self.sim.dtype, name="state")
        with self.sim.scope():
            data = self.sim.space.set(self._state.data, jax.numpy.asarray(arr))
        state = self.sim.refresh(self._state.replace(data=data))
        obs = np.asarray(state.obs)
        if not np.isfinite(obs).all():
            raise ValueError(
                f"state {arr.tolist()} gives a non-finite observation {obs.tolist()}; "
                "the env keeps its previous state"
            )
        self._state, self._obs = state, obs
        return obs.copy()

    def _check_reset(self) -> None:
        if self._state is None:
            raise gym.error.ResetNeeded("Call reset() before using the env's state.")

    # ------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``seed`` makes it reproducible (``PRNGKey(seed)``)."""
        super().reset(seed=seed)
        if seed is None and self._key is None:
            seed = self._seed
        if seed is None and self._key is None:
            seed = int(self.np_random.integers(2**31 - 1))
        with self.sim.scope():
            if seed is not None:
                key = jax.random.PRNGKey(seed)
            else:
                self._key, key = jax.random.split(self._key)
            if seed is not None:
                self._key = key
            self._state = self.sim.reset(key)
        self._elapsed = 0
        self._last_step = None
        self._obs = np.asarray(self._state.obs)
        return self._obs.copy(), {}

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Advance one control step.

        ``info["n_contacts"]`` is the number of active contacts (those in the
        constraint solver) of the step's last substep.

        A step whose state or observation turns non-finite is reported with
        ``info["nonfinite"] = True`` and ``truncated = True``; the observation
        returned is then the last finite one, never a NaN.

        Raises:
            ValueError: If ``action`` has the wrong shape or holds NaN/inf.
        """
        self._check_reset()
        action = check_array(action, self.action_space.shape, self.sim.dtype)
        with compile_notice(f"{self.env_name} {self.precision} step"):
            out = self.sim.step(self._state, action)
        obs, reward, done, finite, n_contacts, s_next = jax.device_get(
            (
                out.state.obs,
                out.state.reward,
                out.state.done,
                out.finite,
                out.n_contacts,
                out.s_next,
            )
        )
        self._last_step = (self._state, action, s_next)
        self._elapsed += 1
        info: dict[str, Any] = {"n_contacts": int(n_contacts)}
        terminated = bool(done) and bool(finite)
        truncated = self._elapsed >= self.episode_length
        if finite:
            self._state, self._obs = out.state, obs
        else:
            info["nonfinite"] = True
            truncated = True
        return self._obs.copy(), float(reward), terminated, truncated, info

    def last_step_jacobians(self) -> StepJacobians:
        """The Jacobians of the transition taken by the last :meth:`step`.

        Computed on request. With ``backend="mjx"``, exactly, by a compiled
        program that does only what the Jacobian needs (the step's own program
        does only the step): together they cost what one combined pass does.
        With ``backend="mujoco"``, by MuJoCo's C finite differences from the
        same state, action and solver warm start; ``next_state`` is the env's
        own (MJX) next state either way.

        Raises:
            gymnasium.error.ResetNeeded: No step since the last reset.
        """
        if self._last_step is None:
            raise gym.error.ResetNeeded(
                "No step taken since reset: no transition to differentiate."
            )
        state, action, s_next = self._last_step
        mismatch = False
        if self.backend == "mujoco":
            s, warm = jax.device_get((self.sim.space.get(state.data), state.data.qacc_warmstart))
            c_next, jac, nonsmooth = self.sim.fd_jacobian(s[None], action[None], warm[None])
            jac, nonsmooth = jac[0].astype(self.sim.dtype), nonsmooth[0]
            # The C step differentiated here is not the MJX step the env took.
            mismatch = bool(
                next_state_error(c_next[0], s_next) > MISMATCH_TOLERANCE[self.precision]
            )
            nonsmooth = mark_mismatch(nonsmooth, mismatch)
        else:
            with compile_notice(f"{self.env_name} {self.precision} Jacobian"):
                s, _, jac, nonsmooth = jax.device_get(
                    self.sim.jacobian(state, action, self.jacobian_method)
                )
        d_t = self.sim.space.tangent_dim
        return StepJacobians(
            state=s,
            action=action,
            next_state=s_next,
            jacobian_state=jac[:, :d_t],
            jacobian_action=jac[:, d_t:],
            nonsmooth=nonsmooth,
            finite=bool(np.isfinite(jac).all()),
            mismatch=mismatch,
        )

    # ------------------------------------------------------------ render
    def _make_renderer(self):
        import mujoco

        try:
            return mujoco.Renderer(self.sim.env.mj_model, height=240, width=320)
        except Exception as err:  # mujoco raises several types for a missing GL
            raise RuntimeError(
                "render_mode='rgb_array' needs an OpenGL context, and none could be "
                f"created with MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')!r} ({err}). "
                "On a headless machine set MUJOCO_GL=egl (or osmesa) before importing "
                "mujoco, or pass render_mode=None."
            ) from err

    def render(self) -> np.ndarray | None:
        """An RGB frame ``(240, 320, 3)`` of the current state, or ``None``."""
        if self._renderer is None:
            return None
        import mujoco
        from mujoco import mjx

        self._check_reset()
        model = self.sim.env.mj_model
        data = mjx.get_data(model, self._state.data)
        mujoco.mj_forward(model, data)
        self._renderer.update_scene(data, camera=0 if model.ncam > 0 else -1)
        return self._renderer.render()

    def close(self) -> None:
        """Free the renderer."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
