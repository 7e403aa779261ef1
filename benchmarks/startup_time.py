"""Seconds from a new process to the first Jacobian, with a cold and a warm JAX cache.

Each measurement is a fresh Python process; the cache directory starts empty, so
the first start compiles and the second loads from the persistent cache.
Without ``--n-envs``: the single env (``JacobianWrapper(PlaygroundEnv)``) to its
first step's Jacobian. With ``--n-envs N``: ``PlaygroundVecEnv(env, N).warm_up()``
(every program its configuration runs), at ``--precision``: the cold compile
and warm start of the GPU targets (docs/performance.md).

    python benchmarks/startup_time.py [--envs CartpoleBalance CheetahRun]
    python benchmarks/startup_time.py --n-envs 4096 --precision float64 --envs CheetahRun
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

_CHILD = """
import time
t0 = time.perf_counter()
import numpy as np
import jacobian_wrappers as jw
env = jw.JacobianWrapper(jw.PlaygroundEnv({name!r}))
env.reset(seed=0)
info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))[4]
assert info["jacobian_state"].ndim == 2
print(f"{{time.perf_counter() - t0:.2f}}")
"""

_VEC_CHILD = """
import time
t0 = time.perf_counter()
import jacobian_wrappers as jw
venv = jw.PlaygroundVecEnv({name!r}, {n}, precision={precision!r})
venv.warm_up()
print(f"{{time.perf_counter() - t0:.2f}}")
"""


def first_jacobian_seconds(
    name: str, cache_dir: str, n: int | None = None, precision: str = "float64"
) -> float:
    env = {**os.environ, "DYNAMIC_SPARSITY_CACHE_DIR": cache_dir}
    code = (
        _CHILD.format(name=name)
        if n is None
        else _VEC_CHILD.format(name=name, n=n, precision=precision)
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--n-envs", type=int, default=None, help="a PlaygroundVecEnv's warm_up")
    parser.add_argument("--precision", default="float64", choices=("float32", "float64"))
    args = parser.parse_args()
    what = "single env" if args.n_envs is None else f"{args.n_envs} envs, {args.precision}"
    print(f"| env ({what}) | first start (cold cache) s | second start (warm cache) s |")
    print("|---|---|---|")
    for name in args.envs:
        with tempfile.TemporaryDirectory() as cache:
            cold = first_jacobian_seconds(name, cache, args.n_envs, args.precision)
            warm = first_jacobian_seconds(name, cache, args.n_envs, args.precision)
        print(f"| {name} | {cold:.1f} | {warm:.1f} |", flush=True)


if __name__ == "__main__":
    main()
