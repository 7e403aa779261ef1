"""Where the time of an exact float64 Jacobian goes, per env: the constraint solver under jacfwd.

For each env, on a batch of states after ``--warmup`` random steps (contacts
included), float64, measured side by side (alternating rounds, median):

* ``step``: the jitted, vmapped step alone (no Jacobian);
* ``unrolled``: ``vmap(jacfwd(step))`` with tangents through every solver
  iteration (``jacobian_method="unrolled"``);
* ``implicit``: the same with the solver run on primal values and its tangent
  from one linear solve at the solution (no recomputation of unverified ones);
* ``solver share``: ``1 - implicit / unrolled``, the part of the unrolled
  Jacobian's time spent differentiating solver iterations.

And what the solver does on those states, per physics substep: Newton
iterations (mean over envs, and the batch maximum, which is what a vmapped
``while_loop`` runs for every env), the share of solves stopped by the
iteration cap (``opt.iterations``), the share whose implicit tangent is
verified exact (:mod:`jacobian_wrappers._solver_tangent`), active constraint
rows and contacts. The line search always runs ``ls_iterations`` rounds of 3
evaluations under ``vmap`` (its loop is a scan of ``cond``), printed too.

    python benchmarks/jacobian_profile.py [--envs WalkerRun SwimmerSwimmer6] [--n-envs 64]
        [--warmup 30] [--seconds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from jacobian_throughput import interleaved_rates

import jacobian_wrappers as jw
from jacobian_wrappers import _solver_tangent as st
from jacobian_wrappers.simulator import active_contacts


def _batch(sim: jw.Simulator, n: int, warmup: int, seed: int = 0):
    """States of ``n`` envs after ``warmup`` random steps, and the next actions."""
    rng = np.random.default_rng(seed)
    with sim.scope():
        state = sim.batch_reset(jax.random.split(jax.random.PRNGKey(seed), n))
        step = jax.jit(jax.vmap(lambda s, a: sim.transition(s, a, False).state))
        for _ in range(warmup):
            state = step(state, jnp.asarray(rng.uniform(-1, 1, (n, sim.action_size))))
        return state, jnp.asarray(rng.uniform(-1, 1, (n, sim.action_size)), dtype=sim.dtype)


def _solver_stats(sim: jw.Simulator, state, actions) -> dict[str, float]:
    """Per-substep solver statistics of one control step of the batch (primal only)."""
    from mujoco import mjx
    from mujoco.mjx._src import solver as mjx_solver

    m, iterations = sim.env.mjx_model, sim.env.mj_model.opt.iterations

    def solve(m, d):  # MJX's loop (st._solve_primal); iterations and flag in solver_niter
        ctx, verified = st._solve_primal(m, d)
        code = ctx.solver_niter * 2 + verified.astype(jnp.int32)
        return d.tree_replace(
            {
                "qacc": ctx.qacc,
                "qfrc_constraint": ctx.qfrc_constraint,
                "_impl.efc_force": ctx.efc_force,
                "_impl.solver_niter": code.astype(d._impl.solver_niter.dtype),
            }
        )

    def substeps(data, ctrl):
        def body(d, _):
            d = mjx.step(m, d.replace(ctrl=ctrl.astype(d.ctrl.dtype)))
            impl = d._impl
            active = jnp.sum(impl.efc_force != 0)
            return d, (impl.solver_niter, active, active_contacts(d))

        return jax.lax.scan(body, data, None, length=sim.env.n_substeps)[1]

    original = mjx_solver.solve
    mjx_solver.solve = solve
    try:
        with sim.scope():
            code, active, contacts = jax.device_get(
                jax.jit(jax.vmap(substeps))(state.data, actions)
            )
    finally:
        mjx_solver.solve = original
    niter, verified = code // 2, code % 2
    return {
        "iterations": float(niter.mean()),
        "batch max": float(niter.max(axis=0).mean()),  # what the vmapped loop runs
        "capped": float((niter >= iterations).mean()),
        "verified": float(verified.mean()),
        "active rows": float(active.mean()),
        "contacts": float(contacts.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(jw.STUDY_ENVS))
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    n = args.n_envs
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, float64, {n} envs")
    print(
        "| env | substeps | iterations (cap) | ls_iterations | step ms | unrolled ms "
        "| implicit ms | solver share | Newton its/substep | batch max | capped "
        "| verified | active rows | contacts |"
    )
    print("|---" * 14 + "|")
    for name in args.envs:
        print(_profile(name, n, args.warmup, args.seconds), flush=True)


def _profile(name: str, n: int, warmup: int, seconds: float) -> str:
    """One table row for env ``name``."""
    sim = jw.get_simulator(name, "float64")
    state, actions = _batch(sim, n, warmup)

    def program(jacobian: bool, method: str = "unrolled"):
        fn = jax.jit(jax.vmap(lambda st, a: sim.transition(st, a, jacobian, method)))
        run = sim.scoped(fn)
        return lambda: jax.block_until_ready(run(state, actions).s_next)

    fns = {"step": program(False), "unrolled": program(True), "implicit": program(True, "implicit")}
    rates = interleaved_rates(fns, dict.fromkeys(fns, 1), len(fns) * seconds)
    ms = {k: 1e3 / v for k, v in rates.items()}
    stats = _solver_stats(sim, state, actions)
    opt = sim.env.mj_model.opt
    return (
        f"| {name} | {sim.env.n_substeps} | {opt.iterations} | {opt.ls_iterations} "
        f"| {ms['step']:.1f} | {ms['unrolled']:.1f} | {ms['implicit']:.1f} "
        f"| {1 - ms['implicit'] / ms['unrolled']:.0%} | {stats['iterations']:.2f} "
        f"| {stats['batch max']:.2f} | {stats['capped']:.0%} | {stats['verified']:.0%} "
        f"| {stats['active rows']:.1f} | {stats['contacts']:.2f} |"
    )


if __name__ == "__main__":
    main()
