"""Env steps/s and Jacobians/s of PlaygroundVecEnv against its bound and MuJoCo's FD.

For each env and batch size, measured side by side in one run:

* ``vec+jac``: ``PlaygroundVecEnv(jacobians=True)`` -- steps, Jacobians, auto-reset,
  host transfer and info dicts;
* ``vec``: the same VecEnv with ``jacobians=False``;
* ``bound``: a hand-written ``jax.jit(jax.vmap(jax.jacfwd(step)))`` on device
  arrays, no host transfer: the bound for our overhead;
* ``FD 1t`` / ``FD 2t``: MuJoCo's C finite differences of the same *control*
  step (all ``n_substeps`` physics steps, centred, chained;
  ``jacobian_wrappers.mujoco_fd``) on 1 and 2 threads, on the batch's states
  after 20 random steps (contacts included), float64.

The variants are timed in alternating rounds (median of 5), so their ratios
see the same machine load.

    python benchmarks/jacobian_throughput.py [--envs CartpoleBalance CheetahRun]
        [--n-envs 1 16 64] [--seconds 3] [--precision float32]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

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


def fd_stepper(env_name: str, n: int, n_threads: int):
    """MuJoCo's C finite differences of the control step on ``n`` recorded states."""
    from jacobian_wrappers.mujoco_fd import FiniteDifferenceJacobian

    venv = jw.PlaygroundVecEnv(env_name, n, seed=0, jacobians=False, precision="float64")
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(20):
        venv.step(rng.uniform(-1, 1, (n, *venv.action_space.shape)))
    ctrls = rng.uniform(-1, 1, (n, *venv.action_space.shape))
    states = venv.states
    warm = venv.warmstarts
    sim = venv.sim
    fd = FiniteDifferenceJacobian(sim.env.mj_model, sim.env.n_substeps, n_threads=n_threads)
    return lambda: fd(states, ctrls, warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--n-envs", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--precision", default="float32", choices=jw.PRECISIONS)
    args = parser.parse_args()

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, {args.precision}, "
        f"mujoco {mujoco.__version__}"
    )
    header = (
        "| env | n_envs | vec steps/s | vec+jac Jacobians/s | bound Jacobians/s "
        "| FD 1t Jacobians/s | FD 2t Jacobians/s | vec+jac / bound | vec+jac / FD 2t "
        "| FD 2t / FD 1t |"
    )
    print(header)
    print("|---" * 10 + "|")
    for env_name in args.envs:
        for n in args.n_envs:
            fns = {
                "vec": vec_stepper(env_name, n, False, args.precision),
                "vec+jac": vec_stepper(env_name, n, True, args.precision),
                "bound": bound_stepper(env_name, n, args.precision),
                "fd1": fd_stepper(env_name, n, 1),
                "fd2": fd_stepper(env_name, n, 2),
            }
            r = interleaved_rates(fns, dict.fromkeys(fns, n), len(fns) * args.seconds)
            print(
                f"| {env_name} | {n} | {r['vec']:,.0f} | {r['vec+jac']:,.0f} "
                f"| {r['bound']:,.0f} | {r['fd1']:,.0f} | {r['fd2']:,.0f} "
                f"| {r['vec+jac'] / r['bound']:.2f} | {r['vec+jac'] / r['fd2']:.2f} "
                f"| {r['fd2'] / r['fd1']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
