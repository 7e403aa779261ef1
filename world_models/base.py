"""What every dynamics model of :mod:`world_models` shares: coordinates, prediction, Jacobians.

A model works in normalised coordinates (z-scores, see
:class:`~world_models.normaliser.Normaliser`). Its network output is mapped
to the normalised next state by a fixed affine skip,

    s'_n = skip * s_n + gain * net(s_n, a_n) + offset,

which is the identity (``skip = 0, gain = 1, offset = 0``) for direct
prediction. With ``predict_delta=True`` the network predicts the normalised
delta ``(s' - s - mu_delta) / sigma_delta`` and ``skip, gain, offset`` carry
``s' = s + delta`` into normalised coordinates, so that
``d s'/d s = I + d delta / d s`` holds in raw coordinates. Without a
normaliser (``set_normaliser`` never called) the statistics are the identity
and delta prediction is literally ``s' = s + net(s, a)``.

A subclass supplies the network (:meth:`DynamicsModel.forward`) and the
Jacobian of its output computed together with it
(:meth:`DynamicsModel.forward_with_jacobian`, what the training losses use);
the rest of the interface (``predict``, ``predict_raw``, ``jacobian``,
``jacobian_raw``, column subsets, checkpoints) is written once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from world_models.normaliser import scale_jacobian

if TYPE_CHECKING:
    from world_models.normaliser import Normaliser

__all__ = ["JACOBIAN_METHODS", "DynamicsModel", "MaskSample"]

#: Accepted ``method`` values of :meth:`DynamicsModel.jacobian`.
JACOBIAN_METHODS = ("auto", "jacrev", "jacfwd", "analytic")


@dataclass
class MaskSample:
    """The input->output mask a masked model used for one batch.

    Attributes:
        hard: ``(B or 1, d_s, d_s + d_a)`` 0/1 values the network multiplied
            its inputs with (in training a straight-through sample: its
            gradient is that of ``prob``).
        logits: Logits of ``prob``, the same shape (for the mask losses).
        aux: The mask's own loss terms (e.g. the codebook's ``vq``), by name.
    """

    hard: Tensor
    logits: Tensor
    aux: dict[str, Tensor]

    @property
    def prob(self) -> Tensor:
        """Probability of every edge being on."""
        return torch.sigmoid(self.logits)


class DynamicsModel(nn.Module):
    """Base class of the dynamics models: ``s'_n`` from ``(s_n, a_n)`` and its Jacobian.

    Args:
        d_s: State dimension.
        d_a: Action dimension.
        predict_delta: Predict ``s' - s`` instead of ``s'``.

    Raises:
        ValueError: A non-positive dimension.
    """

    #: Registry name of the model (``TrainConfig.model``, checkpoints).
    name: ClassVar[str] = ""

    def __init__(self, d_s: int, d_a: int, predict_delta: bool = False) -> None:
        super().__init__()
        for label, value in (("d_s", d_s), ("d_a", d_a)):
            if int(value) < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        self.d_s, self.d_a = int(d_s), int(d_a)
        self.predict_delta = bool(predict_delta)
        # Affine map from the network output to s'_n (see the module docstring)
        # and the raw statistics; identity until set_normaliser.
        ones, zeros = torch.ones(self.d_s), torch.zeros(self.d_s)
        self.register_buffer("skip", ones.clone() if self.predict_delta else zeros.clone())
        self.register_buffer("gain", ones.clone())
        self.register_buffer("offset", zeros.clone())
        self.register_buffer("in_mean", torch.zeros(self.d_s + self.d_a))
        self.register_buffer("in_scale", torch.ones(self.d_s + self.d_a))
        self.register_buffer("out_mean", zeros.clone())
        self.register_buffer("out_scale", ones.clone())

    @property
    def n_inputs(self) -> int:
        """``d_s + d_a``, the Jacobian's columns."""
        return self.d_s + self.d_a

    #: Constructor arguments, each kept as an attribute of the same name.
    config_keys: ClassVar[tuple[str, ...]] = ("d_s", "d_a", "predict_delta")

    @property
    def config(self) -> dict:
        """Constructor arguments (to rebuild the model from a checkpoint)."""
        return {key: getattr(self, key) for key in self.config_keys}

    def set_normaliser(self, normaliser: Normaliser) -> None:
        """Take the statistics of ``normaliser`` into the model's buffers.

        Raises:
            ValueError: The normaliser's dimensions differ from the model's.
        """
        if (normaliser.d_s, normaliser.d_a) != (self.d_s, self.d_a):
            raise ValueError(
                f"normaliser is for d_s={normaliser.d_s}, d_a={normaliser.d_a}; "
                f"the model has d_s={self.d_s}, d_a={self.d_a}"
            )
        t = normaliser.tensors(dtype=self.in_mean.dtype, device=self.in_mean.device)
        s_scale, out_scale = t["state_scale"], t["next_state_scale"]
        with torch.no_grad():
            self.in_mean.copy_(torch.cat([t["state_mean"], t["action_mean"]]))
            self.in_scale.copy_(torch.cat([s_scale, t["action_scale"]]))
            self.out_mean.copy_(t["next_state_mean"])
            self.out_scale.copy_(out_scale)
            if self.predict_delta:
                self.skip.copy_(s_scale / out_scale)
                self.gain.copy_(t["delta_scale"] / out_scale)
                self.offset.copy_(
                    (t["state_mean"] + t["delta_mean"] - t["next_state_mean"]) / out_scale
                )

    # -- forward ---------------------------------------------------------------

    def _check(self, state: Tensor, action: Tensor) -> None:
        if state.shape[-1] != self.d_s or action.shape[-1] != self.d_a:
            raise ValueError(
                f"expected state (..., {self.d_s}) and action (..., {self.d_a}), "
                f"got {tuple(state.shape)} and {tuple(action.shape)}"
            )

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        """Network output: the normalised ``s'`` (or normalised delta with ``predict_delta``)."""
        raise NotImplementedError

    def to_next_state(self, state: Tensor, output: Tensor) -> Tensor:
        """Normalised next state from the normalised state and the network output."""
        return self.skip * state + self.gain * output + self.offset

    def predict(self, state: Tensor, action: Tensor) -> Tensor:
        """Normalised next state ``s'_n`` from normalised ``(s_n, a_n)``."""
        return self.to_next_state(state, self(state, action))

    def _normalise_inputs(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        x = (torch.cat([state, action], dim=-1) - self.in_mean) / self.in_scale
        return x[..., : self.d_s], x[..., self.d_s :]

    def predict_raw(self, state: Tensor, action: Tensor) -> Tensor:
        """Next state in raw coordinates from raw ``(s, a)``."""
        return self.predict(*self._normalise_inputs(state, action)) * self.out_scale + self.out_mean

    # -- masks (masked models override) ------------------------------------------

    #: Whether the model has an input->output mask (:meth:`mask_sample`).
    has_mask: ClassVar[bool] = False

    def mask_sample(self, state: Tensor, action: Tensor) -> MaskSample | None:
        """The mask the network uses on normalised ``(s_n, a_n)``; ``None`` for unmasked models."""
        return None

    def forward_and_mask(self, state: Tensor, action: Tensor) -> tuple[Tensor, MaskSample | None]:
        """:meth:`forward` and the mask that pass used (``None`` for unmasked models)."""
        return self(state, action), None

    def after_step(self) -> None:
        """Called by the trainer after every optimiser step (e.g. to revive unused codes)."""

    def parameter_groups(self, weight_decay: float, mask_weight_decay: float) -> list[dict]:
        """Optimiser parameter groups: the mask's parameters get ``mask_weight_decay``."""
        return [{"params": list(self.parameters()), "weight_decay": weight_decay}]

    # -- Jacobians -------------------------------------------------------------

    def forward_with_jacobian(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Network output and the Jacobian of ``s'_n``, in one pass.

        Differentiable with respect to the parameters (for Jacobian losses);
        in training mode both use the same dropout masks (and mask samples).

        Returns:
            ``(output (B, d_s), jacobian (B, d_s, d_s + d_a))``; the output is
            that of :meth:`forward`, the Jacobian that of :meth:`predict`.
        """
        out, jac_net, _ = self.forward_with_mask(state, action)
        return out, jac_net

    def forward_with_mask(
        self, state: Tensor, action: Tensor
    ) -> tuple[Tensor, Tensor, MaskSample | None]:
        """:meth:`forward_with_jacobian` and the mask the pass used (``None`` if unmasked)."""
        raise NotImplementedError

    def forward_with_columns(
        self, state: Tensor, action: Tensor, index: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Network output and the columns ``index`` of the Jacobian of ``s'_n``.

        This default computes the whole Jacobian and keeps the columns; a
        model with a cheaper forward-mode product overrides it.

        Args:
            state: ``(B, d_s)`` normalised states.
            action: ``(B, d_a)`` normalised actions.
            index: ``(B, k)`` column indices in ``[0, d_s + d_a)``, per sample.

        Returns:
            ``(output (B, d_s), columns (B, d_s, k))``.
        """
        out, jac = self.forward_with_jacobian(state, action)
        return out, jac.gather(2, index.unsqueeze(1).expand(-1, self.d_s, -1))

    def _skip_jacobian(self, jac_net: Tensor) -> Tensor:
        """Jacobian of ``s'_n`` from that of the network output (adds the delta skip)."""
        jac = self.gain[:, None] * jac_net
        if self.predict_delta:
            d = self.d_s
            jac = torch.cat([jac[..., :d] + torch.diag(self.skip), jac[..., d:]], dim=-1)
        return jac

    def _resolve_method(self, method: str) -> str:
        if method not in JACOBIAN_METHODS:
            raise ValueError(f"method must be one of {list(JACOBIAN_METHODS)}, got {method!r}")
        # Reverse mode measured faster than forward mode for the study's shapes.
        return "jacrev" if method == "auto" else method

    def jacobian(self, state: Tensor, action: Tensor, method: str = "auto") -> Tensor:
        """Batched Jacobian ``d s'_n / d(s_n, a_n)``, shape ``(B, d_s, d_s + d_a)``.

        Args:
            state: ``(B, d_s)`` normalised states.
            action: ``(B, d_a)`` normalised actions.
            method: ``"jacrev"`` / ``"jacfwd"`` (``torch.func.vmap`` of either,
                an independent computation of the same Jacobian),
                ``"analytic"`` (:meth:`forward_with_jacobian`), or ``"auto"``
                (the model's choice). In training mode every sample gets its
                own dropout mask.

        Raises:
            ValueError: Unknown ``method`` or mis-shaped inputs.
        """
        method = self._resolve_method(method)
        self._check(state, action)
        if method == "analytic":
            return self.forward_with_jacobian(state, action)[1]
        params = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        x = torch.cat([state, action], dim=-1)

        def single(p: dict, xi: Tensor) -> Tensor:
            s, a = xi[: self.d_s].unsqueeze(0), xi[self.d_s :].unsqueeze(0)
            out = torch.func.functional_call(self, (p, buffers), (s, a))
            return out.squeeze(0)

        if method == "jacrev":
            jac_fn = torch.func.jacrev(single, argnums=1)
        else:  # one dropout mask for all of a sample's tangent columns
            jac_fn = torch.func.jacfwd(single, argnums=1, randomness="same")
        vmapped = torch.func.vmap(jac_fn, in_dims=(None, 0), randomness="different")
        return self._skip_jacobian(vmapped(params, x))

    def jacobian_raw(self, state: Tensor, action: Tensor, method: str = "auto") -> Tensor:
        """Jacobian ``d s' / d(s, a)`` in raw coordinates from raw ``(s, a)``."""
        jac_n = self.jacobian(*self._normalise_inputs(state, action), method=method)
        return scale_jacobian(jac_n, self.in_scale, self.out_scale, "raw")
