"""Offline sparsity analysis of a stored data set (the study's Q1-Q3, and contacts).

One streaming pass over the Jacobians, a chunk at a time, feeds the same
statistics the live callback uses (:mod:`dynamic_sparsity.analysis.stats`); the only
per-row state kept is the bit-packed zero pattern (54 bytes per CheetahRun
step, plus as much for the non-smooth mask where a data set has any), from
which run lengths and pattern changes are computed per episode. All
arithmetic runs in float64 whatever the stored precision.

Elements taken at a non-smooth point of the step (the stored
``jacobian_nonsmooth`` columns) are left out of every statistic by default
(``nonsmooth="mask"``); ``"keep"`` counts them as they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dynamic_sparsity.analysis.shards import open_reader
from dynamic_sparsity.analysis.stats import (
    DEFAULT_THRESHOLD,
    GlobalZeros,
    PatternCounter,
    RunLengths,
    SparsityMeans,
    check_threshold_precision,
    combine,
    mismatch_rows,
    sample_sparsity,
    valid_mask,
    zero_mask,
)

__all__ = [
    "NONSMOOTH_POLICIES",
    "SWEEP_THRESHOLDS",
    "ContactStats",
    "DatasetAnalysis",
    "analyse_dataset",
    "contact_stats",
]

#: Thresholds of the report's sensitivity sweep (the study's 1e-15 first).
SWEEP_THRESHOLDS: tuple[float, ...] = (DEFAULT_THRESHOLD, 1e-13, 1e-11, 1e-9)
#: What the analysis does with non-smooth elements.
NONSMOOTH_POLICIES = ("mask", "keep")


@dataclass
class ContactStats:
    """How sparsity relates to contacts, measured.

    Attributes:
        steps_with_contact: Fraction of steps with at least one active contact.
        sparsity_with_contact: Mean combined sparsity over steps with contact (NaN if none).
        sparsity_without_contact: Mean combined sparsity over steps without contact.
        transitions: Consecutive step pairs within episodes.
        pattern_changes: Pairs whose zero pattern differs.
        contact_changes: Pairs whose number of active contacts differs.
        both_change: Pairs where both change.
        p_contact_given_pattern: Share of pattern changes that coincide with a
            contact change.
        p_pattern_given_contact: Share of contact changes that coincide with a
            pattern change.
        lift: ``P(both) / (P(pattern) P(contact))``; 1 means independent.
    """

    steps_with_contact: float
    sparsity_with_contact: float
    sparsity_without_contact: float
    transitions: int
    pattern_changes: int
    contact_changes: int
    both_change: int
    p_contact_given_pattern: float
    p_pattern_given_contact: float
    lift: float


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def contact_stats(
    combined: np.ndarray,
    n_contacts: np.ndarray,
    pattern_changed: np.ndarray,
    contact_changed: np.ndarray,
) -> ContactStats:
    """:class:`ContactStats` from per-step and per-transition arrays.

    Args:
        combined: ``(N,)`` combined sparsity per step.
        n_contacts: ``(N,)`` active contacts per step.
        pattern_changed: ``(M,)`` zero pattern differs from the previous step's.
        contact_changed: ``(M,)`` contact count differs from the previous step's.
    """
    contact = np.asarray(n_contacts) > 0
    pc, cc = np.asarray(pattern_changed, bool), np.asarray(contact_changed, bool)
    m, both = len(pc), int((pc & cc).sum())
    return ContactStats(
        steps_with_contact=float(contact.mean()) if len(contact) else float("nan"),
        sparsity_with_contact=float(combined[contact].mean()) if contact.any() else float("nan"),
        sparsity_without_contact=(
            float(combined[~contact].mean()) if (~contact).any() else float("nan")
        ),
        transitions=m,
        pattern_changes=int(pc.sum()),
        contact_changes=int(cc.sum()),
        both_change=both,
        p_contact_given_pattern=_ratio(both, pc.sum()),
        p_pattern_given_contact=_ratio(both, cc.sum()),
        lift=_ratio(both * m, pc.sum() * cc.sum()),
    )


@dataclass
class DatasetAnalysis:
    """Everything the report shows about one data set.

    Attributes:
        path: The data set.
        env_name: Task.
        precision: Stored precision (the analysis itself runs in float64).
        policy: The policy that collected it.
        threshold: Zero threshold used.
        state_labels: Jacobian row / state column labels (tangent space).
        action_labels: Action labels.
        n_samples: Transitions analysed.
        n_episodes: Episodes among them.
        complete_episodes: Of those, episodes whose last step is in the data
            (the others were cut off when collection stopped).
        sparsity: Per-sample sparsity ``{"state", "action", "combined"}``, ``(N,)`` each
            (NaN for a part whose elements are all left out).
        global_zeros: Global-zero mask and per-element zero frequency.
        distinct_patterns: Distinct zero patterns.
        zero_run_hist: ``zero_run_hist[k]``: finished zero runs of length ``k``
            (whole-episode runs and runs cut off by the end of the data left out).
        nonzero_run_hist: The same for non-zero runs.
        timeline_episode: Episode shown over time (the first of maximal length).
        timeline: Combined sparsity over that episode's steps.
        timeline_contacts: Active contacts over that episode's steps.
        contacts: Sparsity against contacts.
        nonsmooth: ``"mask"`` or ``"keep"``: what was done with non-smooth elements.
        nonsmooth_samples: Transitions with at least one non-smooth column.
        mismatch_samples: Of those, transitions whose Jacobian was marked as not
            the env's own (every column flagged: the backend's next state left
            the env's, ``jacobian_mismatch``), left out whole.
        nonsmooth_columns: Per column of ``[J_s | J_a]``, transitions in which it is
            non-smooth.
        sweep: One row per threshold of :data:`SWEEP_THRESHOLDS` (and ``threshold``):
            global zeros of ``J_s``/``J_a`` and mean sparsities at that threshold.
        tsne: ``(K, 2)`` t-SNE embedding of standardised ``(s, a, s')``, or ``None``.
        tsne_sparsity: Combined sparsity of those K samples.
    """

    path: str
    env_name: str
    precision: str
    policy: str
    threshold: float
    state_labels: tuple[str, ...]
    action_labels: tuple[str, ...]
    n_samples: int
    n_episodes: int
    sparsity: dict[str, np.ndarray]
    global_zeros: GlobalZeros
    distinct_patterns: int
    zero_run_hist: np.ndarray
    nonzero_run_hist: np.ndarray
    timeline_episode: int
    timeline: np.ndarray
    timeline_contacts: np.ndarray
    contacts: ContactStats
    nonsmooth: str = "mask"
    nonsmooth_samples: int = 0
    nonsmooth_columns: np.ndarray | None = None
    mismatch_samples: int = 0
    complete_episodes: int = 0
    sweep: list[dict[str, float]] = field(default_factory=list)
    tsne: np.ndarray | None = None
    tsne_sparsity: np.ndarray | None = field(default=None, repr=False)
    jacobian_backend: str = "mjx"

    @property
    def d_s(self) -> int:
        """State (tangent) dimension."""
        return len(self.state_labels)

    @property
    def d_a(self) -> int:
        """Action dimension."""
        return len(self.action_labels)

    @property
    def n_zero_runs(self) -> int:
        """Finished zero runs."""
        return int(self.zero_run_hist.sum())

    @property
    def n_nonzero_runs(self) -> int:
        """Finished non-zero runs."""
        return int(self.nonzero_run_hist.sum())

    def summary(self) -> dict[str, float | int | str]:
        """The Q1 table row (plus means of Q2/Q3) as plain numbers."""
        counts = self.global_zeros.counts(self.d_s)
        return {
            "env": self.env_name,
            "d_s": self.d_s,
            "d_a": self.d_a,
            "samples": self.n_samples,
            "episodes": self.n_episodes,
            "global_zeros_J_s": counts["state"],
            "global_zeros_J_s_pct": round(counts["state_pct"], 2),
            "global_zeros_J_a": counts["action"],
            "mean_sparsity_J_s": round(_nanmean(self.sparsity["state"]), 4),
            "mean_sparsity_J_a": round(_nanmean(self.sparsity["action"]), 4),
            "mean_sparsity": round(_nanmean(self.sparsity["combined"]), 4),
            "distinct_patterns": self.distinct_patterns,
            "mean_zero_run": round(_hist_mean(self.zero_run_hist), 2),
            "mean_nonzero_run": round(_hist_mean(self.nonzero_run_hist), 2),
            "steps_with_contact_pct": round(100 * self.contacts.steps_with_contact, 1),
            "nonsmooth_samples": self.nonsmooth_samples,
            "mismatch_samples": self.mismatch_samples,
            "precision": self.precision,
            "threshold": self.threshold,
            "jacobian_backend": self.jacobian_backend,
        }


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    seen = ~np.isnan(x)
    return float(x[seen].mean()) if seen.any() else float("nan")


def _hist_mean(hist: np.ndarray) -> float:
    total = hist.sum()
    return float((np.arange(len(hist)) * hist).sum() / total) if total else float("nan")


def _tsne(reader, combined: np.ndarray, samples: int, seed: int):
    from sklearn.manifold import TSNE

    n = len(reader)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(samples, n), replace=False))
    rows = reader.read_rows(idx, ["state", "action", "next_state"])
    x = np.concatenate([rows["state"], rows["action"], rows["next_state"]], axis=1)
    x = x.astype(np.float64)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        x
    )
    return emb, np.nan_to_num(combined[idx])


@dataclass
class _Pass:
    """What the streaming pass over the Jacobians accumulates."""

    n: int
    shape: tuple[int, int]
    thresholds: tuple[float, ...]
    sparsity: dict[str, np.ndarray] = field(init=False)
    global_zeros: GlobalZeros = field(init=False)
    patterns: PatternCounter = field(default_factory=PatternCounter)
    zeros_packed: np.ndarray = field(init=False)
    valid_packed: np.ndarray | None = None
    nonsmooth_samples: int = 0
    nonsmooth_columns: np.ndarray = field(init=False)
    mismatch_samples: int = 0
    sweep: dict[float, tuple[GlobalZeros, SparsityMeans]] = field(init=False)

    def __post_init__(self) -> None:
        self.sparsity = {k: np.empty(self.n) for k in ("state", "action", "combined")}
        self.global_zeros = GlobalZeros(self.shape)
        self.zeros_packed = np.empty((self.n, self._bytes), dtype=np.uint8)
        self.nonsmooth_columns = np.zeros(self.shape[1], dtype=np.int64)
        self.sweep = {t: (GlobalZeros(self.shape), SparsityMeans()) for t in self.thresholds}

    @property
    def _bytes(self) -> int:
        return (self.shape[0] * self.shape[1] + 7) // 8

    def add(self, lo: int, jac: np.ndarray, flags: np.ndarray, threshold: float, mask: bool):
        """Accumulate rows ``lo:lo + len(jac)``."""
        hi, d_t = lo + len(jac), self.shape[0]
        self.nonsmooth_samples += int(flags.any(axis=1).sum())
        self.nonsmooth_columns += flags.sum(axis=0)
        self.mismatch_samples += int(mismatch_rows(flags, d_t).sum())
        valid = valid_mask(flags, d_t) if mask else None
        if valid is not None and self.valid_packed is None:
            self.valid_packed = np.full((self.n, self._bytes), 255, dtype=np.uint8)
        zeros = zero_mask(jac, threshold)
        per = sample_sparsity(zeros, d_t, valid)
        for k in self.sparsity:
            self.sparsity[k][lo:hi] = per[k]
        self.global_zeros.update(zeros, valid)
        self.patterns.update(zeros, valid)
        self.zeros_packed[lo:hi] = np.packbits(zeros.reshape(len(zeros), -1), axis=1)
        if valid is not None:
            self.valid_packed[lo:hi] = np.packbits(valid.reshape(len(zeros), -1), axis=1)
        for t, (gz, means) in self.sweep.items():
            z = zeros if t == threshold else zero_mask(jac, t)
            gz.update(z, valid)
            means.update(sample_sparsity(z, d_t, valid))

    def unpack(self, rows: np.ndarray, packed: np.ndarray | None) -> np.ndarray | None:
        """Bool masks of ``rows`` from a packed array (``None`` stays ``None``)."""
        if packed is None:
            return None
        size = self.shape[0] * self.shape[1]
        return np.unpackbits(packed[rows], axis=1, count=size).astype(bool)

    def sweep_rows(self) -> list[dict[str, float]]:
        """One row per threshold: global zeros and mean sparsities."""
        d_t = self.shape[0]
        rows = []
        for t, (gz, means) in sorted(self.sweep.items()):
            counts, m = gz.counts(d_t), means.means()
            rows.append(
                {
                    "threshold": t,
                    "global_zeros_J_s": counts["state"],
                    "global_zeros_J_s_pct": round(counts["state_pct"], 2),
                    "global_zeros_J_a": counts["action"],
                    "mean_sparsity_J_s": round(m["state"], 4),
                    "mean_sparsity_J_a": round(m["action"], 4),
                    "mean_sparsity": round(m["combined"], 4),
                }
            )
        return rows


def _stream(reader, shape, threshold: float, mask: bool, thresholds) -> _Pass:
    """The one pass over the Jacobians of ``reader``, a chunk at a time."""
    acc = _Pass(len(reader), shape, tuple(sorted({*thresholds, threshold})))
    pos = 0
    keys = ["jacobian_state", "jacobian_action", "jacobian_nonsmooth"]
    for chunk in reader.iter_chunks(keys):
        jac = combine(
            chunk["jacobian_state"].astype(np.float64),
            chunk["jacobian_action"].astype(np.float64),
        )
        acc.add(pos, jac, chunk["jacobian_nonsmooth"], threshold, mask)
        pos += len(jac)
    return acc


def _episodes(reader, acc: _Pass, n_contacts: np.ndarray):
    """Run lengths and pattern/contact changes, episode by episode."""
    step = reader.read("step")
    ended = reader.read("terminated") | reader.read("truncated")
    episodes = reader.episode_index()
    runs = RunLengths(1, acc.shape)  # the totals; each episode is counted on its own
    pattern_changed, contact_changed, ordered = [], [], {}
    for ep, rows in episodes.items():
        rows = rows[np.argsort(step[rows], kind="stable")]
        ordered[ep] = rows
        z = acc.unpack(rows, acc.zeros_packed)
        valid = acc.unpack(rows, acc.valid_packed)
        end = np.zeros((len(rows), 1), dtype=bool)
        end[-1] = ended[rows[-1]]  # data cut before the episode ended: runs stay open
        active = None if valid is None else valid.reshape(len(rows), 1, *acc.shape)
        episode = RunLengths(1, acc.shape)
        episode.update_block(z.reshape(len(rows), 1, *acc.shape), end, active)
        runs.merge(episode)
        if valid is not None:
            z = z & valid
        pattern_changed.append((z[1:] != z[:-1]).any(axis=1))
        contact_changed.append(n_contacts[rows][1:] != n_contacts[rows][:-1])
    return runs, ordered, np.concatenate(pattern_changed), np.concatenate(contact_changed)


def analyse_dataset(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    threshold: float | None = None,
    tsne_samples: int = 2000,
    seed: int = 0,
    *,
    nonsmooth: str = "mask",
    sweep: tuple[float, ...] = SWEEP_THRESHOLDS,
) -> DatasetAnalysis:
    """Analyse the data set at ``path`` in one streaming pass (plus a t-SNE sample).

    Args:
        path: Data set written by :class:`~dynamic_sparsity.analysis.TransitionWriter`,
            or a set of shards as one (a folder, a glob or a list;
            :func:`~dynamic_sparsity.analysis.open_reader`).
        threshold: Zero threshold; the data set's own when ``None``.
        tsne_samples: Samples embedded by t-SNE (0 skips it).
        seed: Seed of the t-SNE subsample.
        nonsmooth: ``"mask"`` (default): leave elements taken at a non-smooth
            point out of every statistic; ``"keep"``: count them as they are.
        sweep: Thresholds of the sensitivity sweep (:attr:`DatasetAnalysis.sweep`).

    Raises:
        ValueError: The data set holds no Jacobians or no rows, or an unknown
            ``nonsmooth`` policy.
    """
    if nonsmooth not in NONSMOOTH_POLICIES:
        raise ValueError(f"nonsmooth must be one of {NONSMOOTH_POLICIES}, got {nonsmooth!r}")
    with open_reader(path) as reader:
        meta = reader.meta
        if not meta.jacobians:
            raise ValueError(f"{path} holds no Jacobians (collected with jacobians=False)")
        if len(reader) == 0:
            raise ValueError(f"{path} holds no transitions")
        thr = float(meta.threshold if threshold is None else threshold)
        check_threshold_precision(thr, meta.precision, f"analyse_dataset({reader.path.name})")
        shape = (meta.d_t, meta.d_t + meta.d_a)
        acc = _stream(reader, shape, thr, nonsmooth == "mask", sweep)
        n_contacts = reader.read("n_contacts")
        runs, episodes, pattern_changed, contact_changed = _episodes(reader, acc, n_contacts)
        ended = reader.read("terminated") | reader.read("truncated")
        complete = sum(bool(ended[rows[-1]]) for rows in episodes.values())
        best = max(episodes, key=lambda e: (len(episodes[e]), -e))
        tsne, tsne_sp = (None, None)
        if tsne_samples > 0 and len(reader) >= 5:
            tsne, tsne_sp = _tsne(reader, acc.sparsity["combined"], tsne_samples, seed)
        return DatasetAnalysis(
            path=str(reader.path),
            env_name=meta.env_name,
            precision=meta.precision,
            jacobian_backend=str(meta.extra.get("jacobian_backend", "mjx")),
            policy=meta.policy,
            threshold=thr,
            state_labels=meta.tangent_labels,
            action_labels=meta.action_labels,
            n_samples=len(reader),
            n_episodes=len(episodes),
            complete_episodes=complete,
            sparsity=acc.sparsity,
            global_zeros=acc.global_zeros,
            distinct_patterns=acc.patterns.distinct,
            zero_run_hist=runs.zero_hist,
            nonzero_run_hist=runs.nonzero_hist,
            timeline_episode=int(best),
            timeline=acc.sparsity["combined"][episodes[best]],
            timeline_contacts=n_contacts[episodes[best]],
            contacts=contact_stats(
                np.nan_to_num(acc.sparsity["combined"]),
                n_contacts,
                pattern_changed,
                contact_changed,
            ),
            nonsmooth=nonsmooth,
            nonsmooth_samples=acc.nonsmooth_samples,
            nonsmooth_columns=acc.nonsmooth_columns,
            mismatch_samples=acc.mismatch_samples,
            sweep=acc.sweep_rows(),
            tsne=tsne,
            tsne_sparsity=tsne_sp,
        )
