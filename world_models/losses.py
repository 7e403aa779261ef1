"""The study's five training losses (docs/method.md), and a cheaper column-subset variant.

Every mode adds at most one Jacobian term to the next-state MSE; all terms
live in normalised coordinates, where the Jacobian is that of ``s'_n`` with
respect to ``(s_n, a_n)``:

=================================  =========================================================
mode                               total
=================================  =========================================================
``state``                          ``w_state * MSE(y_hat, y)``
``state-jacobian``                 ``+ w_jacobian * MSE(J_hat, J)``
``state-jacobian-l1``              ``+ w_jacobian_l1 * MAE(J_hat, J)``
``state-jacobian-l1-regularizer``  ``+ w_regularizer * mean |J_hat|`` (needs no ground truth)
``state-jacobian-l1-sparse-only``  ``+ w_sparse * mean of |J_hat| over the zeros of J``
``state-mask``                     ``+ w_mask * BCE(mask probability, J != 0)`` (masked models)
=================================  =========================================================

The first five are the study's; ``state-mask`` supervises the mask of a
masked model (:mod:`world_models.masked`) with the ground truth's non-zero
pattern. A masked model adds its own terms to every mode: in the modes
without mask supervision ``w_mask_sparsity * mean mask probability`` (the
sparsity penalty of CDL/FCDL, so the mask is learned from data alone), and
the codebook's ``w_vq * vq`` (:class:`~world_models.masks.CodebookMask`).

``y`` is the normalised ``s'`` (or delta, for delta models). The zeros of
``J`` are those of the raw ground truth at the data set's threshold
(:attr:`Batch.zero_mask`, ``sparsity.zero_mask``).

Ground-truth columns taken at a non-smooth point of the step (an action on
its control bound: :attr:`Batch.jacobian_valid` is ``False``) are left out of
every term that compares with the ground truth; the means run over the valid
elements only.

Column subsets: instead of the whole Jacobian, ``k`` of its ``d_s + d_a``
columns, drawn per sample without replacement, are computed by forward-mode
products (``torch.func.jvp``). Averages over the sampled elements are
unbiased estimates of the averages over all elements; the sparse-only term
(a sum over the zeros divided by their known count) is scaled by
``(d_s + d_a) / k``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from world_models.base import DynamicsModel, MaskSample
from world_models.data import Batch
from world_models.model import DynamicsMLP
from world_models.registry import MASKED_MODELS

__all__ = [
    "LOSSES",
    "LOSS_MODES",
    "STUDY_LOSS_MODES",
    "JacobianSample",
    "LossMode",
    "LossOutput",
    "LossWeights",
    "check_model_for_mode",
    "compute_loss",
    "configure_mask",
    "jacobian_columns",
    "mask_terms",
    "needs_ground_truth_jacobian",
    "needs_model_jacobian",
    "supervises_mask",
]

#: ``(total, {term: value})``; the terms are detached, for logging.
LossOutput = tuple[Tensor, dict[str, Tensor]]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (a mode uses only its own terms).

    Attributes:
        state: Next-state MSE.
        jacobian: MSE of the Jacobian (``state-jacobian``).
        jacobian_l1: MAE of the Jacobian (``state-jacobian-l1``).
        regularizer: Mean absolute predicted Jacobian (``...-regularizer``).
        sparse: MAE on the ground truth's zeros (``...-sparse-only``).
        mask: Binary cross-entropy of the mask against ``J != 0`` (``state-mask``).
        mask_zeros: Weight of the true zeros inside that cross-entropy (the
            non-zeros weigh 1): above 1 trades the precision of the mask's
            zeros for their recall, for envs whose zeros are rare.
        mask_sparsity: Mean mask probability of a masked model in the other modes.
        vq: Codebook terms of ``codebook_mask``.
    """

    state: float = 1.0
    jacobian: float = 1.0
    jacobian_l1: float = 1.0
    regularizer: float = 1.0
    sparse: float = 1.0
    mask: float = 1.0
    mask_zeros: float = 1.0
    mask_sparsity: float = 1e-3
    vq: float = 1.0


@dataclass
class JacobianSample:
    """Predicted Jacobian elements with their targets: all columns or a subset.

    Attributes:
        pred: ``(B, d_s, m)`` predicted normalised Jacobian columns.
        target: ``(B, d_s, m)`` ground truth of the same columns, or ``None``.
        mask: ``(B, d_s, m)`` bool zeros of the ground truth, or ``None``.
        n_zeros: Zeros of the full ground truth over the batch (all columns).
        fraction: ``m / (d_s + d_a)``, the share of columns present.
        valid: ``(B, 1, m)`` bool, ``False`` for non-smooth ground-truth columns,
            or ``None`` (all valid).
    """

    pred: Tensor
    target: Tensor | None = None
    mask: Tensor | None = None
    n_zeros: Tensor | None = None
    fraction: float = 1.0
    valid: Tensor | None = None

    def _need_target(self) -> Tensor:
        if self.target is None:
            raise ValueError("this loss needs the ground-truth Jacobian; the batch has none")
        return self.target

    def mean(self, values: Tensor) -> Tensor:
        """Mean of ``(B, d_s, m)`` element values over the valid elements."""
        if self.valid is None:
            return values.mean()
        weight = self.valid.to(values.dtype).expand_as(values)
        return (values * weight).sum() / weight.sum().clamp(min=1)


