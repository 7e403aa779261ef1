"""Env steps/s and Jacobians/s of PlaygroundVecEnv against its bound and MuJoCo's FD.

For each env and batch size, measured side by side in one run:

* ``vec+jac``: ``PlaygroundVecEnv(jacobians=True)`` -- steps, Jacobians, auto-reset,
  host transfer and info dicts;
* ``vec``: the same VecEnv with ``jacobians=False``;
* ``bound``: a hand-written ``jax.jit(jax.vmap(jax.jacfwd(step)))`` on device
  arrays, no host transfer: the bound for our overhead;
* ``mjd_FD``: MuJoCo's C ``mujoco.mjd_transitionFD`` (centered, one thread) on
  the same model, one Jacobian per call (a control step is one physics step
  for both envs here).

The three JAX variants are timed in alternating rounds (median of 5), so
their ratios see the same machine load.

    python benchmarks/jacobian_throughput.py [--envs CartpoleBalance CheetahRun]
        [--n-envs 1 8 64] [--seconds 3] [--precision float32]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

import jacobian_wrappers as jw


def _time_per_call(fn, seconds: float) -> float:
    """Seconds per call of ``fn`` over about ``seconds`` (at least 3 calls)."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
        fn()
        calls += 1
    return elapsed / calls


def interleaved_rates(fns: dict, items: dict, seconds: float, rounds: int = 5) -> dict:
    """Items/s of each callable, measured in alternating rounds (median of rounds).

    Alternating puts every variant under the same machine load, so the
    ratios printed are fair even on a shared, noisy machine.
    """
    for fn in fns.values():  # compile and warm up
        fn()
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_time_per_call(fn, seconds / rounds))
    return {name: items[name] / float(np.median(t)) for name, t in times.items()}


def vec_stepper(env_name: str, n: int, jacobians: bool, precision: str):
    venv = jw.PlaygroundVecEnv(env_name, n, seed=0, jacobians=jacobians, precision=precision)
    venv.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (n, *venv.action_space.shape)).astype(venv.sim.dtype)
    return lambda: venv.step(actions)


def bound_stepper(env_name: str, n: int, precision: str):
    """Hand-written ``jit(vmap(jacfwd(step)))`` of the state, on device arrays."""
    sim = jw.get_simulator(env_name, precision)
    env, space = sim.env, sim.space
    with sim.scope():
        state = sim.batch_reset(jax.random.split(jax.random.PRNGKey(0), n))
        s = jax.vmap(space.get)(state.data)
        a = jnp.zeros((n, sim.action_size), dtype=s.dtype)

        def step(x, st):
            data = space.set(st.data, x[: space.dim])
            return space.get(env.step(st.replace(data=data), x[space.dim :]).data)

        jac = jax.jit(jax.vmap(jax.jacfwd(step)))
        x = jnp.concatenate([s, a], axis=1)

    def run():
        with sim.scope():
            jac(x, state).block_until_ready()

    return run


def bench_fd(env_name: str, seconds: float) -> float:
    sim = jw.get_simulator(env_name, "float64")
    m = sim.env.mj_model
    with sim.scope():
        st = sim.reset(jax.random.PRNGKey(0))
        d = mjx.get_data(m, st.data)
    mujoco.mj_forward(m, d)
    ns = 2 * m.nv + m.na
    a_mat, b_mat = np.zeros((ns, ns)), np.zeros((ns, m.nu))
    per_call = _time_per_call(
        lambda: mujoco.mjd_transitionFD(m, d, 1e-6, 1, a_mat, b_mat, None, None), seconds
    )
    return 1.0 / per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--n-envs", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--precision", default="float32", choices=jw.PRECISIONS)
    args = parser.parse_args()

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, {args.precision}, "
        f"mujoco {mujoco.__version__}"
    )
    header = (
        "| env | n_envs | vec steps/s | vec+jac Jacobians/s | bound Jacobians/s "
        "| vec+jac / bound | vec+jac / vec | mjd_FD Jacobians/s | vec+jac / mjd_FD |"
    )
    print(header)
    print("|---" * 9 + "|")
    for env_name in args.envs:
        fd = bench_fd(env_name, args.seconds)
        for n in args.n_envs:
            rates = interleaved_rates(
                {
                    "vec": vec_stepper(env_name, n, False, args.precision),
                    "vec+jac": vec_stepper(env_name, n, True, args.precision),
                    "bound": bound_stepper(env_name, n, args.precision),
                },
                {"vec": n, "vec+jac": n, "bound": n},
                3 * args.seconds,
            )
            plain, with_jac, bound = rates["vec"], rates["vec+jac"], rates["bound"]
            print(
                f"| {env_name} | {n} | {plain:,.0f} | {with_jac:,.0f} | {bound:,.0f} "
                f"| {with_jac / bound:.2f} | {with_jac / plain:.3f} | {fd:,.0f} "
                f"| {with_jac / fd:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
