"""Sparsity statistics on hand-built Jacobians with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dynamic_sparsity.analysis import (
    GlobalZeros,
    PatternCounter,
    RunLengths,
    SparsityMeans,
    combine,
    sample_sparsity,
    valid_mask,
    zero_mask,
)
from tests.reference import episode_runs, stream_runs


def test_zero_mask_threshold_and_nan() -> None:
    j = np.array([[0.0, 1e-16, 1e-15, np.nan, -1e-20, 2.0]])
    np.testing.assert_array_equal(zero_mask(j), [[True, True, False, False, True, False]])
    np.testing.assert_array_equal(zero_mask(j, 1e-3), [[True, True, True, False, True, False]])
    with pytest.raises(ValueError, match="threshold must be > 0, got 0"):
        zero_mask(j, 0)


def test_sample_sparsity_hand_built() -> None:
    js = np.array([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])  # 3/4 and 0/4 zeros
    ja = np.array([[[0.0], [2.0]], [[0.0], [0.0]]])  # 1/2 and 2/2 zeros
    per = sample_sparsity(zero_mask(combine(js, ja)), d_s=2)
    np.testing.assert_allclose(per["state"], [0.75, 0.0])
    np.testing.assert_allclose(per["action"], [0.5, 1.0])
    np.testing.assert_allclose(per["combined"], [4 / 6, 2 / 6])
    means = SparsityMeans()
    means.update(per)
    assert means.means()["combined"] == pytest.approx(0.5)
    means.reset()
    assert np.isnan(means.means()["state"])
    with pytest.raises(ValueError, match="d_s=5"):
        sample_sparsity(np.zeros((1, 2, 3), bool), d_s=5)


def test_global_zeros_and_frequency_incremental() -> None:
    g = GlobalZeros((2, 3))
    a = np.array([[True, True, False], [True, False, True]])
    b = np.array([[True, False, False], [True, True, True]])
    g.update(a[None])
    g.update(np.stack([b, b]))
    np.testing.assert_array_equal(g.mask(), [[True, False, False], [True, False, True]])
    np.testing.assert_allclose(g.frequency(), [[1, 1 / 3, 0], [1, 2 / 3, 1]])
    assert g.counts(d_s=2) == {"state": 2, "state_pct": 50.0, "action": 1}
    assert not GlobalZeros((2, 3)).mask().any()  # no data: no global zero claimed


def test_distinct_patterns() -> None:
    p = PatternCounter()
    a = np.array([[1, 0], [0, 1]], bool)
    p.update(np.stack([a, a, ~a]))
    p.update(a[None])
    assert p.distinct == 2


def test_run_lengths_one_element_across_episodes() -> None:
    """One env, one element; episode 1: Z Z N N N Z | episode 2: Z Z Z (whole: left out)."""
    r = RunLengths(1, (1, 1))
    seq = [(1, 0), (1, 0), (0, 0), (0, 0), (0, 0), (1, 1), (1, 0), (1, 0), (1, 1)]
    z = np.array([s[0] for s in seq], bool).reshape(-1, 1, 1, 1)
    r.update_block(z, np.array([s[1] for s in seq], bool).reshape(-1, 1))
    # Episode 1: zero runs 2 and 1 (the last, cut by the episode end); non-zero run 3.
    # Episode 2: a zero run of the whole episode -> not counted.
    assert r.zero_hist.tolist() == [0, 1, 1]
    assert r.nonzero_hist.tolist() == [0, 0, 0, 1]
    assert r.mean_zero_run() == pytest.approx(1.5)
    assert r.mean_nonzero_run() == pytest.approx(3.0)


def test_run_lengths_vectorised_over_envs_and_inactive_steps() -> None:
    r = RunLengths(2, (1, 2))
    steps = [
        # env0 elem0, env0 elem1, env1 elem0, env1 elem1, done0, done1, active1
        ([1, 0], [0, 0], False, False, True),
        ([1, 1], [0, 0], False, False, False),  # env1 has no Jacobian this step
        ([0, 1], [1, 0], True, True, True),
    ]
    zeros = np.array([[[z0], [z1]] for z0, z1, *_ in steps], bool)
    ends = np.array([[d0, d1] for _, _, d0, d1, _ in steps])
    active = np.array([[True, a] for *_, a in steps])
    r.update_block(zeros, ends, active)
    # env0 elem0: Z Z N -> zero run 2 (from start, not whole episode), non-zero 1 (at end).
    # env0 elem1: N Z Z -> non-zero 1, zero 2 (ends with the episode).
    # env1 elem0: N . Z -> non-zero 1, zero 1.  env1 elem1: N . N -> whole episode, left out.
    assert r.zero_hist.tolist() == [0, 1, 2]
    assert r.nonzero_hist.tolist() == [0, 3]


def test_reference_episode_runs_hand_built():
    # One element over 7 steps: 0 0 1 1 1 0 0 -> zero runs 2 and 2, a non-zero run of 3.
    seq = [1, 1, 0, 0, 0, 1, 1]
    assert episode_runs(seq) == ([2, 2], [3])
    assert episode_runs([1] * 5) == ([], [])  # constant over the whole episode: no run
    assert episode_runs(seq, complete=False) == ([2], [3])  # the run still going is left out


def _same_hist(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(np.trim_zeros(a, "b"), np.trim_zeros(b, "b"))


def test_run_lengths_blocks_equal_the_plain_reference():
    """update_block over any split of the stream gives the reference's streaks."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        n, shape = int(rng.integers(1, 4)), (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
        steps = int(rng.integers(1, 40))
        z = rng.random((steps, n, *shape)) < rng.random()
        end = rng.random((steps, n)) < 0.4 * rng.random()
        if trial % 3 == 0:
            act = None
        elif trial % 3 == 1:
            act = rng.random((steps, n)) < rng.random()  # per env
        else:
            act = rng.random((steps, n, *shape)) < rng.random()  # per element
        blocks = RunLengths(n, shape)
        cuts = sorted({0, steps, *rng.integers(0, steps + 1, size=3).tolist()})
        for lo, hi in itertools.pairwise(cuts):
            blocks.update_block(z[lo:hi], end[lo:hi], None if act is None else act[lo:hi])
        zero, nonzero = stream_runs(z, end, act)
        _same_hist(blocks.zero_hist, zero)
        _same_hist(blocks.nonzero_hist, nonzero)


