"""Masked dynamics models: every output predicted from its own masked inputs.

For the mask ``M`` of a sample (``d_s x n``, ``n = d_s + d_a``; from
:mod:`world_models.masks`), output ``j`` is a small MLP (its own "head") of
the masked inputs ``x * M[j]``:

    net_j(x) = w_j . act(W_jL ... act(W_j1 (x * M[j]) + b_j1) ...) + c_j

All ``d_s`` heads run as one batched matrix product per layer (no Python
loop over outputs). With ``mode_dim > 0`` every head also gets a *mode
code*: a learned linear map of the whole hard mask to ``mode_dim`` units,
added (through the head's own weights) to its first hidden layer,

    net_j(x) = w_j . act(... act(W_j1 (x * M[j]) + U_j E vec(M) + b_j1) ...) + c_j.

The mask is the contact mode: where a foot leaves the ground the pattern
changes, and so does the law that maps a head's inputs to its output. A head
sees only its own inputs, so without the code it cannot tell which law
holds when what decides it (a height, another body's contact) is an input
it must not depend on. The code is piecewise constant like the mask, so the
head's output switches between laws but its derivative is still zero off
its mask, as the true dynamics' derivative is.

With ``contact`` (an env's geometry, :mod:`world_models.contact_features`)
the mask network also gets every floor-colliding geom's distance to the
floor at ``s`` and one control step on, computed from the raw state: what
decides the contact mode, which the network otherwise has to infer from
joint angles through the forward kinematics (WalkerRun's zero-pattern F1
0.82 without, 0.89 with). The heads do not get them.

With ``shared_heads`` the hidden layers' weights are one set for all
outputs (each output keeps its biases, its output layer and its own masked
inputs), so that every output's head learns from every sample.

The Jacobian of the network is, by the chain rule with the mask (and so
the mode code) held fixed,

    d net_j / d x_i = M[j, i] * (w_j diag(g_jL) W_jL ... diag(g_j1) W_j1)[i],

so it is exactly zero wherever ``M[j, i] = 0``: a hard mask is piecewise
constant in ``x`` and contributes no derivative of its own. In training the
mask is a straight-through sample, so the prediction and Jacobian losses
reach the mask logits through ``M`` too (``straight_through=True``, how a
mask is learned from data alone). Under mask supervision the trainer turns
that off (:attr:`MaskedDynamics.straight_through`): the prediction loss would
otherwise keep edges on wherever an input merely helps to predict, such as
a height telling whether a contact comes, where the true derivative is zero,
and measured on CheetahRun it held the mask's zero-pattern F1 at 0.78.

Three models share this network and differ in their mask: ``global_mask``
(one for all states), ``local_mask`` (one per sample from an MLP) and
``codebook_mask`` (one of ``K`` learned masks per sample).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from world_models.base import DynamicsModel, MaskSample
from world_models.contact_features import FloorDistances
from world_models.masks import CodebookMask, GlobalMask, LocalMask
from world_models.model import ACTIVATIONS, DynamicsMLP, check_architecture, init_linear

__all__ = ["CodebookMaskDynamics", "GlobalMaskDynamics", "LocalMaskDynamics", "MaskedDynamics"]


def _init_head(weight: Tensor, init: str) -> None:
    """One head's ``(out, in)`` weight as ``nn.Linear`` would be (``init="default"`` too)."""
    if init == "default":
        nn.init.kaiming_uniform_(weight, a=5**0.5)
    else:
        init_linear(weight, None, init)


