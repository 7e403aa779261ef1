"""The ground-truth state ``s`` of an MJX model and its tangent space.

``s = concat(qpos, qvel, act)``. Jacobians are taken in the tangent space, as
MuJoCo's own ``mjd_transitionFD`` does: ``2 nv + na`` coordinates, where a free
or ball joint's orientation is a 3-vector rotation (local frame) rather than a
quaternion. For models without free or ball joints (all eight study envs)
``nq == nv`` and the tangent space *is* the state space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

__all__ = ["StateSpace", "actuator_labels", "control_bound_columns"]

_FREE, _BALL = int(mujoco.mjtJoint.mjJNT_FREE), int(mujoco.mjtJoint.mjJNT_BALL)


def _quat_mul(a: jax.Array, b: jax.Array) -> jax.Array:
    w1, v1, w2, v2 = a[0], a[1:], b[0], b[1:]
    return jnp.concatenate([(w1 * w2 - v1 @ v2)[None], w1 * v2 + w2 * v1 + jnp.cross(v1, v2)])


def _quat_conj(q: jax.Array) -> jax.Array:
    return q * jnp.array([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def _quat_exp(rot: jax.Array) -> jax.Array:
    """Quaternion of the rotation vector ``rot``; smooth at zero (double-where)."""
    n2 = rot @ rot
    small = n2 < 1e-20
    n = jnp.sqrt(jnp.where(small, 1.0, n2))
    w = jnp.where(small, 1.0 - n2 / 8, jnp.cos(n / 2))
    k = jnp.where(small, 0.5 - n2 / 48, jnp.sin(n / 2) / n)
    return jnp.concatenate([w[None], k * rot])


def _quat_log(q: jax.Array) -> jax.Array:
    """Rotation vector of the unit quaternion ``q`` (MuJoCo's ``mju_quat2Vel``, dt=1)."""
    q = jnp.where(q[0] < 0, -q, q)
    v = q[1:]
    n2 = v @ v
    small = n2 < 1e-20
    n = jnp.sqrt(jnp.where(small, 1.0, n2))
    k = jnp.where(small, 2.0 / q[0], 2.0 * jnp.arctan2(n, q[0]) / n)
    return k * v


def actuator_labels(model: mujoco.MjModel) -> tuple[str, ...]:
    """Actuator names of ``model``, one per action element (``actuator<i>`` if unnamed)."""
    return tuple(
        mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) or f"actuator{i}"
        for i in range(model.nu)
    )


def control_bound_columns(model: mujoco.MjModel, ctrl: Any, tangent_dim: int) -> Any:
    """Columns of ``[J_s | J_a]`` whose action sits exactly on its ``ctrlrange`` bound.

    The step clamps each limited control to its range; exactly on a bound the
    one-sided derivatives differ (docs/pitfalls.md#non-smooth-points-and-the-solver-at-rest).

    Args:
        model: The MuJoCo model.
        ctrl: ``(..., nu)`` controls the step wrote, JAX or numpy (then the
            result is numpy).
        tangent_dim: Columns of ``J_s`` (never flagged).

    Returns:
        ``(..., tangent_dim + nu)`` bool.
    """
    xp = np if isinstance(ctrl, np.ndarray) else jnp
    lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    at_bound = model.actuator_ctrllimited.astype(bool) & ((ctrl == lo) | (ctrl == hi))
    state_cols = xp.zeros((*ctrl.shape[:-1], tangent_dim), dtype=bool)
    return xp.concatenate([state_cols, at_bound], axis=-1)


def _joint_labels(model: mujoco.MjModel, tangent: bool) -> tuple[list[str], list[str]]:
    pos, vel = [], []
    for j in range(model.njnt):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint{j}"
        kind = int(model.jnt_type[j])
        if kind == _FREE:
            rot = ["rx", "ry", "rz"] if tangent else ["qw", "qx", "qy", "qz"]
            pos += [f"qpos:{name}:{c}" for c in ["x", "y", "z", *rot]]
            vel += [f"qvel:{name}:{c}" for c in ["vx", "vy", "vz", "wx", "wy", "wz"]]
        elif kind == _BALL:
            rot = ["rx", "ry", "rz"] if tangent else ["qw", "qx", "qy", "qz"]
            pos += [f"qpos:{name}:{c}" for c in rot]
            vel += [f"qvel:{name}:{c}" for c in ["wx", "wy", "wz"]]
        else:
            pos.append(f"qpos:{name}")
            vel.append(f"qvel:{name}")
    return pos, vel


