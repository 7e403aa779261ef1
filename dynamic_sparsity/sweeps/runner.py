"""Run a sweep: serially in this process, or as Ray Tune trials."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dynamic_sparsity.sweeps.grid import SweepJob, run_job
from world_models import TrainConfig, TrainerCallback

__all__ = ["run_sweep"]


def run_sweep(
    jobs: Sequence[SweepJob],
    config: TrainConfig,
    out: str | Path,
    *,
    ray: bool | str = False,
    resume: bool = False,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    num_cpus: int | None = None,
    max_failures: int = 0,
    callbacks: Sequence[TrainerCallback] = (),
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every job; one result row per finished job, in the order of ``jobs``.

    Each finished job is written to ``out/runs/<tag>.json``; a job whose file
    exists is read back, not trained again. TensorBoard logs go to
    ``out/tb/<tag>``.

    Args:
        jobs: The grid.
        config: Settings shared by every job (:func:`run_job`).
        out: Output folder.
        ray: ``False``: one job after the other here (a trainer checkpoint per
            epoch in ``out/ckpt``, continued when the sweep is run again).
            ``True``: a local Ray instance; a string: the address of a running
            Ray cluster (``"auto"``, ``"host:port"``, ``"ray://host:port"``).
        resume: With Ray: continue the Tune experiment in ``out/ray`` (after a
            crash or Ctrl-C), restarting unfinished and failed trials from their
            last checkpoint; finished trials are not run again.
        cpus_per_trial: Ray CPUs per trial (also its torch threads).
        gpus_per_trial: Ray GPUs per trial (fractions share a GPU).
        num_cpus: CPUs of a local Ray instance (default: all).
        max_failures: Ray: restarts of a failed trial from its checkpoint
            within the run.
        callbacks: Trainer hooks given to every job.
        on_row: Called with each row as its job finishes.

    Returns:
        Rows of the finished jobs (failed Ray trials are left out: rerun with
        ``resume=True``).

    Raises:
        ImportError: ``ray`` without Ray installed (the message says how to install it).
        ConnectionError: A Ray address that does not answer.
        ValueError: Two jobs with the same tag.
    """
    out = Path(out)
    tags = [j.tag for j in jobs]
    twice = sorted({t for t in tags if tags.count(t) > 1})
    if twice:
        raise ValueError(f"jobs with the same tag {twice}: each grid point must be unique")
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}

    def finished(job: SweepJob, row: dict[str, Any], new: bool) -> None:
        if new:
            (runs / f"{job.tag}.json").write_text(json.dumps(row))
        rows[job.tag] = row
        if on_row is not None:
            on_row(row)

    todo = []
    for job in jobs:
        done = runs / f"{job.tag}.json"
        if done.exists():
            finished(job, json.loads(done.read_text()), new=False)
        else:
            todo.append(job)
    if ray is False or ray is None:
        for job in todo:
            row = run_job(
                job,
                config,
                checkpoint=out / "ckpt" / f"{job.tag}.pt",
                log_dir=out / "tb" / job.tag,
                callbacks=callbacks,
            )
            finished(job, row, new=True)
    elif todo:
        from dynamic_sparsity.sweeps.tune import run_on_ray

        run_on_ray(
            todo,
            config,
            out,
            address=None if ray is True else str(ray),
            resume=resume,
            cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial,
            num_cpus=num_cpus,
            max_failures=max_failures,
            callbacks=callbacks,
            finished=lambda job, row: finished(job, row, new=True),
        )
    return [rows[t] for t in tags if t in rows]
