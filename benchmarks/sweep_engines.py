"""Wall time of a Q4 sweep: Ray Tune on a local 2-CPU instance against a process pool.

The reference is the home-made pool that ``examples/train_world_models.py
--workers 2`` used before Ray replaced it: a ``ProcessPoolExecutor`` of
``spawn`` workers, one run per worker, one torch thread each. It is kept
here so the comparison can be rerun. Both engines train the same grid with
:func:`dynamic_sparsity.sweeps.run_job` (same data, same settings, fresh output folders), one
engine after the other, alternating over ``--rounds``; Ray's start-up and
shut-down are counted in its time. Target: Ray within 10 % of the pool.

    python benchmarks/sweep_engines.py [--rounds 2] [--epochs 5] [--seeds 1-2]
        [--losses state,state-jacobian] [--rows 20000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from dynamic_sparsity.sweeps import SweepJob, run_job, run_sweep
from world_models import TrainConfig

CACHE = Path.home() / ".cache" / "dynamic-sparsity" / "bench"


def data(rows: int) -> Path:
    """A float64 CartpoleBalance random-policy data set (collected once, then reused)."""
    path = CACHE / f"CartpoleBalance_{rows}.h5"
    if not path.exists():
        import jacobian_wrappers as jw

        path.parent.mkdir(parents=True, exist_ok=True)
        env = jw.PlaygroundVecEnv("CartpoleBalance", 16, precision="float64", episode_length=200)
        jw.collect(env, rows, path)
    return path


def _one(job: SweepJob, config: TrainConfig, out: Path) -> dict:
    return run_job(job, config, log_dir=out / "tb" / job.tag)


def pool(jobs: list[SweepJob], config: TrainConfig, out: Path, workers: int) -> float:
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as ex:
        list(ex.map(_one, jobs, [config] * len(jobs), [out] * len(jobs)))
    return time.perf_counter() - start


def ray_tune(jobs: list[SweepJob], config: TrainConfig, out: Path, workers: int) -> float:
    import ray

    start = time.perf_counter()
    run_sweep(jobs, config, out, ray=True, num_cpus=workers, cpus_per_trial=1)
    ray.shutdown()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", default="1-2")
    parser.add_argument("--losses", default="state,state-jacobian")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    path = data(args.rows)
    jobs = [
        SweepJob("CartpoleBalance", (str(path),), "mlp", mode, seed)
        for mode in args.losses.split(",")
        for seed in seeds
    ]
    config = TrainConfig(epochs=args.epochs, eval_every=args.epochs, num_threads=1, progress=False)
    print(f"{len(jobs)} runs x {args.epochs} epochs on {args.rows} rows, {args.workers} at a time")
    times: dict[str, list[float]] = {"pool": [], "ray": []}
    for r in range(args.rounds):
        for name, engine in (("pool", pool), ("ray", ray_tune)):
            with tempfile.TemporaryDirectory() as tmp:
                times[name].append(engine(jobs, config, Path(tmp), args.workers))
            print(f"round {r + 1}: {name} {times[name][-1]:.1f} s", flush=True)
    p, t = statistics.median(times["pool"]), statistics.median(times["ray"])
    print(f"median wall: pool {p:.1f} s, Ray Tune {t:.1f} s, ratio Ray/pool {t / p:.3f}")


if __name__ == "__main__":
    main()
