"""Training a world model on stored transitions: a :class:`Trainer` with hooks.

A :class:`Trainer` splits the data by episode, fits the normaliser on the
train split, builds the model and Adam, and then trains epoch by epoch
(:meth:`Trainer.train_epoch`), evaluates on the test split
(:meth:`Trainer.evaluate`: test MSE, induced sparsity, open-loop error),
logs every loss term and metric to TensorBoard and checkpoints
(:meth:`Trainer.save` / :meth:`Trainer.load`), so that a run can be resumed or
driven incrementally by a caller (a model-based RL loop, a sweep engine).
:class:`TrainerCallback` hooks run at the start, after every batch, after every
epoch and at the end, as SB3's callbacks do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dynamic_sparsity.analysis.stats import check_threshold_precision
from world_models.base import DynamicsModel
from world_models.checkpoint import load_checkpoint, save_checkpoint
from world_models.config import TrainConfig
from world_models.data import (
    DataSource,
    EpisodeSplit,
    InMemoryBatches,
    TransitionStream,
    fit_normaliser,
    has_jacobians,
    open_datasets,
    split_episodes,
)
from world_models.evaluate import EvalResult, evaluate
from world_models.losses import (
    LOSS_MODES,
    LossMode,
    check_model_for_mode,
    compute_loss,
    configure_mask,
    needs_ground_truth_jacobian,
)
from world_models.normaliser import Normaliser
from world_models.registry import build_model, model_class

__all__ = ["TrainResult", "Trainer", "TrainerCallback", "resolve_device", "train"]


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` (and :func:`~world_models.train`) produced.

    Attributes:
        model: The trained model (eval mode).
        normaliser: Its normaliser.
        config: The configuration used.
        loss_mode: The loss.
        metrics: Final evaluation on the whole test split.
        history: Per epoch: mean loss terms, test metrics, samples/s.
        split: The episode split.
        env_name: Env of the data.
        seconds: Wall time of the epochs run by this call.
        samples_per_second: Training rows per second (this call).
        checkpoint: Path of the last checkpoint, if any.
    """

    model: DynamicsModel
    normaliser: Normaliser
    config: TrainConfig
    loss_mode: str
    metrics: EvalResult
    history: list[dict[str, float]] = field(default_factory=list)
    split: EpisodeSplit | None = None
    env_name: str = ""
    seconds: float = 0.0
    samples_per_second: float = math.nan
    checkpoint: Path | None = None


class TrainerCallback:
    """Hooks of :meth:`Trainer.fit`; subclass and override what you need."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch of a :meth:`Trainer.fit` call."""

    def on_batch_end(self, trainer: Trainer, terms: dict[str, float], rows: int) -> None:
        """After each optimiser step, with the batch's loss terms and its row count."""

    def on_epoch_end(self, trainer: Trainer, entry: dict[str, float]) -> bool | None:
        """After each epoch (``entry``: its history row); return ``False`` to stop."""

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        """After the final evaluation and checkpoint."""


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; checks that CUDA exists when asked for.

    Raises:
        ValueError: CUDA requested on a machine without it.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


def _check_data(readers: list, mode: LossMode, model: str) -> None:
    check_model_for_mode(mode, model_class(model))
    if mode.needs_ground_truth_jacobian and not has_jacobians(readers):
        missing = [str(r.path) for r in readers if not r.meta.jacobians]
        working = [m for m in LOSS_MODES if not needs_ground_truth_jacobian(m)]
        raise ValueError(
            f"loss mode {mode.name!r} needs ground-truth Jacobians, but {missing} were "
            f"collected without them (jacobians=False); collect with Jacobians or use "
            f"one of {working} (masked models then learn their mask from data alone)"
        )


def _split_state(split: EpisodeSplit) -> dict:
    return {
        "test": [t.tolist() for t in split.test],
        "n_episodes": split.n_episodes,
        "test_fraction": split.test_fraction,
        "seed": split.seed,
    }


def _epoch_metrics(metrics: EvalResult) -> dict[str, float]:
    out = {"mse_normalised": metrics.mse_normalised, "mse_raw": metrics.mse_raw}
    for t in metrics.thresholds:
        out[f"induced_sparsity@{t:g}"] = metrics.induced_sparsity.get(t, math.nan)
        out[f"target_sparsity@{t:g}"] = metrics.target_sparsity.get(t, math.nan)
    out["jacobian_mse_normalised"] = metrics.jacobian_mse_normalised
    return out


