"""Jacobians of the steps of Gymnasium's own MuJoCo envs (``HalfCheetah-v5``, ``Ant-v5``, ...).

A Gymnasium ``MujocoEnv`` steps MuJoCo's C simulator: it writes the action to
``data.ctrl`` and calls ``mj_step`` ``frame_skip`` times. :class:`GymMujocoJacobians`
gives the Jacobian of that step at the state it started from, in the tangent
space of :class:`~jacobian_wrappers.StateSpace`, by either backend:

* ``"mjx"``: exact, ``jax.jacfwd`` through ``frame_skip`` MJX steps of the env's
  own model (``mjx.put_model``), float64, from the same state, controls and
  solver warm start;
* ``"mujoco"``: MuJoCo's C finite differences of the C step itself
  (:class:`~jacobian_wrappers.mujoco_fd.FiniteDifferenceJacobian`), not exact.

The default (``backend=None``) is ``"mjx"``, except for models whose MJX step
is known to leave the C step (:func:`~jacobian_wrappers.agreement.divergence_cause`:
Ant-v5) or that MJX cannot simulate (Humanoid-v5: ``mjSOL_PGS``): those get
``"mujoco"``, with a warning that says why and that the Jacobians are finite
differences.

The next state reported is always the env's own (C) one; every step compares
it with the backend's (:mod:`jacobian_wrappers.agreement`) and marks the step
mismatched where they differ.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from jacobian_wrappers._precision import precision_scope
from jacobian_wrappers._solver_tangent import (
    reset_unverified,
    solver_tangents,
    unverified_substeps,
)
from jacobian_wrappers._validation import JACOBIAN_METHODS, check_backend, check_jacobian_method
from jacobian_wrappers.agreement import (
    MISMATCH_TOLERANCE,
    divergence_cause,
    mark_mismatch,
    next_state_error,
)
from jacobian_wrappers.compilation_cache import compile_notice, enable_compilation_cache
from jacobian_wrappers.state_space import StateSpace, actuator_labels, control_bound_columns

__all__ = [
    "GYM_V5_ENVS",
    "GymMujocoJacobians",
    "default_backend",
    "is_gym_mujoco_env",
    "mjx_step_jacobian",
    "model_fingerprint",
]

#: Gymnasium's ten MuJoCo v5 benchmark envs.
GYM_V5_ENVS = (
    "Ant-v5",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Humanoid-v5",
    "Swimmer-v5",
    "Reacher-v5",
    "Pusher-v5",
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
)


def is_gym_mujoco_env(env: Any) -> bool:
    """Whether ``env`` (un-wrapped) is one of Gymnasium's MuJoCo envs."""
    try:
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
    except ImportError:  # gymnasium without its mujoco extra
        return False
    return isinstance(env, MujocoEnv)


def _mjx_unsupported(model: mujoco.MjModel) -> str | None:
    """MJX's reason for refusing ``model`` (a feature it lacks), or ``None``."""
    from mujoco import mjx

    try:
        mjx.put_model(model, impl="jax")
    except NotImplementedError as err:
        return str(err)
    return None


def default_backend(model: mujoco.MjModel) -> tuple[str, str | None]:
    """The backend ``backend=None`` picks for ``model``, and why when it is not ``"mjx"``.

    ``"mjx"`` (exact) where MJX simulates the model as MuJoCo's C step does;
    ``"mujoco"`` (C finite differences) where MJX cannot simulate it or its
    step is known to leave the C step (:func:`divergence_cause`).
    """
    refused = _mjx_unsupported(model)
    cause = divergence_cause(model) if refused is None else f"MJX cannot simulate it ({refused})"
    return ("mjx", None) if cause is None else ("mujoco", cause)


def model_fingerprint(model: mujoco.MjModel) -> str:
    """A hash of every array and option of ``model``: equal for models MJX runs alike."""
    digest = hashlib.sha1()
    for obj in (model, model.opt):
        for name in sorted(dir(obj)):
            if name.startswith("_"):
                continue
            try:
                value = getattr(obj, name)
            except Exception:  # attributes MuJoCo cannot read on this model
                continue
            if isinstance(value, np.ndarray | int | float):
                digest.update(name.encode())
                digest.update(np.asarray(value).tobytes())
    return digest.hexdigest()


