"""How often a transition sits on a point where forward-mode autodiff needs care.

Per env, over ``--steps`` vector steps of ``--n-envs`` envs from reset (float64):

* **solver at rest**: the transitions whose Jacobian from plain ``jax.jacfwd``
  (MJX's solver as it is) differs from the corrected one
  (``jacobian_wrappers._solver_tangent``): the constraint solver stopped
  before its first iteration in some substep, so the plain tangent was that
  of its initial guess. Also the largest relative error this caused.
* **action on its bound**: the transitions with a flagged non-smooth column
  (``jacobian_nonsmooth``), under a uniform random policy and under SB3 PPO's
  initial policy (a unit Gaussian, clipped to the action box as SB3 does).

    python benchmarks/nonsmooth_frequency.py [--envs FingerSpin ...] [--steps 250] [--n-envs 16]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jacobian_wrappers as jw


def _plain_jacobian(sim: jw.Simulator):
    """``jacfwd`` of the un-wrapped step without the solver correction (the old path)."""
    space = sim.space

    def jac(state, action):
        def step_from(x):
            s = space.get(state.data)
            data = space.set(state.data, space.perturb(s, x[: space.tangent_dim]))
            new = sim.env.step(state.replace(data=data), action + x[space.tangent_dim :])
            s_out = space.get(new.data)
            return space.difference(jax.lax.stop_gradient(s_out), s_out)

        x0 = jnp.zeros(space.tangent_dim + sim.action_size, dtype=state.obs.dtype)
        return jax.jacfwd(step_from)(x0)

    return jac


def measure(env_name: str, steps: int, n_envs: int, seed: int) -> dict:
    sim = jw.get_simulator(env_name, "float64")
    rng = np.random.default_rng(seed)
    low, high = sim.action_low, sim.action_high
    with sim.scope():
        fixed = jax.jit(jax.vmap(lambda st, a: sim.transition(st, a, True, "unrolled")))
        plain = jax.jit(jax.vmap(_plain_jacobian(sim)))
        state = sim.batch_reset(jax.random.split(jax.random.PRNGKey(seed), n_envs))
        at_rest, worst, bound_random, bound_ppo = 0, 0.0, 0, 0
        t0 = time.perf_counter()
        for _ in range(steps):
            action = jnp.asarray(rng.uniform(low, high, (n_envs, sim.action_size)))
            out = fixed(state, action)
            ref = np.asarray(plain(state, action))
            jac = np.asarray(out.jacobian)
            err = np.abs(ref - jac).reshape(n_envs, -1) / (1.0 + np.abs(jac).reshape(n_envs, -1))
            differ = err.max(axis=1) > 1e-6
            at_rest += int(differ.sum())
            worst = max(worst, float(err.max()))
            bound_random += int(np.asarray(out.nonsmooth).any(axis=1).sum())
            gauss = np.clip(rng.normal(size=(n_envs, sim.action_size)), low, high)
            flags = sim.nonsmooth_columns  # the flag is a function of the written controls
            bound_ppo += int(np.asarray(jax.vmap(flags)(jnp.asarray(gauss))).any(axis=1).sum())
            state = out.state
        seconds = time.perf_counter() - t0
    n = steps * n_envs
    return {
        "at_rest": at_rest / n,
        "worst": worst,
        "bound_random": bound_random / n,
        "bound_ppo": bound_ppo / n,
        "n": n,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(jw.STUDY_ENVS))
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        "| env | transitions | solver at rest (plain jacfwd wrong) | its largest error "
        "| action on bound: random policy | action on bound: PPO's initial policy |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.envs:
        r = measure(name, args.steps, args.n_envs, args.seed)
        print(
            f"| {name} | {r['n']} | {100 * r['at_rest']:.1f}% | {r['worst']:.3g} "
            f"| {100 * r['bound_random']:.1f}% | {100 * r['bound_ppo']:.1f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
