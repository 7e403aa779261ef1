"""MJX on XLA's CPU backend with and without ``--xla_cpu_use_fusion_emitters=false``.

``jacobian_wrappers`` adds that flag to ``XLA_FLAGS`` when imported
(``jacobian_wrappers._xla_flags``). Each env runs twice in fresh processes
(the flag is read when JAX starts), with the flag and with
``DYNAMIC_SPARSITY_XLA_FLAGS=off``, alternating for ``--rounds`` rounds:
steps/s of ``PlaygroundVecEnv(jacobians=False)``, exact Jacobians/s of the
default ``PlaygroundVecEnv``, seconds to the first Jacobian step (compile),
and how far the two programs' Jacobians of the same first steps differ: the
largest difference relative to each Jacobian's largest element, and the
elements whose zero test ``|J| < 1e-15`` comes out differently (two
compilations of the same math, a reference for round-off).

    python benchmarks/xla_cpu_flags.py [--envs SwimmerSwimmer6 CheetahRun] [--n-envs 64]
        [--steps 20] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RECORD = 3  # first steps whose Jacobians both programs save


def child(env_name: str, n: int, steps: int, out: str) -> None:
    """Measure in this process (its XLA_FLAGS fixed at start) and write ``out``."""
    import jacobian_wrappers as jw

    rates, saved = {}, []
    for name, kwargs in (("step", {"jacobians": False}), ("exact", {})):
        venv = jw.PlaygroundVecEnv(env_name, n, seed=0, precision="float64", **kwargs)
        venv.reset()
        rng = np.random.default_rng(0)
        shape = (n, *venv.action_space.shape)
        start = time.perf_counter()
        venv.step(rng.uniform(-1, 1, shape))
        first = time.perf_counter() - start
        if name == "exact":
            saved.append(venv.last_transition["jacobian_state"])
        for _ in range(1, RECORD):
            venv.step(rng.uniform(-1, 1, shape))
            if name == "exact":
                saved.append(venv.last_transition["jacobian_state"])
        venv.warm_up()  # no compile inside the timed steps
        start = time.perf_counter()
        for _ in range(steps):
            venv.step(rng.uniform(-1, 1, shape))
        rates[name] = n * steps / (time.perf_counter() - start)
        rates[f"{name} first step s"] = first
    np.save(out + ".npy", np.stack(saved))
    Path(out + ".json").write_text(json.dumps({**rates, "flags": os.environ.get("XLA_FLAGS")}))


def _run(env_name: str, n: int, steps: int, flag: bool, out: str) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if not flag:
        env["DYNAMIC_SPARSITY_XLA_FLAGS"] = "off"
    env.setdefault("DYNAMIC_SPARSITY_CACHE_DIR", "off")  # time the compile too
    cmd = [sys.executable, __file__, "--child", env_name, str(n), str(steps), out]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return json.loads(Path(out + ".json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["SwimmerSwimmer6", "CheetahRun"])
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(
        "| env | step/s with | without | ratio | Jacobians/s with | without | ratio "
        "| first Jacobian step s (with / without) | max rel diff J | zero flips at 1e-15 |"
    )
    print("|---" * 10 + "|")
    for name in args.envs:
        runs: dict[bool, list[dict]] = {True: [], False: []}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for flag in (True, False):
                    out = f"{tmp}/{flag}{r}"
                    runs[flag].append(_run(name, args.n_envs, args.steps, flag, out))
            with_j, without_j = np.load(f"{tmp}/True0.npy"), np.load(f"{tmp}/False0.npy")
        med = {
            f: {k: float(np.median([x[k] for x in v])) for k in v[0] if k != "flags"}
            for f, v in runs.items()
        }
        scale = np.abs(without_j).max(axis=(-2, -1), keepdims=True)
        rel = float((np.abs(with_j - without_j) / scale).max())
        flips = int(((np.abs(with_j) < 1e-15) != (np.abs(without_j) < 1e-15)).sum())
        w, wo = med[True], med[False]
        print(
            f"| {name} | {w['step']:,.0f} | {wo['step']:,.0f} | {w['step'] / wo['step']:.1f} "
            f"| {w['exact']:,.0f} | {wo['exact']:,.0f} | {w['exact'] / wo['exact']:.1f} "
            f"| {w['exact first step s']:.0f} / {wo['exact first step s']:.0f} "
            f"| {rel:.1e} | {flips} of {with_j.size} |",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main()
