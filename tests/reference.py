"""Independent, deliberately plain reference computations for the statistics' tests."""

from __future__ import annotations

import numpy as np


def episode_runs(values: np.ndarray, complete: bool = True) -> tuple[list[int], list[int]]:
    """Zero and non-zero run lengths of one element over one episode, by a Python loop.

    A run ends where the value flips or the episode ends; a run spanning the
    whole episode is left out; with ``complete=False`` (data cut before the
    episode ended) the run still going at the last step is left out too.
    """
    values = [bool(v) for v in values]
    runs: list[tuple[bool, int]] = []
    for v in values:
        if runs and runs[-1][0] == v:
            runs[-1] = (v, runs[-1][1] + 1)
        else:
            runs.append((v, 1))
    if len(runs) <= 1:  # whole episode (or nothing)
        return [], []
    if not complete:
        runs = runs[:-1]
    return [n for v, n in runs if v], [n for v, n in runs if not v]


def stream_runs(
    zeros: np.ndarray, episode_end: np.ndarray, active: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of finished runs of every (env, element) stream, as ``RunLengths`` defines them.

    Args:
        zeros: ``(T, n_envs, *shape)`` zero masks.
        episode_end: ``(T, n_envs)``.
        active: ``(T, n_envs)`` or ``(T, n_envs, *shape)``; an inactive step is skipped
            (its value unknown) but its episode end still counts.

    Returns:
        ``(zero_hist, nonzero_hist)`` with ``hist[k]`` runs of length ``k``.
    """
    steps, n = zeros.shape[:2]
    z = zeros.reshape(steps, n, -1)
    size = z.shape[2]
    if active is None:
        act = np.ones((steps, n, size), bool)
    else:
        act = np.broadcast_to(active.reshape(steps, n, -1), (steps, n, size))
    zero, nonzero = [], []
    for env in range(n):
        for e in range(size):
            episode: list[bool] = []
            for t in range(steps):
                if act[t, env, e]:
                    episode.append(bool(z[t, env, e]))
                if episode_end[t, env]:
                    zr, nr = episode_runs(episode, complete=True)
                    zero += zr
                    nonzero += nr
                    episode = []
            zr, nr = episode_runs(episode, complete=False)
            zero += zr
            nonzero += nr
    return np.bincount(zero, minlength=1), np.bincount(nonzero, minlength=1)