def test_masked_statistics_leave_non_smooth_elements_out() -> None:
    """Hand-built: column 2 (the action) of sample 0 is non-smooth."""
    js = np.array([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]]])
    ja = np.array([[[0.0], [2.0]], [[0.0], [5.0]]])
    zeros = zero_mask(combine(js, ja))
    flags = np.array([[False, False, True], [False, False, False]])
    valid = valid_mask(flags, rows=2)
    assert valid.shape == (2, 2, 3) and not valid[0, :, 2].any() and valid[1].all()
    assert valid_mask(np.zeros((2, 3), bool), rows=2) is None  # nothing flagged
    per = sample_sparsity(zeros, d_s=2, valid=valid)
    np.testing.assert_allclose(per["state"], [0.75, 0.25])
    assert np.isnan(per["action"][0]) and per["action"][1] == 0.5
    np.testing.assert_allclose(per["combined"], [3 / 4, 2 / 6])
    means = SparsityMeans()
    means.update(per)
    assert means.means()["action"] == 0.5  # the NaN sample does not count
    assert means.means()["combined"] == pytest.approx((0.75 + 2 / 6) / 2)
    g = GlobalZeros((2, 3))
    g.update(zeros, valid)
    # Element (0, 2) is left out in sample 0 and zero in sample 1: a global zero, seen once.
    np.testing.assert_array_equal(g.mask(), [[False, False, True], [True, False, False]])
    np.testing.assert_allclose(g.frequency(), [[0, 0.5, 1], [1, 0.5, 0]])
    np.testing.assert_array_equal(g.valid_count, [[2, 2, 1], [2, 2, 1]])
    p = PatternCounter()
    p.update(zeros[:1], valid[:1])
    assert (p.distinct, p.distinct_left_out) == (1, 1)
    p.update(zeros[:1] & valid[:1])  # the same zeros, nothing left out: the same pattern
    p.update(zeros[:1], np.ones_like(valid[:1]))  # all valid == no mask
    expected = {(zeros[0] & valid[0]).tobytes(), zeros[0].tobytes()}
    assert (p.distinct, p.distinct_left_out) == (len(expected), 1)
