"""How forward-mode tangents pass MJX's constraint solver: unrolled, or implicit at the solution.

MJX's solver (Newton on the convex cost of the soft constraints, a ``while_loop``
capped at ``opt.iterations``) is where ``jax.jacfwd`` spends most of its time:
every iteration's line search, Hessian and Cholesky factor carry one tangent
per Jacobian column. Two methods, chosen with :func:`solver_tangents` while a
step is *traced* (jitted programs keep what they were traced with):

``"unrolled"``
    MJX's own solver, tangents through every iteration that runs: the
    derivative of the capped solver, which is what a finite difference of the
    step measures. One correction: where the loop stops *before its first
    iteration* (the initial guess already optimal, e.g. FingerSpin's
    friction-loss hinge at rest, about half of all random-policy steps) the
    unrolled tangent is that of the initial guess (165.8 against 0.079 from a
    central difference for ``d qvel:hinge / d qvel:hinge``). The step is smooth
    there: any perturbation makes the solver run and converge, so the tangent
    is replaced by the implicit one below, primal values bit-identical.

``"implicit"``
    The solver runs on primal values only (the same operations as MJX's, so
    the same next state), then the tangent of its solution ``x`` comes from
    the implicit function theorem, ``dx = -H^-1 (d grad / d theta)`` with ``H``
    the cost's Hessian at ``x`` (its active set held): one linear solve instead
    of differentiating every iteration (4.5-7x faster on the contact envs).
    It equals the unrolled tangent exactly (to round-off) when the solver's
    *last* iteration was a full Newton step inside one piece of the piecewise
    quadratic cost (every constraint row in the same zone, inactive, quadratic
    or friction-loss linear, before and after it): that step then lands on the
    piece's minimiser whatever it started from, so its derivative is that of
    the solution. Where this cannot be verified (the iteration cap stopped the
    solver between pieces, as on WalkerRun; an elliptic cone or the CG solver)
    the substep is counted in ``data._impl.solver_niter``, a field MJX's
    solver never writes; :func:`unverified_substeps` reads the count and
    the caller recomputes those transitions with ``"unrolled"``.

MJX exposes no hook for either, so :func:`solver_tangents` swaps MJX's
``solver.solve`` while a step is traced.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
from mujoco.mjx._src import math as mjx_math
from mujoco.mjx._src import solver as mjx_solver
from mujoco.mjx._src.types import ConeType, DisableBit, SolverType

from jacobian_wrappers._validation import check_jacobian_method

__all__ = ["reset_unverified", "solver_tangents", "unverified_substeps"]

_ORIGINAL_SOLVE = mjx_solver.solve
_LOCK = threading.RLock()
# A sanity bound on the last step's length against the full Newton step (relative), with
# room for the round-off of ``qacc`` itself; the zones are the real test (see _solve_primal).
_FULL_STEP_RTOL, _ROUNDOFF_RTOL = 1e-6, 1e-12


def _stop(tree: Any) -> Any:
    """``tree`` without tangents (static numpy leaves untouched)."""
    return jax.tree.map(lambda x: jax.lax.stop_gradient(x) if isinstance(x, jax.Array) else x, tree)


def _retangent(value: jax.Array, tangent_from: jax.Array) -> jax.Array:
    """``value``'s primal with ``tangent_from``'s tangent."""
    stop = jax.lax.stop_gradient
    return stop(value) + (tangent_from - stop(tangent_from))


def _cost_gradient(m: Any, d: Any, qacc: jax.Array) -> tuple[jax.Array, Any]:
    """Gradient of the solver's cost at ``qacc`` (as MJX's ``_update_gradient``) and context."""
    ctx = mjx_solver.Context.create(m, d.replace(qacc=qacc), grad=False)
    return ctx.Ma - d.qfrc_smooth - ctx.qfrc_constraint, ctx


def _initial_guess(m: Any, d: Any) -> jax.Array:
    """The solver's starting point: the warm start or the smooth acceleration (MJX's rule)."""
    if m.opt.disableflags & DisableBit.WARMSTART:
        return d.qacc_smooth
    warm = mjx_solver.Context.create(m, d.replace(qacc=d.qacc_warmstart), grad=False)
    smooth = mjx_solver.Context.create(m, d.replace(qacc=d.qacc_smooth), grad=False)
    return jnp.where(warm.cost < smooth.cost, d.qacc_warmstart, d.qacc_smooth)


def _implicit_tangent(m: Any, d: Any, x: jax.Array) -> tuple[jax.Array, Any]:
    """``x`` (primal) with the implicit tangent ``-H^-1 (d grad / d theta)``, and its context."""
    stop = jax.lax.stop_gradient
    x = stop(x)
    grad, _ = _cost_gradient(m, d, x)  # tangent: d grad / d theta at fixed x
    primal = _stop(d)
    hessian = jax.jacfwd(lambda q: _cost_gradient(m, primal, q)[0])(x)
    newton = jnp.linalg.solve(hessian, grad)
    qacc = x + (stop(newton) - newton)
    _, ctx = _cost_gradient(m, d, qacc)
    return qacc, ctx


# ------------------------------------------------------------------ unrolled
def _exits_before_first_iteration(m: Any, d: Any) -> jax.Array:
    """MJX's own stopping test, evaluated on the solver's initial guess (primal values)."""
    grad, _ = _cost_gradient(m, d, _initial_guess(m, d))
    return mjx_solver._rescale(m, d, mjx_math.norm(grad)) < m.opt.tolerance


def _solve_unrolled(m: Any, d: Any) -> Any:
    """MJX's ``solve`` with implicit tangents where its loop runs no iteration."""
    out = _ORIGINAL_SOLVE(m, d)
    if m.opt.iterations == 1:  # MJX then runs exactly one iteration, no loop
        return out
    at_rest = _exits_before_first_iteration(m, _stop(d))
    qacc, ctx = _implicit_tangent(m, d, out.qacc)

    def pick(value: jax.Array, implicit: jax.Array) -> jax.Array:
        return jnp.where(at_rest, _retangent(value, implicit), value)

    return out.tree_replace(
        {
            "qacc": pick(out.qacc, qacc),
            "qfrc_constraint": pick(out.qfrc_constraint, ctx.qfrc_constraint),
            "_impl.efc_force": pick(out._impl.efc_force, ctx.efc_force),
        }
    )