# Compiled programs by (model fingerprint, substeps, method): the envs of a
# DummyVecEnv of one Gymnasium id share one compile instead of one each.
_PROGRAMS: dict[tuple[str, int, str], Any] = {}


def mjx_step_jacobian(model: mujoco.MjModel, n_substeps: int, method: str = "implicit"):
    """A ``(s, ctrl, warmstart) -> (s_next, [J_s | J_a])`` of ``n_substeps`` MJX steps, jitted.

    Float64 (JAX x64 inside). ``method`` says how tangents pass the constraint
    solver (:mod:`jacobian_wrappers._solver_tangent`); with ``"implicit"`` a
    step whose implicit tangent is not verified exact is recomputed
    ``"unrolled"`` (compiled when first needed), so the Jacobian is the same.
    Models with equal arrays and options (:func:`model_fingerprint`) share one
    program per process.

    Raises:
        ValueError: The model uses a feature MJX does not support (named in
            the message, with the suggestion ``backend="mujoco"``), or an
            unknown ``method``.
    """
    check_jacobian_method(method)
    key = (model_fingerprint(model), int(n_substeps), method)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = _build_step_jacobian(model, int(n_substeps), method)
    return _PROGRAMS[key]


def _build_step_jacobian(model: mujoco.MjModel, n_substeps: int, method: str):
    """The program of :func:`mjx_step_jacobian`, built (and compiled on first call)."""
    from mujoco import mjx

    enable_compilation_cache()  # the default cache: a second process starts in seconds
    space = StateSpace.from_model(model)
    with precision_scope("float64"):
        try:
            mx = mjx.put_model(model, impl="jax")
        except NotImplementedError as err:
            raise ValueError(
                f"MJX cannot simulate this model ({err}); use backend='mujoco' "
                "(MuJoCo's C finite differences)"
            ) from err
        template = reset_unverified(mjx.make_data(mx))

    def step(s: jax.Array, ctrl: jax.Array, warmstart: jax.Array, method: str):
        dt = space.tangent_dim

        def step_from(x: jax.Array):
            data = space.set(template, space.perturb(s, x[:dt]))
            data = data.replace(ctrl=ctrl + x[dt:], qacc_warmstart=warmstart)
            data = jax.lax.fori_loop(0, n_substeps, lambda _, d: mjx.step(mx, d), data)
            s_out = space.get(data)
            return space.difference(jax.lax.stop_gradient(s_out), s_out), (s_out, data)

        x0 = jnp.zeros(dt + model.nu, dtype=s.dtype)
        with solver_tangents(method):
            jac, (s_next, data) = jax.jacfwd(step_from, has_aux=True)(x0)
        return s_next, jac, unverified_substeps(data) == 0

    compiled = {m: jax.jit(functools.partial(step, method=m)) for m in JACOBIAN_METHODS}

    name = f"MJX step + Jacobian of a Gymnasium model (nv={model.nv}, nu={model.nu}, float64)"

    def run(s: np.ndarray, ctrl: np.ndarray, warmstart: np.ndarray):
        with precision_scope("float64"), compile_notice(name):
            s_next, jac, verified = jax.device_get(compiled[method](s, ctrl, warmstart))
            if not verified:
                s_next, jac, _ = jax.device_get(compiled["unrolled"](s, ctrl, warmstart))
        return s_next, jac

    return run


