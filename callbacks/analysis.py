"""Offline sparsity analysis of a stored data set (the study's Q1-Q3, and contacts).

One streaming pass over the Jacobians, a chunk at a time, feeds the same
statistics the live callback uses (:mod:`callbacks.sparsity_stats`); the only
per-row state kept is the bit-packed zero pattern (54 bytes per CheetahRun
step), from which run lengths and pattern changes are computed per episode.
All arithmetic runs in float64 whatever the stored precision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from callbacks.sparsity_stats import (
    GlobalZeros,
    PatternCounter,
    combine,
    episode_run_lengths,
    sample_sparsity,
    zero_mask,
)

__all__ = ["ContactStats", "DatasetAnalysis", "analyse_dataset", "contact_stats"]


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
        sparsity: Per-sample sparsity ``{"state", "action", "combined"}``, ``(N,)`` each.
        global_zeros: Global-zero mask and per-element zero frequency.
        distinct_patterns: Distinct zero patterns.
        zero_runs: Lengths of all finished zero runs (whole-episode runs left out).
        nonzero_runs: Lengths of all finished non-zero runs.
        timeline_episode: Episode shown over time (the first of maximal length).
        timeline: Combined sparsity over that episode's steps.
        timeline_contacts: Active contacts over that episode's steps.
        contacts: Sparsity against contacts.
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
    zero_runs: np.ndarray
    nonzero_runs: np.ndarray
    timeline_episode: int
    timeline: np.ndarray
    timeline_contacts: np.ndarray
    contacts: ContactStats
    tsne: np.ndarray | None = None
    tsne_sparsity: np.ndarray | None = field(default=None, repr=False)

    @property
    def d_s(self) -> int:
        """State (tangent) dimension."""
        return len(self.state_labels)

    @property
    def d_a(self) -> int:
        """Action dimension."""
        return len(self.action_labels)

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
            "mean_sparsity_J_s": round(float(self.sparsity["state"].mean()), 4),
            "mean_sparsity_J_a": round(float(self.sparsity["action"].mean()), 4),
            "mean_sparsity": round(float(self.sparsity["combined"].mean()), 4),
            "distinct_patterns": self.distinct_patterns,
            "mean_zero_run": round(_mean(self.zero_runs), 2),
            "mean_nonzero_run": round(_mean(self.nonzero_runs), 2),
            "steps_with_contact_pct": round(100 * self.contacts.steps_with_contact, 1),
            "precision": self.precision,
            "threshold": self.threshold,
        }


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


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
    return emb, combined[idx]


def analyse_dataset(
    path: str | os.PathLike,
    threshold: float | None = None,
    tsne_samples: int = 2000,
    seed: int = 0,
) -> DatasetAnalysis:
    """Analyse the data set at ``path`` in one streaming pass (plus a t-SNE sample).

    Args:
        path: Data set written by :class:`~jacobian_wrappers.TransitionWriter`.
        threshold: Zero threshold; the data set's own when ``None``.
        tsne_samples: Samples embedded by t-SNE (0 skips it).
        seed: Seed of the t-SNE subsample.

    Raises:
        ValueError: The data set holds no Jacobians or no rows.
    """
    from jacobian_wrappers.storage import TransitionReader

    with TransitionReader(path) as reader:
        meta = reader.meta
        if not meta.jacobians:
            raise ValueError(f"{path} holds no Jacobians (collected with jacobians=False)")
        n = len(reader)
        if n == 0:
            raise ValueError(f"{path} holds no transitions")
        thr = float(meta.threshold if threshold is None else threshold)
        d_t = meta.d_t
        shape = (d_t, d_t + meta.d_a)
        gz, patterns = GlobalZeros(shape), PatternCounter()
        sparsity = {k: np.empty(n) for k in ("state", "action", "combined")}
        packed = np.empty((n, (shape[0] * shape[1] + 7) // 8), dtype=np.uint8)
        pos = 0
        for chunk in reader.iter_chunks(["jacobian_state", "jacobian_action"]):
            jac = combine(
                chunk["jacobian_state"].astype(np.float64),
                chunk["jacobian_action"].astype(np.float64),
            )
            zeros = zero_mask(jac, thr)
            per = sample_sparsity(zeros, d_t)
            hi = pos + len(jac)
            for k in sparsity:
                sparsity[k][pos:hi] = per[k]
            gz.update(zeros)
            patterns.update(zeros)
            packed[pos:hi] = np.packbits(zeros.reshape(len(zeros), -1), axis=1)
            pos = hi
        n_contacts = reader.read("n_contacts")
        step = reader.read("step")
        ended = reader.read("terminated") | reader.read("truncated")
        episodes = reader.episode_index()
        zero_runs, nonzero_runs, pattern_changed, contact_changed = [], [], [], []
        best = max(episodes, key=lambda e: (len(episodes[e]), -e))
        for rows in episodes.values():
            rows = rows[np.argsort(step[rows], kind="stable")]
            z = np.unpackbits(packed[rows], axis=1, count=shape[0] * shape[1]).astype(bool)
            zr, nr = episode_run_lengths(z, complete=bool(ended[rows[-1]]))
            zero_runs.append(zr)
            nonzero_runs.append(nr)
            pattern_changed.append((z[1:] != z[:-1]).any(axis=1))
            contact_changed.append(n_contacts[rows][1:] != n_contacts[rows][:-1])
        timeline_rows = episodes[best][np.argsort(step[episodes[best]], kind="stable")]
        tsne, tsne_sp = (None, None)
        if tsne_samples > 0 and n >= 5:
            tsne, tsne_sp = _tsne(reader, sparsity["combined"], tsne_samples, seed)
        return DatasetAnalysis(
            path=str(path),
            env_name=meta.env_name,
            precision=meta.precision,
            policy=meta.policy,
            threshold=thr,
            state_labels=meta.tangent_labels,
            action_labels=meta.action_labels,
            n_samples=n,
            n_episodes=len(episodes),
            sparsity=sparsity,
            global_zeros=gz,
            distinct_patterns=patterns.distinct,
            zero_runs=np.concatenate(zero_runs),
            nonzero_runs=np.concatenate(nonzero_runs),
            timeline_episode=int(best),
            timeline=sparsity["combined"][timeline_rows],
            timeline_contacts=n_contacts[timeline_rows],
            contacts=contact_stats(
                sparsity["combined"],
                n_contacts,
                np.concatenate(pattern_changed),
                np.concatenate(contact_changed),
            ),
            tsne=tsne,
            tsne_sparsity=tsne_sp,
        )
