"""Saving and loading a trained world model: weights, normaliser, config, training state.

A checkpoint is one ``torch.save`` file of plain types and tensors (it loads
with ``weights_only=True``), written to a temporary file and renamed, so an
interrupted save never leaves a damaged checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from world_models.config import TrainConfig
from world_models.model import DynamicsMLP
from world_models.normaliser import Normaliser

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "dynamic-sparsity/world-model"


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        model: The model, on the requested device, in eval mode.
        normaliser: Its normaliser.
        config: The training configuration.
        loss_mode: The loss it was trained with.
        epoch: Epochs completed.
        history: Per-epoch logs.
        state: The remaining raw training state (optimizer, RNG, split).
    """

    model: DynamicsMLP
    normaliser: Normaliser
    config: TrainConfig
    loss_mode: str
    epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | os.PathLike,
    model: DynamicsMLP,
    normaliser: Normaliser,
    config: TrainConfig,
    loss_mode: str,
    epoch: int,
    history: list[dict[str, float]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "model_config": model.config,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normaliser": normaliser.state_dict(),
        "train_config": config.to_dict(),
        "loss_mode": loss_mode,
        "epoch": int(epoch),
        "history": list(history or []),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "torch_rng": torch.get_rng_state(),
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a world-model checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable world-model checkpoint: {err}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a world-model checkpoint (format {CHECKPOINT_FORMAT!r})")
    model = DynamicsMLP(**state["model_config"])
    model.load_state_dict(state["model_state"])
    model.to(device).eval()
    return Checkpoint(
        model=model,
        normaliser=Normaliser.from_state_dict(state["normaliser"]),
        config=TrainConfig.from_dict(state["train_config"]),
        loss_mode=state["loss_mode"],
        epoch=int(state["epoch"]),
        history=list(state["history"]),
        state=state,
    )