class GymMujocoJacobians:
    """The Jacobians of each step of one Gymnasium MuJoCo env.

    Call :meth:`capture` before the env's ``step`` and :meth:`jacobians` after.

    Args:
        env: The un-wrapped ``gymnasium.envs.mujoco.MujocoEnv``.
        backend: ``"mjx"`` (exact), ``"mujoco"`` (C finite differences) or
            ``None`` (:func:`default_backend`: ``"mjx"`` unless MJX cannot
            simulate the model as the C step does; a warning says so).
        jacobian_method: For ``"mjx"``: ``"implicit"`` (default) or ``"unrolled"``
            (:func:`mjx_step_jacobian`).

    Raises:
        ValueError: Unknown backend or method, or a model MJX cannot simulate
            with ``"mjx"``.
    """

    def __init__(
        self, env: Any, backend: str | None = None, jacobian_method: str = "implicit"
    ) -> None:
        from jacobian_wrappers.mujoco_fd import FiniteDifferenceJacobian

        self.env = env
        model = env.model
        self.jacobian_method = check_jacobian_method(jacobian_method)
        if backend is None:
            backend, reason = default_backend(model)
            if reason is not None:
                warnings.warn(
                    f"{self._name()}: Jacobians by MuJoCo's C finite differences "
                    f"(backend='mujoco'), not exact, because {reason}; "
                    "docs/pitfalls.md#a-jacobian-of-another-system",
                    UserWarning,
                    stacklevel=3,
                )
        self.backend = check_backend(backend)
        self.space = StateSpace.from_model(model)
        if self.backend == "mjx":
            self._jacobian = mjx_step_jacobian(model, env.frame_skip, jacobian_method)
            cause = divergence_cause(model)
            if cause is not None:
                warnings.warn(
                    f"{self._name()} with backend='mjx': {cause}; steps whose MJX next "
                    "state leaves the env's are marked info['jacobian_mismatch'] and left "
                    "out of the statistics (backend='mujoco' differentiates the env's step)",
                    UserWarning,
                    stacklevel=3,
                )
        else:
            fd = FiniteDifferenceJacobian(model, env.frame_skip, n_threads=1)
            self._jacobian = lambda s, c, w: tuple(x[0] for x in fd(s[None], c[None], w[None]))
        self._before: tuple[np.ndarray, np.ndarray] | None = None
        #: The next state of the last step as the backend computed it (MJX's, or
        #: the C step's nominal one), to compare with the env's own.
        self.backend_next_state: np.ndarray | None = None
        #: ``next_state_error`` of the last step: backend against the env's own.
        self.next_state_error = 0.0

    def _name(self) -> str:
        spec = getattr(self.env, "spec", None)
        return spec.id if spec is not None else type(self.env).__name__

    @property
    def state_labels(self) -> tuple[str, ...]:
        """One label per element of ``s``."""
        return self.space.labels

    @property
    def tangent_labels(self) -> tuple[str, ...]:
        """One label per row/column of ``J_s``."""
        return self.space.tangent_labels

    @property
    def action_labels(self) -> tuple[str, ...]:
        """Actuator names."""
        return actuator_labels(self.env.model)

    @property
    def jacobian_source(self) -> dict[str, Any]:
        """What a data set records of these Jacobians (``jacobian_wrappers.dataset_meta``)."""
        return {
            "env_name": self._name(),
            "precision": "float64",
            "dt": float(self.env.dt),
            "state_labels": self.state_labels,
            "tangent_labels": self.tangent_labels,
            "action_labels": self.action_labels,
            "backend": self.backend,
            "jacobian_method": self.jacobian_method,
        }

    def active_contacts(self) -> int:
        """Contacts of the env's data that enter the constraint solver (as for MJX envs)."""
        d = self.env.data
        contact = d.contact
        return int(np.sum(contact.dist[: d.ncon] - contact.includemargin[: d.ncon] < 0))

    def _state(self) -> np.ndarray:
        d = self.env.data
        return np.concatenate([d.qpos, d.qvel, d.act]).astype(np.float64)

    def capture(self) -> None:
        """Record the state and solver warm start the next step starts from."""
        self._before = (self._state(), self.env.data.qacc_warmstart.copy())

    def jacobians(self):
        """:class:`~jacobian_wrappers.StepJacobians` of the step since :meth:`capture`."""
        from jacobian_wrappers.playground_env import StepJacobians

        if self._before is None:
            raise RuntimeError("capture() must be called before the step")
        s, warm = self._before
        ctrl = self.env.data.ctrl.copy()  # what the env wrote: the action of this step
        s_next, jac = self._jacobian(s, ctrl, warm)
        self.backend_next_state = np.asarray(s_next, dtype=np.float64)
        jac = np.asarray(jac, dtype=np.float64)
        env_next = self._state()
        self.next_state_error = float(next_state_error(self.backend_next_state, env_next))
        mismatch = self.next_state_error > MISMATCH_TOLERANCE["float64"]
        d_t = self.space.tangent_dim
        nonsmooth = control_bound_columns(self.env.model, ctrl, d_t)
        return StepJacobians(
            state=s,
            action=ctrl,
            next_state=env_next,
            jacobian_state=jac[:, :d_t],
            jacobian_action=jac[:, d_t:],
            nonsmooth=mark_mismatch(nonsmooth, mismatch),
            finite=bool(np.isfinite(jac).all()),
            mismatch=mismatch,
        )
