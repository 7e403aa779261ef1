"""Jacobian-supervised world models trained on collected transitions (docs/method.md).

Train a dynamics model ``s' = f(s, a)`` on the HDF5 data sets of
:mod:`dynamic_sparsity.analysis.storage` with one of the study's five losses (or mask
supervision), and measure how close its own Jacobian comes to the
simulator's, sparsity included::

    from world_models import TrainConfig, train

    result = train("cheetah.h5", "state-jacobian-l1-sparse-only", TrainConfig(epochs=10))
    print(result.metrics.mse_normalised, result.metrics.induced_sparsity)

    # A model whose mask of inputs -> outputs is chosen per state, supervised
    # with the simulator's zero pattern:
    config = TrainConfig(model="local_mask", weight_decay=0.0, epochs=10)
    masked = train("cheetah.h5", "state-mask", config)
    print(masked.metrics.sample_zero_f1, masked.metrics.mask_zero_f1)

Models (:data:`MODELS`): ``mlp`` (the study's), ``global_mask``,
``local_mask`` and ``codebook_mask`` (:mod:`world_models.masked`); the last
two can give their mask network the env's floor distances
(``TrainConfig(contact_features=True)``, :mod:`world_models.contact_features`).

In the RL loop (:mod:`dynamic_sparsity.mbrl`): :class:`DynamicsEnsemble` and
:class:`EnsembleTrainer` train an ensemble of any of these models on rows in
memory (a replay buffer's); ``dynamic_sparsity.mbrl.ModelVecEnv`` runs one as
an SB3 ``VecEnv``.

Importing the package and reading data sets need torch, numpy and h5py only
(no JAX, Playground or SB3).
"""

from world_models.base import DynamicsModel, MaskSample
from world_models.checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from world_models.config import TrainConfig
from world_models.contact_features import FloorDistances, contact_spec, floor_contact_spec
from world_models.data import (
    Batch,
    EpisodeSplit,
    InMemoryBatches,
    TransitionStream,
    fit_normaliser,
    has_jacobians,
    open_datasets,
    rows_to_batch,
    split_episodes,
)
from world_models.ensemble import DynamicsEnsemble, EnsembleTrainer, RewardModel
from world_models.evaluate import DEFAULT_THRESHOLDS, EvalResult, evaluate, rollout_errors
from world_models.losses import (
    LOSS_MODES,
    LOSSES,
    STUDY_LOSS_MODES,
    JacobianSample,
    LossMode,
    LossWeights,
    compute_loss,
    configure_mask,
    jacobian_columns,
    mask_terms,
    needs_ground_truth_jacobian,
    needs_model_jacobian,
    supervises_mask,
)
from world_models.masked import (
    CodebookMaskDynamics,
    GlobalMaskDynamics,
    LocalMaskDynamics,
    MaskedDynamics,
)
from world_models.model import DynamicsMLP
from world_models.normaliser import Normaliser, RunningMoments
from world_models.registry import (
    MASKED_MODELS,
    MODELS,
    STATE_MASKED_MODELS,
    build_model,
    model_class,
)
from world_models.trainer import Trainer, TrainerCallback, TrainResult, resolve_device, train

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LOSSES",
    "LOSS_MODES",
    "MASKED_MODELS",
    "MODELS",
    "STATE_MASKED_MODELS",
    "STUDY_LOSS_MODES",
    "Batch",
    "Checkpoint",
    "CodebookMaskDynamics",
    "DynamicsEnsemble",
    "DynamicsMLP",
    "DynamicsModel",
    "EnsembleTrainer",
    "EpisodeSplit",
    "EvalResult",
    "FloorDistances",
    "GlobalMaskDynamics",
    "InMemoryBatches",
    "JacobianSample",
    "LocalMaskDynamics",
    "LossMode",
    "LossWeights",
    "MaskSample",
    "MaskedDynamics",
    "Normaliser",
    "RewardModel",
    "RunningMoments",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerCallback",
    "TransitionStream",
    "build_model",
    "compute_loss",
    "configure_mask",
    "contact_spec",
    "evaluate",
    "fit_normaliser",
    "floor_contact_spec",
    "has_jacobians",
    "jacobian_columns",
    "load_checkpoint",
    "load_model",
    "mask_terms",
    "model_class",
    "needs_ground_truth_jacobian",
    "needs_model_jacobian",
    "open_datasets",
    "resolve_device",
    "rollout_errors",
    "rows_to_batch",
    "save_checkpoint",
    "split_episodes",
    "supervises_mask",
    "train",
]
