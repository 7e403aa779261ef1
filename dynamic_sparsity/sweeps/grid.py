"""One trial of a sweep: a world model trained and evaluated, as a row of results."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from world_models import TrainConfig, Trainer, TrainerCallback

__all__ = ["MODEL_VARIANTS", "SweepJob", "run_job"]

#: Model variants a grid point can ask for: the ``TrainConfig`` fields each sets.
MODEL_VARIANTS: dict[str, dict[str, Any]] = {"contact": {"contact_features": True}}


@dataclass(frozen=True)
class SweepJob:
    """One point of the grid.

    Attributes:
        env: Env name (the data sets' ``env_name``).
        files: Data sets of that env (files, shard folders or globs).
        model: A model of :data:`world_models.MODELS`.
        mode: A loss mode of :data:`world_models.LOSS_MODES`.
        seed: Seed of the run.
        columns: Random Jacobian columns per sample (``None``: all).
        shift: Other data of the env evaluated after training (``shift_`` metrics).
        variant: A key of :data:`MODEL_VARIANTS` (``"contact"``: contact
            features), applied on top of the sweep's config and shown after
            the model's name in the tables and run names
            (``local_mask+contact``); ``""``: the config as it is.

    Raises:
        ValueError: An unknown ``variant``.
    """

    env: str
    files: tuple[str, ...]
    model: str
    mode: str
    seed: int
    columns: int | None = None
    shift: tuple[str, ...] = field(default_factory=tuple)
    variant: str = ""

    def __post_init__(self) -> None:
        if self.variant and self.variant not in MODEL_VARIANTS:
            raise ValueError(
                f"unknown model variant {self.variant!r}; variants: {list(MODEL_VARIANTS)}"
            )

    @property
    def model_label(self) -> str:
        """The model column of the tables: the model, then ``+variant`` if any."""
        return f"{self.model}+{self.variant}" if self.variant else self.model

    @property
    def label(self) -> str:
        """The loss column of the tables: the mode, and the column subset if any."""
        return self.mode if self.columns is None else f"{self.mode} [k={self.columns} cols]"

    @property
    def tag(self) -> str:
        """File name of the run (the study's MLP runs keep their names without the model)."""
        safe = "".join(c if c.isalnum() or c == "-" else "_" for c in self.label)
        model = self.model_label.replace("+", "_")
        prefix = self.env if model == "mlp" else f"{self.env}_{model}"
        return f"{prefix}_{safe}_s{self.seed}"

    @property
    def key(self) -> tuple[str, str, str, int]:
        """``(env, model, label, seed)``: the row's identity in the tables."""
        return self.env, self.model_label, self.label, self.seed


def run_job(
    job: SweepJob,
    config: TrainConfig,
    *,
    checkpoint: str | Path | None = None,
    log_dir: str | Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Train and evaluate ``job``; the result as one flat row.

    Args:
        job: The grid point.
        config: Settings shared by the sweep; the job's model, seed and
            Jacobian columns replace its own.
        checkpoint: Trainer checkpoint after every epoch; an existing one is
            resumed (same job), so a restarted trial loses at most an epoch.
        log_dir: TensorBoard directory of the run.
        callbacks: Trainer hooks (e.g. reporting to Ray Tune).

    Returns:
        ``env``, ``model``, ``loss``, ``seed``, ``seconds``, ``samples_per_second``,
        ``start_epoch`` (epochs restored from the checkpoint) and every metric of
        :meth:`world_models.EvalResult.flat` (``shift_``-prefixed for ``job.shift``).
    """
    config = dataclasses.replace(
        config,
        model=job.model,
        seed=job.seed,
        jacobian_columns=job.columns,
        log_dir=None if log_dir is None else str(log_dir),
        checkpoint=None if checkpoint is None else str(checkpoint),
        resume=checkpoint is not None,
        **MODEL_VARIANTS.get(job.variant, {}),
    )
    trainer = Trainer(list(job.files), job.mode, config, callbacks=callbacks)
    start_epoch = trainer.epoch
    result = trainer.fit()
    row: dict[str, Any] = {"env": job.env, "model": job.model_label, "loss": job.label}
    row.update(seed=job.seed, seconds=result.seconds, start_epoch=start_epoch)
    row["samples_per_second"] = result.samples_per_second
    row.update(result.metrics.flat())
    if job.shift:
        row.update(
            {f"shift_{k}": v for k, v in trainer.evaluate_on(list(job.shift)).flat().items()}
        )
    return row
