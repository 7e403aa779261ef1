"""Matplotlib figures of sparsity statistics (shared by the callback and the report).

Figures are built as ``matplotlib.figure.Figure`` objects, not through
``pyplot``: nothing here touches the user's matplotlib backend or pyplot's
figure registry, and the figures render headless (``fig.savefig``, or an Agg
canvas for TensorBoard).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "global_zeros_bar_figure",
    "run_length_figure",
    "sparsity_histogram_figure",
    "sparsity_timeline_figure",
    "tsne_figure",
    "zero_frequency_figure",
]


def zero_frequency_figure(
    frequency: np.ndarray,
    state_labels: Sequence[str],
    action_labels: Sequence[str],
    title: str = "zero frequency of [J_s | J_a]",
) -> Figure:
    """Heatmap of per-element zero frequency (percent) with labelled axes.

    Args:
        frequency: ``(d_s, d_s + d_a)`` fractions in ``[0, 1]``.
        state_labels: ``d_s`` labels (rows, and the first ``d_s`` columns).
        action_labels: ``d_a`` labels (the last columns).
        title: Figure title.
    """
    d_s, cols = frequency.shape
    labels = [*state_labels, *action_labels]
    # Fixed margins sized from the label lengths: tight_layout cost 60% of the
    # drawing time, which the live callback pays at every heatmap.
    label_in = 0.075 * max((len(x) for x in labels), default=4) + 0.45
    width = 0.28 * cols + label_in + 1.8
    height = 0.28 * d_s + label_in + 0.7
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes(
        (
            label_in / width,
            label_in / height,
            (0.28 * cols) / width,
            (0.28 * d_s) / height,
        )
    )
    cax = fig.add_axes(
        (
            (label_in + 0.28 * cols + 0.15) / width,
            label_in / height,
            0.15 / width,
            (0.28 * d_s) / height,
        )
    )
    im = ax.imshow(100.0 * frequency, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.axvline(d_s - 0.5, color="white", linewidth=1.5)
    ax.set_xticks(range(cols), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(d_s), list(state_labels), fontsize=7)
    ax.set_xlabel("d / d (state | action)", fontsize=8)
    ax.set_ylabel("next state", fontsize=8)
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, cax=cax, label="% of samples with |J| < threshold")
    return fig


def sparsity_timeline_figure(
    sparsity: Sequence[float],
    title: str = "sparsity over one episode",
    contacts: Sequence[int] | None = None,
) -> Figure:
    """Per-step combined sparsity of one episode, with active contacts if given."""
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    ax.plot(np.arange(len(sparsity)), np.asarray(sparsity), linewidth=1, label="sparsity")
    ax.set_xlabel("step of episode")
    ax.set_ylabel("sparsity of [J_s | J_a]")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    if contacts is not None:
        ax2 = ax.twinx()
        ax2.step(
            np.arange(len(contacts)),
            np.asarray(contacts),
            where="mid",
            color="tab:orange",
            linewidth=0.8,
            alpha=0.8,
            label="active contacts",
        )
        ax2.set_ylabel("active contacts", color="tab:orange")
        ax2.set_ylim(0, max(1, int(np.max(contacts, initial=0))) + 0.5)
    fig.subplots_adjust(left=0.1, right=0.9, bottom=0.17, top=0.9)  # cheaper than tight_layout
    return fig


def sparsity_histogram_figure(
    per_sample: dict[str, np.ndarray], title: str = "per-sample sparsity"
) -> Figure:
    """Histograms of per-sample sparsity of ``J_s``, ``J_a`` and both, means marked."""
    keys = [k for k in ("state", "action", "combined") if k in per_sample]
    fig = Figure(figsize=(3.6 * len(keys), 3))
    axes = fig.subplots(1, len(keys), squeeze=False)
    names = {"state": "J_s", "action": "J_a", "combined": "[J_s | J_a]"}
    for ax, key in zip(axes[0], keys, strict=True):
        values = np.asarray(per_sample[key])
        ax.hist(values, bins=np.linspace(0, 1, 51), color="tab:blue")
        mean = float(values.mean())
        ax.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.3f}")
        ax.set_xlabel(f"sparsity of {names[key]}")
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def tsne_figure(
    embedding: np.ndarray, sparsity: np.ndarray, title: str = "t-SNE of (s, a, s')"
) -> Figure:
    """2-D embedding coloured by combined sparsity."""
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    sc = ax.scatter(embedding[:, 0], embedding[:, 1], c=sparsity, s=4, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="sparsity of [J_s | J_a]")
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def run_length_figure(
    zero_hist: np.ndarray, nonzero_hist: np.ndarray, title: str = "run lengths"
) -> Figure:
    """Histograms of zero-run and non-zero-run lengths (log counts), means marked.

    Args:
        zero_hist: ``zero_hist[k]``: zero runs of length ``k``.
        nonzero_hist: The same for non-zero runs.
        title: Figure title.
    """
    fig = Figure(figsize=(8, 3))
    axes = fig.subplots(1, 2)
    for ax, hist, name in ((axes[0], zero_hist, "zero"), (axes[1], nonzero_hist, "non-zero")):
        hist = np.asarray(hist)
        lengths = np.arange(len(hist))
        if hist.sum():
            longest = int(lengths[hist > 0].max())
            bins = np.linspace(0.5, longest + 0.5, min(50, longest) + 1)
            ax.hist(lengths, bins=bins, weights=hist, color="tab:blue", log=True)
            mean = float((lengths * hist).sum() / hist.sum())
            ax.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.1f}")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no finished runs", ha="center", transform=ax.transAxes)
        ax.set_xlabel(f"{name}-run length (steps)")
        ax.set_ylabel("runs")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def global_zeros_bar_figure(
    envs: Sequence[str], global_pct: Sequence[float], mean_sparsity: Sequence[float]
) -> Figure:
    """Per env: global zeros of ``J_s`` (%) next to mean per-sample sparsity (%)."""
    x = np.arange(len(envs))
    fig = Figure(figsize=(max(5, 1.1 * len(envs) + 2), 3.5))
    ax = fig.subplots()
    ax.bar(x - 0.2, global_pct, 0.4, label="global zeros of J_s (%)")
    ax.bar(x + 0.2, 100 * np.asarray(mean_sparsity), 0.4, label="mean sparsity of [J_s|J_a] (%)")
    ax.set_xticks(x, list(envs), rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
