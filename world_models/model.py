"""An MLP dynamics model ``s' = f(s, a)`` and its Jacobian ``d s' / d(s, a)``.

The network works in normalised coordinates (z-scores, see
:class:`~world_models.normaliser.Normaliser`). Its output is mapped to the
normalised next state by a fixed affine skip,

    s'_n = skip * s_n + gain * net(s_n, a_n) + offset,

which is the identity (``skip = 0, gain = 1, offset = 0``) for direct
prediction. With ``predict_delta=True`` the network predicts the normalised
delta ``(s' - s - mu_delta) / sigma_delta`` and ``skip, gain, offset`` carry
``s' = s + delta`` into normalised coordinates, so that
``d s'/d s = I + d delta / d s`` holds in raw coordinates. Without a
normaliser (``set_normaliser`` never called) the statistics are the identity
and delta prediction is literally ``s' = s + net(s, a)``.

Two ways to the Jacobian of ``s'_n`` with respect to ``(s_n, a_n)``:

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
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from world_models.normaliser import scale_jacobian

if TYPE_CHECKING:
    from world_models.normaliser import Normaliser

__all__ = ["ACTIVATIONS", "INITS", "JACOBIAN_METHODS", "DynamicsMLP"]


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

#: Accepted ``method`` values of :meth:`DynamicsMLP.jacobian`.
JACOBIAN_METHODS = ("auto", "jacrev", "jacfwd", "analytic")


class DynamicsMLP(nn.Module):
    """Multilayer perceptron predicting the normalised next state.

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
        super().__init__()
        for name, value in (("d_s", d_s), ("d_a", d_a), ("width", width), ("depth", depth)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        if not 0 <= float(dropout) < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_s, self.d_a = int(d_s), int(d_a)
        self.width, self.depth = int(width), int(depth)
        self.activation, self.init = activation, init
        self.dropout, self.predict_delta = float(dropout), bool(predict_delta)
        self._act, self._act_grad = ACTIVATIONS[activation]
        sizes = [self.d_s + self.d_a] + [self.width] * self.depth
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in itertools.pairwise(sizes))
        self.head = nn.Linear(self.width, self.d_s)
        self._init_weights()
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

    def _init_weights(self) -> None:
        if self.init == "default":
            return
        # ELU/ReLU gain for Kaiming; the linear head gets the fan-in rule too.
        fn = {
            "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
            "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
            "xavier_normal": nn.init.xavier_normal_,
            "xavier_uniform": nn.init.xavier_uniform_,
        }[self.init]
        for layer in [*self.hidden, self.head]:
            fn(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def config(self) -> dict:
        """Constructor arguments (to rebuild the model from a checkpoint)."""
        return {
            "d_s": self.d_s,
            "d_a": self.d_a,
            "width": self.width,
            "depth": self.depth,
            "activation": self.activation,
            "dropout": self.dropout,
            "init": self.init,
            "predict_delta": self.predict_delta,
        }

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

    def to_next_state(self, state: Tensor, output: Tensor) -> Tensor:
        """Normalised next state from the normalised state and the network output."""
        return self.skip * state + self.gain * output + self.offset

    def predict(self, state: Tensor, action: Tensor) -> Tensor:
        """Normalised next state ``s'_n`` from normalised ``(s_n, a_n)``."""
        return self.to_next_state(state, self(state, action))

    def predict_raw(self, state: Tensor, action: Tensor) -> Tensor:
        """Next state in raw coordinates from raw ``(s, a)``."""
        x = (torch.cat([state, action], dim=-1) - self.in_mean) / self.in_scale
        s_n, a_n = x[..., : self.d_s], x[..., self.d_s :]
        return self.predict(s_n, a_n) * self.out_scale + self.out_mean

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

    def forward_with_jacobian(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Network output and the Jacobian of ``s'_n``, by the chain rule, in one pass.

        Differentiable with respect to the parameters (for Jacobian losses);
        in training mode both use the same dropout masks.

        Returns:
            ``(output (B, d_s), jacobian (B, d_s, d_s + d_a))``; the output is
            that of :meth:`forward`, the Jacobian that of :meth:`predict`.
        """
        out, gates = self._forward_gates(state, action)
        return out, self._skip_jacobian(self._chain(gates))

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
            eye = torch.eye(self.d_s + self.d_a, self.d_s, dtype=cols.dtype, device=cols.device)
            cols = cols + eye[index] * self.skip
        return out, cols.transpose(1, 2)

    def _chain(self, gates: list[Tensor]) -> Tensor:
        """``W_out diag(g_L) W_L ... diag(g_1) W_1`` for a batch of gate vectors."""
        n_in, n_out = self.d_s + self.d_a, self.d_s
        if n_out <= n_in:  # reverse: push d_s rows from the output back
            rows = self.head.weight.unsqueeze(0) * gates[-1].unsqueeze(1)  # (B, d_s, width)
            for k in range(len(gates) - 1, 0, -1):
                rows = (rows @ self.hidden[k].weight) * gates[k - 1].unsqueeze(1)
            return rows @ self.hidden[0].weight
        cols = gates[0].unsqueeze(2) * self.hidden[0].weight.unsqueeze(0)  # (B, width, n_in)
        for k in range(1, len(gates)):
            cols = gates[k].unsqueeze(2) * (self.hidden[k].weight @ cols)
        return self.head.weight @ cols

    def _skip_jacobian(self, jac_net: Tensor) -> Tensor:
        """Jacobian of ``s'_n`` from that of the network output (adds the delta skip)."""
        jac = self.gain[:, None] * jac_net
        if self.predict_delta:
            d = self.d_s
            jac = torch.cat([jac[..., :d] + torch.diag(self.skip), jac[..., d:]], dim=-1)
        return jac

    def jacobian(self, state: Tensor, action: Tensor, method: str = "auto") -> Tensor:
        """Batched Jacobian ``d s'_n / d(s_n, a_n)``, shape ``(B, d_s, d_s + d_a)``.

        Args:
            state: ``(B, d_s)`` normalised states.
            action: ``(B, d_a)`` normalised actions.
            method: ``"jacrev"`` / ``"jacfwd"`` (``torch.func.vmap`` of either),
                ``"analytic"`` (:meth:`forward_with_jacobian`), or ``"auto"``:
                reverse mode when ``d_s <= d_s + d_a`` (always here), which
                measured faster than forward mode for the study's shapes.
                In training mode every sample gets its own dropout mask.

        Raises:
            ValueError: Unknown ``method`` or mis-shaped inputs.
        """
        if method not in JACOBIAN_METHODS:
            raise ValueError(f"method must be one of {list(JACOBIAN_METHODS)}, got {method!r}")
        self._check(state, action)
        if method == "analytic":
            return self.forward_with_jacobian(state, action)[1]
        if method == "auto":
            method = "jacrev" if self.d_s <= self.d_s + self.d_a else "jacfwd"
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
        jac_net = vmapped(params, x)
        return self._skip_jacobian(jac_net)

    def jacobian_raw(self, state: Tensor, action: Tensor, method: str = "auto") -> Tensor:
        """Jacobian ``d s' / d(s, a)`` in raw coordinates from raw ``(s, a)``."""
        x = (torch.cat([state, action], dim=-1) - self.in_mean) / self.in_scale
        jac_n = self.jacobian(x[..., : self.d_s], x[..., self.d_s :], method=method)
        return scale_jacobian(jac_n, self.in_scale, self.out_scale, "raw")

    def extra_repr(self) -> str:
        """Options shown by ``repr``."""
        return f"predict_delta={self.predict_delta}, activation={self.activation!r}, " + (
            f"dropout={self.dropout}, init={self.init!r}"
        )
