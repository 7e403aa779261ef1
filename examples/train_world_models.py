r"""The study's Q4 experiment: world models trained with each loss, per env, model and seed.

For every env (the data files are grouped by the env they hold), every model
(``--model``: ``mlp``, the study's, and the masked ``global_mask``,
``local_mask``, ``codebook_mask``), every loss mode and every seed, a world
model is trained and evaluated on the test split, and, with ``--shift-data``,
on every row of other data of the same env (another policy's: distribution
shift; metrics prefixed ``shift_``). ``state-mask`` (mask supervision) runs
for the masked models only. Written to ``--out``:

* ``runs.csv``: one row per run (every metric); ``runs/*.json`` per run, so a
  rerun skips finished runs;
* ``results.csv`` and ``results.md``: mean ± std over seeds per env, model and mode;
* ``fig8_test_mse.png``: test next-state MSE per loss mode (Figure 8, left);
* ``fig8_induced_sparsity.png``: induced sparsity per loss mode next to the
  target sparsity, log scale (Figure 8, right);
* ``multistep_error.png``: open-loop error over horizons ``1..H``;
* ``mse_vs_f1.png`` (with masked models): test MSE against the zero-pattern
  F1 of every run, one marker per model;
* ``tb/``: TensorBoard logs of every run.

    python examples/train_world_models.py --data cartpole.h5 cheetah.h5 \\
        --losses all --seeds 1-5 --epochs 100 --out results/q4 [--column-subset 2]
        [--jacobian-columns K] [--ray [ADDRESS]] [--eval-every 10] [--autocast]
    python examples/train_world_models.py --data cheetah_random.h5 \\
        --model mlp local_mask codebook_mask --losses state,state-mask \\
        --shift-data cheetah_expert.h5 --out results/masks

``--ray`` runs the grid as Ray Tune trials on a local Ray instance (all
cores; ``--cpus-per-trial`` CPUs, which are also its torch threads, and
``--gpus-per-trial`` GPUs each), ``--ray ADDRESS`` on a running Ray cluster.
Every trial hands its trainer checkpoint to Tune after each epoch;
``--resume`` after a crash or Ctrl-C continues the unfinished trials from
there (docs/scale.md). Without ``--ray`` the runs go one after the other in
this process (also resumable: a rerun skips finished runs and continues the
interrupted one from its last epoch). Data may be single files, shard
folders or globs of shards (``data/cheetah/`` or ``'data/cheetah.shard-*.h5'``).
``--jacobian-columns K`` trains every Jacobian loss
with K random Jacobian columns per sample (unbiased, about ``1 + K`` forward
passes instead of ``d_s``); ``--column-subset K`` instead adds one extra
``state-jacobian`` run with K columns next to the exact ones, to show what the
subset costs in accuracy. ``--autocast`` trains under bfloat16 autocast
(mixed precision; evaluation stays float32).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from dynamic_sparsity.sweeps import SweepJob, run_sweep
from world_models import (
    LOSS_MODES,
    MASKED_MODELS,
    MODELS,
    STATE_MASKED_MODELS,
    LossWeights,
    TrainConfig,
    open_datasets,
    supervises_mask,
)


def parse_seeds(text: str) -> list[int]:
    """``"1-5"`` -> ``[1, 2, 3, 4, 5]``; ``"1,3,7"`` -> ``[1, 3, 7]``."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return seeds


