"""``train``: one call that trains a world model (a thin entry point to :class:`Trainer`)."""

from __future__ import annotations

from world_models.config import TrainConfig
from world_models.data import DataSource
from world_models.trainer import Trainer, TrainResult, resolve_device

__all__ = ["TrainResult", "resolve_device", "train"]


def train(
    data: DataSource, loss_mode: str = "state", config: TrainConfig | None = None
) -> TrainResult:
    """Train a dynamics model on the data set(s) ``data`` with ``loss_mode``.

    ``Trainer(data, loss_mode, config).fit()``; see :class:`~world_models.Trainer`
    for training step by step, hooks and checkpoints.

    Args:
        data: Path(s) or open :class:`~sparsity.TransitionReader` (s) of one env.
        loss_mode: One of :data:`~world_models.losses.LOSS_MODES`.
        config: Hyperparameters and logging; :class:`TrainConfig` defaults if ``None``.

    Raises:
        ValueError: Unknown loss mode, a loss that needs Jacobians on data
            without them, a checkpoint to resume that does not match, or data
            that cannot be split.
    """
    return Trainer(data, loss_mode, config).fit()
