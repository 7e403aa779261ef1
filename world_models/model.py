"""An MLP dynamics model ``s' = f(s, a)`` and its Jacobian ``d s' / d(s, a)``.

Coordinates, prediction and the generic Jacobians are those of
:class:`~world_models.base.DynamicsModel`. Two ways to the Jacobian of
``s'_n`` with respect to ``(s_n, a_n)``:

* :meth:`DynamicsMLP.jacobian`: ``torch.func.vmap`` of ``jacrev`` (or
  ``jacfwd``), any network, any mode.
* :meth:`DynamicsMLP.forward_with_jacobian`: the chain rule written out for
  this MLP (``W_out diag(g_L) W_L ... diag(g_1) W_1``), computed together
  with the forward pass and its dropout masks. It is the Jacobian of exactly
  the stochastic network that produced the prediction, and it is what the
  training losses use because it is the cheapest
  (``benchmarks/world_model_speed.py``).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from world_models.base import JACOBIAN_METHODS, DynamicsModel, MaskSample

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "JACOBIAN_METHODS",
    "DynamicsMLP",
    "check_architecture",
    "init_linear",
]


def _elu_grad(z: Tensor) -> Tensor:
    return torch.where(z > 0, torch.ones_like(z), torch.exp(torch.clamp(z, max=0.0)))


def _relu_grad(z: Tensor) -> Tensor:
    return (z > 0).to(z.dtype)


def _tanh_grad(z: Tensor) -> Tensor:
    return 1 - torch.tanh(z) ** 2


def _silu_grad(z: Tensor) -> Tensor:
    sig = torch.sigmoid(z)
    return sig * (1 + z * (1 - sig))


#: Activation name -> (function, derivative).
ACTIVATIONS = {
    "elu": (F.elu, _elu_grad),
    "relu": (F.relu, _relu_grad),
    "tanh": (torch.tanh, _tanh_grad),
    "silu": (F.silu, _silu_grad),
}

#: Weight initialisations of the hidden and output layers (biases start at zero).
INITS = ("kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "default")


def check_architecture(width: int, depth: int, activation: str, dropout: float, init: str) -> None:
    """Raise ``ValueError`` for a size, activation, dropout or init the models do not accept."""
    for name, value in (("width", width), ("depth", depth)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
    if not 0 <= float(dropout) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def init_linear(weight: Tensor, bias: Tensor | None, init: str) -> None:
    """Initialise one weight (fan-in rules of :data:`INITS`) and zero its bias."""
    if init == "default":
        return
    # ELU/ReLU gain for Kaiming; the linear head gets the fan-in rule too.
    fn = {
        "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
        "xavier_normal": nn.init.xavier_normal_,
        "xavier_uniform": nn.init.xavier_uniform_,
    }[init]
    fn(weight)
    if bias is not None:
        nn.init.zeros_(bias)


class DynamicsMLP(DynamicsModel):
    """Multilayer perceptron predicting the normalised next state (model ``"mlp"``).

    Args:
        d_s: State dimension.
        d_a: Action dimension.
        width: Units per hidden layer.
        depth: Number of hidden layers.
        activation: One of :data:`ACTIVATIONS`.
        dropout: Dropout probability after every hidden activation.
        init: One of :data:`INITS`.
        predict_delta: Predict ``s' - s`` instead of ``s'``.

    Raises:
        ValueError: A non-positive size, dropout outside ``[0, 1)``, or an
            unknown activation or init.
    """

    name = "mlp"
    config_keys = (
        "d_s", "d_a", "width", "depth", "activation", "dropout", "init", "predict_delta",
    )  # fmt: skip

    def __init__(
        self,
        d_s: int,
        d_a: int,
        width: int = 512,
        depth: int = 2,
        activation: str = "elu",
        dropout: float = 0.1,
        init: str = "kaiming_normal",
        predict_delta: bool = False,
    ) -> None:
        super().__init__(d_s, d_a, predict_delta)
        check_architecture(width, depth, activation, dropout, init)
        self.width, self.depth = int(width), int(depth)
        self.activation, self.init = activation, init
        self.dropout = float(dropout)
        self._act, self._act_grad = ACTIVATIONS[activation]
        sizes = [self.n_inputs] + [self.width] * self.depth
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in itertools.pairwise(sizes))
        self.head = nn.Linear(self.width, self.d_s)
        for layer in [*self.hidden, self.head]:
            init_linear(layer.weight, layer.bias, init)

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        """Network output: the normalised ``s'`` (or normalised delta with ``predict_delta``).

        Args:
            state: ``(B, d_s)`` normalised states.
            action: ``(B, d_a)`` normalised actions.
        """
        self._check(state, action)
        h = torch.cat([state, action], dim=-1)
        for layer in self.hidden:
            h = F.dropout(self._act(layer(h)), self.dropout, self.training)
        return self.head(h)

    # -- Jacobians -------------------------------------------------------------

    def _forward_gates(self, state: Tensor, action: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Network output and, per hidden layer, ``act'(z) * dropout mask``."""
        self._check(state, action)
        h = torch.cat([state, action], dim=-1)
        gates = []
        for layer in self.hidden:
            z = layer(h)
            g = self._act_grad(z)
            h = self._act(z)
            if self.training and self.dropout > 0:
                mask = F.dropout(torch.ones_like(h), self.dropout, True)
                h, g = h * mask, g * mask
            gates.append(g)
        return self.head(h), gates

    def forward_with_mask(
        self, state: Tensor, action: Tensor
    ) -> tuple[Tensor, Tensor, MaskSample | None]:
        """Output and Jacobian by the chain rule in one pass (no mask: ``None``)."""
        out, gates = self._forward_gates(state, action)
        return out, self._skip_jacobian(self._chain(gates)), None

    def forward_with_columns(
        self, state: Tensor, action: Tensor, index: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Network output and the columns ``index`` of the Jacobian of ``s'_n``.

        Forward-mode chain rule: the cost grows with the number of columns
        ``k`` (about one forward pass each), not with ``d_s + d_a``.

        Args:
            state: ``(B, d_s)`` normalised states.
            action: ``(B, d_a)`` normalised actions.
            index: ``(B, k)`` column indices in ``[0, d_s + d_a)``, per sample.

        Returns:
            ``(output (B, d_s), columns (B, d_s, k))``.
        """
        out, gates = self._forward_gates(state, action)
        # Rows of W_1^T picked per sample: (B, k, width), then on through the layers.
        tangent = self.hidden[0].weight.t()[index] * gates[0].unsqueeze(1)
        for k in range(1, len(gates)):
            tangent = (tangent @ self.hidden[k].weight.t()) * gates[k].unsqueeze(1)
        cols = (tangent @ self.head.weight.t()) * self.gain  # (B, k, d_s)
        if self.predict_delta:  # skip_i * [i == column] for state columns
            eye = torch.eye(self.n_inputs, self.d_s, dtype=cols.dtype, device=cols.device)
            cols = cols + eye[index] * self.skip
        return out, cols.transpose(1, 2)

    def _chain(self, gates: list[Tensor]) -> Tensor:
        """``W_out diag(g_L) W_L ... diag(g_1) W_1`` for a batch of gate vectors."""
        n_in, n_out = self.n_inputs, self.d_s
        if n_out <= n_in:  # reverse: push d_s rows from the output back
            rows = self.head.weight.unsqueeze(0) * gates[-1].unsqueeze(1)  # (B, d_s, width)
            for k in range(len(gates) - 1, 0, -1):
                rows = (rows @ self.hidden[k].weight) * gates[k - 1].unsqueeze(1)
            return rows @ self.hidden[0].weight
        cols = gates[0].unsqueeze(2) * self.hidden[0].weight.unsqueeze(0)  # (B, width, n_in)
        for k in range(1, len(gates)):
            cols = gates[k].unsqueeze(2) * (self.hidden[k].weight @ cols)
        return self.head.weight @ cols

    def extra_repr(self) -> str:
        """Options shown by ``repr``."""
        return f"predict_delta={self.predict_delta}, activation={self.activation!r}, " + (
            f"dropout={self.dropout}, init={self.init!r}"
        )
