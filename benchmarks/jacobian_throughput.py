"""Env steps/s and Jacobians/s of PlaygroundVecEnv against its bound and MuJoCo's FD.

For each env and batch size, measured side by side in one run:

* ``exact``: ``PlaygroundVecEnv(jacobians=True)``, the default exact path (the
  constraint solver differentiated implicitly where verified, the other
  transitions recomputed unrolled) -- steps, Jacobians, auto-reset, host
  transfer and info dicts; ``recomputed`` is the share of its transitions
  recomputed;
* ``unrolled``: the same with ``jacobian_method="unrolled"`` (tangents through
  every solver iteration: the path before implicit differentiation);
* ``jitted``: the exact variant's own jitted step alone (device arrays in and
  out, no host transfer, no info dicts, no recomputation): the ceiling of what
  ``step()`` can deliver; ``full / jitted`` is the share reaching the user;
* ``collect``: ``jacobian_wrappers.collect`` of 64 vector steps of the exact
  variant into an HDF5 file (rows/s; the reset, the episode bookkeeping and
  the writer included);
* ``vec``: the same VecEnv with ``jacobians=False``;
* ``bound``: a hand-written ``jax.jit(jax.vmap(jax.jacfwd(step)))`` of MJX's
  plain step on device arrays, no host transfer: the bound of the unrolled path;
* ``FD 1t`` / ``FD 2t``: MuJoCo's C finite differences of the same *control*
  step (all ``n_substeps`` physics steps, centred, chained;
  ``jacobian_wrappers.mujoco_fd``) on 1 and 2 threads, on the batch's states
  after 20 random steps (contacts included), float64.

The variants are timed in alternating rounds (median of 5), so their ratios
see the same machine load.

    python benchmarks/jacobian_throughput.py [--envs CartpoleBalance CheetahRun ...]
        [--n-envs 1 16 64] [--seconds 3] [--precision float32] [--skip unrolled bound fd]

It runs unchanged on a GPU (``--n-envs 1024 4096 16384 --skip fd``).

(all eight study envs by default).
"""

from __future__ import annotations

import argparse
import tempfile
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


def vec_stepper(env_name: str, n: int, precision: str, **kwargs):
    """Steps of a ``PlaygroundVecEnv`` with fresh random actions; the env is the attribute."""
    venv = jw.PlaygroundVecEnv(env_name, n, seed=0, precision=precision, **kwargs)
    venv.reset()
    venv.warm_up()  # compiles the recomputation of unverified transitions too
    rng = np.random.default_rng(0)
    shape = (n, *venv.action_space.shape)

    def step() -> None:
        venv.step(rng.uniform(-1, 1, shape).astype(venv.sim.dtype))

    step.venv = venv
    return step


def jitted_stepper(env_name: str, n: int, precision: str, method=None):
    """The exact VecEnv's own jitted step on device arrays: no host work at all."""
    venv = jw.PlaygroundVecEnv(env_name, n, seed=0, precision=precision, jacobian_method=method)
    venv.reset()
    venv.warm_up()
    fn = venv._step_fns[True]  # the program step() runs
    with venv.sim.scope():
        actions = jax.device_put(
            np.random.default_rng(0).uniform(-1, 1, (n, *venv.action_space.shape))
        )
    carry = [venv._state, venv._keys, venv._elapsed]

    def step() -> None:
        *carry[:], host = fn(*carry, actions)
        jax.block_until_ready(host)

    return step


#: Vector steps per timed ``collect`` call (its file and reset cost spread over them).
COLLECT_STEPS = 64


def collect_stepper(env_name: str, n: int, precision: str, folder: str, method=None):
    """``collect`` of 64 vector steps of the exact VecEnv into an HDF5 file (rows per call)."""
    venv = jw.PlaygroundVecEnv(env_name, n, seed=0, precision=precision, jacobian_method=method)
    venv.reset()
    venv.warm_up()
    path = f"{folder}/{env_name}_{n}.h5"

    def step() -> None:
        jw.collect(venv, COLLECT_STEPS * n, path, overwrite=True)

    return step


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


