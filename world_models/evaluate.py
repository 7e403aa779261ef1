"""Test-split metrics of a dynamics model: state error, induced sparsity, rollouts.

* one-step next-state MSE, normalised (z-scores of ``s'``) and raw, next to
  the MSE of the mean predictor (the train mean of ``s'``);
* induced sparsity of the predicted Jacobian ``d s'/d(s, a)`` (raw
  coordinates) at several thresholds, next to the target sparsity of the
  ground truth at the same thresholds; precision, recall and F1 of the
  predicted zero pattern against the true one (the zeros are the positives),
  over all elements and per sample (mean of the per-sample F1); Jacobian MSE
  and MAE (normalised);
* for masked models, the same scores of the mask's zeros (at the data set's
  threshold), the mask's sparsity, and how many distinct masks and true zero
  patterns the test rows show;
* open-loop error over horizons ``1..H``: from a real state of a test
  episode the model alone is rolled forward on the episode's recorded
  actions and compared with the recorded states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from dynamic_sparsity.analysis.stats import DEFAULT_THRESHOLD
from world_models.base import DynamicsModel
from world_models.data import EpisodeSplit, TransitionStream
from world_models.normaliser import Normaliser, scale_jacobian

if TYPE_CHECKING:
    from dynamic_sparsity.analysis.storage import TransitionReader

__all__ = ["DEFAULT_THRESHOLDS", "EvalResult", "evaluate", "rollout_errors"]

#: Zero thresholds of the sparsity metrics (the first is the statistics' default).
DEFAULT_THRESHOLDS = (DEFAULT_THRESHOLD, 1e-6, 1e-4, 1e-2)


@dataclass
class EvalResult:
    """Metrics on the test split (``nan`` where the data lack what a metric needs).

    Attributes:
        n_rows: Test rows evaluated.
        mse_normalised: One-step next-state MSE in z-scores of ``s'``.
        mse_raw: The same in raw units.
        mean_predictor_mse_normalised: MSE of predicting the train mean of ``s'``.
        jacobian_mse_normalised: MSE of the normalised Jacobian.
        jacobian_mae_normalised: MAE of the normalised Jacobian.
        thresholds: Zero thresholds of the four dicts below.
        induced_sparsity: Threshold -> fraction of predicted elements ``|J_hat| < t``.
        target_sparsity: Threshold -> fraction of true elements ``|J| < t``.
        zero_precision: Threshold -> share of predicted zeros that are true zeros.
        zero_recall: Threshold -> share of true zeros predicted as zeros.
        zero_f1: Threshold -> F1 of the two above (all elements pooled).
        sample_zero_f1: Threshold -> mean over samples of the per-sample F1
            (a sample with no true and no predicted zero scores 1).
        sample_zero_precision: Threshold -> mean per-sample precision (1 for
            a sample with no predicted zero).
        sample_zero_recall: Threshold -> mean per-sample recall (1 for a
            sample with no true zero).
        mask_zero_precision: Share of the mask's zeros that are true zeros
            (masked models; at the data set's threshold).
        mask_zero_recall: Share of true zeros the mask has as zeros.
        mask_zero_f1: F1 of the two above.
        mask_sample_f1: Mean per-sample F1 of the mask's zeros.
        mask_sparsity: Fraction of zero mask elements.
        distinct_masks: Different masks over the evaluated rows (masked models).
        distinct_true_patterns: Different true zero patterns over the same rows.
        horizon_mse_normalised: Open-loop MSE (z-scores of ``s'``) at horizons ``1..H``.
        horizon_mse_raw: The same in raw units.
        n_rollouts: Start states of the open-loop rollouts.
    """

    n_rows: int = 0
    mse_normalised: float = math.nan
    mse_raw: float = math.nan
    mean_predictor_mse_normalised: float = math.nan
    jacobian_mse_normalised: float = math.nan
    jacobian_mae_normalised: float = math.nan
    thresholds: tuple[float, ...] = ()
    induced_sparsity: dict[float, float] = field(default_factory=dict)
    target_sparsity: dict[float, float] = field(default_factory=dict)
    zero_precision: dict[float, float] = field(default_factory=dict)
    zero_recall: dict[float, float] = field(default_factory=dict)
    zero_f1: dict[float, float] = field(default_factory=dict)
    sample_zero_f1: dict[float, float] = field(default_factory=dict)
    sample_zero_precision: dict[float, float] = field(default_factory=dict)
    sample_zero_recall: dict[float, float] = field(default_factory=dict)
    mask_zero_precision: float = math.nan
    mask_zero_recall: float = math.nan
    mask_zero_f1: float = math.nan
    mask_sample_f1: float = math.nan
    mask_sparsity: float = math.nan
    distinct_masks: float = math.nan
    distinct_true_patterns: float = math.nan
    horizon_mse_normalised: list[float] = field(default_factory=list)
    horizon_mse_raw: list[float] = field(default_factory=list)
    n_rollouts: int = 0

    def flat(self) -> dict[str, float]:
        """One level of scalars (``induced_sparsity@1e-15``, ``horizon_mse_normalised@5``, ...)."""
        out: dict[str, float] = {}
        for key, value in asdict(self).items():
            if isinstance(value, dict):
                out.update({f"{key}@{t:g}": v for t, v in value.items()})
            elif isinstance(value, list):
                out.update({f"{key}@{h + 1}": v for h, v in enumerate(value)})
            elif not isinstance(value, tuple):
                out[key] = value
        return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _f1(n_pred: float, n_true: float, n_both: float) -> float:
    """F1 from counts of predicted, true and shared positives (1 when there are none)."""
    return 2 * n_both / (n_pred + n_true) if n_pred + n_true else 1.0


def _sample_scores(
    pred: torch.Tensor, true: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample precision, recall and F1 of ``(B, ...)`` bool patterns (float64).

    Precision is 1 for a sample with no predicted positive, recall 1 for one
    with no true positive, F1 1 for one with neither.
    """
    n_pred = pred.flatten(1).sum(1).double()
    n_true = true.flatten(1).sum(1).double()
    both = (pred & true).flatten(1).sum(1).double()
    one = torch.ones_like(both)
    precision = torch.where(n_pred > 0, both / n_pred.clamp(min=1), one)
    recall = torch.where(n_true > 0, both / n_true.clamp(min=1), one)
    denom = n_pred + n_true
    f1 = torch.where(denom > 0, 2 * both / denom.clamp(min=1), one)
    return precision, recall, f1


@torch.no_grad()
def evaluate(
    model: DynamicsModel,
    readers: Sequence[TransitionReader],
    split: EpisodeSplit | None,
    normaliser: Normaliser,
    *,
    part: str = "test",
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    horizon: int = 10,
    max_rows: int | None = None,
    max_rollouts: int = 512,
    batch_size: int = 1024,
    jacobians: bool | None = None,
    seed: int = 0,
    nonsmooth: str = "mask",
) -> EvalResult:
    """Evaluate ``model`` (in eval mode, no dropout) on one part of the data.

    Args:
        model: Trained model (its normaliser already set).
        readers: The data sets.
        split: Episode split; ``None`` evaluates on every row.
        normaliser: The normaliser the model was trained with.
        part: ``"test"`` (default), ``"train"`` or ``"all"``.
        thresholds: Zero thresholds of the sparsity metrics.
        horizon: Longest open-loop horizon; 0 skips the rollouts.
        max_rows: Evaluate only the first rows of the part (in file order).
        max_rollouts: At most this many rollout start states (drawn at random).
        batch_size: Rows per model call.
        jacobians: Compute the Jacobian metrics (default: when the data have Jacobians).
        seed: Seed of the rollout start draw.
        nonsmooth: ``"mask"``: leave non-smooth ground-truth columns out of the
            Jacobian metrics; ``"keep"``: count them.
    """
    was_training = model.training
    model.eval()
    device = model.in_mean.device
    stream = TransitionStream(
        readers,
        split,
        part,
        normaliser,
        batch_size=batch_size,
        shuffle=False,
        jacobians=jacobians,
        nonsmooth=nonsmooth,
    )
    sums = _Sums(normaliser, tuple(float(t) for t in thresholds), stream.threshold, device)
    for batch in stream:
        if max_rows is not None and sums.n >= max_rows:
            break
        batch = batch.to(device)
        if stream.jacobians:
            out, jac, mask = model.forward_with_mask(batch.state, batch.action)
            sums.add_states(batch, model.to_next_state(batch.state, out))
            sums.add_jacobians(batch, jac)
            if mask is not None:
                sums.add_mask(batch, mask.hard)
        else:
            sums.add_states(batch, model.predict(batch.state, batch.action))
    result = sums.result(model.d_s)
    if horizon > 0:
        h_n, h_raw, n_roll = rollout_errors(
            model, readers, split, normaliser, horizon, part, max_rollouts, seed
        )
        result.horizon_mse_normalised, result.horizon_mse_raw = h_n, h_raw
        result.n_rollouts = n_roll
    model.train(was_training)
    return result


class _Sums:
    """Running sums of the one-step metrics over batches."""

    def __init__(self, normaliser: Normaliser, thresholds, data_threshold: float, device) -> None:
        self.out_scale = torch.as_tensor(normaliser.scale("next_state"), device=device)
        self.in_scale = torch.cat(
            [torch.as_tensor(normaliser.scale(k), device=device) for k in ("state", "action")]
        )
        self.thresholds, self.data_threshold = thresholds, data_threshold
        self.n, self.se_n, self.se_raw, self.mean_se = 0, 0.0, 0.0, 0.0
        self.jse, self.jae, self.jn = 0.0, 0.0, 0
        # Per threshold: predicted zeros, true zeros, both, elements, and the
        # sums of the per-sample F1, precision and recall.
        self.counts = {t: np.zeros(7) for t in thresholds}
        self.mask_counts = np.zeros(7)  # the same for the mask's zeros
        self.masks: set[bytes] = set()
        self.patterns: set[bytes] = set()

    def add_states(self, batch, pred: torch.Tensor) -> None:
        err_n = (pred - batch.next_state).double()
        self.n += len(batch)
        self.se_n += float((err_n**2).sum())
        self.se_raw += float(((err_n * self.out_scale) ** 2).sum())
        self.mean_se += float((batch.next_state.double() ** 2).sum())

    @staticmethod
    def _valid(batch) -> torch.Tensor:
        """Elements to score: non-smooth ground-truth columns are left out."""
        valid = torch.ones_like(batch.zero_mask)
        if batch.jacobian_valid is not None:
            valid = valid & batch.jacobian_valid[:, None, :]
        return valid

    @staticmethod
    def _pattern_counts(pred: torch.Tensor, true: torch.Tensor, valid: torch.Tensor) -> list:
        """One batch's row of :attr:`counts` for the zero patterns ``pred`` and ``true``."""
        prec, rec, f1 = (float(v.sum()) for v in _sample_scores(pred, true))
        both = int((pred & true).sum())
        return [int(pred.sum()), int(true.sum()), both, int(valid.sum()), f1, prec, rec]

    def add_jacobians(self, batch, jac_n: torch.Tensor) -> None:
        valid = self._valid(batch)
        jerr = (jac_n - batch.jacobian).double()[valid]
        self.jse += float((jerr**2).sum())
        self.jae += float(jerr.abs().sum())
        self.jn += jerr.numel()
        # Sparsity in raw coordinates, the ones of the ground truth's statistics.
        jac_raw, true_raw = self._raw(jac_n), self._raw(batch.jacobian)
        for t in self.thresholds:
            p = (jac_raw < t) & valid
            z = (batch.zero_mask if t == self.data_threshold else true_raw < t) & valid
            self.counts[t] += self._pattern_counts(p, z, valid)

    def add_mask(self, batch, hard: torch.Tensor) -> None:
        """Scores of a masked model's mask zeros against the true zeros (data threshold)."""
        valid = self._valid(batch)
        off = (hard.expand_as(batch.zero_mask) == 0) & valid
        z = batch.zero_mask & valid
        self.mask_counts += self._pattern_counts(off, z, valid)
        self.masks.update(_rows_as_bytes(off))
        self.patterns.update(_rows_as_bytes(z))

    def _raw(self, jac_n: torch.Tensor) -> torch.Tensor:
        return scale_jacobian(jac_n.double(), self.in_scale, self.out_scale, "raw").abs()

    def result(self, d_s: int) -> EvalResult:
        result = EvalResult(n_rows=self.n, thresholds=self.thresholds)
        if self.n:
            result.mse_normalised = self.se_n / (self.n * d_s)
            result.mse_raw = self.se_raw / (self.n * d_s)
            result.mean_predictor_mse_normalised = self.mean_se / (self.n * d_s)
        if self.jn:
            result.jacobian_mse_normalised = self.jse / self.jn
            result.jacobian_mae_normalised = self.jae / self.jn
            for t, (n_pred, n_true, n_both, n_el, f1_sum, p_sum, r_sum) in self.counts.items():
                result.induced_sparsity[t] = float(n_pred / n_el)
                result.target_sparsity[t] = float(n_true / n_el)
                result.zero_precision[t] = _ratio(float(n_both), float(n_pred))
                result.zero_recall[t] = _ratio(float(n_both), float(n_true))
                result.zero_f1[t] = _f1(float(n_pred), float(n_true), float(n_both))
                result.sample_zero_f1[t] = float(f1_sum / self.n)
                result.sample_zero_precision[t] = float(p_sum / self.n)
                result.sample_zero_recall[t] = float(r_sum / self.n)
        n_pred, n_true, n_both, n_el, f1_sum, _, _ = (float(v) for v in self.mask_counts)
        if n_el:
            result.mask_zero_precision = _ratio(n_both, n_pred)
            result.mask_zero_recall = _ratio(n_both, n_true)
            result.mask_zero_f1 = _f1(n_pred, n_true, n_both)
            result.mask_sample_f1 = f1_sum / self.n
            result.mask_sparsity = n_pred / n_el
            result.distinct_masks = float(len(self.masks))
            result.distinct_true_patterns = float(len(self.patterns))
        return result


def _rows_as_bytes(pattern: torch.Tensor) -> list[bytes]:
    """Each sample's bool pattern packed to bytes (to count distinct patterns)."""
    packed = np.packbits(pattern.flatten(1).cpu().numpy(), axis=1)
    return [row.tobytes() for row in packed]


def _segments(steps: np.ndarray) -> list[np.ndarray]:
    """Runs of consecutive step indices (positions into the sorted episode)."""
    breaks = np.flatnonzero(np.diff(steps) != 1) + 1
    return np.split(np.arange(len(steps)), breaks)


@torch.no_grad()
def rollout_errors(
    model: DynamicsModel,
    readers: Sequence[TransitionReader],
    split: EpisodeSplit | None,
    normaliser: Normaliser,
    horizon: int,
    part: str = "test",
    max_rollouts: int = 512,
    seed: int = 0,
) -> tuple[list[float], list[float], int]:
    """Open-loop MSE at horizons ``1..horizon`` along real episodes of ``part``.

    From each start state ``s_t`` the model predicts ``s_{t+1}, ..., s_{t+H}``
    from its own predictions and the recorded actions ``a_t, ..., a_{t+H-1}``;
    starts are the steps with ``H`` recorded steps after them in the same
    episode (consecutive step indices), at most ``max_rollouts`` of them.

    Returns:
        ``(mse_normalised per horizon, mse_raw per horizon, number of rollouts)``;
        empty lists when no episode is long enough.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    keys = ["state", "action", "next_state", "step"]
    starts_s, acts, truths = [], [], []
    for f, reader in enumerate(readers):
        for ep, rows in reader.episode_index().items():
            if split is not None and not split.rows(part, f, np.array([ep]))[0]:
                continue
            data = reader.read_rows(rows, keys)
            order = np.argsort(data["step"], kind="stable")
            data = {k: v[order] for k, v in data.items()}
            for seg in _segments(data["step"]):
                for t in range(len(seg) - horizon + 1):
                    window = seg[t : t + horizon]
                    starts_s.append(data["state"][window[0]])
                    acts.append(data["action"][window])
                    truths.append(data["next_state"][window])
    if not starts_s:
        return [], [], 0
    pick = np.arange(len(starts_s))
    if len(pick) > max_rollouts:
        pick = np.sort(np.random.default_rng(seed).choice(len(pick), max_rollouts, replace=False))
    dev, dtype = model.in_mean.device, model.in_mean.dtype
    s = torch.as_tensor(np.stack([starts_s[i] for i in pick]), dtype=dtype, device=dev)
    a = torch.as_tensor(np.stack([acts[i] for i in pick]), dtype=dtype, device=dev)
    truth = np.stack([truths[i] for i in pick])  # (n, H, d_s)
    was_training = model.training
    model.eval()
    preds = []
    for h in range(horizon):
        s = model.predict_raw(s, a[:, h])
        preds.append(s.double().cpu().numpy())
    model.train(was_training)
    err = np.stack(preds, axis=1) - truth
    scale = normaliser.scale("next_state")
    mse_raw = (err**2).mean(axis=(0, 2))
    mse_n = ((err / scale) ** 2).mean(axis=(0, 2))
    return mse_n.tolist(), mse_raw.tolist(), len(pick)
