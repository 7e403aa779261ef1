r"""The study's Q4 experiment: world models trained with each loss, per env and seed.

For every env (the data files are grouped by the env they hold), every loss
mode and every seed, a world model is trained and evaluated on the test
split. Written to ``--out``:

* ``runs.csv``: one row per run (every metric); ``runs/*.json`` per run, so a
  rerun skips finished runs;
* ``results.csv`` and ``results.md``: mean ± std over seeds per env and mode;
* ``fig8_test_mse.png``: test next-state MSE per loss mode (Figure 8, left);
* ``fig8_induced_sparsity.png``: induced sparsity per loss mode next to the
  target sparsity, log scale (Figure 8, right);
* ``multistep_error.png``: open-loop error over horizons ``1..H``;
* ``tb/``: TensorBoard logs of every run.

    python examples/train_world_models.py --data cartpole.h5 cheetah.h5 \\
        --losses all --seeds 1-5 --epochs 100 --out results/q4 [--column-subset 2]
        [--jacobian-columns K] [--workers 2] [--eval-every 10] [--autocast]

``--workers N`` trains N runs at a time in separate processes, each with
``cores / N`` torch threads: on a CPU, independent runs use the cores better
than one run's threads do. ``--jacobian-columns K`` trains every Jacobian loss
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
import multiprocessing
import os
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from world_models import LOSS_MODES, TrainConfig, open_datasets, train


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


def run_label(mode: str, columns: int | None) -> str:
    """The loss column of the tables: the mode, and the column subset if any."""
    return mode if columns is None else f"{mode} [k={columns} cols]"


def run_one(env: str, files: list[str], mode: str, columns: int | None, seed: int, args) -> dict:
    """Train and evaluate one model, or read back the result of a finished run."""
    label = run_label(mode, columns)
    safe = "".join(c if c.isalnum() or c == "-" else "_" for c in label)
    tag = f"{env}_{safe}_s{seed}"
    done = args.out / "runs" / f"{tag}.json"
    if done.exists():
        return json.loads(done.read_text())
    config = TrainConfig(
        epochs=args.epochs,
        seed=seed,
        width=args.width,
        depth=args.depth,
        batch_size=args.batch_size,
        predict_delta=args.predict_delta,
        device=args.device,
        jacobian_columns=columns,
        horizon=args.horizon,
        log_dir=str(args.out / "tb" / tag),
        progress=args.progress,
        num_threads=args.threads,
        eval_every=args.eval_every,
        autocast=args.autocast,
    )
    result = train(files, mode, config)
    row = {"env": env, "loss": label, "seed": seed, "seconds": result.seconds}
    row["samples_per_second"] = result.samples_per_second
    row.update(result.metrics.flat())
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(row))
    return row


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds of every numeric column, per env and loss."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["env"], r["loss"])].append(r)
    out = []
    for (env, loss), runs in groups.items():
        agg: dict = {"env": env, "loss": loss, "seeds": len(runs)}
        for key in runs[0]:
            if key in ("env", "loss", "seed"):
                continue
            vals = np.array([float(r[key]) for r in runs], dtype=float)
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
    t0 = thresholds[-1]
    cols += [
        (f"target @{t0:g}", f"target_sparsity@{t0:g}"),
        (f"zero precision @{t0:g}", f"zero_precision@{t0:g}"),
        (f"zero recall @{t0:g}", f"zero_recall@{t0:g}"),
        ("10-step MSE (norm.)", "horizon_mse_normalised@10"),
        ("s/run", "seconds"),
    ]
    lines = ["| env | loss | seeds | " + " | ".join(c for c, _ in cols) + " |"]
    lines.append("|" + "---|" * (len(cols) + 3))
    for a in agg:
        cells = [fmt(a.get(f"{k}_mean", math.nan), a.get(f"{k}_std", math.nan)) for _, k in cols]
        lines.append(f"| {a['env']} | {a['loss']} | {a['seeds']} | " + " | ".join(cells) + " |")
    targets = {
        a["env"]: ", ".join(
            f"{t:g}: {a.get(f'target_sparsity@{t:g}_mean', math.nan):.3g}" for t in thresholds
        )
        for a in agg
    }
    lines.append("")
    lines += [f"Target sparsity of the ground truth, {env}: {t}" for env, t in targets.items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def plot(agg: list[dict], out: Path, thresholds: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        ax.set_xticks(x, [a["loss"] for a in rows], rotation=35, ha="right", fontsize=7)
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
            x + 0.4 - width / 2, [a["loss"] for a in rows], rotation=35, ha="right", fontsize=7
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
                hs, [a[f"horizon_mse_normalised@{h}_mean"] for h in hs], marker=".", label=a["loss"]
            )
        ax.set_yscale("log")
        ax.set_xlabel("open-loop horizon (steps)")
        ax.set_ylabel("MSE (normalised)")
        ax.set_title(env)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "multistep_error.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="HDF5 data sets (any envs)")
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
    parser.add_argument("--workers", type=int, default=1, help="runs trained at a time")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: cores/workers)"
    )
    parser.add_argument(
        "--eval-every", type=int, default=1, help="test metrics every this many epochs"
    )
    parser.add_argument(
        "--autocast", action="store_true", help="bfloat16 mixed precision for the training steps"
    )
    parser.add_argument("--progress", action="store_true", help="a progress bar per run")
    args = parser.parse_args()
    for name in ("workers", "eval_every", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [(m, None if m == "state" else args.jacobian_columns) for m in args.losses]
    if args.column_subset:
        runs.append(("state-jacobian", args.column_subset))
    groups = group_by_env(args.data)
    thresholds = list(TrainConfig().eval_thresholds)
    jobs = [
        (env, files, mode, columns, seed)
        for env, files in groups.items()
        for mode, columns in runs
        for seed in args.seeds
    ]
    order = {(env, run_label(m, k), seed): i for i, (env, _, m, k, seed) in enumerate(jobs)}
    rows: list[dict] = []
    t0 = time.perf_counter()

    def finished(row: dict) -> None:
        rows.append(row)
        rows.sort(key=lambda r: order[(r["env"], r["loss"], r["seed"])])
        print(
            f"[{len(rows)}/{len(jobs)}] {row['env']} {row['loss']} seed {row['seed']}: "
            f"test MSE {row['mse_normalised']:.4g}, {row['seconds']:.0f} s "
            f"({time.perf_counter() - t0:.0f} s total)",
            flush=True,
        )
        write_tables(rows, aggregate(rows), args.out, thresholds)

    if args.workers == 1:
        for job in jobs:
            finished(run_one(*job, args))
    else:
        # spawn: a fresh interpreter per worker (no forked torch/OpenMP state).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
            futures = [pool.submit(run_one, *job, args) for job in jobs]
            for future in as_completed(futures):
                finished(future.result())
    wall = time.perf_counter() - t0
    plot(aggregate(rows), args.out, thresholds)
    timing = {"wall_seconds": wall, "runs": len(jobs), "workers": args.workers}
    timing["threads_per_run"] = args.threads
    (args.out / "timing.json").write_text(json.dumps(timing, indent=1))
    print(f"done in {wall:.0f} s; tables and figures in {args.out}")
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
