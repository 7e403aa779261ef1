"""Training a world model on stored transitions with one of the study's losses.

:func:`train` splits the data by episode, fits the normaliser on the train
split, trains a :class:`~world_models.model.DynamicsMLP` with Adam, evaluates
on the test split every ``eval_every`` epochs (test MSE, induced sparsity)
and at the end (all metrics of :func:`~world_models.evaluate.evaluate`),
logs every loss term and metric to TensorBoard, and checkpoints after every
epoch so that a run can be resumed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

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
from world_models.losses import LOSS_MODES, compute_loss, needs_ground_truth_jacobian
from world_models.model import DynamicsMLP
from world_models.normaliser import Normaliser

__all__ = ["TrainResult", "resolve_device", "train"]


@dataclass
class TrainResult:
    """What :func:`train` produced.

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

    model: DynamicsMLP
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


def _check_data(readers: list, loss_mode: str) -> None:
    if loss_mode not in LOSS_MODES:
        raise ValueError(f"unknown loss mode {loss_mode!r}; accepted: {list(LOSS_MODES)}")
    if needs_ground_truth_jacobian(loss_mode) and not has_jacobians(readers):
        missing = [str(r.path) for r in readers if not r.meta.jacobians]
        raise ValueError(
            f"loss mode {loss_mode!r} needs ground-truth Jacobians, but {missing} were "
            "collected without them (jacobians=False); collect with Jacobians or use "
            "'state' or 'state-jacobian-l1-regularizer'"
        )


def _split_state(split: EpisodeSplit) -> dict:
    return {
        "test": [t.tolist() for t in split.test],
        "n_episodes": split.n_episodes,
        "test_fraction": split.test_fraction,
        "seed": split.seed,
    }


def _log(writer, prefix: str, values: dict[str, float], step: int) -> None:
    if writer is None:
        return
    for key, value in values.items():
        if value is not None and math.isfinite(value):
            writer.add_scalar(f"{prefix}/{key}", value, step)


def _epoch_metrics(metrics: EvalResult, threshold: float) -> dict[str, float]:
    out = {"mse_normalised": metrics.mse_normalised, "mse_raw": metrics.mse_raw}
    for t in metrics.thresholds:
        out[f"induced_sparsity@{t:g}"] = metrics.induced_sparsity.get(t, math.nan)
        out[f"target_sparsity@{t:g}"] = metrics.target_sparsity.get(t, math.nan)
    out["jacobian_mse_normalised"] = metrics.jacobian_mse_normalised
    return out


