"""Pure, compiled MJX dynamics of one Playground task, with exact step Jacobians.

A :class:`Simulator` is shared by every env of the same task, precision and
config in a process (:func:`get_simulator`), so each program compiles once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces

from jacobian_wrappers._exported import exported_or_jit
from jacobian_wrappers._precision import check_precision, numpy_dtype, precision_scope
from jacobian_wrappers._solver_tangent import (
    reset_unverified,
    solver_tangents,
    unverified_substeps,
)
from jacobian_wrappers._validation import resolve_jacobian_method
from jacobian_wrappers.compilation_cache import active_cache_dir, enable_compilation_cache
from jacobian_wrappers.registry import task_config
from jacobian_wrappers.state_space import StateSpace, actuator_labels, control_bound_columns

__all__ = ["Simulator", "TaskAttributes", "Transition", "active_contacts", "get_simulator"]


class Transition(NamedTuple):
    """One control step, as JAX arrays (batched along axis 0 under ``vmap``).

    Attributes:
        state: Playground ``State`` after the step (``obs``, ``reward``, ``done``).
        s: Ground-truth state before the step, ``(d_s,)``.
        s_next: Ground-truth state after the step, ``(d_s,)``.
        jacobian: ``[J_s | J_a]``, shape ``(d_t, d_t + d_a)`` with ``d_t`` the tangent
            dimension, or ``None`` when not computed.
        finite: Whether ``s_next`` and the observation are all finite.
        n_contacts: Active contacts (``dist < includemargin``, i.e. in the
            constraint solver) found by collision detection in the step's last
            substep.
        nonsmooth: ``(d_t + d_a,)`` bool, the columns of ``[J_s | J_a]`` taken at
            a point where the step is not differentiable (see
            :meth:`Simulator.nonsmooth_columns`), or ``None`` without Jacobian.
        verified: Whether ``jacobian`` is exact as computed: always with
            ``method="unrolled"``; with ``"implicit"``, where every substep's
            implicit solver tangent was verified (``_solver_tangent``). Where
            not, the caller recomputes the transition with ``"unrolled"``.
            ``None`` without Jacobian.
    """

    state: Any
    s: jax.Array
    s_next: jax.Array
    jacobian: jax.Array | None
    finite: jax.Array
    n_contacts: jax.Array
    nonsmooth: jax.Array | None = None
    verified: jax.Array | None = None


def active_contacts(data: Any) -> jax.Array:
    """Number of contacts of MJX ``data`` that enter the constraint solver."""
    impl = getattr(data, "_impl", None)
    contact = impl.contact if impl is not None and hasattr(impl, "contact") else data.contact
    if contact.dist.size == 0:
        return jnp.zeros((), dtype=jnp.int32)
    return jnp.sum(contact.dist - contact.includemargin < 0).astype(jnp.int32)


def _strong(tree: Any) -> Any:
    """Arrays of fixed (strong) types, so a state fed back into a jitted step never recompiles it.

    A reset may leave a Python number in its state (CheetahRun's sets
    ``data.time = 0.0``); out of ``jit`` it becomes a weakly typed array, while
    the step returns a strongly typed one, so the step's second call would
    compile it again (measured: 33-90 s more on the first use of CheetahRun).
    """

    def strong(x: Any) -> Any:
        if isinstance(x, (jax.Array, np.ndarray, float, int)):
            x = jnp.asarray(x)
            return jax.lax.convert_element_type(x, x.dtype)
        return x

    return jax.tree.map(strong, tree)


def _scoped(fn: Callable, precision: str) -> Callable:
    """``fn`` run inside the precision scope (tracing, compiling and executing)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with precision_scope(precision):
            return fn(*args, **kwargs)

    return wrapper