class MaskedDynamics(DynamicsModel):
    """Base of the masked models: batched per-output heads on masked inputs.

    Args:
        d_s: State dimension.
        d_a: Action dimension.
        width: Hidden units of each output's head.
        depth: Hidden layers of each head.
        activation: One of :data:`~world_models.model.ACTIVATIONS`.
        dropout: Dropout probability after every hidden activation.
        init: One of :data:`~world_models.model.INITS` (per head).
        predict_delta: Predict ``s' - s`` instead of ``s'``.
        mask_width: Hidden units of the mask network (local and codebook).
        temperature: Gumbel-sigmoid temperature of the training samples.
        init_logit: Starting logit of every edge (2: about 88% of edges on).
        codebook_size: ``K`` codes (``codebook_mask`` only).
        code_dim: Dimension of a code (``codebook_mask`` only).
        shared_heads: One set of hidden-layer weights for all outputs (each
            output keeps its own biases and output layer, and its own
            masked inputs), so every output learns from all the data;
            ``False``: every output has its own head.
        mode_dim: Units of the mode code every head gets from the whole
            hard mask (0: none, each head sees its masked inputs only).
        contact: Geometry of the env (:func:`~world_models.contact_features.contact_spec`):
            the mask network also gets every floor-colliding geom's distance
            to the floor (:class:`~world_models.contact_features.FloorDistances`
            of the raw state); ``None``: it sees ``(s_n, a_n)`` only.

    Raises:
        ValueError: A non-positive size, dropout outside ``[0, 1)``, an
            unknown activation or init, a non-positive temperature, a
            negative ``mode_dim``, or ``contact`` for a state of another
            size or a mask that is the same for all states.
    """

    has_mask = True
    config_keys = (
        *DynamicsMLP.config_keys,
        "mask_width", "temperature", "init_logit", "codebook_size", "code_dim", "shared_heads",
        "mode_dim", "contact",
    )  # fmt: skip

    def __init__(
        self,
        d_s: int,
        d_a: int,
        width: int = 64,
        depth: int = 2,
        activation: str = "elu",
        dropout: float = 0.1,
        init: str = "kaiming_normal",
        predict_delta: bool = False,
        mask_width: int = 128,
        temperature: float = 1.0,
        init_logit: float = 2.0,
        codebook_size: int = 16,
        code_dim: int = 16,
        shared_heads: bool = False,
        mode_dim: int = 0,
        contact: dict | None = None,
    ) -> None:
        super().__init__(d_s, d_a, predict_delta)
        check_architecture(width, depth, activation, dropout, init)
        if int(mask_width) < 1:
            raise ValueError(f"mask_width must be >= 1, got {mask_width}")
        if int(mode_dim) < 0:
            raise ValueError(f"mode_dim must be >= 0, got {mode_dim}")
        if float(temperature) <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.width, self.depth = int(width), int(depth)
        self.activation, self.init, self.dropout = activation, init, float(dropout)
        self.mask_width, self.temperature = int(mask_width), float(temperature)
        self.init_logit = float(init_logit)
        self.codebook_size, self.code_dim = int(codebook_size), int(code_dim)
        self.shared_heads = bool(shared_heads)
        self.mode_dim = int(mode_dim)
        self.contact_features = None if contact is None else FloorDistances(contact)
        if self.contact_features is not None:
            f = self.contact_features
            if f.nq + f.nv > self.d_s:
                raise ValueError(
                    f"contact geometry is for nq={f.nq}, nv={f.nv}: the state needs at "
                    f"least {f.nq + f.nv} entries (qpos, qvel), the model has d_s={self.d_s}"
                )
        self._act, self._act_grad = ACTIVATIONS[activation]
        n, h = self.n_inputs, self.width
        # Layer k of every head: weight (d_s, out, in) in nn.Linear's layout;
        # (1, out, in), broadcast over the outputs, when the heads share them.
        sizes = [n] + [h] * self.depth
        stack = 1 if self.shared_heads else self.d_s
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(stack, o, i)) for i, o in itertools.pairwise(sizes)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(self.d_s, o)) for o in sizes[1:])
        self.out_weight = nn.Parameter(torch.empty(self.d_s, h))
        self.out_bias = nn.Parameter(torch.zeros(self.d_s))
        with torch.no_grad():
            for w in self.weights:
                for j in range(len(w)):  # fan-in rules per head, not over the stack
                    _init_head(w[j], init)
            _init_head(self.out_weight, init)  # row j: head j's output layer
        if self.mode_dim:
            # The mode: a linear code of the whole hard mask, and each head's
            # weights from it into its first hidden layer.
            self.mode_embed = nn.Linear(self.d_s * n, self.mode_dim)
            self.mode_weight = nn.Parameter(torch.empty(stack, h, self.mode_dim))
            with torch.no_grad():
                for j in range(stack):
                    _init_head(self.mode_weight[j], init)
        self.mask = self._build_mask()
        #: Whether the losses of the prediction reach the mask (straight-through);
        #: ``False``: the mask learns from its own terms only (mask supervision).
        self.straight_through = True

    def _build_mask(self) -> nn.Module:
        raise NotImplementedError

    @property
    def contact(self) -> dict | None:
        """The env's geometry the contact features come from (``None``: no features)."""
        return None if self.contact_features is None else self.contact_features.spec

    @property
    def n_features(self) -> int:
        """Inputs the mask network gets besides ``(s_n, a_n)`` (contact features)."""
        return 0 if self.contact_features is None else self.contact_features.n_features

    def parameter_groups(self, weight_decay: float, mask_weight_decay: float) -> list[dict]:
        """The heads with ``weight_decay``, the mask with ``mask_weight_decay``."""
        mask = {id(p) for p in self.mask.parameters()}
        heads = [p for p in self.parameters() if id(p) not in mask]
        return [
            {"params": heads, "weight_decay": weight_decay},
            {"params": list(self.mask.parameters()), "weight_decay": mask_weight_decay},
        ]

    # -- forward ---------------------------------------------------------------

    def mask_sample(self, state: Tensor, action: Tensor) -> MaskSample:
        """The mask of normalised ``(s_n, a_n)`` (hard 0/1 in evaluation)."""
        self._check(state, action)
        x = torch.cat([state, action], dim=-1)
        if self.contact_features is not None:  # of the raw state
            raw = state * self.in_scale[: self.d_s] + self.in_mean[: self.d_s]
            x = torch.cat([x, self.contact_features(raw)], dim=-1)
        sample = self.mask(x)
        if not self.straight_through:
            sample.hard = sample.hard.detach()
        return sample

    def _heads(self, x: Tensor, mask: Tensor, gates: bool) -> tuple[Tensor, list[Tensor]]:
        """Output ``(B, d_s)`` of all heads on ``x * mask``; per layer ``act' * dropout``."""
        # (d_s, B, n): head j sees its own masked copy of the inputs.
        h = (x.unsqueeze(1) * mask).transpose(0, 1)
        kept = []
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = torch.matmul(h, w.transpose(1, 2)) + b.unsqueeze(1)
            if k == 0 and self.mode_dim:
                z = z + self._mode_term(mask, len(x))
            g = self._act_grad(z) if gates else None
            h = self._act(z)
            if self.training and self.dropout > 0:
                # One dropout mask per sample, shared by the heads: each head
                # still sees Bernoulli dropout, from d_s times fewer random
                # numbers (drawing them was a quarter of a training step).
                drop = F.dropout(h.new_ones(1, *h.shape[1:]), self.dropout, True)
                h = h * drop
                g = g * drop if gates else None
            kept.append(g)
        out = torch.matmul(h, self.out_weight.unsqueeze(-1)).squeeze(-1)
        return (out + self.out_bias.unsqueeze(1)).t(), kept

    def _mode_term(self, mask: Tensor, batch: int) -> Tensor:
        """``(d_s, B, width)``: what the mode adds to the heads' first pre-activations."""
        mode = self.mode_embed(mask.flatten(1)).expand(batch, -1)  # (B, mode_dim)
        return torch.matmul(mode, self.mode_weight.transpose(1, 2))

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        """Network output: the normalised ``s'`` (or normalised delta with ``predict_delta``)."""
        return self.forward_and_mask(state, action)[0]

    def forward_and_mask(self, state: Tensor, action: Tensor) -> tuple[Tensor, MaskSample]:
        """:meth:`forward` and the mask that pass used."""
        sample = self.mask_sample(state, action)
        return self._heads(torch.cat([state, action], dim=-1), sample.hard, False)[0], sample

    def forward_with_mask(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor, MaskSample]:
        """Output, Jacobian of ``s'_n`` (chain rule, mask held fixed) and the mask used."""
        sample = self.mask_sample(state, action)
        out, gates = self._heads(torch.cat([state, action], dim=-1), sample.hard, True)
        rows = self.out_weight.unsqueeze(1) * gates[-1]  # (d_s, B, width)
        for k in range(len(gates) - 1, 0, -1):
            rows = torch.matmul(rows, self.weights[k]) * gates[k - 1]
        jac = torch.matmul(rows, self.weights[0]).transpose(0, 1) * sample.hard  # (B, d_s, n)
        return out, self._skip_jacobian(jac), sample

    def _resolve_method(self, method: str) -> str:
        """``"auto"``: the chain rule (the mask held fixed), in training and in evaluation.

        ``torch.func`` differentiates the network as written: in evaluation the
        hard mask has no derivative, so it agrees with the chain rule, but its
        ``vmap`` of the per-output heads costs far more (CheetahRun's sizes,
        64 rows: 40 s and 14 GB against 0.03 s; it OOM-killed an MBPO run);
        in training it would differentiate the straight-through sample, which
        is not the Jacobian of the hard-masked network, and is refused.
        """
        if method == "auto":
            return "analytic"
        method = super()._resolve_method(method)
        if method in ("jacrev", "jacfwd") and self.training:
            raise ValueError(
                f"method={method!r} in training mode would differentiate the "
                "straight-through mask sample; use method='analytic' or call eval() first"
            )
        return method

    def extra_repr(self) -> str:
        """Options shown by ``repr``."""
        return (
            f"heads={self.d_s}, shared={self.shared_heads}, width={self.width}, "
            f"depth={self.depth}, "
            f"activation={self.activation!r}, dropout={self.dropout}, "
            f"predict_delta={self.predict_delta}"
        )


