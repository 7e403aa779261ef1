"""Sparsity statistics of Jacobians, incremental and vectorised (docs/method.md).

Pure numpy. Every statistic updates from a stream of steps without storing the
stream, so the same code serves the live SB3 callbacks and offline analysis of
a data set read back in chunks.

An element is *zero* when ``|J_ij| < threshold`` (default ``1e-15``, meaningful
in float64). ``J`` below is the combined ``[J_s | J_a]`` of shape
``(d_s, d_s + d_a)``; batches carry a leading sample axis.

Elements taken at a non-smooth point of the step (``jacobian_nonsmooth``: an
action exactly on its control bound, where autodiff reports half the slope)
are neither zero nor non-zero: the statistics take an optional ``valid`` mask
and leave such elements out (:func:`valid_mask`). A step whose Jacobian is not
the env's own (its backend's next state left the env's, ``jacobian_mismatch``)
has every column flagged, so it is left out whole; :func:`mismatch_rows`
counts such steps back from the flags (a control bound never flags a state
column).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLD",
    "FD_ZERO_THRESHOLD",
    "GlobalZeros",
    "PatternCounter",
    "RunLengths",
    "SparsityMeans",
    "check_threshold_precision",
    "combine",
    "default_threshold",
    "mismatch_rows",
    "sample_sparsity",
    "valid_mask",
    "zero_mask",
]

DEFAULT_THRESHOLD = 1e-15

#: Zero threshold of finite-difference Jacobians (``backend="mujoco"``, MuJoCo's C
#: central differences): a structural zero comes out of ``(f(x+d) - f(x-d)) / 2d``
#: as round-off, up to ~1e-8, so ``|J| < 1e-15`` finds few of them (HalfCheetah-v5:
#: 0.1 % against 8.7 % exact zeros). ``|J_fd| < 1e-8``, measured against the exact
#: zeros of the same steps on twelve envs (docs/performance.md, "Autodiff against
#: finite differences"): false zeros <= 1.8 % of the exact non-zeros, missed zeros
#: <= 3.2 % of the exact zeros (1e-9 missed 22 % on Walker2d-v5).
FD_ZERO_THRESHOLD = 1e-8

#: The smallest zero threshold that float32 Jacobians can resolve: float32
#: round-off turns exact (float64) zeros into values up to 4.4e-7 (ReacherHard,
#: docs/pitfalls.md#precision), so a threshold below this finds none of them.
FLOAT32_MIN_THRESHOLD = 1e-6


def default_threshold(backend: str | None) -> float:
    """The zero threshold for Jacobians of ``backend`` (``"mjx"``, ``"mujoco"``, ``None``).

    :data:`FD_ZERO_THRESHOLD` for MuJoCo's C finite differences (``"mujoco"``),
    else the study's :data:`DEFAULT_THRESHOLD`.
    """
    return FD_ZERO_THRESHOLD if backend == "mujoco" else DEFAULT_THRESHOLD


def check_threshold_precision(threshold: float, precision: str | np.dtype, where: str) -> bool:
    """Warn when ``threshold`` is below what Jacobians of ``precision`` can resolve.

    With float32 Jacobians and a threshold under :data:`FLOAT32_MIN_THRESHOLD`
    (the study's 1e-15 included), exact zeros read as round-off: ReacherHard's
    mean sparsity reads 0.000 in float32 against 0.125 in float64.

    Args:
        threshold: The zero threshold in use.
        precision: ``"float32"``/``"float64"`` or a dtype.
        where: Who is checking (named in the warning).

    Returns:
        Whether it warned.
    """
    if np.dtype(precision) != np.float32 or threshold >= FLOAT32_MIN_THRESHOLD:
        return False
    warnings.warn(
        f"{where}: zero threshold {threshold:g} on float32 Jacobians, whose exact zeros "
        f"read as round-off up to 4.4e-7, so the sparsity will read near 0 (ReacherHard: "
        f"0.000 in float32, 0.125 in float64). Use precision='float64' for sparsity "
        f"(e.g. PlaygroundVecEnv(..., precision='float64'), the default with Jacobians); "
        "docs/pitfalls.md#precision",
        UserWarning,
        stacklevel=3,
    )
    return True


def zero_mask(jac: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Boolean mask of the zero elements, ``|J| < threshold`` (NaN counts as non-zero)."""
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    return np.abs(np.asarray(jac)) < threshold


def combine(jacobian_state: np.ndarray, jacobian_action: np.ndarray) -> np.ndarray:
    """``[J_s | J_a]`` along the last axis; works on single Jacobians and batches."""
    return np.concatenate([jacobian_state, jacobian_action], axis=-1)


def valid_mask(nonsmooth: np.ndarray | None, rows: int) -> np.ndarray | None:
    """Element mask ``(n, rows, cols)`` of the elements taken at smooth points.

    Args:
        nonsmooth: ``(n, cols)`` bool, the non-smooth columns per sample
            (``jacobian_nonsmooth``), or ``None``.
        rows: Rows of the Jacobian (``d_t``).

    Returns:
        ``None`` when ``nonsmooth`` is ``None`` or flags nothing (all valid).
    """
    if nonsmooth is None:
        return None
    flags = np.asarray(nonsmooth, dtype=bool)
    if not flags.any():
        return None
    return np.broadcast_to(~flags[:, None, :], (flags.shape[0], rows, flags.shape[1]))


def mismatch_rows(nonsmooth: np.ndarray, state_columns: int) -> np.ndarray:
    """``(n,)`` bool: the steps marked mismatched (every state column flagged).

    Args:
        nonsmooth: ``(n, cols)`` bool, ``jacobian_nonsmooth`` per step.
        state_columns: Columns of ``J_s`` (``d_t``); with none, no step is marked.
    """
    flags = np.asarray(nonsmooth, dtype=bool)
    if state_columns == 0:
        return np.zeros(flags.shape[0], dtype=bool)
    return flags[:, :state_columns].all(axis=1)


def _fraction(zeros: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Per-row share of zeros among the valid elements of ``(n, m)`` arrays (NaN if none)."""
    if zeros.shape[1] == 0:
        return np.zeros(zeros.shape[0])
    if valid is None:
        return zeros.mean(axis=1)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (zeros & valid).sum(axis=1) / count, np.nan)


def sample_sparsity(
    zeros: np.ndarray, d_s: int, valid: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-sample sparsity of ``J_s``, ``J_a`` and both, from zero masks.

    Args:
        zeros: ``(n, d_s, d_s + d_a)`` zero masks of combined Jacobians.
        d_s: Number of state columns.
        valid: Same shape, ``False`` for elements left out (non-smooth);
            ``None``: all count. A part with no valid element is NaN.

    Returns:
        ``{"state": (n,), "action": (n,), "combined": (n,)}`` fractions of zeros.
    """
    zeros = np.asarray(zeros, dtype=bool)
    if zeros.ndim != 3 or not 0 < d_s <= zeros.shape[2]:
        raise ValueError(
            f"zeros must be (n, d_s, d_s + d_a) with d_s={d_s}, got shape {zeros.shape}"
        )
    n = zeros.shape[0]

    def part(x: np.ndarray | None, cols: slice) -> np.ndarray | None:
        return None if x is None else x[:, :, cols].reshape(n, -1)

    state, action = slice(None, d_s), slice(d_s, None)
    return {
        "state": _fraction(part(zeros, state), part(valid, state)),
        "action": _fraction(part(zeros, action), part(valid, action)),
        "combined": _fraction(
            zeros.reshape(n, -1), None if valid is None else valid.reshape(n, -1)
        ),
    }


@dataclass
class SparsityMeans:
    """Running means of per-sample sparsity, resettable (e.g. at every log dump).

    Samples whose value is NaN for a key (no valid element in that part) do not
    count for that key.
    """

    sums: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("state", "action", "combined"), 0.0)
    )
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("state", "action", "combined"), 0)
    )

    @property
    def count(self) -> int:
        """Samples seen (of the combined Jacobian) since the last reset."""
        return self.counts["combined"]

    def update(self, per_sample: dict[str, np.ndarray]) -> None:
        """Add a batch of :func:`sample_sparsity` results."""
        for key in self.sums:
            values = np.asarray(per_sample[key], dtype=float)
            seen = ~np.isnan(values)
            self.sums[key] += float(values[seen].sum())
            self.counts[key] += int(seen.sum())

    def means(self) -> dict[str, float]:
        """Mean sparsity per key since the last reset (NaN when empty)."""
        return {
            k: (v / self.counts[k] if self.counts[k] else float("nan"))
            for k, v in self.sums.items()
        }

    def reset(self) -> None:
        """Forget the samples seen so far."""
        self.sums = dict.fromkeys(self.sums, 0.0)
        self.counts = dict.fromkeys(self.counts, 0)