def _state_term(output: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(output, target)


def _finish(terms: dict[str, Tensor], weights: LossWeights) -> LossOutput:
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    logged = {k: v.detach() for k, v in terms.items()}
    logged["total"] = total.detach()
    return total, logged


def state_loss(
    output: Tensor, target: Tensor, jac: JacobianSample | None, w: LossWeights
) -> LossOutput:
    """``state``: next-state MSE only."""
    return _finish({"state": _state_term(output, target)}, w)


def state_jacobian_loss(
    output: Tensor, target: Tensor, jac: JacobianSample, w: LossWeights
) -> LossOutput:
    """``state-jacobian``: + MSE of the Jacobian."""
    err = jac.pred - jac._need_target()
    return _finish({"state": _state_term(output, target), "jacobian": jac.mean(err**2)}, w)


def state_jacobian_l1_loss(
    output: Tensor, target: Tensor, jac: JacobianSample, w: LossWeights
) -> LossOutput:
    """``state-jacobian-l1``: + MAE of the Jacobian."""
    err = jac.pred - jac._need_target()
    return _finish({"state": _state_term(output, target), "jacobian_l1": jac.mean(err.abs())}, w)


def state_jacobian_l1_regularizer_loss(
    output: Tensor, target: Tensor, jac: JacobianSample, w: LossWeights
) -> LossOutput:
    """``state-jacobian-l1-regularizer``: + mean absolute predicted Jacobian."""
    return _finish({"state": _state_term(output, target), "regularizer": jac.pred.abs().mean()}, w)


def state_jacobian_l1_sparse_only_loss(
    output: Tensor, target: Tensor, jac: JacobianSample, w: LossWeights
) -> LossOutput:
    """``state-jacobian-l1-sparse-only``: + MAE on the elements that are zero in ``J``."""
    if jac.mask is None or jac.n_zeros is None:
        raise ValueError(
            "the sparse-only loss needs the ground truth's zero mask; the batch has none"
        )
    # |J_hat - J| = |J_hat| where J is zero; dividing by the full count keeps it a mean.
    masked = (jac.pred.abs() * jac.mask).sum() / jac.fraction
    sparse = masked / jac.n_zeros.clamp(min=1)
    return _finish({"state": _state_term(output, target), "sparse": sparse}, w)


#: Mode name -> loss function ``(output, target, jacobian_sample, weights) -> (total, terms)``.
LOSSES: dict[str, Callable[..., LossOutput]] = {
    "state": state_loss,
    "state-jacobian": state_jacobian_loss,
    "state-jacobian-l1": state_jacobian_l1_loss,
    "state-jacobian-l1-regularizer": state_jacobian_l1_regularizer_loss,
    "state-jacobian-l1-sparse-only": state_jacobian_l1_sparse_only_loss,
    # The mask term comes from the model's mask (compute_loss adds it).
    "state-mask": state_loss,
}
LOSS_MODES = tuple(LOSSES)
#: The study's five modes (any model).
STUDY_LOSS_MODES = LOSS_MODES[:5]


@dataclass(frozen=True)
class LossMode:
    """A loss mode, checked once where it is given, with what it needs.

    ``LossMode("state-mask")`` raises on an unknown name; the trainers resolve
    the user's string once (:meth:`of`) and pass the object on, so no layer
    below checks the name again. Every function here that takes a mode takes
    its name or the object.

    Attributes:
        name: One of :data:`LOSS_MODES`.
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"unknown loss mode {self.name!r}; accepted: {list(LOSS_MODES)}")

    @classmethod
    def of(cls, mode: str | LossMode) -> LossMode:
        """``mode`` itself if resolved already, else the mode of that name."""
        return mode if isinstance(mode, LossMode) else cls(mode)

    @property
    def loss(self) -> Callable[..., LossOutput]:
        """The loss function ``(output, target, jacobian_sample, weights) -> (total, terms)``."""
        return LOSSES[self.name]

    @property
    def needs_model_jacobian(self) -> bool:
        """Whether the loss uses the model's Jacobian."""
        return self.name not in ("state", "state-mask")

    @property
    def needs_ground_truth_jacobian(self) -> bool:
        """Whether the loss needs the data's Jacobians (``state-mask``: their zero pattern)."""
        return self.name not in ("state", "state-jacobian-l1-regularizer")

    @property
    def supervises_mask(self) -> bool:
        """Whether the loss supervises a masked model's mask (and needs a masked model)."""
        return self.name == "state-mask"

    def __str__(self) -> str:
        return self.name


def needs_model_jacobian(mode: str | LossMode) -> bool:
    """Whether the loss uses the model's Jacobian."""
    return LossMode.of(mode).needs_model_jacobian


def supervises_mask(mode: str | LossMode) -> bool:
    """Whether the loss supervises a masked model's mask (and needs a masked model)."""
    return LossMode.of(mode).supervises_mask


def check_model_for_mode(mode: str | LossMode, model: DynamicsModel | type[DynamicsModel]) -> None:
    """Raise ``ValueError`` if ``mode`` supervises a mask and ``model`` (or its class) has none."""
    mode = LossMode.of(mode)
    if mode.supervises_mask and not model.has_mask:
        raise ValueError(
            f"loss mode {mode.name!r} supervises a mask, but model {model.name!r} has none; "
            f"use one of {list(MASKED_MODELS)}"
        )


def configure_mask(
    model: DynamicsModel, mode: str | LossMode, straight_through: bool | None
) -> None:
    """Set whether a masked model's prediction losses reach its mask (straight-through).

    ``None``: only when ``mode`` does not supervise the mask
    (``TrainConfig.mask_straight_through``); models without a mask are left as they are.
    """
    if model.has_mask:
        model.straight_through = (
            not supervises_mask(mode) if straight_through is None else bool(straight_through)
        )


def needs_ground_truth_jacobian(mode: str | LossMode) -> bool:
    """Whether the loss needs the data set's Jacobians (``state-mask``: their zero pattern)."""
    return LossMode.of(mode).needs_ground_truth_jacobian


def _draw_columns(n: int, k: int, rows: int, generator: torch.Generator | None, device) -> Tensor:
    """``(rows, k)`` column indices in ``[0, n)``, drawn per row without replacement."""
    if not 1 <= int(k) <= n:
        raise ValueError(f"k must be in [1, {n}] (columns of the Jacobian), got {k}")
    scores = torch.rand(rows, n, generator=generator, device=device)
    return scores.argsort(dim=1)[:, : int(k)]


def jacobian_columns(
    model: DynamicsMLP,
    state: Tensor,
    action: Tensor,
    k: int,
    generator: torch.Generator | None = None,
    method: str = "analytic",
) -> tuple[Tensor, Tensor, Tensor]:
    """Network output and ``k`` random Jacobian columns per sample, by forward mode.

    Columns are drawn per sample without replacement. ``method="jvp"`` takes
    Jacobian-vector products of the batched network with one-hot tangents
    (``torch.func.jvp``, vmapped over the ``k`` tangents; samples are
    independent rows, so one product gives one column of every sample);
    ``"analytic"`` computes the same products by the chain rule
    (:meth:`DynamicsMLP.forward_with_columns`), which is faster.

    Returns:
        ``(output (B, d_s), columns (B, d_s, k), index (B, k))``: the columns
        of ``d s'_n / d(s_n, a_n)`` at the column indices ``index``.

    Raises:
        ValueError: ``k`` outside ``[1, d_s + d_a]`` or an unknown method.
    """
    d_s, n = model.d_s, model.d_s + model.d_a
    if method not in ("analytic", "jvp"):
        raise ValueError(f"method must be 'analytic' or 'jvp', got {method!r}")
    index = _draw_columns(n, k, state.shape[0], generator, state.device)
    if method == "analytic":
        output, cols = model.forward_with_columns(state, action, index)
        return output, cols, index
    tangents = F.one_hot(index, n).to(state.dtype).permute(1, 0, 2)  # (k, B, n)
    x = torch.cat([state, action], dim=-1)

    def net(xx: Tensor) -> Tensor:
        return model(xx[:, :d_s], xx[:, d_s:])

    def push(v: Tensor) -> tuple[Tensor, Tensor]:
        return torch.func.jvp(net, (x,), (v,))

    # 'same': the primal and every tangent see one dropout mask.
    outs, jvps = torch.func.vmap(push, randomness="same")(tangents)
    cols = model.gain * jvps  # (k, B, d_s)
    if model.predict_delta:  # the skip adds skip_i * v_i for state columns
        cols = cols + model.skip * tangents[..., :d_s]
    return outs[0], cols.permute(1, 2, 0), index


def mask_terms(
    mask: MaskSample, batch: Batch, mode: str | LossMode, zero_weight: float = 1.0
) -> dict[str, Tensor]:
    """A masked model's own loss terms for ``mode`` (unweighted, by :class:`LossWeights` name).

    ``mask``: with mask supervision, the binary cross-entropy of the edge
    logits against the ground truth's non-zero pattern (``~batch.zero_mask``),
    the true zeros weighted by ``zero_weight``, averaged over the valid
    elements; ``mask_sparsity``: otherwise, the mean edge probability; plus
    the mask's own terms (``vq``).

    Raises:
        ValueError: Mask supervision on a batch without the zero pattern.
    """
    mode = LossMode.of(mode)
    terms = dict(mask.aux)
    if not mode.supervises_mask:
        terms["mask_sparsity"] = mask.prob.mean()
        return terms
    if batch.zero_mask is None:
        raise ValueError(
            f"loss mode {mode.name!r} needs the ground truth's zero pattern; the batch has none"
        )
    target = (~batch.zero_mask).to(mask.logits.dtype)
    logits = mask.logits.expand_as(target)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if zero_weight != 1.0:
        bce = torch.where(batch.zero_mask, zero_weight * bce, bce)
    valid = None if batch.jacobian_valid is None else batch.jacobian_valid.unsqueeze(1)
    terms["mask"] = JacobianSample(bce, valid=valid).mean(bce)
    return terms


def _add_mask_terms(
    loss: LossOutput, mask: MaskSample | None, batch: Batch, mode: LossMode, weights: LossWeights
) -> LossOutput:
    """``loss`` plus the weighted :func:`mask_terms` of a masked model (unchanged if no mask)."""
    if mask is None:
        return loss
    total, logged = loss
    for key, value in mask_terms(mask, batch, mode, weights.mask_zeros).items():
        total = total + getattr(weights, key) * value
        logged[key] = value.detach()
    logged["total"] = total.detach()
    return total, logged


def compute_loss(
    model: DynamicsModel,
    batch: Batch,
    mode: str | LossMode,
    weights: LossWeights | None = None,
    columns: int | None = None,
    generator: torch.Generator | None = None,
    column_method: str = "analytic",
) -> LossOutput:
    """Run ``model`` on ``batch`` and evaluate the loss ``mode``.

    Args:
        model: The dynamics model (any of :data:`~world_models.registry.MODELS`).
        batch: Normalised batch (with Jacobians and zero masks if the mode needs them).
        mode: One of :data:`LOSS_MODES`, or its :class:`LossMode`.
        weights: Term weights (defaults of :class:`LossWeights`).
        columns: Supervise only this many random Jacobian columns per sample
            (forward mode for the MLP; a masked model computes its whole
            Jacobian, as cheap as its forward pass, and keeps the columns);
            ``None`` uses the whole Jacobian.
        generator: Random generator of the column draw.
        column_method: ``"analytic"`` or ``"jvp"`` (see :func:`jacobian_columns`).

    Raises:
        ValueError: Unknown mode, a mode that needs ground-truth Jacobians
            on a batch without them, or mask supervision of a model without a mask.
    """
    mode = LossMode.of(mode)
    weights = weights or LossWeights()
    check_model_for_mode(mode, model)
    target = batch.delta if model.predict_delta else batch.next_state
    if mode.needs_ground_truth_jacobian and batch.jacobian is None:
        raise ValueError(
            f"loss mode {mode.name!r} needs ground-truth Jacobians; the batch has none "
            "(a data set collected with jacobians=False?)"
        )
    if not mode.needs_model_jacobian:
        output, mask = model.forward_and_mask(batch.state, batch.action)
        loss = state_loss(output, target, None, weights)
        return _add_mask_terms(loss, mask, batch, mode, weights)
    n_zeros = batch.zero_mask.sum() if batch.zero_mask is not None else None
    valid = None if batch.jacobian_valid is None else batch.jacobian_valid.unsqueeze(1)
    mask = None
    if columns is None:
        output, pred, mask = model.forward_with_mask(batch.state, batch.action)
        sample = JacobianSample(pred, batch.jacobian, batch.zero_mask, n_zeros, 1.0, valid)
    else:
        if model.has_mask:
            output, full, mask = model.forward_with_mask(batch.state, batch.action)
            index = _draw_columns(model.n_inputs, columns, len(full), generator, full.device)
            pred = full.gather(2, index.unsqueeze(1).expand(-1, model.d_s, -1))
        else:
            output, pred, index = jacobian_columns(
                model, batch.state, batch.action, columns, generator, column_method
            )

        def gather(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return t.gather(2, index.unsqueeze(1).expand(-1, t.shape[1], -1))

        sample = JacobianSample(
            pred,
            gather(batch.jacobian),
            gather(batch.zero_mask),
            n_zeros,
            pred.shape[2] / model.n_inputs,
            gather(valid),
        )
    loss = mode.loss(output, target, sample, weights)
    return _add_mask_terms(loss, mask, batch, mode, weights)
