"""Sweeps as Ray Tune trials: resources per trial, a checkpoint per epoch, resume.

Each trial trains one :class:`~dynamic_sparsity.sweeps.grid.SweepJob`; after every epoch the
trainer's own checkpoint is handed to Tune (``tune.report``), so a trial that
is restarted (``resume=True`` after a crash or Ctrl-C, or by Tune itself with
``max_failures``) continues from its last epoch, on any node of the cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dynamic_sparsity.sweeps.grid import SweepJob, run_job
from world_models import TrainConfig, TrainerCallback

__all__ = ["check_ray_address", "import_ray", "init_ray", "run_on_ray"]

INSTALL_HINT = 'pip install -e ".[ray]" in the clone (or pip install "ray[tune]")'
EXPERIMENT = "sweep"
CHECKPOINT_FILE = "trainer.pt"


def import_ray():
    """``ray`` and ``ray.tune``, or an ``ImportError`` saying how to install them."""
    try:
        import ray
        from ray import tune
    except ImportError as err:
        raise ImportError(f"sweeps on Ray need Ray Tune: {INSTALL_HINT} ({err})") from err
    return ray, tune


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail within ``timeout`` seconds if nothing listens at ``address``.

    ``ray.init`` retries an unreachable head for a long time; this checks the
    TCP port first. ``"auto"`` and ``"local"`` are left to Ray (they find or
    start a local instance, or fail at once).

    Raises:
        ValueError: ``address`` is not ``host:port`` or ``ray://host[:port]``.
        ConnectionError: Nothing answers at the address.
    """
    if address in ("auto", "local"):
        return
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, "10001" if address.startswith("ray://") else ""
    if not host or not port.isdigit():
        raise ValueError(
            f"Ray address {address!r} is not 'host:port', 'ray://host[:port]', 'auto' or 'local'"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(
            f"no Ray cluster answers at {address!r} within {timeout:g} s ({err}); start one "
            "with `ray start --head` or give the address that `ray status` prints"
        ) from err


# Tune's per-result loggers (CSV, JSON, TensorBoard of every report) and usage
# reporting cost CPU that a 2-core machine's trials need; the runs log to
# TensorBoard themselves.
QUIET = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def init_ray(ray, address: str | None, num_cpus: int | None) -> None:
    """Connect to the cluster at ``address``, or start a local instance of ``num_cpus``."""
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR")
    else:
        check_ray_address(address)
        ray.init(address=address, logging_level="ERROR")


class _ReportToTune(TrainerCallback):
    """After each epoch: the epoch's losses and the trainer's checkpoint to Tune."""

    def __init__(self, tune, folder: Path) -> None:
        self.tune, self.folder = tune, folder

    def on_epoch_end(self, trainer, entry: dict[str, float]) -> None:
        metrics = {"epoch": trainer.epoch, "loss": entry.get("loss/total", float("nan"))}
        checkpoint = None
        if trainer.epoch < trainer.config.epochs:  # the last epoch saves after evaluating
            checkpoint = self.tune.Checkpoint.from_directory(str(self.folder))
        self.tune.report(metrics, checkpoint=checkpoint)


def _trainable(
    jobs: dict[str, SweepJob],
    config: TrainConfig,
    out: str,
    callbacks: Sequence[TrainerCallback],
):
    """The Tune function trainable of one job (``param_space["tag"]`` picks it)."""

    def trial(params: dict[str, Any]) -> None:
        from ray import tune

        job = jobs[params["tag"]]
        folder = Path(tempfile.mkdtemp(prefix=f"{job.tag}-"))
        try:
            restored = tune.get_checkpoint()
            if restored is not None:
                with restored.as_directory() as d:
                    shutil.copy(Path(d) / CHECKPOINT_FILE, folder / CHECKPOINT_FILE)
            row = run_job(
                job,
                config,
                checkpoint=folder / CHECKPOINT_FILE,
                log_dir=Path(out) / "tb" / job.tag,
                callbacks=[_ReportToTune(tune, folder), *callbacks],
            )
            tune.report({"epoch": config.epochs, "done": True, "row_json": json.dumps(row)})
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return trial


def run_on_ray(
    jobs: Sequence[SweepJob],
    config: TrainConfig,
    out: str | Path,
    *,
    address: str | None,
    resume: bool,
    cpus_per_trial: float,
    gpus_per_trial: float,
    num_cpus: int | None,
    max_failures: int,
    callbacks: Sequence[TrainerCallback],
    finished: Callable[[SweepJob, dict[str, Any]], None],
) -> list[str]:
    """Run ``jobs`` as Tune trials of the experiment ``out/ray/sweep``; see :func:`run_sweep`.

    Returns:
        Tags of the trials that failed (their checkpoints stay for ``resume``).
    """
    ray, tune = import_ray()
    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ValueError(
            f"cpus_per_trial must be > 0 and gpus_per_trial >= 0, got {cpus_per_trial}, "
            f"{gpus_per_trial}"
        )
    init_ray(ray, address, num_cpus)
    out = Path(out).resolve()
    config = dataclasses.replace(config, num_threads=max(1, int(cpus_per_trial)))
    by_tag = {j.tag: j for j in jobs}
    trainable = tune.with_resources(
        _trainable(by_tag, config, str(out), list(callbacks)),
        {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
    )
    storage, path = out / "ray", out / "ray" / EXPERIMENT
    if resume and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(
            str(path), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        if resume:
            warnings.warn(f"nothing to resume in {path}: a new sweep starts", stacklevel=3)
        shutil.rmtree(path, ignore_errors=True)
        tuner = tune.Tuner(
            trainable,
            param_space={"tag": tune.grid_search(list(by_tag))},
            tune_config=tune.TuneConfig(
                trial_dirname_creator=lambda t: t.config["tag"], reuse_actors=True
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT,
                storage_path=str(storage),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=0,
            ),
        )
    failed, seen = [], set()
    for result in tuner.fit():
        tag = result.config["tag"]
        seen.add(tag)
        metrics = result.metrics or {}
        if result.error is None and "row_json" in metrics and tag in by_tag:
            finished(by_tag[tag], json.loads(metrics["row_json"]))
        elif tag in by_tag:
            failed.append(tag)
    missing = sorted(set(by_tag) - seen)
    if missing:
        warnings.warn(
            f"{len(missing)} jobs are not part of the resumed sweep in {path}: {missing}; "
            "run again without resume to train them",
            stacklevel=3,
        )
    if failed:
        warnings.warn(
            f"{len(failed)} trials did not finish: {failed}; run again with resume "
            "(--resume) to continue them from their last checkpoint",
            RuntimeWarning,
            stacklevel=3,
        )
    return failed