class Trainer:
    """Trains one dynamics model on the data set(s) ``data`` with ``loss_mode``.

    With ``config.resume`` and an existing ``config.checkpoint`` the model,
    optimizer, RNG, epoch count and history are restored (:meth:`load`).

    Args:
        data: Path(s) or open :class:`~dynamic_sparsity.analysis.TransitionReader` (s) of one env.
        loss_mode: One of :data:`~world_models.losses.LOSS_MODES`.
        config: Hyperparameters and logging; :class:`TrainConfig` defaults if ``None``.
        callbacks: :class:`TrainerCallback` hooks.

    Attributes:
        model: The model being trained.
        normaliser: Its normaliser (fitted on the train split).
        optimizer: Adam.
        epoch: Epochs completed.
        history: One row per completed epoch.

    Raises:
        ValueError: Unknown loss mode, a loss that needs Jacobians on data
            without them, a checkpoint to resume that does not match, or data
            that cannot be split.
    """

    def __init__(
        self,
        data: DataSource,
        loss_mode: str = "state",
        config: TrainConfig | None = None,
        callbacks: Sequence[TrainerCallback] = (),
    ) -> None:
        self.config = config = config or TrainConfig()
        # Checked once here; the layers below take the resolved mode.
        self.mode = LossMode.of(loss_mode)
        self.loss_mode = self.mode.name
        self.readers = open_datasets(data)
        _check_data(self.readers, self.mode, config.model)
        self.callbacks = list(callbacks)
        self.meta = self.readers[0].meta
        self.device = resolve_device(config.device)
        if config.num_threads:
            torch.set_num_threads(int(config.num_threads))
        torch.manual_seed(config.seed)
        self.split = split_episodes(self.readers, config.test_fraction, config.seed)
        self.checkpoint = Path(config.checkpoint) if config.checkpoint else None
        resumed = None
        if config.resume and self.checkpoint is not None and self.checkpoint.exists():
            resumed = self._read_checkpoint(self.checkpoint)
            self.normaliser = resumed.normaliser
        else:
            self.normaliser = fit_normaliser(
                self.readers, self.split, "train", config.normaliser_eps
            )
        self.model = self._build_model()
        groups = self.model.parameter_groups(config.weight_decay, config.mask_weight_decay)
        self.optimizer = torch.optim.Adam(groups, lr=config.lr)
        self.epoch, self.history = 0, []
        if resumed is not None:
            self._restore(resumed)
        self.threshold = config.threshold if config.threshold is not None else self.meta.threshold
        if self.meta.jacobians:
            check_threshold_precision(
                min(self.threshold, *config.eval_thresholds), self.meta.precision, "train"
            )
        self.batches = self._build_batches()
        self.rows_seen = 0

    # ------------------------------------------------------------------ setup
    def _build_model(self) -> DynamicsModel:
        c = self.config
        model = build_model(
            c.model, self.meta.d_s, self.meta.d_a, **c.model_kwargs(self.meta.env_name)
        )
        configure_mask(model, self.mode, c.mask_straight_through)
        model.set_normaliser(self.normaliser)
        return model.to(self.device)

    def _build_batches(self) -> TransitionStream | InMemoryBatches:
        c = self.config
        stream = TransitionStream(
            self.readers,
            self.split,
            "train",
            self.normaliser,
            batch_size=c.batch_size,
            buffer_chunks=c.buffer_chunks,
            chunk_size=c.chunk_size,
            jacobians=self.mode.needs_ground_truth_jacobian,
            threshold=self.threshold,
            nonsmooth=c.nonsmooth,
            seed=c.seed,
        )
        in_memory = c.in_memory
        if in_memory is None:
            in_memory = InMemoryBatches.nbytes(stream) <= c.in_memory_limit
        return InMemoryBatches(stream) if in_memory else stream

    # --------------------------------------------------------------- training
    def train_epoch(self) -> dict[str, float]:
        """One pass over the train split; returns the mean loss terms and samples/s.

        The returned row (``loss/<term>``, ``samples_per_second``) is not yet in
        :attr:`history`; :meth:`fit` adds it with the epoch's test metrics.
        """
        c = self.config
        self.model.train()
        self.batches.set_epoch(self.epoch)
        sums: dict[str, float] = {}
        n_rows, start = 0, time.perf_counter()
        for batch in self.batches:
            batch = batch.to(self.device)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=c.autocast):
                loss, terms = compute_loss(
                    self.model, batch, self.mode, c.weights, c.jacobian_columns
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.model.after_step()
            values = {k: float(v) for k, v in terms.items()}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v * len(batch)
            n_rows += len(batch)
            for cb in self.callbacks:
                cb.on_batch_end(self, values, len(batch))
        seconds = time.perf_counter() - start
        self.epoch += 1
        self.rows_seen += n_rows
        entry = {f"loss/{k}": v / max(n_rows, 1) for k, v in sums.items()}
        entry["samples_per_second"] = n_rows / seconds if seconds > 0 else math.nan
        return entry

    def evaluate(self, final: bool = False) -> EvalResult:
        """Metrics on the test split (:func:`~world_models.evaluate`).

        Args:
            final: All test rows and the open-loop rollouts; otherwise the
                first ``config.eval_rows`` rows and no rollouts (per-epoch checks).
        """
        c = self.config
        return self._evaluate(
            self.readers,
            self.split,
            "test",
            horizon=c.horizon if final else 0,
            max_rows=None if final else c.eval_rows,
        )

    def _evaluate(self, readers, split, part: str, horizon: int, max_rows: int | None):
        """:func:`~world_models.evaluate` of the model with this run's settings."""
        c = self.config
        return evaluate(
            self.model,
            readers,
            split,
            self.normaliser,
            part=part,
            thresholds=c.eval_thresholds,
            batch_size=2048,
            nonsmooth=c.nonsmooth,
            horizon=horizon,
            max_rows=max_rows,
            max_rollouts=c.max_rollouts,
            seed=c.seed,
        )

    def evaluate_on(self, data: DataSource, horizon: int | None = None) -> EvalResult:
        """Metrics on every row of other data of the same env (e.g. another policy's).

        The distribution-shift test: a model trained on random-policy data,
        evaluated on an expert's transitions (and the reverse). The data are
        normalised with this model's normaliser (of its train split).

        Args:
            data: Path(s) or open reader(s) of the same env as the training data.
            horizon: Longest open-loop horizon (``config.horizon`` by default).

        Raises:
            ValueError: The data are of another env or dimensions.
        """
        readers = open_datasets(data)
        for r in readers:
            if (r.meta.env_name, r.meta.d_s, r.meta.d_a) != (
                self.meta.env_name, self.meta.d_s, self.meta.d_a
            ):  # fmt: skip
                raise ValueError(
                    f"{r.path} holds {r.meta.env_name} (d_s={r.meta.d_s}, d_a={r.meta.d_a}); "
                    f"the model is for {self.meta.env_name} "
                    f"(d_s={self.meta.d_s}, d_a={self.meta.d_a})"
                )
        horizon = self.config.horizon if horizon is None else int(horizon)
        return self._evaluate(readers, None, "all", horizon=horizon, max_rows=None)

    def fit(self, epochs: int | None = None) -> TrainResult:
        """Train until ``epochs`` epochs are done (``config.epochs`` by default).

        Evaluates every ``config.eval_every`` epochs and fully at the end, logs
        to TensorBoard (``config.log_dir``), checkpoints after every epoch
        (``config.checkpoint``) and calls the hooks.
        """
        c = self.config
        epochs = c.epochs if epochs is None else int(epochs)
        if self.epoch > epochs:
            raise ValueError(f"{self.epoch} epochs are done already, more than epochs={epochs}")
        writer = self._writer()
        bar = self._bar(epochs)
        rows_before, start = self.rows_seen, time.perf_counter()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            while self.epoch < epochs:
                entry = self.train_epoch()
                last = self.epoch == epochs
                if self.epoch % c.eval_every == 0 and not last:
                    metrics = _epoch_metrics(self.evaluate())
                    entry.update({f"test/{k}": v for k, v in metrics.items()})
                self.history.append({"epoch": self.epoch, **entry})
                self._log(writer, entry, self.epoch)
                if not last:
                    self.save()
                if bar is not None:
                    bar.update(1)
                    _show(bar, entry)
                if any(cb.on_epoch_end(self, entry) is False for cb in self.callbacks):
                    break
            elapsed = time.perf_counter() - start
            metrics = self.evaluate(final=True)
            if self.history and self.history[-1]["epoch"] == self.epoch:
                final = _epoch_metrics(metrics)
                self.history[-1].update({f"test/{k}": v for k, v in final.items()})
                self._log(writer, {f"test/{k}": v for k, v in final.items()}, self.epoch)
                if bar is not None:  # the last epoch's test MSE exists only now
                    _show(bar, self.history[-1])
            if writer is not None:
                for h, v in enumerate(metrics.horizon_mse_normalised, start=1):
                    writer.add_scalar("rollout/mse_normalised", v, h)
            self.save(extra={"metrics": metrics.flat()})
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        self.model.eval()
        rows = self.rows_seen - rows_before
        result = TrainResult(
            model=self.model,
            normaliser=self.normaliser,
            config=c,
            loss_mode=self.loss_mode,
            metrics=metrics,
            history=self.history,
            split=self.split,
            env_name=self.meta.env_name,
            seconds=elapsed,
            samples_per_second=rows / elapsed if elapsed > 0 and rows else math.nan,
            checkpoint=self.checkpoint,
        )
        for cb in self.callbacks:
            cb.on_fit_end(self, result)
        return result

    # ---------------------------------------------------------- checkpoints
    def save(self, path: str | Path | None = None, extra: dict[str, Any] | None = None):
        """Write a checkpoint (to ``config.checkpoint`` by default; nothing if neither).

        Returns:
            The path written, or ``None``.
        """
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            return None
        return save_checkpoint(
            path,
            self.model,
            self.normaliser,
            self.config,
            self.loss_mode,
            self.epoch,
            self.history,
            self.optimizer,
            {"split": _split_state(self.split), **(extra or {})},
        )

    def load(self, path: str | Path) -> None:
        """Continue from the checkpoint at ``path`` (same loss, model and data split).

        Raises:
            ValueError: The checkpoint was made with another loss, model, seed or split.
        """
        resumed = self._read_checkpoint(Path(path))
        self.normaliser = resumed.normaliser
        self.model.set_normaliser(self.normaliser)
        self._restore(resumed)

    def _read_checkpoint(self, path: Path):
        ckpt = load_checkpoint(path, self.device)
        old, config, problems = ckpt.config, self.config, []
        if ckpt.model.name != config.model:
            problems.append(f"model {ckpt.model.name!r} != {config.model!r}")
        if ckpt.loss_mode != self.loss_mode:
            problems.append(f"loss mode {ckpt.loss_mode!r} != {self.loss_mode!r}")
        arch = ("width", "head_width", "mask_width", "codebook_size", "code_dim", "depth")
        for name in (*arch, "activation", "predict_delta", "seed", "test_fraction"):
            if getattr(old, name) != getattr(config, name):
                problems.append(f"{name} {getattr(old, name)!r} != {getattr(config, name)!r}")
        saved = ckpt.state.get("split", {}).get("test")
        if saved is not None and [list(t) for t in saved] != [t.tolist() for t in self.split.test]:
            problems.append("the episode split differs (other data?)")
        if problems:
            raise ValueError(f"cannot resume {path}: " + "; ".join(problems))
        if ckpt.epoch > config.epochs:
            raise ValueError(
                f"{path} has {ckpt.epoch} epochs done, more than epochs={config.epochs}"
            )
        return ckpt

    def _restore(self, ckpt) -> None:
        self.model.load_state_dict(ckpt.state["model_state"])
        self.optimizer.load_state_dict(ckpt.state["optimizer_state"])
        torch.set_rng_state(ckpt.state["torch_rng"].cpu())
        self.epoch, self.history = ckpt.epoch, list(ckpt.history)

    # --------------------------------------------------------------- output
    def _writer(self):
        if not self.config.log_dir:
            return None
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(self.config.log_dir)
        writer.add_text(
            "config",
            f"loss_mode={self.loss_mode} env={self.meta.env_name} {self.config.to_dict()}",
        )
        return writer

    def _bar(self, epochs: int):
        if not self.config.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=epochs,
            initial=self.epoch,
            unit="epoch",
            desc=f"{self.meta.env_name} {self.config.model} {self.loss_mode}",
        )

    @staticmethod
    def _log(writer, entry: dict[str, float], step: int) -> None:
        """``loss/x`` -> ``train/x``, ``test/x``, ``samples_per_second`` -> ``speed/...``."""
        if writer is None:
            return
        for key, value in entry.items():
            if value is None or not math.isfinite(value):
                continue
            tag = key.replace("loss/", "train/", 1) if key.startswith("loss/") else key
            if key == "samples_per_second":
                tag = "speed/samples_per_second"
            writer.add_scalar(tag, value, step)