def train(
    data: DataSource, loss_mode: str = "state", config: TrainConfig | None = None
) -> TrainResult:
    """Train a dynamics model on the data set(s) ``data`` with ``loss_mode``.

    Args:
        data: Path(s) or open :class:`~jacobian_wrappers.storage.TransitionReader`
            (s) of one env.
        loss_mode: One of :data:`~world_models.losses.LOSS_MODES`.
        config: Hyperparameters and logging; :class:`TrainConfig` defaults if ``None``.

    Raises:
        ValueError: Unknown loss mode, a loss that needs Jacobians on data
            without them, a checkpoint to resume that does not match, or data
            that cannot be split.
    """
    config = config or TrainConfig()
    readers = open_datasets(data)
    _check_data(readers, loss_mode)
    meta = readers[0].meta
    device = resolve_device(config.device)
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    torch.manual_seed(config.seed)

    split = split_episodes(readers, config.test_fraction, config.seed)
    ckpt_path = Path(config.checkpoint) if config.checkpoint else None
    resumed = None
    if config.resume and ckpt_path is not None and ckpt_path.exists():
        resumed = load_checkpoint(ckpt_path, device)
        _check_resume(resumed, loss_mode, config, split, ckpt_path)
        normaliser = resumed.normaliser
    else:
        normaliser = fit_normaliser(readers, split, "train", config.normaliser_eps)

    model = DynamicsMLP(
        meta.d_s,
        meta.d_a,
        width=config.width,
        depth=config.depth,
        activation=config.activation,
        dropout=config.dropout,
        init=config.init,
        predict_delta=config.predict_delta,
    )
    model.set_normaliser(normaliser)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start_epoch, history = 0, []
    if resumed is not None:
        model.load_state_dict(resumed.state["model_state"])
        optimizer.load_state_dict(resumed.state["optimizer_state"])
        torch.set_rng_state(resumed.state["torch_rng"].cpu())
        start_epoch, history = resumed.epoch, list(resumed.history)

    threshold = config.threshold if config.threshold is not None else meta.threshold
    stream = TransitionStream(
        readers,
        split,
        "train",
        normaliser,
        batch_size=config.batch_size,
        buffer_chunks=config.buffer_chunks,
        chunk_size=config.chunk_size,
        jacobians=needs_ground_truth_jacobian(loss_mode),
        threshold=threshold,
        nonsmooth=config.nonsmooth,
        seed=config.seed,
    )
    batches: TransitionStream | InMemoryBatches = stream
    in_memory = config.in_memory
    if in_memory is None:
        in_memory = InMemoryBatches.nbytes(stream) <= config.in_memory_limit
    if in_memory:
        batches = InMemoryBatches(stream)
    writer = None
    if config.log_dir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(config.log_dir)
        writer.add_text("config", f"loss_mode={loss_mode} env={meta.env_name} {config.to_dict()}")

    eval_kwargs = {
        "thresholds": config.eval_thresholds,
        "batch_size": 2048,
        "nonsmooth": config.nonsmooth,
    }
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.epochs,
            initial=start_epoch,
            unit="epoch",
            desc=f"{meta.env_name} {loss_mode}",
        )
    t_start, rows_seen = time.perf_counter(), 0
    try:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            batches.set_epoch(epoch)
            sums: dict[str, float] = {}
            n_rows, t0 = 0, time.perf_counter()
            for batch in batches:
                batch = batch.to(device)
                with torch.autocast(device.type, torch.bfloat16, enabled=config.autocast):
                    loss, terms = compute_loss(
                        model, batch, loss_mode, config.weights, config.jacobian_columns
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
                n_rows += len(batch)
            seconds = time.perf_counter() - t0
            rows_seen += n_rows
            entry = {f"loss/{k}": v / max(n_rows, 1) for k, v in sums.items()}
            entry["samples_per_second"] = n_rows / seconds if seconds > 0 else math.nan
            last = epoch + 1 == config.epochs
            if (epoch + 1) % config.eval_every == 0 and not last:
                metrics = evaluate(
                    model,
                    readers,
                    split,
                    normaliser,
                    horizon=0,
                    max_rows=config.eval_rows,
                    **eval_kwargs,
                )
                entry.update(
                    {f"test/{k}": v for k, v in _epoch_metrics(metrics, threshold).items()}
                )
            history.append({"epoch": epoch + 1, **entry})
            _log(
                writer,
                "train",
                {k[5:]: v for k, v in entry.items() if k.startswith("loss/")},
                epoch + 1,
            )
            _log(
                writer,
                "test",
                {k[5:]: v for k, v in entry.items() if k.startswith("test/")},
                epoch + 1,
            )
            _log(writer, "speed", {"samples_per_second": entry["samples_per_second"]}, epoch + 1)
            if ckpt_path is not None and not last:
                save_checkpoint(
                    ckpt_path,
                    model,
                    normaliser,
                    config,
                    loss_mode,
                    epoch + 1,
                    history,
                    optimizer,
                    {"split": _split_state(split)},
                )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    loss=f"{entry.get('loss/total', math.nan):.4g}",
                    test_mse=f"{entry.get('test/mse_normalised', math.nan):.4g}",
                )
        elapsed = time.perf_counter() - t_start
        metrics = evaluate(
            model,
            readers,
            split,
            normaliser,
            horizon=config.horizon,
            max_rollouts=config.max_rollouts,
            seed=config.seed,
            **eval_kwargs,
        )
        if history and history[-1]["epoch"] == config.epochs:
            history[-1].update(
                {f"test/{k}": v for k, v in _epoch_metrics(metrics, threshold).items()}
            )
            _log(writer, "test", _epoch_metrics(metrics, threshold), config.epochs)
        if writer is not None:
            for h, v in enumerate(metrics.horizon_mse_normalised, start=1):
                writer.add_scalar("rollout/mse_normalised", v, h)
        if ckpt_path is not None:
            save_checkpoint(
                ckpt_path,
                model,
                normaliser,
                config,
                loss_mode,
                config.epochs,
                history,
                optimizer,
                {"split": _split_state(split), "metrics": metrics.flat()},
            )
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    model.eval()
    return TrainResult(
        model=model,
        normaliser=normaliser,
        config=config,
        loss_mode=loss_mode,
        metrics=metrics,
        history=history,
        split=split,
        env_name=meta.env_name,
        seconds=elapsed,
        samples_per_second=rows_seen / elapsed if elapsed > 0 and rows_seen else math.nan,
        checkpoint=ckpt_path,
    )


def _check_resume(
    ckpt, loss_mode: str, config: TrainConfig, split: EpisodeSplit, path: Path
) -> None:
    """A checkpoint can be resumed only with the same loss, model, data split."""
    old = ckpt.config
    problems = []
    if ckpt.loss_mode != loss_mode:
        problems.append(f"loss mode {ckpt.loss_mode!r} != {loss_mode!r}")
    for name in ("width", "depth", "activation", "predict_delta", "seed", "test_fraction"):
        if getattr(old, name) != getattr(config, name):
            problems.append(f"{name} {getattr(old, name)!r} != {getattr(config, name)!r}")
    saved = ckpt.state.get("split", {}).get("test")
    if saved is not None and [list(t) for t in saved] != [t.tolist() for t in split.test]:
        problems.append("the episode split differs (other data?)")
    if problems:
        raise ValueError(f"cannot resume {path}: " + "; ".join(problems))
    if ckpt.epoch > config.epochs:
        raise ValueError(f"{path} has {ckpt.epoch} epochs done, more than epochs={config.epochs}")
