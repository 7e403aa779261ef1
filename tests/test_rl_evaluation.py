"""dynamic_sparsity.analysis.rl_evaluation: IQM, its CIs and the probability of improvement.

Every point estimate against a computation by hand (a trimmed mean, a count
over all pairs of runs); every interval against what a bootstrap of those
data must give (inside the data's range, around the point, degenerate for
constant data).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dynamic_sparsity.analysis.rl_evaluation import (
    iqm,
    iqm_curves,
    iqm_difference,
    probability_of_improvement,
)

REPS = 2_000


def _poi_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 over all pairs of runs, averaged over tasks."""
    per_task = []
    for t in range(x.shape[1]):
        gt = (x[:, t, None] > y[None, :, t]).mean()
        eq = (x[:, t, None] == y[None, :, t]).mean()
        per_task.append(gt + eq / 2)
    return float(np.mean(per_task))


def test_iqm_is_the_pooled_trimmed_mean_and_its_interval_brackets_it():
    rng = np.random.default_rng(0)
    scores = rng.normal(500, 100, size=(8, 2))
    out = iqm(scores, reps=REPS)
    assert out.point == pytest.approx(stats.trim_mean(scores.ravel(), 0.25))
    assert scores.min() <= out.low <= out.point <= out.high <= scores.max()
    # More confidence, a wider interval from the same resamples' distribution.
    wide = iqm(scores, reps=REPS, confidence=0.99)
    assert wide.high - wide.low > out.high - out.low


def test_iqm_of_constant_runs_has_a_zero_width_interval():
    out = iqm(np.full((5, 1), 300.0), reps=REPS)
    assert (out.point, out.low, out.high) == (300.0, 300.0, 300.0)


def test_iqm_difference_excludes_zero_only_when_the_runs_separate():
    rng = np.random.default_rng(1)
    low, high = rng.normal(100, 10, size=(5, 2)), rng.normal(400, 10, size=(5, 2))
    sep = iqm_difference(high, low, reps=REPS)
    assert sep.point == pytest.approx(
        stats.trim_mean(high.ravel(), 0.25) - stats.trim_mean(low.ravel(), 0.25)
    )
    assert sep.low > 0
    same = iqm_difference(rng.normal(100, 50, (5, 2)), rng.normal(100, 50, (5, 2)), reps=REPS)
    assert same.low < 0 < same.high


def test_probability_of_improvement_counts_pairs_and_half_ties():
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 7.0]])
    y = np.array([[2.0, 5.0], [0.0, 6.0]])
    out = probability_of_improvement(x, y, reps=REPS)
    assert out.point == pytest.approx(_poi_by_hand(x, y))
    assert 0.0 <= out.low <= out.point <= out.high <= 1.0
    always = probability_of_improvement(x + 100, y, reps=REPS)
    assert (always.point, always.low, always.high) == (1.0, 1.0, 1.0)


def test_iqm_curves_give_one_point_and_interval_per_step():
    rng = np.random.default_rng(2)
    curves = np.cumsum(rng.normal(10, 1, size=(6, 2, 4)), axis=-1)
    points, ci = iqm_curves(curves, reps=500)
    assert points.shape == (4,) and ci.shape == (2, 4)
    for t in range(4):
        assert points[t] == pytest.approx(stats.trim_mean(curves[..., t].ravel(), 0.25))
    assert (ci[0] <= points).all() and (points <= ci[1]).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: iqm(np.ones(5)), r"shape \(runs, tasks\), got shape \(5,\)"),
        (lambda: iqm(np.ones((1, 2))), r">= 2 runs"),
        (lambda: iqm(np.array([[1.0], [np.nan]])), "NaN"),
        (lambda: iqm(np.ones((3, 1)), confidence=95), r"confidence must be in \(0, 1\), got 95"),
        (lambda: iqm(np.ones((3, 1)), reps=0), "reps must be >= 1, got 0"),
        (lambda: iqm_difference(np.ones((3, 1)), np.ones((3, 2))), "same tasks, got 1 and 2"),
        (lambda: probability_of_improvement(np.ones((3, 2)), np.ones((1, 2))), ">= 2 runs"),
        (lambda: iqm_curves(np.ones((3, 2))), r"\(runs, tasks, steps\)"),
    ],
)
def test_bad_scores_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_the_module_example_runs_and_prints_what_it_shows():
    import doctest

    from dynamic_sparsity.analysis import rl_evaluation

    result = doctest.testmod(rl_evaluation)
    assert result.failed == 0 and result.attempted >= 3


def test_without_rliable_the_error_names_the_extra(monkeypatch):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "rliable.metrics", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "rliable.library", None)
    importlib.invalidate_caches()
    with pytest.raises(ImportError, match=r"rliable, the 'rl' extra: pip install -e '\.\[rl\]'"):
        iqm(np.ones((3, 1)), reps=10)