class GlobalZeros:
    """Elements zero in every sample so far, and how often each element is zero.

    With ``valid`` masks an element counts only in the samples where it is
    valid: it is a global zero if it is zero wherever valid (and valid at
    least once), and its frequency is over its valid samples.

    Args:
        shape: ``(d_s, d_s + d_a)``.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = tuple(shape)
        self.always_zero = np.ones(self.shape, dtype=bool)
        self.zero_count = np.zeros(self.shape, dtype=np.int64)
        self.valid_count = np.zeros(self.shape, dtype=np.int64)
        self.samples = 0

    def update(self, zeros: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add ``(n, *shape)`` zero masks (and optional validity masks of the same shape)."""
        zeros = np.asarray(zeros, dtype=bool)
        if zeros.shape[1:] != self.shape:
            raise ValueError(f"zero masks must be (n, {self.shape}), got {zeros.shape}")
        if len(zeros) == 0:
            return
        if valid is None:
            self.always_zero &= zeros.all(axis=0)
            self.zero_count += zeros.sum(axis=0)
            self.valid_count += len(zeros)
        else:
            self.always_zero &= (zeros | ~valid).all(axis=0)
            self.zero_count += (zeros & valid).sum(axis=0)
            self.valid_count += valid.sum(axis=0)
        self.samples += len(zeros)

    def mask(self) -> np.ndarray:
        """Global-zero mask (all ``False`` before any sample)."""
        return self.always_zero & (self.valid_count > 0)

    def frequency(self) -> np.ndarray:
        """Per-element fraction of (valid) samples in which the element is zero."""
        return self.zero_count / np.maximum(self.valid_count, 1)

    def counts(self, d_s: int) -> dict[str, float]:
        """Global zeros of ``J_s`` (count, percent) and ``J_a`` (count)."""
        m = self.mask()
        n_s = int(m[:, :d_s].sum())
        return {
            "state": n_s,
            "state_pct": 100.0 * n_s / max(m[:, :d_s].size, 1),
            "action": int(m[:, d_s:].sum()),
        }


