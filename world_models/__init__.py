"""Jacobian-supervised world models trained on collected transitions (docs/method.md).

Train a dynamics model ``s' = f(s, a)`` on the HDF5 data sets of
:mod:`sparsity.storage` with one of the study's five losses, and
measure how close its own Jacobian comes to the simulator's, sparsity
included::

    from world_models import TrainConfig, train

    result = train("cheetah.h5", "state-jacobian-l1-sparse-only", TrainConfig(epochs=10))
    print(result.metrics.mse_normalised, result.metrics.induced_sparsity)

Importing the package and reading data sets need torch, numpy and h5py only
(no JAX, Playground or SB3).
"""

from world_models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from world_models.config import TrainConfig
from world_models.data import (
    Batch,
    EpisodeSplit,
    InMemoryBatches,
    TransitionStream,
    fit_normaliser,
    has_jacobians,
    open_datasets,
    split_episodes,
)
from world_models.evaluate import DEFAULT_THRESHOLDS, EvalResult, evaluate, rollout_errors
from world_models.losses import (
    LOSS_MODES,
    LOSSES,
    JacobianSample,
    LossWeights,
    compute_loss,
    jacobian_columns,
    needs_ground_truth_jacobian,
    needs_model_jacobian,
)
from world_models.model import DynamicsMLP
from world_models.normaliser import Normaliser, RunningMoments
from world_models.train import train
from world_models.trainer import Trainer, TrainerCallback, TrainResult, resolve_device

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LOSSES",
    "LOSS_MODES",
    "Batch",
    "Checkpoint",
    "DynamicsMLP",
    "EpisodeSplit",
    "EvalResult",
    "InMemoryBatches",
    "JacobianSample",
    "LossWeights",
    "Normaliser",
    "RunningMoments",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerCallback",
    "TransitionStream",
    "compute_loss",
    "evaluate",
    "fit_normaliser",
    "has_jacobians",
    "jacobian_columns",
    "load_checkpoint",
    "needs_ground_truth_jacobian",
    "needs_model_jacobian",
    "open_datasets",
    "resolve_device",
    "rollout_errors",
    "save_checkpoint",
    "split_episodes",
    "train",
]
