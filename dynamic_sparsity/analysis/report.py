"""The sparsity report: tables, figures and ``report.md`` for one or more data sets."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from dynamic_sparsity.analysis.analysis import DatasetAnalysis
from dynamic_sparsity.analysis.figures import (
    global_zeros_bar_figure,
    run_length_figure,
    sparsity_histogram_figure,
    sparsity_timeline_figure,
    tsne_figure,
    zero_frequency_figure,
)

__all__ = ["markdown_table", "write_report"]

# Columns of the Q1 table, in order, with their Markdown headers.
_Q1 = {
    "env": "env",
    "d_s": "d_s",
    "d_a": "d_a",
    "samples": "samples",
    "episodes": "episodes",
    "global_zeros_J_s": "global zeros J_s",
    "global_zeros_J_s_pct": "global zeros J_s (%)",
    "global_zeros_J_a": "global zeros J_a",
    "mean_sparsity_J_s": "mean sparsity J_s",
    "mean_sparsity_J_a": "mean sparsity J_a",
    "mean_sparsity": "mean sparsity [J_s|J_a]",
    "distinct_patterns": "distinct patterns",
    "mean_zero_run": "mean zero run",
    "mean_nonzero_run": "mean non-zero run",
    "steps_with_contact_pct": "steps with contact (%)",
    "nonsmooth_samples": "non-smooth transitions",
}

# Columns of the threshold sweep: the Q1 statistics that depend on the threshold.
_SWEEP = {"threshold": "threshold"} | {
    key: _Q1[key]
    for key in (
        "global_zeros_J_s",
        "global_zeros_J_s_pct",
        "global_zeros_J_a",
        "mean_sparsity_J_s",
        "mean_sparsity_J_a",
        "mean_sparsity",
    )
}


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: dict[str, str]) -> str:
    """A Markdown table of ``rows`` with ``columns`` (key -> header)."""
    lines = [
        "| " + " | ".join(columns.values()) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


def _save(fig: Figure, path: Path) -> str:
    fig.savefig(path, dpi=120)
    return path.name


def _env_figures(a: DatasetAnalysis, out: Path, stem: str) -> dict[str, str]:
    thr = f"|J| < {a.threshold:g}"
    figs = {
        "zero_frequency": _save(
            zero_frequency_figure(
                a.global_zeros.frequency(),
                a.state_labels,
                a.action_labels,
                title=f"{stem}: zero frequency ({thr}), {a.n_samples} samples",
            ),
            out / f"{stem}_q1_zero_frequency.png",
        ),
        "histogram": _save(
            sparsity_histogram_figure(a.sparsity, title=f"{stem}: per-sample sparsity ({thr})"),
            out / f"{stem}_q2_sparsity_histogram.png",
        ),
        "timeline": _save(
            sparsity_timeline_figure(
                a.timeline,
                title=f"{stem}: sparsity over episode {a.timeline_episode}",
                contacts=a.timeline_contacts,
            ),
            out / f"{stem}_q3_timeline.png",
        ),
        "runs": _save(
            run_length_figure(
                a.zero_run_hist,
                a.nonzero_run_hist,
                title=f"{stem}: per-element run lengths (whole-episode runs left out)",
            ),
            out / f"{stem}_q3_run_lengths.png",
        ),
    }
    if a.tsne is not None:
        figs["tsne"] = _save(
            tsne_figure(
                a.tsne,
                a.tsne_sparsity,
                title=f"{stem}: t-SNE of (s, a, s'), {len(a.tsne)} samples",
            ),
            out / f"{stem}_q2_tsne.png",
        )
    return figs


def _global_zero_lines(a: DatasetAnalysis, limit: int = 40) -> list[str]:
    mask = a.global_zeros.mask()
    cols = [*a.state_labels, *a.action_labels]
    pairs = [f"d {a.state_labels[i]} / d {cols[j]}" for i, j in zip(*mask.nonzero(), strict=True)]
    if not pairs:
        return ["No element is zero in every sample."]
    shown = ", ".join(f"`{p}`" for p in pairs[:limit])
    more = f" and {len(pairs) - limit} more" if len(pairs) > limit else ""
    return [f"Elements zero in every sample: {shown}{more}."]


def _episode_note(a: DatasetAnalysis) -> str:
    partial = a.n_episodes - a.complete_episodes
    if partial == 0:
        return "all complete"
    if a.complete_episodes == 0:
        return "all cut off by the end of collection"
    return f"{a.complete_episodes} complete, {partial} cut off by the end of collection"


def _nonsmooth_lines(a: DatasetAnalysis) -> list[str]:
    if not a.nonsmooth_samples:
        return ["No transition has a non-smooth column (no action on its control bound)."]
    cols = [*a.state_labels, *a.action_labels]
    counts = a.nonsmooth_columns if a.nonsmooth_columns is not None else []
    where = ", ".join(f"`{cols[j]}` {int(c)}" for j, c in enumerate(counts) if c)
    what = (
        "left out of every statistic (`nonsmooth='mask'`)"
        if a.nonsmooth == "mask"
        else "counted as they are (`nonsmooth='keep'`)"
    )
    mismatch = (
        f" Of them, {a.mismatch_samples} have every column flagged: their Jacobian is not "
        "the env's own (the backend's next state left the env's, `jacobian_mismatch`; "
        "docs/pitfalls.md), so they are left out whole."
        if a.mismatch_samples
        else ""
    )
    return [
        f"{a.nonsmooth_samples} of {a.n_samples} transitions "
        f"({_fmt(100 * a.nonsmooth_samples / a.n_samples)}%) have a column taken at a "
        f"non-smooth point (an action exactly on its control bound, where autodiff reports "
        f"half the slope); transitions per column: {where}. Those elements are {what}." + mismatch
    ]


def _env_section(a: DatasetAnalysis, figs: dict[str, str]) -> list[str]:
    s, c = a.summary(), a.contacts
    lines = [
        f"## {a.env_name}",
        "",
        f"Data: `{os.path.basename(a.path)}`, {a.n_samples} transitions in {a.n_episodes} "
        f"episodes ({_episode_note(a)}), collected by {a.policy}, simulator precision "
        f"{a.precision}.",
        "",
        "### Q1: global sparsity",
        "",
        f"{s['global_zeros_J_s']} of {a.d_s * a.d_s} elements of J_s "
        f"({s['global_zeros_J_s_pct']}%) and {s['global_zeros_J_a']} of {a.d_s * a.d_a} of "
        f"J_a are zero in every sample. This is an upper bound on the sparsity of the "
        f"global causal graph for the states these data cover.",
        "",
        *_global_zero_lines(a),
        "",
        f"![zero frequency]({figs['zero_frequency']})",
        "",
        "**Threshold sensitivity.** Global zeros and mean sparsity at other thresholds "
        "(round-off of exact zeros is ~1e-16..1e-15 in float64, so the study's 1e-15 sits "
        "at its edge):",
        "",
        markdown_table(a.sweep, _SWEEP),
        "",
        "**Non-smooth points.** " + " ".join(_nonsmooth_lines(a)),
        "",
        "### Q2: state-dependent sparsity",
        "",
        f"Mean per-sample sparsity: J_s {s['mean_sparsity_J_s']}, J_a "
        f"{s['mean_sparsity_J_a']}, together {s['mean_sparsity']} "
        f"({a.distinct_patterns} distinct zero patterns).",
        "",
        f"![sparsity histogram]({figs['histogram']})",
        "",
    ]
    if "tsne" in figs:
        lines += [f"![t-SNE]({figs['tsne']})", ""]
    lines += [
        "### Q3: temporal structure",
        "",
        f"Mean zero-run length {_fmt(s['mean_zero_run'])} steps, mean non-zero-run length "
        f"{_fmt(s['mean_nonzero_run'])} steps ({a.n_zero_runs} and {a.n_nonzero_runs} "
        "finished runs; runs of elements that never change within an episode are left out, "
        "runs cut off by the end of the data too).",
        "",
        f"![timeline]({figs['timeline']})",
        "",
        f"![run lengths]({figs['runs']})",
        "",
        "### Contacts",
        "",
        f"{_fmt(100 * c.steps_with_contact)}% of steps have an active contact. Mean sparsity "
        f"with contact {_fmt(c.sparsity_with_contact)}, "
        f"without {_fmt(c.sparsity_without_contact)}.",
        f"Of {c.transitions} consecutive step pairs, {c.pattern_changes} change the zero "
        f"pattern and {c.contact_changes} the number of contacts; {c.both_change} do both. "
        f"P(contact change | pattern change) = {_fmt(c.p_contact_given_pattern)}, "
        f"P(pattern change | contact change) = {_fmt(c.p_pattern_given_contact)}, "
        f"lift = {_fmt(c.lift)} (1 = independent).",
        "",
    ]
    return lines


def _write_tables(analyses: Sequence[DatasetAnalysis], out: Path) -> str:
    """``summary.csv``, ``summary.json`` and ``summary.md``; returns the Markdown table."""
    rows = [a.summary() for a in analyses]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    details = [
        {
            **r,
            "policy": a.policy,
            "path": a.path,
            "contacts": vars(a.contacts),
            "global_zero_mask": a.global_zeros.mask().astype(int).tolist(),
            "threshold_sweep": a.sweep,
            "nonsmooth": a.nonsmooth,
            "nonsmooth_columns": (
                None if a.nonsmooth_columns is None else a.nonsmooth_columns.tolist()
            ),
            "zero_frequency": a.global_zeros.frequency().round(6).tolist(),
            "state_labels": list(a.state_labels),
            "action_labels": list(a.action_labels),
        }
        for r, a in zip(rows, analyses, strict=True)
    ]
    (out / "summary.json").write_text(
        json.dumps(details, indent=1, default=lambda x: None if x != x else x)
    )
    table = markdown_table(rows, _Q1)
    (out / "summary.md").write_text(table + "\n")
    return table


def _header(analyses: Sequence[DatasetAnalysis], title: str | None, table: str) -> list[str]:
    """The report's opening: what was measured, its caveats, the Q1 table."""
    precisions = sorted({a.precision for a in analyses})
    thresholds = ", ".join(sorted({f"{a.threshold:g}" for a in analyses}))
    float32 = (
        " (float32 data: round-off makes exact zeros look like 1e-13..1e-10, so a 1e-15 "
        "threshold undercounts zeros)."
    )
    by_fd = [a.env_name for a in analyses if a.jacobian_backend == "mujoco"]
    fd_note = (
        f" Except for {', '.join(by_fd)}: those Jacobians are MuJoCo's C finite differences "
        "(backend 'mujoco'), not exact; their zeros are elements that came out exactly 0.0."
        if by_fd
        else ""
    )
    return [
        f"# {title or 'Sparsity of the dynamics Jacobians'}",
        "",
        "Jacobians `J_s = d s'/d s` and `J_a = d s'/d a` of one control step, exact (JAX "
        "forward-mode autodiff through every physics substep of MJX). An element is zero when "
        f"`|J_ij| < threshold` (threshold {thresholds}). "
        f"The analysis runs in float64; the simulator ran in {', '.join(precisions)}"
        + (float32 if "float32" in precisions else ".")
        + fd_note,
        "",
        "Caveat: MJX reports geoms that are apart at a fixed sentinel distance, so a contact's "
        "derivative vanishes exactly while bodies are separated; some zeros below are "
        "properties of the contact model, and a zero at sampled states is only a necessary "
        "condition for the absence of an edge.",
        "",
        "## Summary (Q1)",
        "",
        table,
        "",
        "Tables: [summary.csv](summary.csv), [summary.json](summary.json), "
        "[summary.md](summary.md).",
        "",
    ]


def write_report(
    analyses: Sequence[DatasetAnalysis], out_dir: str | os.PathLike, title: str | None = None
) -> Path:
    """Write tables (CSV, JSON, Markdown), PNG figures and ``report.md`` to ``out_dir``.

    Args:
        analyses: One :class:`DatasetAnalysis` per data set.
        out_dir: Output directory (created).
        title: Report title.

    Returns:
        Path of ``report.md``.
    """
    if not analyses:
        raise ValueError("write_report needs at least one analysis")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = _header(analyses, title, _write_tables(analyses, out))
    if len(analyses) > 1:
        rows = [a.summary() for a in analyses]
        name = _save(
            global_zeros_bar_figure(
                [r["env"] for r in rows],
                [r["global_zeros_J_s_pct"] for r in rows],
                [r["mean_sparsity"] for r in rows],
            ),
            out / "all_envs_sparsity.png",
        )
        lines += [f"![all envs]({name})", ""]
    names = [a.env_name for a in analyses]
    for i, a in enumerate(analyses):
        stem = a.env_name if names.count(a.env_name) == 1 else f"{a.env_name}_{i}"
        lines += _env_section(a, _env_figures(a, out, stem))
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