# ------------------------------------------------------------------ implicit
def _zones(m: Any, d: Any, jaref: jax.Array) -> jax.Array:
    """Piece of the cost each constraint row is in at ``Jaref`` (as ``_update_constraint``).

    0 inactive, 1 quadratic, 2 and 3 the two linear zones of a friction loss.
    """
    impl = d._impl
    zone = (jaref < 0).at[: impl.ne + impl.nf].set(True).astype(jnp.int32)
    has_floss = m._impl.dof_hasfrictionloss.any() or m._impl.tendon_hasfrictionloss.any()
    if has_floss and not m.opt.disableflags & DisableBit.FRICTIONLOSS:
        f = impl.efc_frictionloss
        r = 1.0 / (impl.efc_D + (impl.efc_D == 0.0) * mujoco.mjMINVAL)
        zone = jnp.where((jaref <= -r * f) & (f > 0), 2, zone)
        zone = jnp.where((jaref >= r * f) & (f > 0), 3, zone)
    return zone


def _solve_primal(m: Any, d: Any) -> tuple[Any, jax.Array]:
    """MJX's Newton solve on primal values, and whether its last step verifies the IFT tangent.

    The loop is MJX's (``solver.solve``), the same operations in the same order,
    so the primal result is MJX's. It also carries one flag: whether the last
    iteration moved and left every row in its zone (True when no iteration ran:
    the guess is optimal, and the implicit tangent is the right one there, see
    the module docstring). Each row's zone changes at most once along a line,
    so equal zones at both ends put the whole step inside one quadratic piece,
    whose minimiser along the Newton direction is the full step: the line
    search's first candidate, accepted there. A step from the smooth
    acceleration with no row active before or after it is verified too: the
    solution is then ``qacc_smooth`` itself (no constraint force), whose
    tangent the step carries whether the (zero) Newton step is taken or not.
    """
    d = d.replace(qacc=_initial_guess(m, d))

    def cond(carry: tuple[Any, jax.Array]) -> jax.Array:
        ctx = carry[0]
        improvement = mjx_solver._rescale(m, d, ctx.prev_cost - ctx.cost)
        gradient = mjx_solver._rescale(m, d, mjx_math.norm(ctx.grad))
        done = ctx.solver_niter >= m.opt.iterations
        done |= improvement < m.opt.tolerance
        done |= gradient < m.opt.tolerance
        return ~done

    def body(carry: tuple[Any, jax.Array]) -> tuple[Any, jax.Array]:
        ctx = carry[0]
        before, start, search = _zones(m, d, ctx.Jaref), ctx.qacc, ctx.search
        ctx = mjx_solver._linesearch(m, d, ctx)
        ctx = mjx_solver._update_constraint(m, d, ctx)
        ctx = mjx_solver._update_gradient(m, d, ctx)
        ctx = ctx.replace(search=-ctx.Mgrad, solver_niter=ctx.solver_niter + 1)
        after = _zones(m, d, ctx.Jaref)
        size = mjx_math.norm(search)
        miss = mjx_math.norm(ctx.qacc - start - search)
        full = miss <= _FULL_STEP_RTOL * size + _ROUNDOFF_RTOL * mjx_math.norm(start)
        moved = jnp.any(ctx.qacc != start) & (size > 0)
        newton = full & moved & jnp.all(before == after)
        # Started at the smooth acceleration with no constraint row active, and still none:
        # the solution is qacc_smooth, whose own tangent is the one the step carries.
        free = jnp.all(start == d.qacc_smooth) & jnp.all(before == 0) & jnp.all(after == 0)
        return ctx, newton | free

    carry = (mjx_solver.Context.create(m, d), jnp.array(True))
    if m.opt.iterations == 1:
        carry = body(carry)
    else:
        carry = jax.lax.while_loop(cond, body, carry)
    return carry


