"""Does the Jacobian belong to the env's own step? The next-state check of every step.

A Jacobian is the derivative of one simulator's step. Where the backend that
differentiates a step (MJX's autodiff, or MuJoCo's C finite differences) is not
the simulator that steps the env, the two next states are compared: if they
differ beyond round-off, the backend computed a different system and its
Jacobian is not the env's (docs/pitfalls.md#a-jacobian-of-another-system).

Such a step is *mismatched*: ``info["jacobian_mismatch"] = True`` and every
column of its ``jacobian_nonsmooth`` is set, so the statistics, data sets and
losses that leave out non-smooth columns leave the whole step out, with no
new field to carry. A row whose state columns are all flagged is therefore a
mismatched step (an action on its control bound never flags a state column):
:func:`dynamic_sparsity.analysis.stats.mismatch_rows` counts them back from any data set.

The tolerance (:data:`MISMATCH_TOLERANCE`) is relative, ``|s_b - s_env| / (1 +
|s_env|)`` per element. In float64 two implementations of the same dynamics
differ by round-off only: measured over 40 random steps each, MJX against
the C step of Gymnasium's HalfCheetah, Hopper, Walker2d, Swimmer, Reacher,
Pusher, InvertedPendulum and InvertedDoublePendulum (contacts, RK4, Newton
solver) agree to at most 9.1e-14, while Ant-v5's steps differ by 1.6e-7 to
0.33 (docs/pitfalls.md#a-jacobian-of-another-system,
``benchmarks/jacobian_agreement.py``). ``1e-10`` sits three orders of
magnitude above the first and below the second.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

__all__ = [
    "MISMATCH_TOLERANCE",
    "divergence_cause",
    "env_step_central_difference",
    "error_against_central_differences",
    "mark_mismatch",
    "next_state_error",
]

#: Largest relative next-state difference still taken as agreement, per precision
#: of the env's state (docs/pitfalls.md#a-jacobian-of-another-system, measured).
MISMATCH_TOLERANCE = {"float64": 1e-10, "float32": 1e-3}


def next_state_error(backend_next: Any, env_next: Any) -> np.ndarray:
    """Per row, the largest relative difference ``|b - e| / (1 + |e|)``.

    Args:
        backend_next: ``(..., d_s)`` next states as the Jacobian's backend computed them.
        env_next: ``(..., d_s)`` the env's own next states.

    Returns:
        ``(...)`` float64; ``inf`` where either is not finite.
    """
    b = np.asarray(backend_next, dtype=np.float64)
    e = np.asarray(env_next, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        err = np.max(np.abs(b - e) / (1.0 + np.abs(e)), axis=-1)
    return np.where(np.isfinite(err), err, np.inf)


def mark_mismatch(nonsmooth: np.ndarray, mismatch: np.ndarray | bool) -> np.ndarray:
    """``nonsmooth`` with every column of the mismatched rows set (a copy if changed)."""
    mismatch = np.asarray(mismatch, dtype=bool)
    if not mismatch.any():
        return nonsmooth
    return np.asarray(nonsmooth, dtype=bool) | mismatch[..., None]


def divergence_cause(model: mujoco.MjModel) -> str | None:
    """Why MJX's step of ``model`` is known to leave MuJoCo's C step, or ``None``.

    MJX's collision functions build a contact's tangent frame from its normal
    alone; MuJoCo's C ones align it with the geoms (a capsule's axis, a box's
    edge). With an elliptic friction cone the frame does not matter. With the
    pyramidal cone (MuJoCo's default) the four pyramid edges point along the
    tangents, so the two simulators apply different friction once a contact's
    frame can turn about its normal. In a planar model (HalfCheetah, Hopper,
    Walker2d) the two frames differ by a quarter turn, which leaves the
    pyramid as it was; a body with a free or ball joint (Ant) turns freely.

    Returns:
        A sentence naming the cause, for models with a pyramidal cone,
        frictional contacts (``condim >= 3``) and a free or ball joint.
    """
    if model.opt.cone != mujoco.mjtCone.mjCONE_PYRAMIDAL:
        return None
    collides = (model.geom_contype != 0) | (model.geom_conaffinity != 0)
    if not np.any(collides & (model.geom_condim >= 3)):
        return None
    free_or_ball = (mujoco.mjtJoint.mjJNT_FREE, mujoco.mjtJoint.mjJNT_BALL)
    if not np.isin(model.jnt_type, free_or_ball).any():
        return None
    return (
        "the model has a pyramidal friction cone and a free or ball joint: MJX builds "
        "contact frames from the normal alone, MuJoCo's C step aligns them with the geoms, "
        "so their friction pyramids differ once a contact turns about its normal"
    )


def env_step_central_difference(
    env: Any, s: np.ndarray, warmstart: np.ndarray, ctrl: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    """``[J_s | J_a]`` of a Gymnasium MuJoCo env's own step, by central differences.

    The reference every backend is checked against: the env's own
    ``do_simulation`` (``mj_step`` x ``frame_skip``) from ``s`` with the solver
    warm start ``warmstart`` and controls ``ctrl``, each tangent coordinate
    moved by ``+-h`` (free and ball joints with ``mj_integratePos``, the result
    differenced with ``mj_differentiatePos``). Runs on a scratch ``MjData``;
    the env's own data are restored. Error ~``h**2`` where the step is smooth.

    Args:
        env: The un-wrapped ``gymnasium.envs.mujoco.MujocoEnv``.
        s: ``concat(qpos, qvel, act)`` the step starts from.
        warmstart: ``qacc_warmstart`` the step starts from.
        ctrl: The controls the step wrote.
        h: The difference step.

    Returns:
        ``(2 nv + na, 2 nv + na + nu)`` float64.
    """
    m, saved = env.model, env.data
    env.data = d = mujoco.MjData(m)
    nq, nv, d_t = m.nq, m.nv, 2 * m.nv + m.na

    def run(dx: np.ndarray, du: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mujoco.mj_resetData(m, d)
        qpos = s[:nq].copy()
        mujoco.mj_integratePos(m, qpos, dx[:nv], 1.0)
        d.qpos[:], d.qvel[:], d.act[:] = qpos, s[nq : nq + nv] + dx[nv : 2 * nv], s[nq + nv :]
        d.qacc_warmstart[:] = warmstart
        env.do_simulation(ctrl + du, env.frame_skip)
        return d.qpos.copy(), np.concatenate([d.qvel, d.act])

    def diff(lo: tuple[np.ndarray, np.ndarray], hi: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        dq = np.zeros(nv)
        mujoco.mj_differentiatePos(m, dq, 1.0, lo[0], hi[0])
        return np.concatenate([dq, hi[1] - lo[1]]) / (2 * h)

    cols = []
    try:
        for j in range(d_t + m.nu):
            dx, du = np.zeros(d_t), np.zeros(m.nu)
            (dx if j < d_t else du)[j if j < d_t else j - d_t] = h
            cols.append(diff(run(-dx, -du), run(dx, du)))
    finally:
        env.data = saved
    return np.stack(cols, axis=1)


def error_against_central_differences(
    env: Any, s: np.ndarray, warmstart: np.ndarray, ctrl: np.ndarray, jacobian: np.ndarray
) -> tuple[bool, float]:
    """Whether ``jacobian`` differs from the env's own step beyond the differences' error.

    The reference is :func:`env_step_central_difference` at ``h = 1e-6``; its
    error is estimated by its disagreement with ``h = 1e-5``. The Jacobian is
    *wrong* where it is farther from the reference than ten times that, plus
    ``1e-7`` of the largest element.

    Returns:
        ``(wrong, largest difference relative to the largest element)``.
    """
    fd6 = env_step_central_difference(env, s, warmstart, ctrl, 1e-6)
    fd5 = env_step_central_difference(env, s, warmstart, ctrl, 1e-5)
    scale = np.abs(fd6).max()
    err = np.abs(jacobian - fd6).max()
    return bool(err > 10 * np.abs(fd5 - fd6).max() + 1e-7 * scale), float(err / scale)
