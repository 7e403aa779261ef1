"""Control-step Jacobians by MuJoCo's own C finite differences, threaded over cores.

The ``backend="mujoco"`` of the envs: for machines without an accelerator and
for any MuJoCo model. One control step is ``n_substeps`` calls of ``mj_step``
with the action written to ``ctrl`` first (what Playground's and Gymnasium's
MuJoCo envs do). Its Jacobian is chained from MuJoCo's ``mjd_transitionFD`` of
each physics step (centred differences by default):

    A = A_n ... A_1,    B = sum_i A_n ... A_{i+1} B_i

in the same tangent space as the autodiff Jacobians (``2 nv + na``
coordinates). ``mjd_transitionFD`` does not support the RK4 integrator (used
e.g. by Gymnasium's ``InvertedPendulum-v5``); there the whole control step is
differenced directly (perturb the state or control, run ``n_substeps`` steps,
``mj_differentiatePos``), in C calls per column.

It is **not exact**: every element carries the finite-difference error
(about ``eps**2`` relative for smooth dynamics, more across a contact or
friction switch), and its zero pattern is the set of elements that come out
exactly 0.0 (docs/env.md#backends).

MuJoCo's C functions release the GIL, so a pool of threads, each with its own
``MjData``, runs the batch on all cores.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import mujoco
import numpy as np

from jacobian_wrappers._validation import check_int

__all__ = ["FiniteDifferenceJacobian"]


class FiniteDifferenceJacobian:
    """``[J_s | J_a]`` of one control step of ``model``, by MuJoCo's C finite differences.

    Args:
        model: The MuJoCo model (its options, e.g. solver iterations, are used
            as they are).
        n_substeps: Physics steps per control step (``frame_skip`` in Gymnasium).
        eps: Finite-difference step.
        centered: Central (``True``, default) or forward differences.
        n_threads: Worker threads; all cores (``os.cpu_count()``) when ``None``.

    Raises:
        TypeError: ``n_substeps`` or ``n_threads`` not an int.
        ValueError: ``n_substeps < 1``, ``n_threads < 1`` or ``eps <= 0``.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        n_substeps: int,
        *,
        eps: float = 1e-6,
        centered: bool = True,
        n_threads: int | None = None,
    ) -> None:
        self.model = model
        self.n_substeps = check_int(n_substeps, "n_substeps", minimum=1)
        if n_threads is None:
            n_threads = os.cpu_count() or 1
        self.n_threads = check_int(n_threads, "n_threads", minimum=1)
        if not (isinstance(eps, float | int) and eps > 0):
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.centered = bool(centered)
        self.tangent_dim = 2 * model.nv + model.na
        self.state_dim = model.nq + model.nv + model.na
        self._datas = [mujoco.MjData(model) for _ in range(self.n_threads)]
        self._pool = ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None

    def __call__(
        self,
        states: np.ndarray,
        ctrls: np.ndarray,
        warmstarts: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Next states and ``[J_s | J_a]`` of a batch of control steps.

        Args:
            states: ``(n, nq + nv + na)`` float64 states ``concat(qpos, qvel, act)``.
            ctrls: ``(n, nu)`` controls written before the step (MuJoCo clamps
                them to ``ctrlrange`` itself).
            warmstarts: ``(n, nv)`` ``qacc_warmstart`` of each state, or ``None``
                for zeros. With a solver capped at few iterations (as in
                Playground) the step depends on it, so pass the simulator's own.

        Returns:
            ``(s_next, jac)``: ``(n, nq + nv + na)`` and ``(n, 2 nv + na, 2 nv + na + nu)``.
        """
        m = self.model
        states = np.ascontiguousarray(states, dtype=np.float64)
        ctrls = np.ascontiguousarray(ctrls, dtype=np.float64)
        n = states.shape[0]
        if states.shape != (n, self.state_dim) or ctrls.shape != (n, m.nu):
            raise ValueError(
                f"states must be (n, {self.state_dim}) and ctrls (n, {m.nu}), got "
                f"{states.shape} and {ctrls.shape}"
            )
        if warmstarts is None:
            warmstarts = np.zeros((n, m.nv))
        s_next = np.empty_like(states)
        jac = np.empty((n, self.tangent_dim, self.tangent_dim + m.nu))
        # Contiguous blocks, one per thread: each thread owns one MjData.
        bounds = np.linspace(0, n, min(self.n_threads, max(n, 1)) + 1).astype(int)
        blocks = [(k, bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]

        def run(block: tuple[int, int, int]) -> None:
            k, lo, hi = block
            for i in range(lo, hi):
                self._one(self._datas[k], states[i], ctrls[i], warmstarts[i], s_next[i], jac[i])

        if self._pool is None or len(blocks) == 1:
            for block in blocks:
                run(block)
        else:
            list(self._pool.map(run, blocks))
        return s_next, jac

    def _one(
        self,
        d: mujoco.MjData,
        s: np.ndarray,
        ctrl: np.ndarray,
        warmstart: np.ndarray,
        s_next: np.ndarray,
        jac: np.ndarray,
    ) -> None:
        m = self.model
        if m.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4:
            self._one_direct(d, s, ctrl, warmstart, s_next, jac)
            return
        dt = self.tangent_dim
        self._start(d, s, ctrl, warmstart)
        a_step, b_step = np.empty((dt, dt)), np.empty((dt, m.nu))
        a_total, b_total = np.eye(dt), np.zeros((dt, m.nu))
        for _ in range(self.n_substeps):
            mujoco.mjd_transitionFD(m, d, self.eps, self.centered, a_step, b_step, None, None)
            a_total = a_step @ a_total
            b_total = a_step @ b_total + b_step
            mujoco.mj_step(m, d)
        s_next[:] = self._state(d)
        jac[:, :dt], jac[:, dt:] = a_total, b_total

    def _start(
        self,
        d: mujoco.MjData,
        s: np.ndarray,
        ctrl: np.ndarray,
        warmstart: np.ndarray,
        dx: np.ndarray | None = None,
    ) -> None:
        """Put ``d`` at ``s`` (moved by the tangent vector ``dx``), ``ctrl``, ``warmstart``."""
        m = self.model
        nq, nv = m.nq, m.nv
        mujoco.mj_resetData(m, d)
        d.qpos[:], d.qvel[:], d.act[:] = s[:nq], s[nq : nq + nv], s[nq + nv :]
        if dx is not None:
            mujoco.mj_integratePos(m, d.qpos, dx[:nv], 1.0)
            d.qvel[:] += dx[nv : 2 * nv]
            d.act[:] += dx[2 * nv :]
        d.ctrl[:] = ctrl
        d.qacc_warmstart[:] = warmstart

    @staticmethod
    def _state(d: mujoco.MjData) -> np.ndarray:
        return np.concatenate([d.qpos, d.qvel, d.act])

    def _one_direct(
        self,
        d: mujoco.MjData,
        s: np.ndarray,
        ctrl: np.ndarray,
        warmstart: np.ndarray,
        s_next: np.ndarray,
        jac: np.ndarray,
    ) -> None:
        """Differences of the whole control step, column by column (any integrator)."""
        m, dt, eps = self.model, self.tangent_dim, self.eps

        def run(dx: np.ndarray, du: np.ndarray) -> np.ndarray:
            self._start(d, s, ctrl + du, warmstart, dx)
            mujoco.mj_step(m, d, nstep=self.n_substeps)
            return self._state(d)

        def tangent(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
            dq = np.empty(m.nv)
            mujoco.mj_differentiatePos(m, dq, 1.0, ref[: m.nq], out[: m.nq])
            return np.concatenate([dq, out[m.nq :] - ref[m.nq :]])

        zero_x, zero_u = np.zeros(dt), np.zeros(m.nu)
        s_next[:] = nominal = run(zero_x, zero_u)
        for j in range(dt + m.nu):
            dx, du = zero_x.copy(), zero_u.copy()
            (dx if j < dt else du)[j if j < dt else j - dt] = eps
            plus = tangent(nominal, run(dx, du))
            if self.centered:
                jac[:, j] = (plus - tangent(nominal, run(-dx, -du))) / (2 * eps)
            else:
                jac[:, j] = plus / eps

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