VARIANTS = ("vec", "exact", "jitted", "collect", "unrolled", "bound", "fd1", "fd2")


def _steppers(
    env_name: str, n: int, precision: str, skip: list[str], folder: str, method=None
) -> dict:
    """The variants' step callables, those in ``skip`` left out (``"fd"``: both FDs).

    ``method`` is the exact variant's ``jacobian_method`` (``None``: the default).
    """
    makers = {
        "vec": lambda: vec_stepper(env_name, n, precision, jacobians=False),
        "exact": lambda: vec_stepper(env_name, n, precision, jacobian_method=method),
        "jitted": lambda: jitted_stepper(env_name, n, precision, method),
        "collect": lambda: collect_stepper(env_name, n, precision, folder, method),
        "unrolled": lambda: vec_stepper(env_name, n, precision, jacobian_method="unrolled"),
        "bound": lambda: bound_stepper(env_name, n, precision),
        "fd1": lambda: fd_stepper(env_name, n, 1),
        "fd2": lambda: fd_stepper(env_name, n, 2),
    }
    return {k: make() for k, make in makers.items() if k not in skip and k[:2] not in skip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(jw.STUDY_ENVS))
    parser.add_argument("--n-envs", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--precision", default="float32", choices=jw.PRECISIONS)
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["unrolled", "bound", "fd", "collect"],
        help="variants left out (each compiles its own programs: minutes per env in float64)",
    )
    parser.add_argument(
        "--jacobian-method",
        default=None,
        choices=["implicit", "unrolled"],
        help="the exact variant's method (default: the env's default for the precision)",
    )
    args = parser.parse_args()

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, {args.precision}, "
        f"mujoco {mujoco.__version__}"
    )
    print(
        "| env | n_envs | vec steps/s | exact Jacobians/s | recomputed | jitted alone "
        "Jacobians/s | exact / jitted | collect rows/s | collect / jitted "
        "| unrolled Jacobians/s | bound Jacobians/s | FD 1t Jacobians/s | FD 2t Jacobians/s "
        "| exact / unrolled | exact / FD 2t | FD 2t / FD 1t |"
    )
    print("|---" * 16 + "|")
    nan = float("nan")
    with tempfile.TemporaryDirectory() as folder:
        for env_name in args.envs:
            for n in args.n_envs:
                fns = _steppers(
                    env_name, n, args.precision, args.skip, folder, args.jacobian_method
                )
                items = dict.fromkeys(fns, n)
                items |= {"collect": COLLECT_STEPS * n} if "collect" in fns else {}
                r = dict.fromkeys(VARIANTS, nan)
                r |= interleaved_rates(fns, items, len(fns) * args.seconds)
                counts = fns["exact"].venv.jacobian_counts
                redo = counts["recomputed"] / max(1, counts["step"] + counts["recomputed"])
                cells = [r["vec"], r["exact"]]
                mid = [
                    r["jitted"],
                    r["exact"] / r["jitted"],
                    r["collect"],
                    r["collect"] / r["jitted"],
                ]
                ratios = [r["exact"] / r["unrolled"], r["exact"] / r["fd2"], r["fd2"] / r["fd1"]]
                rates = [r[k] for k in ("unrolled", "bound", "fd1", "fd2")]
                row = [f"{x:,.0f}" for x in cells] + [f"{redo:.1%}"]
                row += [_fmt(mid[0]), _pct(mid[1]), _fmt(mid[2]), _pct(mid[3])]
                row += [_fmt(x) for x in rates]
                row += ["-" if x != x else f"{x:.2f}" for x in ratios]
                print(f"| {env_name} | {n} | " + " | ".join(row) + " |", flush=True)


def _fmt(x: float) -> str:
    return "-" if x != x else f"{x:,.0f}"


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.0%}"


if __name__ == "__main__":
    main()
