"""Input->output masks of the masked dynamics models: one global, one per sample, a codebook.

Each mask module maps normalised inputs ``x = [s_n | a_n]`` of shape
``(B, n)`` to a :class:`~world_models.base.MaskSample` over the
``d_s x n`` edges ``input i -> output j`` (``n = d_s + d_a``):

* :class:`GlobalMask`: one learned logit per edge, the same for every state
  (CDL's single causal graph).
* :class:`LocalMask`: an MLP of ``x`` gives the logits of every edge, per
  sample (NCD's local mask).
* :class:`CodebookMask`: an encoder of ``x`` is vector-quantised to the
  nearest of ``K`` learned codes and a decoder turns the code into the edge
  logits, so at most ``K`` masks exist (FCDL's codebook of local graphs).

Training draws hard 0/1 masks by a Gumbel-sigmoid with a straight-through
gradient (the value is the hard sample, the gradient that of the relaxed
one); evaluation thresholds the probability at 0.5. A hard mask is a
piecewise constant function of ``x``: it has no derivative, so the model's
Jacobian is exactly zero wherever its mask is zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from world_models.base import MaskSample

__all__ = ["CodebookMask", "GlobalMask", "LocalMask", "hard_mask"]


def hard_mask(logits: Tensor, temperature: float, training: bool) -> Tensor:
    """Hard 0/1 mask from edge logits.

    In training: a Gumbel-sigmoid sample ``sigmoid((logits + L) / T) > 0.5``
    with ``L`` logistic noise, straight-through (its gradient is that of the
    relaxed sample); otherwise ``sigmoid(logits) > 0.5``, no noise.
    """
    if not training:
        return (logits > 0).to(logits.dtype)
    u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
    relaxed = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
    hard = (relaxed > 0.5).to(logits.dtype)
    return hard + relaxed - relaxed.detach()


def _mlp(n_in: int, width: int, n_out: int, out_bias: float) -> nn.Sequential:
    """Two ELU layers; the output layer starts near zero with a constant bias."""
    net = nn.Sequential(nn.Linear(n_in, width), nn.ELU(), nn.Linear(width, width), nn.ELU())
    out = nn.Linear(width, n_out)
    # Small output weights: every sample starts from the same (dense) mask.
    nn.init.normal_(out.weight, std=0.01)
    nn.init.constant_(out.bias, out_bias)
    net.append(out)
    return net


class GlobalMask(nn.Module):
    """One learned mask for all states.

    The logits are ``scale * raw`` with a learned ``raw``: Adam moves a
    parameter by about its learning rate per step whatever its gradient, so
    the scale lets a logit cross zero in tens of steps rather than thousands
    (the local masks get the same from their many weights).

    Args:
        d_s: Outputs (state dimension).
        n_in: Inputs (``d_s + d_a``).
        temperature: Gumbel-sigmoid temperature while training.
        init_logit: Starting logit of every edge (positive: starts dense).
        scale: Logits per unit of the learned parameter.
    """

    def __init__(
        self,
        d_s: int,
        n_in: int,
        temperature: float = 1.0,
        init_logit: float = 2.0,
        scale: float = 20.0,
    ):
        super().__init__()
        self.temperature, self.scale = float(temperature), float(scale)
        self.raw = nn.Parameter(torch.full((d_s, n_in), float(init_logit) / self.scale))

    @property
    def logits(self) -> Tensor:
        """``(d_s, n)`` edge logits."""
        return self.scale * self.raw

    def forward(self, x: Tensor) -> MaskSample:
        """The mask (``(1, d_s, n)`` in evaluation, a sample per row in training)."""
        logits = self.logits.unsqueeze(0)
        if self.training:
            logits = logits.expand(x.shape[0], -1, -1)
        return MaskSample(hard_mask(logits, self.temperature, self.training), logits, {})


class LocalMask(nn.Module):
    """A mask per sample from an MLP of the inputs.

    Args:
        d_s: Outputs (state dimension).
        n_in: Inputs (``d_s + d_a``).
        width: Hidden units of the mask network (two ELU layers).
        temperature: Gumbel-sigmoid temperature while training.
        init_logit: Starting logit of every edge.
        n_features: Further inputs of the network after the ``n_in`` model
            inputs (e.g. contact features), which the mask does not cover.
    """

    def __init__(
        self,
        d_s: int,
        n_in: int,
        width: int = 128,
        temperature: float = 1.0,
        init_logit: float = 2.0,
        n_features: int = 0,
    ):
        super().__init__()
        self.d_s, self.n_in, self.temperature = d_s, n_in, float(temperature)
        self.net = _mlp(n_in + n_features, width, d_s * n_in, init_logit)

    def forward(self, x: Tensor) -> MaskSample:
        """A mask per row of ``x`` (``(B, n_in + n_features)``): ``(B, d_s, n_in)``."""
        logits = self.net(x).view(-1, self.d_s, self.n_in)
        return MaskSample(hard_mask(logits, self.temperature, self.training), logits, {})


class CodebookMask(nn.Module):
    """A mask per sample chosen from a learned codebook of ``K``.

    The encoder's output ``z`` is replaced by its nearest code ``q`` (the
    value of ``q``, the gradient of ``z``: straight-through), and the decoder
    maps ``q`` to edge logits. The codebook learns by the VQ-VAE terms
    ``|sg(z) - q|^2 + commitment * |z - sg(q)|^2`` (``aux["vq"]``). The codes
    start on encoder outputs of the first training batch, and codes that
    samples stopped choosing are moved onto encoder outputs of the last batch
    (:meth:`after_step`), so the codebook does not collapse to a few codes.

    Args:
        d_s: Outputs (state dimension).
        n_in: Inputs (``d_s + d_a``).
        width: Hidden units of the encoder and decoder.
        codebook_size: ``K``, the number of codes (masks).
        code_dim: Dimension of a code.
        commitment: Weight of the commitment term.
        temperature: Gumbel-sigmoid temperature while training.
        init_logit: Starting logit of every edge.
        usage_decay: Decay of the running share of samples per code.
        n_features: Further inputs of the encoder after the ``n_in`` model inputs.
    """

    def __init__(
        self,
        d_s: int,
        n_in: int,
        width: int = 128,
        codebook_size: int = 16,
        code_dim: int = 16,
        commitment: float = 0.25,
        temperature: float = 1.0,
        init_logit: float = 2.0,
        usage_decay: float = 0.99,
        n_features: int = 0,
    ):
        super().__init__()
        if int(codebook_size) < 1 or int(code_dim) < 1:
            raise ValueError(
                f"codebook_size and code_dim must be >= 1, got {codebook_size}, {code_dim}"
            )
        self.d_s, self.n_in, self.temperature = d_s, n_in, float(temperature)
        self.commitment, self.usage_decay = float(commitment), float(usage_decay)
        self.encoder = nn.Sequential(
            nn.Linear(n_in + n_features, width), nn.ELU(), nn.Linear(width, width), nn.ELU(),
            nn.Linear(width, code_dim),
        )  # fmt: skip
        self.codes = nn.Parameter(torch.randn(int(codebook_size), int(code_dim)))
        self.decoder = _mlp(int(code_dim), width, d_s * n_in, init_logit)
        self.register_buffer("usage", torch.full((int(codebook_size),), 1.0 / codebook_size))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self._last_z: Tensor | None = None

    @property
    def codebook_size(self) -> int:
        """``K``."""
        return self.codes.shape[0]

    def assign(self, x: Tensor) -> Tensor:
        """Index of the code chosen for each row of ``x``, ``(B,)``."""
        return self._nearest(self.encoder(x))

    def _nearest(self, z: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.cdist(z.detach(), self.codes.detach()).argmin(dim=1)

    def code_logits(self) -> Tensor:
        """Edge logits of every code, ``(K, d_s, n)`` (the masks the model can use)."""
        return self.decoder(self.codes).view(-1, self.d_s, self.n_in)

    def forward(self, x: Tensor) -> MaskSample:
        """A mask per row of ``x``: ``(B, d_s, n)``, one of the ``K`` codes' in evaluation."""
        z = self.encoder(x)
        if self.training and not bool(self.initialised):
            self._place_codes(torch.arange(self.codebook_size, device=z.device), z.detach())
            self.initialised.fill_(True)
        index = self._nearest(z)
        q = self.codes[index]
        vq = F.mse_loss(q, z.detach()) + self.commitment * F.mse_loss(z, q.detach())
        if self.training:
            with torch.no_grad():
                share = torch.bincount(index, minlength=self.codebook_size).to(self.usage)
                rate = 1 - self.usage_decay
                self.usage.mul_(self.usage_decay).add_(share / len(index), alpha=rate)
            self._last_z = z.detach()
        logits = self.decoder(z + (q - z).detach()).view(-1, self.d_s, self.n_in)
        hard = hard_mask(logits, self.temperature, self.training)
        return MaskSample(hard, logits, {"vq": vq})

    @torch.no_grad()
    def _place_codes(self, which: Tensor, z: Tensor) -> None:
        """Put the codes ``which`` on random rows of ``z`` (slightly jittered, so none coincide)."""
        pick = torch.randint(len(z), (len(which),), device=z.device)
        jitter = 1e-3 * z.std().clamp(min=1e-6) * torch.randn_like(z[pick])
        self.codes[which] = (z[pick] + jitter).to(self.codes.dtype)
        self.usage[which] = 1.0 / self.codebook_size

    @torch.no_grad()
    def after_step(self) -> None:
        """Move codes used under 10% of their fair share onto encoder outputs of the last batch."""
        if self._last_z is None:
            return
        dead = torch.nonzero(self.usage < 0.1 / self.codebook_size).flatten()
        if len(dead):
            self._place_codes(dead, self._last_z)
        self._last_z = None
