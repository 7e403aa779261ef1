"""Seconds from a new process to the first Jacobian, with a cold and a warm JAX cache.

Each measurement is a fresh Python process; the cache directory starts empty, so
the first start compiles and the second loads from the persistent cache.

    python benchmarks/startup_time.py [--envs CartpoleBalance CheetahRun]
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


def first_jacobian_seconds(name: str, cache_dir: str) -> float:
    env = {**os.environ, "DYNAMIC_SPARSITY_CACHE_DIR": cache_dir}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(name=name)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    args = parser.parse_args()
    print("| env | first start (cold cache) s | second start (warm cache) s |")
    print("|---|---|---|")
    for name in args.envs:
        with tempfile.TemporaryDirectory() as cache:
            cold = first_jacobian_seconds(name, cache)
            warm = first_jacobian_seconds(name, cache)
        print(f"| {name} | {cold:.1f} | {warm:.1f} |", flush=True)


if __name__ == "__main__":
    main()
