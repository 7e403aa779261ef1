"""Training configuration of the world models, with the study's defaults (docs/method.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from world_models.contact_features import contact_spec
from world_models.data import NONSMOOTH_POLICIES
from world_models.evaluate import DEFAULT_THRESHOLDS
from world_models.losses import LossWeights
from world_models.model import ACTIVATIONS, INITS
from world_models.registry import MASKED_MODELS, MODELS, STATE_MASKED_MODELS

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """How to train one world model. Defaults are the study's (docs/method.md#world-models).

    Attributes:
        model: ``"mlp"`` (the study's), ``"global_mask"``, ``"local_mask"`` or
            ``"codebook_mask"`` (:data:`~world_models.registry.MODELS`).
        width: Units per hidden layer (of the MLP; of each output's head
            for the masked models when ``head_width`` is ``None``).
        head_width: Units per hidden layer of each output's head of a masked model.
        shared_heads: The masked models' heads share their hidden-layer
            weights (``MaskedDynamics(shared_heads=True)``).
        mask_width: Hidden units of the mask network (``local_mask``,
            ``codebook_mask``).
        mode_dim: Units of the mode code a masked model's heads get besides
            their masked inputs (``MaskedDynamics(mode_dim=...)``); 0: none.
        contact_features: The mask network of ``local_mask``/``codebook_mask``
            also gets each floor-colliding geom's distance to the floor, at
            ``s`` and one step on (``MaskedDynamics(contact=...)``, the
            env's geometry read by ``contact_spec`` when the model is built).
            The other models ignore it, as they ignore the other mask options.
        codebook_size: ``K``, masks in the codebook (``codebook_mask``).
        code_dim: Dimension of a code (``codebook_mask``).
        mask_temperature: Gumbel-sigmoid temperature of the training mask samples.
        mask_weight_decay: Adam weight decay of the mask's parameters (the
            study's 0.001 held the CheetahRun mask's zero-pattern F1 at 0.78
            against 0.91 without, 10 epochs).
        mask_straight_through: Whether the prediction and Jacobian losses train
            a masked model's mask (straight-through); ``None``: only when the
            loss does not supervise the mask (``state-mask`` trains it by
            its cross-entropy alone).
        depth: Hidden layers.
        activation: ``"elu"``, ``"relu"``, ``"tanh"`` or ``"silu"``.
        dropout: Dropout probability after each hidden layer.
        init: Weight initialisation (see ``world_models.model.INITS``).
        predict_delta: Predict ``s' - s`` instead of ``s'``.
        lr: Adam learning rate.
        weight_decay: Adam weight decay (L2).
        batch_size: Rows per step.
        epochs: Passes over the train split.
        test_fraction: Share of episodes held out for test.
        seed: Seed of the split, initialisation, dropout and shuffling.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        weights: Weights of the loss terms.
        jacobian_columns: Supervise this many random Jacobian columns per
            sample (forward mode) instead of the whole Jacobian; ``None``: all.
        threshold: Zero threshold of the sparse-only mask; the data set's by default.
        nonsmooth: ``"mask"`` (default): Jacobian losses and metrics leave out the
            ground-truth columns taken at a non-smooth point of the step (an
            action on its control bound); ``"keep"``: use them.
        eval_thresholds: Thresholds of the induced-sparsity metrics.
        eval_every: Evaluate on the test split every this many epochs (and at the end).
        eval_rows: Test rows of the per-epoch evaluations (``None``: all);
            the final evaluation uses the whole test split.
        horizon: Longest open-loop horizon of the final evaluation (0: none).
        max_rollouts: Start states of the open-loop evaluation.
        buffer_chunks: Data chunks pooled for shuffling.
        chunk_size: Rows per read; the files' chunk by default.
        log_dir: TensorBoard directory; ``None`` logs nothing.
        checkpoint: File saved after every epoch; ``None`` saves none.
        resume: Continue from ``checkpoint`` if it exists.
        progress: Show a tqdm progress bar.
        num_threads: ``torch.set_num_threads`` for the run; ``None`` leaves it.
        in_memory: Hold the normalised train split in memory
            (:class:`~world_models.data.InMemoryBatches`) instead of streaming
            it every epoch; ``None``: when it takes at most ``in_memory_limit`` bytes.
        in_memory_limit: Bytes below which ``in_memory=None`` holds the split.
        autocast: Run the training steps under bfloat16 autocast (mixed
            precision: parameters and optimizer stay float32; evaluation
            stays float32). About 1.4x faster on a CPU with AVX512-BF16
            (1.9x for the exact Jacobian losses); see the README.
        normaliser_eps: The ``e`` added to standard deviations.
    """

    model: str = "mlp"
    width: int = 512
    head_width: int | None = 64
    shared_heads: bool = False
    mask_width: int = 128
    mode_dim: int = 0
    contact_features: bool = False
    codebook_size: int = 16
    code_dim: int = 16
    mask_temperature: float = 1.0
    mask_weight_decay: float = 0.0
    mask_straight_through: bool | None = None
    depth: int = 2
    activation: str = "elu"
    dropout: float = 0.1
    init: str = "kaiming_normal"
    predict_delta: bool = False
    lr: float = 0.002
    weight_decay: float = 0.001
    batch_size: int = 512
    epochs: int = 100
    test_fraction: float = 0.1
    seed: int = 1
    device: str = "auto"
    weights: LossWeights = field(default_factory=LossWeights)
    jacobian_columns: int | None = None
    threshold: float | None = None
    nonsmooth: str = "mask"
    eval_thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    eval_every: int = 1
    eval_rows: int | None = 8192
    horizon: int = 10
    max_rollouts: int = 512
    buffer_chunks: int = 8
    chunk_size: int | None = None
    log_dir: str | None = None
    checkpoint: str | None = None
    resume: bool = False
    progress: bool = True
    num_threads: int | None = None
    normaliser_eps: float = 1e-8
    in_memory: bool | None = None
    in_memory_limit: int = 2 * 1024**3
    autocast: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.weights, Mapping):
            self.weights = LossWeights(**self.weights)
        self.eval_thresholds = tuple(float(t) for t in self.eval_thresholds)
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; models: {list(MODELS)}")
        positive = (
            "width", "depth", "batch_size", "epochs", "eval_every", "buffer_chunks",
            "mask_width", "codebook_size", "code_dim",
        )  # fmt: skip
        if self.head_width is not None and int(self.head_width) < 1:
            raise ValueError(f"head_width must be >= 1 or None, got {self.head_width}")
        if int(self.mode_dim) < 0:
            raise ValueError(f"mode_dim must be >= 0, got {self.mode_dim}")
        if self.mask_temperature <= 0:
            raise ValueError(f"mask_temperature must be > 0, got {self.mask_temperature}")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {self.init!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.lr <= 0 or self.weight_decay < 0 or self.mask_weight_decay < 0:
            raise ValueError(
                "need lr > 0, weight_decay >= 0 and mask_weight_decay >= 0, got "
                f"{self.lr}, {self.weight_decay}, {self.mask_weight_decay}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")
        if self.jacobian_columns is not None and int(self.jacobian_columns) < 1:
            raise ValueError(f"jacobian_columns must be >= 1 or None, got {self.jacobian_columns}")
        if self.nonsmooth not in NONSMOOTH_POLICIES:
            raise ValueError(
                f"nonsmooth must be one of {NONSMOOTH_POLICIES}, got {self.nonsmooth!r}"
            )
        if self.threshold is not None and self.threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        if self.horizon < 0:
            raise ValueError(f"horizon must be >= 0, got {self.horizon}")
        if self.resume and not self.checkpoint:
            raise ValueError("resume=True needs a checkpoint path")

    def model_kwargs(self, env_name: str | None = None) -> dict[str, Any]:
        """Constructor options of :attr:`model` (besides ``d_s, d_a``).

        Args:
            env_name: The env the model is for (a Playground env or a
                Gymnasium MuJoCo id); needed (and only read) with
                ``contact_features``, for the env's geometry.

        Raises:
            ValueError: ``contact_features`` without ``env_name``, or an env
                without floor contacts.
        """
        common = {
            "depth": self.depth,
            "activation": self.activation,
            "dropout": self.dropout,
            "init": self.init,
            "predict_delta": self.predict_delta,
        }
        if self.model not in MASKED_MODELS:
            return {"width": self.width, **common}
        contact = None
        if self.contact_features and self.model in STATE_MASKED_MODELS:
            if env_name is None:
                raise ValueError("contact_features=True needs the env name for its geometry")
            contact = contact_spec(env_name)
        return {
            "width": self.width if self.head_width is None else self.head_width,
            "contact": contact,
            "mask_width": self.mask_width,
            "mode_dim": self.mode_dim,
            "shared_heads": self.shared_heads,
            "temperature": self.mask_temperature,
            "codebook_size": self.codebook_size,
            "code_dim": self.code_dim,
            **common,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (for checkpoints and JSON)."""
        out = dataclasses.asdict(self)
        out["eval_thresholds"] = list(self.eval_thresholds)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        Raises:
            ValueError: A key that is not a field.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(
                f"unknown TrainConfig fields {sorted(unknown)}; fields: {sorted(names)}"
            )
        return cls(**dict(data))
