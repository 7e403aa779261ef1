"""Data set throughput: collection against the VecEnv's own rate, and reading back.

1. Collection: ``PlaygroundVecEnv`` stepping with float64 Jacobians and random
   actions, alone (``vec``) against :func:`jacobian_wrappers.collect` writing
   every transition to an HDF5 file (``collect``), in alternating rounds on the
   same env; the ratio is what storage and policy cost.
2. Reading: a data set of ``--read-rows`` rows built from the real collected
   transitions (tiled, so compressibility is real) is streamed back chunk by
   chunk, all arrays, from a warm page cache; GB/s of uncompressed arrays, for
   each compression.

    python benchmarks/dataset_io.py [--env CheetahRun] [--n-envs 64] [--steps 8192]
        [--read-rows 200000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import jacobian_wrappers as jw


def _vec_rate(env: jw.PlaygroundVecEnv, steps: int) -> float:
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    env.reset()
    start = time.perf_counter()
    for _ in range(steps // env.num_envs):
        env.step(rng.uniform(low, high, (env.num_envs, *low.shape)).astype(low.dtype))
    return (steps // env.num_envs) * env.num_envs / (time.perf_counter() - start)


def _collect_rate(env: jw.PlaygroundVecEnv, steps: int, path: Path) -> float:
    result = jw.collect(env, steps, path, overwrite=True)
    return result.steps_per_second


def _build(
    source: Path, path: Path, rows: int, compression: str | None, checksums: bool = True
) -> int:
    with jw.TransitionReader(source) as r:
        data = {k: r.read(k) for k in r.columns}
        meta = r.meta
    n = len(data["state"])
    with jw.TransitionWriter(
        path, meta, compression=compression, overwrite=True, checksums=checksums
    ) as w:
        for start in range(0, rows, n):
            take = min(n, rows - start)
            w.append({k: v[:take] for k, v in data.items()})
    return path.stat().st_size


def _checksum_cost(source: Path, tmp: Path, rows: int, rounds: int) -> None:
    """Write and read GB/s with and without Fletcher-32, alternating, median of rounds."""
    rates: dict[bool, dict[str, list[float]]] = {
        flag: {"write": [], "read": []} for flag in (True, False)
    }
    for _ in range(rounds):
        for flag in (True, False):
            path = tmp / f"checksums_{flag}.h5"
            start = time.perf_counter()
            _build(source, path, rows, None, checksums=flag)
            seconds = time.perf_counter() - start
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no checksums" is the point here
                with jw.TransitionReader(path) as r:
                    nbytes = r.nbytes
                rates[flag]["read"].append(_read_rate(path))
            rates[flag]["write"].append(nbytes / seconds / 1e9)
            os.remove(path)
    print(f"checksums (Fletcher-32 per chunk), {rows} rows, uncompressed, median of {rounds}:")
    for what in ("write", "read"):
        on = statistics.median(rates[True][what])
        off = statistics.median(rates[False][what])
        print(
            f"  {what:<5} with {on:5.2f} GB/s, without {off:5.2f} GB/s "
            f"({100 * (off / on - 1):+.1f}% time with checksums)"
        )


def _read_rate(path: Path) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # files written without checksums, on purpose
        reader = jw.TransitionReader(path)
    with reader as r:
        nbytes = r.nbytes
        for _ in r.iter_chunks():  # warm the page cache
            pass
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in r.iter_chunks():
                pass
            times.append(time.perf_counter() - start)
    return nbytes / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CheetahRun")
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8192, help="transitions per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--read-rows", type=int, default=200_000)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()

    env = jw.PlaygroundVecEnv(args.env, args.n_envs, precision="float64")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        data = tmp / "collected.h5"
        _vec_rate(env, 2 * args.n_envs)  # compile
        vec, col = [], []
        for _ in range(args.rounds):
            vec.append(_vec_rate(env, args.steps))
            col.append(_collect_rate(env, args.steps, data))
        v, c = statistics.median(vec), statistics.median(col)
        print(f"{args.env}, {args.n_envs} envs, float64 Jacobians, random policy:")
        print(f"  PlaygroundVecEnv alone  {v:8.0f} Jacobians/s")
        print(f"  collect() to HDF5       {c:8.0f} transitions/s  ({100 * c / v:.0f}% of the env)")
        print(f"reading {args.read_rows} rows back (all arrays, warm page cache):")
        for compression in ("lzf", None, "gzip"):
            path = tmp / f"read_{compression}.h5"
            size = _build(data, path, args.read_rows, compression)
            with jw.TransitionReader(path) as r:
                raw = r.nbytes
            rate = _read_rate(path)
            print(
                f"  compression={compression!s:<5} file {size / 1e9:5.2f} GB "
                f"(arrays {raw / 1e9:.2f} GB, ratio {raw / size:4.1f}x)  read {rate:5.2f} GB/s"
            )
            os.remove(path)
        _checksum_cost(data, tmp, args.read_rows, args.rounds)


if __name__ == "__main__":
    main()