def _solve_implicit(m: Any, d: Any) -> Any:
    """Primal solve, implicit tangent; unverified substeps counted in ``_impl.solver_niter``."""
    newton = m.opt.solver == SolverType.NEWTON and m.opt.cone == ConeType.PYRAMIDAL
    if not newton:  # the verification holds for Newton on pyramidal cones only
        out = _solve_unrolled(m, d)
        return out.tree_replace({"_impl.solver_niter": _count(d, jnp.array(False))})
    ctx, verified = _solve_primal(m, _stop(d))
    qacc, tangent = _implicit_tangent(m, d, ctx.qacc)
    return d.tree_replace(
        {
            "qacc": qacc,
            "qfrc_constraint": _retangent(ctx.qfrc_constraint, tangent.qfrc_constraint),
            "_impl.efc_force": _retangent(ctx.efc_force, tangent.efc_force),
            "_impl.solver_niter": _count(d, verified),
        }
    )


def _count(d: Any, verified: jax.Array) -> jax.Array:
    """The unverified-substep count of ``d``, plus one unless ``verified``."""
    count = d._impl.solver_niter
    return count + (~verified).astype(count.dtype)


_SOLVES = {"unrolled": _solve_unrolled, "implicit": _solve_implicit}


def reset_unverified(data: Any) -> Any:
    """``data`` with the count of unverified substeps set to 0 (before a step)."""
    return data.tree_replace({"_impl.solver_niter": jnp.zeros_like(data._impl.solver_niter)})


def unverified_substeps(data: Any) -> jax.Array:
    """Substeps since :func:`reset_unverified` whose implicit tangent is not verified exact."""
    return data._impl.solver_niter


@contextlib.contextmanager
def solver_tangents(method: str = "unrolled") -> Iterator[None]:
    """While active, MJX steps traced in this process carry solver tangents by ``method``.

    Args:
        method: ``"unrolled"`` or ``"implicit"`` (module docstring).

    Raises:
        ValueError: Unknown ``method``.
    """
    solve = _SOLVES[check_jacobian_method(method)]
    with _LOCK:
        previous = mjx_solver.solve
        mjx_solver.solve = solve
        try:
            yield
        finally:
            mjx_solver.solve = previous