class PatternCounter:
    """Distinct zero patterns seen (each mask hashed as packed bits).

    A pattern is the set of zero elements among the valid ones (a left-out
    element counts as not zero). Which elements were left out is counted
    apart, in :attr:`distinct_left_out`, so that ``distinct`` means what its
    name says.
    """

    def __init__(self) -> None:
        self._seen: set[bytes] = set()
        self._left_out: set[bytes] = set()

    def update(self, zeros: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add ``(n, ...)`` zero masks (and optional validity masks)."""
        zeros = np.asarray(zeros, dtype=bool).reshape(len(zeros), -1)
        if valid is not None:
            left_out = ~np.asarray(valid, dtype=bool).reshape(len(zeros), -1)
            zeros = zeros & ~left_out
            flagged = left_out[left_out.any(axis=1)]
            self._left_out.update(row.tobytes() for row in np.packbits(flagged, axis=1))
        self._seen.update(row.tobytes() for row in np.packbits(zeros, axis=1))

    @property
    def distinct(self) -> int:
        """Distinct zero patterns so far."""
        return len(self._seen)

    @property
    def distinct_left_out(self) -> int:
        """Distinct non-empty sets of left-out elements so far."""
        return len(self._left_out)


class RunLengths:
    """Lengths of per-element zero / non-zero streaks over consecutive steps (docs/method.md).

    Each env's stream is followed separately; a streak ends when the element
    flips or the episode ends. Streaks that span a whole episode (the element
    never changed in it) are left out. Streaks still running are not counted
    until they end.

    Args:
        n_envs: Number of parallel streams.
        shape: Shape of one zero mask, ``(d_s, d_s + d_a)``.
    """

    def __init__(self, n_envs: int, shape: tuple[int, int]) -> None:
        self.n_envs, self.shape = int(n_envs), tuple(shape)
        size = int(np.prod(self.shape))
        self._state = np.zeros((self.n_envs, size), dtype=bool)
        self._length = np.zeros((self.n_envs, size), dtype=np.int64)  # 0: episode not started
        self._from_start = np.zeros((self.n_envs, size), dtype=bool)
        self.zero_hist = np.zeros(1, dtype=np.int64)  # zero_hist[k]: streaks of length k
        self.nonzero_hist = np.zeros(1, dtype=np.int64)

    def _record(self, lengths: np.ndarray, zero: np.ndarray) -> None:
        for hist_name, sel in (("zero_hist", zero), ("nonzero_hist", ~zero)):
            if sel.any():
                self._record_hist(hist_name, np.bincount(lengths[sel]))

    def _record_hist(self, hist_name: str, counts: np.ndarray) -> None:
        hist = getattr(self, hist_name)
        if len(counts) > len(hist):
            hist = np.pad(hist, (0, len(counts) - len(hist)))
        hist[: len(counts)] += counts
        setattr(self, hist_name, hist)

    def update_block(
        self, zeros: np.ndarray, episode_end: np.ndarray, active: np.ndarray | None = None
    ) -> None:
        """Advance by ``T`` consecutive steps of every env at once.

        Vectorised over time as well as envs and elements, so a live callback
        buffers steps and pays the numpy call overhead once per block, and the
        offline analysis passes a whole episode at once; blocks may cut a stream
        anywhere (streaks carry over). Every element of every env is its own
        stream; an element that is not active at a step (no Jacobian there, or
        a non-smooth one) is skipped: its streak neither grows nor flips, but
        an episode end on that step still closes it.

        Args:
            zeros: ``(T, n_envs, *shape)`` zero masks.
            episode_end: ``(T, n_envs)``.
            active: ``(T, n_envs)`` (per env) or ``(T, n_envs, *shape)`` (per
                element), or ``None`` (all True).
        """
        z = np.asarray(zeros, dtype=bool)
        steps = len(z)
        if steps == 0:
            return
        n, size = self.n_envs, self._state.shape[1]
        full = (steps, n, size)
        z = z.reshape(full)
        end = np.broadcast_to(np.asarray(episode_end, dtype=bool).reshape(steps, n, 1), full)
        if active is None:
            act = np.ones(full, dtype=bool)
        else:
            act = np.asarray(active, dtype=bool)
            act = np.broadcast_to(act.reshape(steps, n, 1 if act.ndim == 2 else size), full)
        # Column 0 stands for the carried streak (weight: its length so far);
        # a stream whose episode has not started yet gets a dead column 0 that
        # "ends" its episode, so its next active step starts afresh.
        started = self._length > 0
        col_act = np.concatenate([started[None], act])
        col_end = np.concatenate([~started[None], end])
        idx = np.arange(steps + 1)[:, None, None]
        last_act = np.maximum.accumulate(np.where(col_act, idx, -1), axis=0)
        last_end = np.maximum.accumulate(np.where(col_end, idx, -1), axis=0)
        # The first active step of an episode starts a streak "from the start".
        first = np.zeros_like(col_act)
        first[1:] = col_act[1:] & (last_act[:-1] <= last_end[:-1])
        # Inactive steps repeat the last active mask, so they never flip a streak.
        values = np.concatenate([self._state[None], z])
        values = np.take_along_axis(values, np.maximum(last_act, 0), axis=0)
        boundary = np.ones((steps + 2, n, size), dtype=bool)  # streak starts, plus the end
        boundary[1:-1] = (col_act[1:] & (values[1:] != values[:-1])) | first[1:] | col_end[:-1]
        weight = np.concatenate([self._length[None], act]).astype(np.int64)
        cum = np.concatenate([np.zeros((1, n, size), np.int64), np.cumsum(weight, axis=0)])

        # One row per stream (env, element); streaks of a row are consecutive.
        bt = boundary.reshape(steps + 2, -1).T
        row, col = np.nonzero(bt)
        same = row[1:] == row[:-1]
        row, start, stop = row[:-1][same], col[:-1][same], col[1:][same]
        cum = cum.reshape(steps + 2, -1)
        length = cum[stop, row] - cum[start, row]
        value = values.reshape(steps + 1, -1)[start, row]
        first_flat = first.reshape(steps + 1, -1)
        from_start = np.where(start == 0, self._from_start.reshape(-1)[row], first_flat[start, row])
        ends_episode = col_end.reshape(steps + 1, -1)[stop - 1, row]
        still_open = (stop == steps + 1) & ~ends_episode
        keep = (length > 0) & ~still_open & (~ends_episode | ~from_start)
        self._record(length[keep], value[keep])

        last = stop == steps + 1  # exactly one per stream, in row order
        self._state = values[-1].copy()
        self._length = np.where(still_open[last], length[last], 0).reshape(n, size)
        self._from_start = (still_open[last] & from_start[last]).reshape(n, size)

    def merge(self, other: RunLengths) -> None:
        """Add the finished streaks of ``other`` (e.g. of another episode) to these."""
        self._record_hist("zero_hist", other.zero_hist)
        self._record_hist("nonzero_hist", other.nonzero_hist)

    @staticmethod
    def _mean(hist: np.ndarray) -> float:
        total = hist.sum()
        return float((np.arange(len(hist)) * hist).sum() / total) if total else float("nan")

    def mean_zero_run(self) -> float:
        """Mean length of the finished zero streaks (NaN if none)."""
        return self._mean(self.zero_hist)

    def mean_nonzero_run(self) -> float:
        """Mean length of the finished non-zero streaks (NaN if none)."""
        return self._mean(self.nonzero_hist)