@dataclass(frozen=True)
class StateSpace:
    """Layout of ``s`` for one model, with pure JAX maps to and from ``mjx.Data``.

    Attributes:
        nq: Number of position coordinates.
        nv: Number of velocity (degree-of-freedom) coordinates.
        na: Number of actuator activations.
        labels: One label per element of ``s`` (``"qpos:rootx"``, ``"qvel:bthigh"``,
            ``"act:<actuator>"``).
        tangent_labels: One label per row/column of ``J_s``; equal to ``labels``
            when ``nq == nv``.
    """

    nq: int
    nv: int
    na: int
    labels: tuple[str, ...]
    tangent_labels: tuple[str, ...]
    _quat_slices: tuple[tuple[int, int], ...]  # (qpos start, qvel start) of each quaternion

    @classmethod
    def from_model(cls, model: mujoco.MjModel) -> StateSpace:
        """Build the layout of ``model``'s state."""
        acts = [
            f"act:{mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) or f'actuator{i}'}"
            for i in range(model.nu)
            if model.actuator_dyntype[i] != mujoco.mjtDyn.mjDYN_NONE
        ]
        pos, vel = _joint_labels(model, tangent=False)
        tpos, _ = _joint_labels(model, tangent=True)
        quats = []
        for j in range(model.njnt):
            kind = int(model.jnt_type[j])
            if kind in (_FREE, _BALL):
                off = 3 if kind == _FREE else 0
                quats.append((int(model.jnt_qposadr[j]) + off, int(model.jnt_dofadr[j]) + off))
        return cls(
            nq=model.nq,
            nv=model.nv,
            na=model.na,
            labels=tuple(pos + vel + acts),
            tangent_labels=tuple(tpos + vel + acts),
            _quat_slices=tuple(quats),
        )

    @property
    def dim(self) -> int:
        """Length of ``s``: ``nq + nv + na``."""
        return self.nq + self.nv + self.na

    @property
    def tangent_dim(self) -> int:
        """Rows and columns of ``J_s``: ``2 nv + na``."""
        return 2 * self.nv + self.na

    def get(self, data) -> jax.Array:
        """``s`` of an ``mjx.Data``."""
        return jnp.concatenate([data.qpos, data.qvel, data.act])

    def set(self, data, s: jax.Array):
        """``data`` with its state replaced by ``s`` (derived quantities stale until a step)."""
        nq, nv = self.nq, self.nv
        return data.replace(qpos=s[:nq], qvel=s[nq : nq + nv], act=s[nq + nv :])

    def _hinge_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Qpos and qvel indices of every coordinate that is not part of a quaternion."""
        quat_q = {q + i for q, _ in self._quat_slices for i in range(4)}
        quat_v = {v + i for _, v in self._quat_slices for i in range(3)}
        qs = [i for i in range(self.nq) if i not in quat_q]
        vs = [i for i in range(self.nv) if i not in quat_v]
        return np.asarray(qs, dtype=int), np.asarray(vs, dtype=int)

    def perturb(self, s: jax.Array, delta: jax.Array) -> jax.Array:
        """``s`` moved by the tangent vector ``delta`` (MuJoCo's ``mj_integratePos``)."""
        if not self._quat_slices:
            return s + delta
        nq, nv = self.nq, self.nv
        qpos = s[:nq]
        qi, vi = self._hinge_index()
        qpos = qpos.at[qi].add(delta[vi])
        for q0, v0 in self._quat_slices:
            quat = _quat_mul(qpos[q0 : q0 + 4], _quat_exp(delta[v0 : v0 + 3]))
            qpos = qpos.at[q0 : q0 + 4].set(quat / jnp.linalg.norm(quat))
        return jnp.concatenate([qpos, s[nq:] + delta[nv:]])

    def difference(self, s_ref: jax.Array, s: jax.Array) -> jax.Array:
        """Tangent vector from ``s_ref`` to ``s`` (MuJoCo's ``mj_differentiatePos``)."""
        if not self._quat_slices:
            return s - s_ref
        nq = self.nq
        qi, vi = self._hinge_index()
        dq = jnp.zeros(self.nv, dtype=s.dtype).at[vi].set(s[qi] - s_ref[qi])
        for q0, v0 in self._quat_slices:
            rel = _quat_mul(_quat_conj(s_ref[q0 : q0 + 4]), s[q0 : q0 + 4])
            dq = dq.at[v0 : v0 + 3].set(_quat_log(rel))
        return jnp.concatenate([dq, s[nq:] - s_ref[nq:]])
