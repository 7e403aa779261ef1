"""Forward-mode tangents of MJX's constraint solver when its loop runs no iteration.

``jax.jacfwd`` carries tangents only through the solver iterations that run.
MJX's solver (Newton, with the iteration count as a ``while_loop`` condition)
stops *before* its first iteration when the cost gradient at the initial
guess (warm start or unconstrained acceleration) is already below
``opt.tolerance``. This happens whenever the guess is already optimal, most
often at rest: FingerSpin's friction-loss hinge at exactly zero velocity, with
nothing pushing it, in about half of all random-policy steps. The primal
result is right, but its tangent is that of the initial guess: the constraint
forces then react to the *unconstrained* acceleration with the full stiffness
of the soft constraint (FingerSpin: ``d qvel:hinge / d qvel:hinge`` = 165.8
against 0.079 from a central finite difference).

The step is not non-smooth there: any perturbation, however small, makes the
solver run and converge, and both one-sided derivatives equal the derivative
of the converged solution. So in that case (and only then) the tangent is
replaced by the implicit-function-theorem tangent at the solution ``x``,
``dx = -H^-1 (d grad / d theta)``, with ``H`` the Hessian of the solver's cost
at ``x`` (its active set held). The primal values stay bit-identical. Where the
solver runs at least one iteration the unrolled tangents are kept: Playground
caps the iterations (1-4 per substep), and the derivative of the capped
solver is what a finite difference of the step measures.

MJX exposes no hook for this, so :func:`solver_tangents` swaps MJX's
``solver.solve`` while a step is *traced*; jitted programs keep what they were
traced with.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from mujoco.mjx._src import math as mjx_math
from mujoco.mjx._src import solver as mjx_solver
from mujoco.mjx._src.types import DisableBit

__all__ = ["solver_tangents"]

_ORIGINAL_SOLVE = mjx_solver.solve
_LOCK = threading.RLock()


def _stop(tree: Any) -> Any:
    """``tree`` without tangents (static numpy leaves untouched)."""
    return jax.tree.map(lambda x: jax.lax.stop_gradient(x) if isinstance(x, jax.Array) else x, tree)


def _cost_gradient(m: Any, d: Any, qacc: jax.Array) -> tuple[jax.Array, Any]:
    """Gradient of the solver's cost at ``qacc`` (as MJX's ``_update_gradient``) and context."""
    ctx = mjx_solver.Context.create(m, d.replace(qacc=qacc), grad=False)
    return ctx.Ma - d.qfrc_smooth - ctx.qfrc_constraint, ctx


def _exits_before_first_iteration(m: Any, d: Any) -> jax.Array:
    """MJX's own stopping test, evaluated on the solver's initial guess (primal values)."""
    qacc = d.qacc_smooth
    if not m.opt.disableflags & DisableBit.WARMSTART:
        warm = mjx_solver.Context.create(m, d.replace(qacc=d.qacc_warmstart), grad=False)
        smooth = mjx_solver.Context.create(m, d.replace(qacc=d.qacc_smooth), grad=False)
        qacc = jnp.where(warm.cost < smooth.cost, d.qacc_warmstart, d.qacc_smooth)
    grad, _ = _cost_gradient(m, d, qacc)
    return mjx_solver._rescale(m, d, mjx_math.norm(grad)) < m.opt.tolerance


def _solve(m: Any, d: Any) -> Any:
    """MJX's ``solve`` with implicit tangents where its loop runs no iteration."""
    out = _ORIGINAL_SOLVE(m, d)
    if m.opt.iterations == 1:  # MJX then runs exactly one iteration, no loop
        return out
    primal = _stop(d)
    at_rest = _exits_before_first_iteration(m, primal)
    stop = jax.lax.stop_gradient
    x = stop(out.qacc)
    grad, _ = _cost_gradient(m, d, x)  # tangent: d grad / d theta at fixed x
    hessian = jax.jacfwd(lambda q: _cost_gradient(m, primal, q)[0])(x)
    newton = jnp.linalg.solve(hessian, grad)
    # Primal exactly out.qacc; tangent -H^-1 (d grad / d theta) where at rest.
    qacc = out.qacc + jnp.where(at_rest, (x - out.qacc) + (stop(newton) - newton), 0.0)
    _, ctx = _cost_gradient(m, d, qacc)

    def retangent(value: jax.Array, implicit: jax.Array) -> jax.Array:
        return jnp.where(at_rest, stop(value) + (implicit - stop(implicit)), value)

    return out.tree_replace(
        {
            "qacc": qacc,
            "qfrc_constraint": retangent(out.qfrc_constraint, ctx.qfrc_constraint),
            "_impl.efc_force": retangent(out._impl.efc_force, ctx.efc_force),
        }
    )


@contextlib.contextmanager
def solver_tangents() -> Iterator[None]:
    """While active, MJX steps traced in this process use the corrected solver tangents."""
    with _LOCK:
        previous = mjx_solver.solve
        mjx_solver.solve = _solve
        try:
            yield
        finally:
            mjx_solver.solve = previous
