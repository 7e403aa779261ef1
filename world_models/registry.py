"""The model family by name: ``TrainConfig(model=...)``, ``--model``, checkpoints."""

from __future__ import annotations

from typing import Any

from world_models.base import DynamicsModel
from world_models.masked import CodebookMaskDynamics, GlobalMaskDynamics, LocalMaskDynamics
from world_models.model import DynamicsMLP

__all__ = ["MASKED_MODELS", "MODELS", "STATE_MASKED_MODELS", "build_model", "model_class"]

#: Name -> class of every dynamics model.
MODELS: dict[str, type[DynamicsModel]] = {
    cls.name: cls
    for cls in (DynamicsMLP, GlobalMaskDynamics, LocalMaskDynamics, CodebookMaskDynamics)
}

#: The models with an input->output mask (mask losses and metrics apply).
MASKED_MODELS = tuple(name for name, cls in MODELS.items() if cls.has_mask)

#: The masked models whose mask depends on the state (contact features apply).
STATE_MASKED_MODELS = (LocalMaskDynamics.name, CodebookMaskDynamics.name)


def model_class(name: str) -> type[DynamicsModel]:
    """The class of model ``name``.

    Raises:
        ValueError: An unknown name (the message lists the models).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; models: {list(MODELS)}")
    return MODELS[name]


def build_model(name: str, d_s: int, d_a: int, **kwargs: Any) -> DynamicsModel:
    """A new model ``name`` for ``d_s`` states and ``d_a`` actions (``kwargs``: its options).

    Raises:
        ValueError: An unknown name or option.
    """
    cls = model_class(name)
    try:
        return cls(d_s, d_a, **kwargs)
    except TypeError as err:  # an option the model does not take
        raise ValueError(f"model {name!r}: {err}") from err