class GlobalMaskDynamics(MaskedDynamics):
    """Masked heads with one learned mask for all states (model ``"global_mask"``)."""

    name = "global_mask"

    def _build_mask(self) -> nn.Module:
        if self.contact_features is not None:
            raise ValueError(
                "global_mask has one mask for all states and cannot use contact features; "
                "use local_mask or codebook_mask"
            )
        return GlobalMask(self.d_s, self.n_inputs, self.temperature, self.init_logit)


class LocalMaskDynamics(MaskedDynamics):
    """Masked heads with a mask per sample from an MLP (model ``"local_mask"``)."""

    name = "local_mask"

    def _build_mask(self) -> nn.Module:
        return LocalMask(
            self.d_s,
            self.n_inputs,
            self.mask_width,
            self.temperature,
            self.init_logit,
            n_features=self.n_features,
        )


class CodebookMaskDynamics(MaskedDynamics):
    """Masked heads with one of ``K`` learned masks per sample (model ``"codebook_mask"``)."""

    name = "codebook_mask"

    def _build_mask(self) -> nn.Module:
        return CodebookMask(
            self.d_s,
            self.n_inputs,
            self.mask_width,
            self.codebook_size,
            self.code_dim,
            temperature=self.temperature,
            init_logit=self.init_logit,
            n_features=self.n_features,
        )

    def after_step(self) -> None:
        """Revive codes no sample chose for a while (:meth:`CodebookMask.after_step`)."""
        self.mask.after_step()