def _show(bar: Any, entry: dict[str, float]) -> None:
    """An epoch's training loss and test MSE (NaN until evaluated) on the progress bar."""
    bar.set_postfix(
        loss=f"{entry.get('loss/total', math.nan):.4g}",
        test_mse=f"{entry.get('test/mse_normalised', math.nan):.4g}",
    )


def train(
    data: DataSource, loss_mode: str = "state", config: TrainConfig | None = None
) -> TrainResult:
    """Train a dynamics model on the data set(s) ``data`` with ``loss_mode``.

    ``Trainer(data, loss_mode, config).fit()``; see :class:`Trainer` for
    training step by step, hooks and checkpoints.

    Args:
        data: Path(s) or open :class:`~dynamic_sparsity.analysis.TransitionReader` (s) of one env.
        loss_mode: One of :data:`~world_models.losses.LOSS_MODES`.
        config: Hyperparameters and logging; :class:`TrainConfig` defaults if ``None``.

    Raises:
        ValueError: Unknown loss mode, a loss that needs Jacobians on data
            without them, a checkpoint to resume that does not match, or data
            that cannot be split.

    Example:
        >>> from world_models import TrainConfig, train
        >>> config = TrainConfig(epochs=2, width=16, progress=False, horizon=2)
        >>> result = train("cartpole.h5", "state-jacobian", config)  # a data set from collect
        >>> 0 < result.metrics.mse_normalised < 2, result.metrics.target_sparsity[1e-15] > 0
        (True, True)
    """
    return Trainer(data, loss_mode, config).fit()
