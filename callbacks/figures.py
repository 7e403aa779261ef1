"""Matplotlib figures of sparsity statistics (shared by the callback and the report)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures go to TensorBoard or PNG files
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["sparsity_timeline_figure", "zero_frequency_figure"]


def zero_frequency_figure(
    frequency: np.ndarray,
    state_labels: Sequence[str],
    action_labels: Sequence[str],
    title: str = "zero frequency of [J_s | J_a]",
) -> plt.Figure:
    """Heatmap of per-element zero frequency (percent) with labelled axes.

    Args:
        frequency: ``(d_s, d_s + d_a)`` fractions in ``[0, 1]``.
        state_labels: ``d_s`` labels (rows, and the first ``d_s`` columns).
        action_labels: ``d_a`` labels (the last columns).
        title: Figure title.
    """
    d_s, cols = frequency.shape
    size = max(4.0, 0.32 * cols + 2.5)
    fig, ax = plt.subplots(figsize=(size, max(3.5, 0.32 * d_s + 1.5)))
    im = ax.imshow(100.0 * frequency, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.axvline(d_s - 0.5, color="white", linewidth=1.5)
    ax.set_xticks(range(cols), [*state_labels, *action_labels], rotation=90, fontsize=7)
    ax.set_yticks(range(d_s), list(state_labels), fontsize=7)
    ax.set_xlabel("d / d (state | action)")
    ax.set_ylabel("next state")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="% of samples with |J| < threshold")
    fig.tight_layout()
    return fig


def sparsity_timeline_figure(
    sparsity: Sequence[float], title: str = "sparsity over one episode"
) -> plt.Figure:
    """Per-step combined sparsity of one episode."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(np.arange(len(sparsity)), np.asarray(sparsity), linewidth=1)
    ax.set_xlabel("step of episode")
    ax.set_ylabel("sparsity of [J_s | J_a]")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
