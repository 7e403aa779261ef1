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
=================================  =========================================================

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

from world_models.data import Batch
from world_models.model import DynamicsMLP

__all__ = [
    "LOSSES",
    "LOSS_MODES",
    "JacobianSample",
    "LossOutput",
    "LossWeights",
    "compute_loss",
    "jacobian_columns",
    "needs_ground_truth_jacobian",
    "needs_model_jacobian",
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
    """

    state: float = 1.0
    jacobian: float = 1.0
    jacobian_l1: float = 1.0
    regularizer: float = 1.0
    sparse: float = 1.0


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
}
LOSS_MODES = tuple(LOSSES)


def _check_mode(mode: str) -> None:
    if mode not in LOSSES:
        raise ValueError(f"unknown loss mode {mode!r}; accepted: {list(LOSS_MODES)}")


def needs_model_jacobian(mode: str) -> bool:
    """Whether the loss uses the model's Jacobian."""
    _check_mode(mode)
    return mode != "state"


def needs_ground_truth_jacobian(mode: str) -> bool:
    """Whether the loss needs the data set's Jacobians."""
    _check_mode(mode)
    return mode not in ("state", "state-jacobian-l1-regularizer")


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
    if not 1 <= int(k) <= n:
        raise ValueError(f"k must be in [1, {n}] (columns of the Jacobian), got {k}")
    if method not in ("analytic", "jvp"):
        raise ValueError(f"method must be 'analytic' or 'jvp', got {method!r}")
    b = state.shape[0]
    scores = torch.rand(b, n, generator=generator, device=state.device)
    index = scores.argsort(dim=1)[:, : int(k)]
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


def compute_loss(
    model: DynamicsMLP,
    batch: Batch,
    mode: str,
    weights: LossWeights | None = None,
    columns: int | None = None,
    generator: torch.Generator | None = None,
    column_method: str = "analytic",
) -> LossOutput:
    """Run ``model`` on ``batch`` and evaluate the loss ``mode``.

    Args:
        model: The dynamics model.
        batch: Normalised batch (with Jacobians and zero masks if the mode needs them).
        mode: One of :data:`LOSS_MODES`.
        weights: Term weights (all 1 by default).
        columns: Supervise only this many random Jacobian columns per sample
            (forward mode); ``None`` computes the whole Jacobian.
        generator: Random generator of the column draw.
        column_method: ``"analytic"`` or ``"jvp"`` (see :func:`jacobian_columns`).

    Raises:
        ValueError: Unknown mode, or a mode that needs ground-truth Jacobians
            on a batch without them.
    """
    _check_mode(mode)
    weights = weights or LossWeights()
    target = batch.delta if model.predict_delta else batch.next_state
    if not needs_model_jacobian(mode):
        return state_loss(model(batch.state, batch.action), target, None, weights)
    if needs_ground_truth_jacobian(mode) and batch.jacobian is None:
        raise ValueError(
            f"loss mode {mode!r} needs ground-truth Jacobians; the batch has none "
            "(a data set collected with jacobians=False?)"
        )
    n_zeros = batch.zero_mask.sum() if batch.zero_mask is not None else None
    valid = None if batch.jacobian_valid is None else batch.jacobian_valid.unsqueeze(1)
    if columns is None:
        output, pred = model.forward_with_jacobian(batch.state, batch.action)
        sample = JacobianSample(pred, batch.jacobian, batch.zero_mask, n_zeros, 1.0, valid)
    else:
        output, pred, index = jacobian_columns(
            model, batch.state, batch.action, columns, generator, column_method
        )
        n_cols = model.d_s + model.d_a

        def gather(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return t.gather(2, index.unsqueeze(1).expand(-1, t.shape[1], -1))

        sample = JacobianSample(
            pred,
            gather(batch.jacobian),
            gather(batch.zero_mask),
            n_zeros,
            pred.shape[2] / n_cols,
            gather(valid),
        )
    return LOSSES[mode](output, target, sample, weights)
