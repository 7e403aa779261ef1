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

from world_models.base import DynamicsModel
from world_models.config import TrainConfig
from world_models.normaliser import Normaliser
from world_models.registry import model_class

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

    model: DynamicsModel
    normaliser: Normaliser
    config: TrainConfig
    loss_mode: str
    epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | os.PathLike,
    model: DynamicsModel,
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
        "model_name": model.name,
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


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", model: str | None = None
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: The file.
        device: Where to put the model.
        model: Insist on this model name (``"mlp"``, ``"local_mask"``, ...);
            ``None`` loads whichever model the file holds.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a world-model checkpoint, or holds
            another model than ``model``.
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
    # Files written before the model family hold an MLP.
    name = state.get("model_name", "mlp")
    if model is not None and model != name:
        raise ValueError(f"{path} holds a {name!r} model, not a {model!r} model")
    net = model_class(name)(**state["model_config"])
    net.load_state_dict(state["model_state"])
    net.to(device).eval()
    return Checkpoint(
        model=net,
        normaliser=Normaliser.from_state_dict(state["normaliser"]),
        config=TrainConfig.from_dict(state["train_config"]),
        loss_mode=state["loss_mode"],
        epoch=int(state["epoch"]),
        history=list(state["history"]),
        state=state,
    )


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", model: str | None = None
) -> DynamicsModel:
    """The model of a checkpoint (:func:`save_checkpoint`), in eval mode.

    Args:
        path: The file.
        device: Where to put the model.
        model: Insist on this model name (``"mlp"``, ``"local_mask"``, ...);
            ``None`` returns whichever model the file holds.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a world-model checkpoint, or another model than ``model``.
    """
    return load_checkpoint(path, device, model).model