class Simulator:
    """Compiled ``reset``/``step`` of a Playground DM Control Suite task.

    Args:
        env_name: Task name in Playground's DM Control Suite registry.
        precision: ``"float32"`` or ``"float64"`` (runs under JAX x64).
        config_overrides: Playground config overrides; ``impl`` is forced to
            ``"jax"`` (``warp`` cannot be differentiated).
        compilation_cache: See :func:`enable_compilation_cache`.

    Attributes:
        env: The Playground ``MjxEnv``.
        space: Layout of the ground-truth state.
        reset: Jitted ``key -> State``.
        batch_reset: Jitted, vmapped ``reset``.
    """

    def __init__(
        self,
        env_name: str,
        precision: str = "float32",
        config_overrides: dict[str, Any] | None = None,
        compilation_cache: Any = None,
    ) -> None:
        from mujoco_playground import registry

        # Every argument is checked here, once, before anything compiles: the
        # envs, TaskFunctions and the RL loop take a Simulator (get_simulator).
        self.precision = check_precision(precision)
        config, overrides = task_config(env_name, _with_jax_impl(config_overrides))
        self.env_name = env_name
        self.config_overrides = overrides
        enable_compilation_cache(compilation_cache)
        with precision_scope(precision), _quiet_model_deprecations():
            self.env = registry.load(env_name, config=config)
        model = self.env.mj_model
        self.space = StateSpace.from_model(model)
        self.dtype = numpy_dtype(precision)
        self.action_size = int(self.env.action_size)
        # Compile reset ahead of time: one trace gives both the program and the
        # observation size (Playground's observation_size runs an un-jitted reset).
        with precision_scope(precision):
            traced = jax.jit(self.pure_reset).trace(jax.random.PRNGKey(0))
            compiled_reset = traced.lower().compile()
        self.observation_size = int(np.prod(traced.out_info.obs.shape))
        self.episode_length = int(config.episode_length)
        self.dt = float(self.env.dt)
        limited = model.actuator_ctrllimited.astype(bool)
        ranges = np.where(limited[:, None], model.actuator_ctrlrange, [-1.0, 1.0])
        self.action_low = ranges[:, 0].astype(self.dtype)
        self.action_high = ranges[:, 1].astype(self.dtype)
        self._fd: Any = None  # the C backend, built on first use

        self.reset = _scoped(compiled_reset, precision)
        self._single_steps: dict[tuple[str, str, Any], Callable] = {}
        self.batch_reset = _scoped(jax.jit(jax.vmap(self.pure_reset)), precision)
        self.refresh = _scoped(jax.jit(self._refresh), precision)
        self.batch_refresh = _scoped(jax.jit(jax.vmap(self._refresh)), precision)

    @property
    def action_labels(self) -> tuple[str, ...]:
        """Actuator names, one per action element."""
        return actuator_labels(self.env.mj_model)

    def scope(self):
        """Context manager that runs JAX code at this simulator's precision."""
        return precision_scope(self.precision)

    def scoped(self, fn: Callable) -> Callable:
        """``fn`` wrapped to run (trace, compile, execute) at this precision."""
        return _scoped(fn, self.precision)

    def step(self, state: Any, action: Any) -> Transition:
        """Compiled :meth:`transition` without Jacobian."""
        return self._single_step("step", "unrolled", state, action)

    def step_jacobian(self, state: Any, action: Any, method: str | None = None) -> Transition:
        """Compiled :meth:`transition` with its exact Jacobian.

        With ``method="implicit"`` a transition whose implicit solver tangent is
        not verified exact is recomputed with ``"unrolled"`` (a second program,
        compiled when first needed), so the Jacobian is the same either way;
        ``verified`` stays the implicit pass's (``False``: recomputed). ``None``:
        ``"implicit"`` in float64, ``"unrolled"`` in float32 (the faster there).
        """
        method = resolve_jacobian_method(method, self.precision)
        out = self._single_step("step+jacobian", method, state, action)
        if bool(out.verified):
            return out
        _, _, jac, nonsmooth = self.jacobian(state, action, "unrolled")
        return out._replace(jacobian=jac, nonsmooth=nonsmooth)

    def jacobian(self, state: Any, action: Any, method: str | None = None) -> tuple[jax.Array, ...]:
        """``(s, s_next, [J_s | J_a], nonsmooth)`` of the step from ``state``, compiled alone.

        The program computes nothing the Jacobian does not need (no reward, no
        observation, no new ``State``): asking for it after a :meth:`step` of the
        same transition costs about what one combined pass would. ``method`` as
        in :meth:`step_jacobian`.
        """
        method = resolve_jacobian_method(method, self.precision)
        out = self._single_step("jacobian", method, state, action)
        if not bool(out[-1]):
            out = self._single_step("jacobian", "unrolled", state, action)
        return tuple(out[:-1])

    def _single_step(self, mode: str, method: str, state: Any, action: Any) -> Any:
        with precision_scope(self.precision):
            action = jnp.asarray(action, dtype=self.dtype)
            leaves, treedef = jax.tree.flatten(state)
            fn = self._single_steps.get((mode, method, treedef))
            if fn is None:

                def flat(leaves: list, action: jax.Array) -> list:
                    state = jax.tree.unflatten(treedef, leaves)
                    out = self.transition(state, action, mode != "step", method)
                    if mode == "jacobian":
                        return [out.s, out.s_next, out.jacobian, out.nonsmooth, out.verified]
                    jac = [out.jacobian, out.nonsmooth, out.verified] if mode != "step" else []
                    new = jax.tree.leaves(out.state)
                    return [*new, out.s, out.s_next, *jac, out.finite, out.n_contacts]

                overrides = sorted(self.config_overrides.items())
                key = f"{self.env_name}|{overrides}|{mode}|{method}"
                fn = exported_or_jit(flat, (leaves, action), key, active_cache_dir())
                self._single_steps[(mode, method, treedef)] = fn
            out = fn(leaves, action)
            if mode == "jacobian":
                return tuple(out)
            n = len(leaves)
            jac = (None, None, None) if mode == "step" else tuple(out[n + 2 : n + 5])
            new_state = jax.tree.unflatten(treedef, out[:n])
            return Transition(new_state, out[n], out[n + 1], jac[0], out[-2], out[-1], *jac[1:])

    def spaces(self) -> tuple[spaces.Box, spaces.Box]:
        """Observation and action spaces (Gymnasium ``Box``) at this precision.

        The one builder of both, for :class:`~jacobian_wrappers.PlaygroundEnv`
        and :class:`~jacobian_wrappers.PlaygroundVecEnv`.
        """
        obs = spaces.Box(-np.inf, np.inf, shape=(self.observation_size,), dtype=self.dtype)
        return obs, spaces.Box(self.action_low, self.action_high, dtype=self.dtype)

    def pure_reset(self, key: jax.Array) -> Any:
        """The first ``State`` of an episode (pure, un-jitted: for use inside ``jit``/``vmap``)."""
        return _strong(self.env.reset(key))

    def _refresh(self, state: Any) -> Any:
        """``state`` with derived quantities and observation recomputed from its ``s``.

        Runs MJX's ``forward`` (positions, contacts, sensors of the new state)
        and the task's own observation function. Playground has no public API
        for the latter; every DM Control Suite task implements it as
        ``_get_obs(data, info)``. The next step is unchanged by this: it
        recomputes all derived quantities itself.
        """
        from mujoco import mjx

        data = mjx.forward(self.env.mjx_model, state.data)
        return _strong(state.replace(data=data, obs=self.env._get_obs(data, state.info)))

    def nonsmooth_columns(self, ctrl: jax.Array) -> jax.Array:
        """Columns of ``[J_s | J_a]`` at a point where the step is not differentiable.

        The step clamps each control to its ``ctrlrange``. Exactly on a bound
        (as SB3 writes every saturated action: it clips actions to the action
        space) the one-sided derivatives differ, 0 outside and the full slope
        inside; autodiff (and a central difference) report half the slope. The
        column of such an action is flagged. This is the only non-smooth point
        of the study envs' step that a state or action can sit on for more than
        a measure-zero set of steps (docs: non-smooth points).

        Args:
            ctrl: ``(..., d_a)`` controls the step wrote (``data.ctrl`` after it),
                JAX or numpy (then the result is numpy).

        Returns:
            ``(..., d_t + d_a)`` bool.
        """
        return control_bound_columns(self.env.mj_model, ctrl, self.space.tangent_dim)

    def fd_jacobian(
        self, s: np.ndarray, action: np.ndarray, warmstart: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``backend="mujoco"``: the step's Jacobian by MuJoCo's C finite differences.

        Not exact (docs/env.md#backends): MuJoCo's ``mjd_transitionFD`` of each
        physics substep, chained, threaded over all cores
        (:class:`~jacobian_wrappers.mujoco_fd.FiniteDifferenceJacobian`).

        Args:
            s: ``(n, d_s)`` states before the step.
            action: ``(n, d_a)`` actions (written to the controls).
            warmstart: ``(n, nv)`` the solver's warm start of each state
                (``data.qacc_warmstart``): Playground caps the solver's
                iterations, so the step depends on it.

        Returns:
            ``(s_next, [J_s | J_a], nonsmooth)`` of the C step, float64 numpy.
        """
        if self._fd is None:
            from jacobian_wrappers.mujoco_fd import FiniteDifferenceJacobian

            self._fd = FiniteDifferenceJacobian(self.env.mj_model, self.env.n_substeps)
        action = np.asarray(action, dtype=np.float64)
        s_next, jac = self._fd(s, action, warmstart)
        return s_next, jac, self.nonsmooth_columns(action)

    def transition(
        self, state: Any, action: jax.Array, jacobian: bool, method: str = "unrolled"
    ) -> Transition:
        """One control step from ``state`` (pure; ``jit``/``vmap`` it).

        The Jacobian is ``jax.jacfwd`` through the whole un-wrapped Playground
        ``step`` (all substeps, action written to the controls), in the tangent
        space of :class:`StateSpace`; the primal step comes out of the same pass.
        How the tangents pass the constraint solver is ``method``
        (:mod:`jacobian_wrappers._solver_tangent`): ``"unrolled"`` (through every
        solver iteration: exact as it stands) or ``"implicit"`` (fast; exact
        where ``verified``, and the caller recomputes the others unrolled, as
        :meth:`step_jacobian` and ``PlaygroundVecEnv`` do).

        Args:
            state: Playground ``State``.
            action: Action, shape ``(d_a,)``.
            jacobian: Whether to compute ``[J_s | J_a]``.
            method: ``"implicit"`` or ``"unrolled"``.
        """
        space = self.space
        action = action.astype(state.obs.dtype)
        s = space.get(state.data)
        verified = None
        if not jacobian:
            new = self.env.step(state, action)
            s_next, jac = space.get(new.data), None
        else:
            data = reset_unverified(state.data)

            def step_from(x: jax.Array) -> tuple[jax.Array, Any]:
                s_in = space.perturb(s, x[: space.tangent_dim])
                new = self.env.step(
                    state.replace(data=space.set(data, s_in)),
                    action + x[space.tangent_dim :],
                )
                s_out = space.get(new.data)
                return space.difference(jax.lax.stop_gradient(s_out), s_out), (new, s_out)

            x0 = jnp.zeros(space.tangent_dim + self.action_size, dtype=s.dtype)
            with solver_tangents(method):
                jac, (new, s_next) = jax.jacfwd(step_from, has_aux=True)(x0)
            verified = unverified_substeps(new.data) == 0
        finite = jnp.isfinite(s_next).all() & jnp.isfinite(new.obs).all()
        nonsmooth = self.nonsmooth_columns(new.data.ctrl) if jacobian else None
        return Transition(
            _strong(new), s, s_next, jac, finite, active_contacts(new.data), nonsmooth, verified
        )


class TaskAttributes:
    """What both envs of this package tell about their task, read from their ``sim``."""

    sim: Simulator
    env_name: str
    precision: str
    backend: str
    jacobian_method: str

    @property
    def jacobian_source(self) -> dict[str, Any]:
        """What a data set records of these Jacobians (``jacobian_wrappers.dataset_meta``)."""
        sim = self.sim
        return {
            "env_name": self.env_name,
            "precision": self.precision,
            "dt": sim.dt,
            "state_labels": tuple(sim.space.labels),
            "tangent_labels": tuple(sim.space.tangent_labels),
            "action_labels": tuple(sim.action_labels),
            "backend": self.backend,
            "jacobian_method": self.jacobian_method,
        }

    @property
    def state_labels(self) -> tuple[str, ...]:
        """One label per element of ``s`` (``"qpos:rootx"``, ``"qvel:bthigh"``, ...)."""
        return self.sim.space.labels

    @property
    def tangent_labels(self) -> tuple[str, ...]:
        """One label per row/column of ``J_s`` (equal to ``state_labels`` if ``nq == nv``)."""
        return self.sim.space.tangent_labels

    @property
    def action_labels(self) -> tuple[str, ...]:
        """Actuator names, one per action element."""
        return self.sim.action_labels

    @property
    def dt(self) -> float:
        """Seconds of simulated time per control step."""
        return self.sim.dt


@functools.cache
def _cached(env_name: str, precision: str, overrides_json: str) -> Simulator:
    return Simulator(env_name, precision, json.loads(overrides_json))


@contextlib.contextmanager
def _quiet_model_deprecations() -> Iterator[None]:
    """Drop MuJoCo's warning about Playground's own XML (``settotalmass``) while it loads.

    MuJoCo 4 deprecates the ``settotalmass`` attribute that Playground's
    CheetahRun model uses; the user can do nothing about it, and it printed at
    every construction. Every other warning is passed on as MuJoCo prints it.
    """
    import mujoco

    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if "'settotalmass' is deprecated" in message:
            return
        if previous is not None:
            previous(message)
        else:
            print(f"WARNING: {message}", file=sys.stderr)

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def _with_jax_impl(config_overrides: Any) -> Any:
    """``config_overrides`` with ``impl`` set to ``"jax"`` (``warp`` has no derivatives).

    Raises:
        ValueError: ``impl`` given as anything but ``"jax"``.
    """
    if not isinstance(config_overrides, dict | None):
        return config_overrides  # task_config names the type
    overrides = {"impl": "jax", **(config_overrides or {})}
    if overrides["impl"] != "jax":
        raise ValueError(
            f"config_overrides['impl'] must be 'jax' (the differentiable MJX "
            f"implementation), got {overrides['impl']!r}"
        )
    return overrides


def get_simulator(
    env_name: str,
    precision: str = "float32",
    config_overrides: dict[str, Any] | None = None,
    compilation_cache: Any = None,
) -> Simulator:
    """The process-wide :class:`Simulator` for these arguments (built once).

    The arguments are checked by the :class:`Simulator` built on the first call
    (a rejected one is never cached), so a call that finds its simulator built
    checks nothing again.

    Raises:
        TypeError: ``config_overrides`` is not a dict.
        ValueError: Unknown ``env_name``, ``precision`` or config key, ``impl``
            other than ``jax``, or overrides that are not JSON-serialisable.
    """
    if not isinstance(config_overrides, dict | None):
        raise TypeError(
            f"config_overrides must be a dict, got {config_overrides!r} "
            f"({type(config_overrides).__name__})"
        )
    enable_compilation_cache(compilation_cache)
    try:
        key = json.dumps(_with_jax_impl(config_overrides), sort_keys=True)
    except TypeError as err:
        raise ValueError(
            f"config_overrides must be JSON-serialisable, got {config_overrides!r}"
        ) from err
    if not isinstance(env_name, str) or not isinstance(precision, str):
        Simulator(env_name, precision, config_overrides)  # raises, naming the bad value
    return _cached(env_name, precision, key)