def parse_losses(text: str) -> list[str]:
    """``"all"`` or a comma-separated list of loss modes."""
    if text == "all":
        return list(LOSS_MODES)
    modes = [m.strip() for m in text.split(",")]
    bad = [m for m in modes if m not in LOSS_MODES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown loss modes {bad}; accepted: all, {LOSS_MODES}")
    return modes


def group_by_env(paths: list[str]) -> dict[str, list[str]]:
    """Data files grouped by the env they hold (in the order given)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        (reader,) = open_datasets(p)
        groups[reader.meta.env_name].append(p)
        reader.close()
    return dict(groups)


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds of every numeric column, per env and loss."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["env"], r.get("model", "mlp"), r["loss"])].append(r)
    out = []
    for (env, model, loss), runs in groups.items():
        agg: dict = {"env": env, "model": model, "loss": loss, "seeds": len(runs)}
        for key in dict.fromkeys(k for r in runs for k in r):
            if key in ("env", "model", "loss", "seed"):
                continue
            vals = np.array([float(r.get(key, math.nan)) for r in runs], dtype=float)
            agg[f"{key}_mean"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
            agg[f"{key}_std"] = float(np.nanstd(vals)) if np.isfinite(vals).any() else math.nan
        out.append(agg)
    return out


def fmt(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.3g} ± {std:.2g}"


def write_tables(rows: list[dict], agg: list[dict], out: Path, thresholds: list[float]) -> None:
    with open(out / "runs.csv", "w", newline="") as f:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    with open(out / "results.csv", "w", newline="") as f:
        keys = list(dict.fromkeys(k for r in agg for k in r))
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(agg)
    cols = [
        ("test MSE (norm.)", "mse_normalised"),
        ("Jacobian MAE (norm.)", "jacobian_mae_normalised"),
    ]
    for t in thresholds:
        cols += [(f"induced @{t:g}", f"induced_sparsity@{t:g}")]
    t0, t_data = thresholds[-1], thresholds[0]
    cols += [
        (f"target @{t0:g}", f"target_sparsity@{t0:g}"),
        (f"zero precision @{t0:g}", f"zero_precision@{t0:g}"),
        (f"zero recall @{t0:g}", f"zero_recall@{t0:g}"),
        (f"zero F1 @{t_data:g}", f"zero_f1@{t_data:g}"),
        (f"per-sample zero F1 @{t_data:g}", f"sample_zero_f1@{t_data:g}"),
        ("10-step MSE (norm.)", "horizon_mse_normalised@10"),
    ]
    if any("shift_mse_normalised_mean" in a for a in agg):
        cols += [
            ("shift: test MSE (norm.)", "shift_mse_normalised"),
            (f"shift: zero F1 @{t_data:g}", f"shift_zero_f1@{t_data:g}"),
        ]
    cols += [("s/run", "seconds")]
    lines = ["| env | model | loss | seeds | " + " | ".join(c for c, _ in cols) + " |"]
    lines.append("|" + "---|" * (len(cols) + 4))
    for a in agg:
        cells = [fmt(a.get(f"{k}_mean", math.nan), a.get(f"{k}_std", math.nan)) for _, k in cols]
        head = f"| {a['env']} | {a.get('model', 'mlp')} | {a['loss']} | {a['seeds']} | "
        lines.append(head + " | ".join(cells) + " |")
    targets = {
        a["env"]: ", ".join(
            f"{t:g}: {a.get(f'target_sparsity@{t:g}_mean', math.nan):.3g}" for t in thresholds
        )
        for a in agg
    }
    lines.append("")
    lines += [f"Target sparsity of the ground truth, {env}: {t}" for env, t in targets.items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def label(a: dict) -> str:
    """A run group's name in the figures: the loss, after the model unless it is the MLP."""
    model = a.get("model", "mlp")
    return a["loss"] if model == "mlp" else f"{model}: {a['loss']}"


def plot_mse_vs_f1(rows: list[dict], out: Path, threshold: float) -> None:
    """Test MSE against the per-sample zero-pattern F1, every run, one marker per model."""
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in rows))
    # The models in the registry's order, then their variants (local_mask+contact).
    names = {r.get("model", "mlp") for r in rows}
    names = [m for m in MODELS if m in names] + sorted(names - set(MODELS))
    markers = dict(zip(names, "os^DvP*X<>ph", strict=False))
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    colours = {loss: f"C{i}" for i, loss in enumerate(losses)}
    fig, axes = plt.subplots(1, len(envs), figsize=(4.8 * len(envs), 4.2), squeeze=False)
    key = f"sample_zero_f1@{threshold:g}"
    for ax, env in zip(axes[0], envs, strict=True):
        for r in (r for r in rows if r["env"] == env):
            model = r.get("model", "mlp")
            ax.scatter(
                r.get(key, math.nan),
                r["mse_normalised"],
                marker=markers.get(model, "x"),
                color=colours[r["loss"]],
                alpha=0.8,
            )
        ax.set_yscale("log")
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel(f"per-sample zero-pattern F1 (|J| < {threshold:g})")
        ax.set_ylabel("test next-state MSE (normalised)")
        ax.set_title(env)
    handles = [
        plt.Line2D([], [], ls="", marker=m, color="k", label=name) for name, m in markers.items()
    ] + [plt.Line2D([], [], ls="", marker="o", color=c, label=loss) for loss, c in colours.items()]
    axes[0][-1].legend(handles=handles, fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(out / "mse_vs_f1.png", dpi=120)
    plt.close(fig)


def plot(agg: list[dict], out: Path, thresholds: list[float], rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if any(r.get("model", "mlp") != "mlp" for r in rows):
        plot_mse_vs_f1(rows, out, thresholds[0])
    envs = list(dict.fromkeys(a["env"] for a in agg))
    n = len(envs)
    # Figure 8, left: test MSE per loss mode.
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        rows = [a for a in agg if a["env"] == env]
        x = np.arange(len(rows))
        ax.bar(
            x,
            [a["mse_normalised_mean"] for a in rows],
            yerr=[a["mse_normalised_std"] for a in rows],
            capsize=3,
        )
        ax.set_xticks(x, [label(a) for a in rows], rotation=35, ha="right", fontsize=7)
        ax.set_title(env)
        ax.set_ylabel("test next-state MSE (normalised)")
    fig.tight_layout()
    fig.savefig(out / "fig8_test_mse.png", dpi=120)
    plt.close(fig)
    # Figure 8, right: induced sparsity per loss mode against the target, log scale.
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
    floor = 1e-6
    for ax, env in zip(axes[0], envs, strict=True):
        rows = [a for a in agg if a["env"] == env]
        x = np.arange(len(rows))
        width = 0.8 / len(thresholds)
        for i, t in enumerate(thresholds):
            vals = np.array([a.get(f"induced_sparsity@{t:g}_mean", math.nan) for a in rows])
            bars = ax.bar(
                x + i * width, np.maximum(vals, floor), width, label=f"induced, |J|<{t:g}"
            )
            target = rows[0].get(f"target_sparsity@{t:g}_mean", math.nan)
            ax.axhline(
                target,
                ls="--",
                lw=1,
                color=bars.patches[0].get_facecolor(),
                label=f"target, |J|<{t:g}",
            )
        ax.set_yscale("log")
        ax.set_ylim(floor, 1.5)
        ax.set_xticks(
            x + 0.4 - width / 2, [label(a) for a in rows], rotation=35, ha="right", fontsize=7
        )
        ax.set_title(f"{env} (bars at {floor:g} are zero)")
        ax.set_ylabel("sparsity of the Jacobian (test)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "fig8_induced_sparsity.png", dpi=120)
    plt.close(fig)
    # Open-loop error over horizons.
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for a in (a for a in agg if a["env"] == env):
            hs = sorted(
                int(k.split("@")[1].split("_")[0])
                for k in a
                if k.startswith("horizon_mse_normalised@") and k.endswith("_mean")
            )
            ax.plot(
                hs, [a[f"horizon_mse_normalised@{h}_mean"] for h in hs], marker=".", label=label(a)
            )
        ax.set_yscale("log")
        ax.set_xlabel("open-loop horizon (steps)")
        ax.set_ylabel("MSE (normalised)")
        ax.set_title(env)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "multistep_error.png", dpi=120)
    plt.close(fig)


def read_runs(path: Path) -> list[dict]:
    """Rows of a ``runs.csv``, numbers as floats (``seed`` as int)."""
    with open(path / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    text = ("env", "model", "loss")
    for r in rows:
        for k, v in r.items():
            if k not in text:
                r[k] = int(v) if k == "seed" else float(v) if v != "" else math.nan
    return rows


def merge(folders: list[Path], out: Path) -> None:
    """One set of tables and figures from the runs of several earlier ``--out`` folders."""
    rows = [r for folder in folders for r in read_runs(folder)]
    if not rows:
        raise SystemExit(f"no runs in {[str(f) for f in folders]}")
    out.mkdir(parents=True, exist_ok=True)
    thresholds = list(TrainConfig().eval_thresholds)
    write_tables(rows, aggregate(rows), out, thresholds)
    plot(aggregate(rows), out, thresholds, rows)
    print(f"{len(rows)} runs from {len(folders)} folders; tables and figures in {out}")
    print((out / "results.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", help="HDF5 data sets (any envs)")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="train nothing: merge the runs.csv of these earlier --out folders into --out",
    )
    parser.add_argument("--losses", type=parse_losses, default=list(LOSS_MODES))
    parser.add_argument("--seeds", type=parse_seeds, default=[1, 2, 3, 4, 5])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--predict-delta", action="store_true")
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument(
        "--column-subset",
        type=int,
        default=None,
        metavar="K",
        help="also train state-jacobian with K random Jacobian columns per sample",
    )
    parser.add_argument(
        "--jacobian-columns",
        type=int,
        default=None,
        metavar="K",
        help="train every Jacobian loss with K random Jacobian columns per sample",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=False,
        metavar="ADDRESS",
        help="run the grid as Ray Tune trials: a local Ray instance, or the cluster at ADDRESS",
    )
    parser.add_argument(
        "--resume", action="store_true", help="--ray: continue the interrupted Tune sweep in --out"
    )
    parser.add_argument(
        "--cpus-per-trial", type=float, default=1, help="--ray: CPUs (= torch threads) per trial"
    )
    parser.add_argument("--gpus-per-trial", type=float, default=0, help="--ray: GPUs per trial")
    parser.add_argument(
        "--ray-cpus", type=int, default=None, help="--ray: CPUs of the local instance (all)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of a run without --ray"
    )
    parser.add_argument(
        "--eval-every", type=int, default=1, help="test metrics every this many epochs"
    )
    parser.add_argument(
        "--autocast", action="store_true", help="bfloat16 mixed precision for the training steps"
    )
    parser.add_argument("--progress", action="store_true", help="a progress bar per run")
    parser.add_argument(
        "--model",
        nargs="+",
        default=["mlp"],
        choices=list(MODELS),
        help="models to train (default: the study's mlp)",
    )
    parser.add_argument(
        "--head-width", type=int, default=64, help="hidden units per output head (masked models)"
    )
    parser.add_argument(
        "--shared-heads",
        action="store_true",
        help="masked models: the output heads share their hidden-layer weights",
    )
    parser.add_argument("--mask-width", type=int, default=128, help="mask network width")
    parser.add_argument(
        "--mode-dim",
        type=int,
        default=0,
        help="masked models: units of the mask's mode code given to every head (0: none)",
    )
    parser.add_argument(
        "--contact-features",
        action="store_true",
        help="local_mask/codebook_mask: the mask network also gets each body's floor distance",
    )
    parser.add_argument(
        "--weight-decay", type=float, default=0.001, help="Adam weight decay (the study's 0.001)"
    )
    parser.add_argument("--codebook-size", type=int, default=16, help="K of codebook_mask")
    parser.add_argument(
        "--mask-zero-weight",
        type=float,
        default=1.0,
        help="weight of the true zeros in the state-mask cross-entropy (LossWeights.mask_zeros)",
    )
    parser.add_argument(
        "--shift-data",
        nargs="+",
        default=[],
        help="other data of the same envs (e.g. expert-policy), evaluated whole after training",
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    if not args.data:
        parser.error("--data is required (or --merge)")
    for name in ("eval_every", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.resume and not args.ray:
        parser.error("--resume continues a --ray sweep; without --ray a rerun resumes by itself")
    if args.ray:
        from dynamic_sparsity.sweeps import import_ray

        try:
            import_ray()
        except ImportError as err:
            parser.error(str(err))
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [(m, None if m == "state" else args.jacobian_columns) for m in args.losses]
    if args.column_subset:
        runs.append(("state-jacobian", args.column_subset))
    groups = group_by_env(args.data)
    shift = group_by_env(args.shift_data) if args.shift_data else {}
    unknown = sorted(set(shift) - set(groups))
    if unknown:
        parser.error(f"--shift-data holds envs {unknown} that no --data file holds")
    thresholds = list(TrainConfig().eval_thresholds)
    jobs = [
        SweepJob(
            env,
            tuple(files),
            model,
            mode,
            seed,
            columns,
            tuple(shift.get(env, [])),
            variant="contact" if args.contact_features and model in STATE_MASKED_MODELS else "",
        )
        for env, files in groups.items()
        for model in args.model
        for mode, columns in runs
        if model in MASKED_MODELS or not supervises_mask(mode)  # masks need a masked model
        for seed in args.seeds
    ]
    idle = [m for m in args.model if not any(job.model == m for job in jobs)]
    if idle:  # a model asked for must not be dropped without a word
        parser.error(
            f"--model {' '.join(idle)} has no run: --losses {args.losses} supervise a mask, "
            f"which only the masked models have ({', '.join(MASKED_MODELS)}); add a loss it "
            "can train (e.g. state) or leave it out"
        )
    config = TrainConfig(
        head_width=args.head_width,
        shared_heads=args.shared_heads,
        mask_width=args.mask_width,
        mode_dim=args.mode_dim,
        codebook_size=args.codebook_size,
        weight_decay=args.weight_decay,
        weights=LossWeights(mask_zeros=args.mask_zero_weight),
        epochs=args.epochs,
        width=args.width,
        depth=args.depth,
        batch_size=args.batch_size,
        predict_delta=args.predict_delta,
        device=args.device,
        horizon=args.horizon,
        progress=args.progress,
        num_threads=args.threads or (None if args.ray else os.cpu_count()),
        eval_every=args.eval_every,
        autocast=args.autocast,
    )
    order = {job.key: i for i, job in enumerate(jobs)}
    rows: list[dict] = []
    t0 = time.perf_counter()

    def finished(row: dict) -> None:
        rows.append(row)
        rows.sort(key=lambda r: order[(r["env"], r.get("model", "mlp"), r["loss"], r["seed"])])
        print(
            f"[{len(rows)}/{len(jobs)}] {row['env']} {row.get('model', 'mlp')} {row['loss']} "
            f"seed {row['seed']}: "
            f"test MSE {row['mse_normalised']:.4g}, {row['seconds']:.0f} s "
            f"({time.perf_counter() - t0:.0f} s total)",
            flush=True,
        )
        write_tables(rows, aggregate(rows), args.out, thresholds)

    run_sweep(
        jobs,
        config,
        args.out,
        ray=args.ray,
        resume=args.resume,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        num_cpus=args.ray_cpus,
        on_row=finished,
    )
    wall = time.perf_counter() - t0
    if not rows:
        raise SystemExit("no run finished; see the errors above (--ray: rerun with --resume)")
    plot(aggregate(rows), args.out, thresholds, rows)
    timing = {"wall_seconds": wall, "runs": len(jobs), "finished": len(rows)}
    timing["engine"] = "ray" if args.ray else "serial"
    timing["cpus_per_trial" if args.ray else "threads"] = (
        args.cpus_per_trial if args.ray else config.num_threads
    )
    (args.out / "timing.json").write_text(json.dumps(timing, indent=1))
    if len(rows) < len(jobs):
        print(f"{len(jobs) - len(rows)} runs did not finish: rerun with --resume to finish them")
    print(f"done in {wall:.0f} s; tables and figures in {args.out}")
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
