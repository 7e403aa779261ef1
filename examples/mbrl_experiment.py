"""SAC alone against MBPO with world models of the project: returns against real env steps.

    python examples/mbrl_experiment.py --env CartpoleBalance --out results/mbrl/cartpole \
        --sac-steps 15000 --mbpo-steps 5000 --seeds 1-3 --workers 2

Variants (``--variants``): ``sac`` (SB3's SAC, one update per step),
``mbpo-mlp`` (MBPO, MLP ensemble, ``state`` loss), ``mbpo-mlp-jacobian``
(MLP with ``--jacobian-loss``, fed by the env's Jacobians),
``mbpo-local_mask`` (masked ensemble, mask supervised with the true zero
pattern: ``state-mask``) and ``mbpo-local_mask-unsupervised`` (the same
masked ensemble without mask supervision: the mask learned from data under
CDL/FCDL's sparsity penalty); the control ``mbpo-oracle`` is ``mbpo-mlp`` whose
rollouts use the simulator's own step (a perfect model:
``MBPO(rollout_dynamics="simulator")``). ``--mode-dim`` and
``--contact-features`` give the masked members a mode code and
the env's floor distances in their mask network
(``TrainConfig(mode_dim=..., contact_features=True)``); ``--model-target
next_state`` makes every MBPO variant predict ``s'`` instead of ``s' - s``
("Fixing That Free Lunch"); ``--elites``,
``--rollout-keep`` and ``--rollout-anchor`` guard every MBPO variant against
model error (``MBPO(n_elites=..., rollout_keep=..., rollout_anchor=True)``).
Every variant acts in the same env
(``PlaygroundVecEnv(jacobians=True, precision="float64")``) and is
evaluated every ``--eval-every`` real steps by its deterministic policy on
``--eval-episodes`` full episodes of a separate env.

Runs resume: every ``--checkpoint-every`` real steps a run's agent, buffers
and evaluations go to ``OUT/ckpt/<variant>_<seed>/``, and the same command
run again continues each unfinished run from there (so a long experiment runs
in pieces). A finished run writes ``runs/<variant>_<seed>.csv`` (step, mean
and std of the return, seconds) and keeps its TensorBoard log; it is read
back, not rerun. The summary: ``returns.png`` (IQM over seeds with its 95 %
stratified bootstrap CI against real steps), ``results.md`` (final return
per variant, mean ± std and as the field reports it: rliable's IQM with its
CI, the IQM difference to SAC and to MBPO with the MLP and the probability
of improvement over each; real steps each MBPO variant needs to reach SAC's
final mean return; per seed, the world model's error on the fresh real steps,
held-out error, Jacobian sparsity next to the true one, the Jacobian's error
and training seconds at its last training, read back from the TensorBoard logs).
``--aggregate DIR ...`` pools finished experiments of several envs into one
IQM table (returns / 1000).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dynamic_sparsity.analysis.rl_evaluation import (
    REPS,
    iqm,
    iqm_curves,
    iqm_difference,
    probability_of_improvement,
)

#: Variant -> (world model, loss mode) of its MBPO ensemble (``sac``: none).
WORLD_MODELS = {
    "mbpo-mlp": ("mlp", "state"),
    "mbpo-mlp-jacobian": ("mlp", None),  # None: --jacobian-loss
    "mbpo-local_mask": ("local_mask", "state-mask"),
    # The same masked model without mask supervision: in the modes without it a
    # masked model adds CDL/FCDL's sparsity penalty on its mask (world_models.losses).
    "mbpo-local_mask-unsupervised": ("local_mask", "state"),
    "mbpo-oracle": ("mlp", "state"),
}
VARIANTS = ("sac", *WORLD_MODELS)
#: What runs without ``--variants``: the comparison, not the controls.
DEFAULT_VARIANTS = ("sac", "mbpo-mlp", "mbpo-mlp-jacobian", "mbpo-local_mask")


def parse_seeds(text: str) -> list[int]:
    """``"1-3"`` -> ``[1, 2, 3]``; ``"1,4"`` -> ``[1, 4]``."""
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def _evaluate(model, env, episodes: int) -> tuple[float, float]:
    """Mean and std of the undiscounted return of ``episodes`` full deterministic episodes."""
    obs = env.reset()
    total = np.zeros(episodes)
    done = np.zeros(episodes, bool)
    while not done.all():
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, dones, _ = env.step(action)
        total += np.where(done, 0.0, reward)
        done |= dones
    return float(total.mean()), float(total.std())


def _model_config(world_model: str, args: argparse.Namespace) -> Any:
    """MBPO's model settings; ``--mode-dim`` and ``--contact-features`` for masked models only."""
    from dynamic_sparsity.mbrl import MBPO_MODEL_CONFIG
    from world_models import MASKED_MODELS

    if world_model not in MASKED_MODELS:
        return MBPO_MODEL_CONFIG
    return dataclasses.replace(
        MBPO_MODEL_CONFIG, mode_dim=args.mode_dim, contact_features=args.contact_features
    )


def _save_rows(directory: Path, rows: list[tuple[float, ...]]) -> None:
    """Write the evaluation rows next to a checkpoint, atomically."""
    tmp = directory / "rows.json.tmp"
    tmp.write_text(json.dumps(rows))
    tmp.replace(directory / "rows.json")


def _promote(tmp: Path, ckpt: Path, rows: list[tuple[float, ...]]) -> None:
    """Make the finished checkpoint ``tmp`` the run's checkpoint; a kill leaves one whole."""
    _save_rows(tmp, rows)
    old = ckpt.with_name(ckpt.name + ".old")
    if ckpt.exists():
        ckpt.replace(old)
    tmp.replace(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def run_one(variant: str, seed: int, args: argparse.Namespace) -> Path:
    """Train one variant with one seed; write its evaluation curve; return the CSV path.

    Every ``--checkpoint-every`` real steps the run's agent, its buffers and
    its evaluation rows go to ``ckpt/<variant>_<seed>/``; a rerun of the same
    command continues from there (a finished run's CSV is read back, not rerun).
    """
    out = Path(args.out) / "runs" / f"{variant}_{seed}.csv"
    if out.exists():
        return out
    import torch

    torch.set_num_threads(args.threads)
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    import jacobian_wrappers as jw
    from dynamic_sparsity.mbrl import MBPO

    env = jw.PlaygroundVecEnv(args.env, n_envs=1, seed=seed, jacobians=True, precision="float64")
    eval_env = jw.PlaygroundVecEnv(
        args.env, n_envs=args.eval_episodes, seed=10_000 + seed, jacobians=False
    )
    tb = str(Path(args.out) / "tb")
    ckpt = Path(args.out) / "ckpt" / f"{variant}_{seed}"
    steps = args.sac_steps if variant == "sac" else args.mbpo_steps
    rows: list[tuple[float, ...]] = []
    if (ckpt / "rows.json").exists():
        rows = [tuple(r) for r in json.loads((ckpt / "rows.json").read_text())]
        if variant == "sac":
            model = SAC.load(ckpt / "sac.zip", env=env, tensorboard_log=tb)
            model.load_replay_buffer(ckpt / "replay_buffer.pkl")
        else:
            model = MBPO.load_checkpoint(ckpt, env, tensorboard_log=tb)
        print(f"{variant}_{seed}: resumed at {model.num_timesteps} steps", flush=True)
    elif variant == "sac":
        model = SAC(
            "MlpPolicy", env, learning_starts=args.learning_starts, seed=seed, verbose=0,
            tensorboard_log=tb, buffer_size=steps,  # the whole run fits: no 1M-row buffer to save
        )  # fmt: skip
    else:
        world_model, loss = WORLD_MODELS[variant]
        model = MBPO(
            "MlpPolicy", env, world_model=world_model, loss_mode=loss or args.jacobian_loss,
            model_target=args.model_target,
            n_members=args.members, n_elites=args.elites, rollout_keep=args.rollout_keep,
            rollout_anchor=args.rollout_anchor, model_train_freq=args.model_train_freq,
            model_epochs=args.model_epochs, rollout_length=args.rollout_length,
            rollout_batch_size=args.rollout_batch_size, gradient_steps=args.gradient_steps,
            real_ratio=args.real_ratio,
            model_config=_model_config(world_model, args),
            rollout_dynamics="simulator" if variant == "mbpo-oracle" else "model",
            learning_starts=args.learning_starts, seed=seed, verbose=0, tensorboard_log=tb,
            buffer_size=steps,
        )  # fmt: skip
    # Wall-clock seconds go on from where the checkpoint left them.
    start = time.perf_counter() - (rows[-1][3] if rows else 0.0)
    tmp = ckpt.with_name(ckpt.name + ".tmp")

    class Evaluate(BaseCallback):
        """Evaluates every ``--eval-every`` steps; checkpoints every ``--checkpoint-every``."""

        pending = False

        def _on_step(self) -> bool:
            if self.pending:  # MBPO wrote the requested checkpoint after the last step
                _promote(tmp, ckpt, rows)
                self.pending = False
            t = self.num_timesteps
            if t % args.eval_every == 0:
                mean, std = _evaluate(self.model, eval_env, args.eval_episodes)
                rows.append((t, mean, std, time.perf_counter() - start))
                self.logger.record("eval/mean_return", mean)
            if t % args.checkpoint_every == 0 and t < steps:
                shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(self.model, MBPO):
                    # Written once this step is in the buffer (MBPO.request_checkpoint).
                    self.model.request_checkpoint(tmp)
                    self.pending = True
                else:
                    # SAC stores the step after the callbacks: a resumed run lacks
                    # that one transition of its buffer.
                    tmp.mkdir(parents=True)
                    self.model.save(tmp / "sac.zip")
                    self.model.save_replay_buffer(tmp / "replay_buffer.pkl")
                    _promote(tmp, ckpt, rows)
            return True

    model.learn(
        steps - model.num_timesteps, callback=Evaluate(), tb_log_name=f"{variant}_{seed}",
        reset_num_timesteps=not rows,
    )  # fmt: skip
    model.logger.dump(model.num_timesteps)  # SB3 dumps per episodes: keep the last values
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_suffix(".tmp")
    with open(part, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "mean_return", "std_return", "seconds"])
        w.writerows(rows)
    part.replace(out)
    shutil.rmtree(ckpt, ignore_errors=True)  # the curve is all a finished run keeps
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _read(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


MODEL_SCALARS = (
    "model/fresh_mse", "model/holdout_mse", "model/jacobian_sparsity_combined",
    "model/true_sparsity_combined", "model/jacobian_mse_state", "model/jacobian_mse_action",
    "model/train_seconds",
)  # fmt: skip


def model_scalars(out: Path, variant: str, seed: int) -> dict[str, float]:
    """The last logged value of each of :data:`MODEL_SCALARS` in a run's TensorBoard log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(
        (out / "tb").glob(f"{variant}_{seed}_*"), key=lambda p: int(p.name.rsplit("_", 1)[1])
    )
    if not runs:
        return {}
    acc = EventAccumulator(str(runs[-1]), size_guidance={"scalars": 0}).Reload()
    tags = set(acc.Tags()["scalars"])
    return {k: acc.Scalars(k)[-1].value for k in MODEL_SCALARS if k in tags}


def _model_table(out: Path, variants: list[str], seeds: list[int]) -> list[str]:
    """Per MBPO variant, the world model's statistics at its last training, per seed."""
    rows = []
    for v in variants:
        if v == "sac":
            continue
        stats = [model_scalars(out, v, s) for s in seeds]
        if not all(stats):
            continue

        def col(fmt: str, *keys: str, stats=stats) -> str:
            """Per seed, ``keys`` joined by " / "; "-" for a value not logged."""
            return ", ".join(
                " / ".join(format(st[k], fmt) if k in st else "-" for k in keys) for st in stats
            )

        rows.append(
            f"| {v} | {col('.4f', 'model/fresh_mse')} | {col('.4f', 'model/holdout_mse')} "
            f"| {col('.3f', 'model/jacobian_sparsity_combined', 'model/true_sparsity_combined')} "
            f"| {col('.3g', 'model/jacobian_mse_state', 'model/jacobian_mse_action')} "
            f"| {col('.1f', 'model/train_seconds')} |"
        )
    if not rows:
        return []
    return [
        "",
        "World models at their last training (per seed; error: normalised MSE; "
        "sparsity of [J_s | J_a] on the fresh real steps):",
        "",
        "| variant | error on fresh real steps | held-out error "
        "| Jacobian sparsity, model / true | Jacobian error, J_s / J_a (normalised MSE) "
        "| seconds per model training |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def _finals(runs: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The runs' last evaluations, shape ``(runs,)`` (runs cut to their common length)."""
    n = min(len(r["step"]) for r in runs)
    return np.array([r["mean_return"][n - 1] for r in runs])


#: Baselines every variant is compared with in :func:`iqm_table`, in this order.
BASELINES = ("sac", "mbpo-mlp")


def iqm_table(finals: dict[str, np.ndarray], scale: float = 1.0, reps: int = REPS) -> list[str]:
    """The field's statistics of the final returns (rliable), as Markdown lines.

    Per variant: IQM over runs (and tasks) with its 95 % stratified bootstrap
    CI; against SAC and against MBPO with the MLP: the IQM difference with its
    CI (one that excludes 0 is a difference at 95 %) and the probability of
    improvement ``P(variant > baseline)``.

    Args:
        finals: Variant -> final returns, shape ``(runs,)`` (one task) or
            ``(runs, tasks)``.
        scale: Returns are divided by it (pooling tasks: DM Control's 1000).
        reps: Bootstrap resamples per statistic.
    """
    scores = {v: np.asarray(f, float).reshape(len(f), -1) / scale for v, f in finals.items()}
    scores = {v: x for v, x in scores.items() if x.shape[0] >= 2}
    if not scores:
        return []
    bases = [b for b in BASELINES if b in scores]
    head = "| variant | runs | IQM [95 % CI] |" + "".join(
        f" IQM - {b} [CI] | P(> {b}) [CI] |" for b in bases
    )
    lines = [
        "",
        "Final return as the field reports it (rliable: interquartile mean over runs, "
        f"95 % stratified bootstrap CIs, {reps:,} resamples"
        + (f"; returns / {scale:g}" if scale != 1 else "")
        + "):",
        "",
        head,
        "|" + "---|" * (3 + 2 * len(bases)),
    ]
    for v, x in scores.items():
        cells = [v, str(x.shape[0]), str(iqm(x, reps=reps))]
        for b in bases:
            if v == b:
                cells += ["-", "-"]
            else:
                cells += [
                    str(iqm_difference(x, scores[b], reps=reps)),
                    str(probability_of_improvement(x, scores[b], reps=reps)),
                ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summarise(args: argparse.Namespace, variants: list[str], seeds: list[int]) -> str:
    """Write ``returns.png`` and ``results.md``; return the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    curves = {
        v: [_read(out / "runs" / f"{v}_{s}.csv") for s in seeds]
        for v in variants
        if all((out / "runs" / f"{v}_{s}.csv").exists() for s in seeds)
    }
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = [
        f"{args.env}: undiscounted return of the deterministic policy over "
        f"{args.eval_episodes} episodes, mean ± std over seeds {seeds} "
        "(the figure: IQM over seeds, 95 % stratified bootstrap CI).",
        "",
        "| variant | real steps | final return | return at 1/3 of SAC's steps "
        "| real steps to SAC's final mean | seconds per run |",
        "|---|---|---|---|---|---|",
    ]
    sac_final = None
    if "sac" in curves:
        sac_final = float(np.mean([c["mean_return"][-1] for c in curves["sac"]]))
    third = args.sac_steps // 3
    final_returns: dict[str, np.ndarray] = {}
    for v, runs in curves.items():
        steps = runs[0]["step"]
        n = min(len(r["step"]) for r in runs)
        curve = np.array([r["mean_return"][:n] for r in runs])
        if len(runs) >= 2:  # the field's curve: IQM over seeds, stratified bootstrap 95 % CI
            centre, (low, high) = iqm_curves(curve[:, None, :], reps=min(args.reps, 2_000))
        else:
            centre = low = high = curve[0]
        ax.plot(steps[:n], centre, label=v)
        ax.fill_between(steps[:n], low, high, alpha=0.2)
        finals = final_returns[v] = _finals(runs)
        at_third = [np.interp(third, r["step"], r["mean_return"]) for r in runs]
        reach = "-"
        if sac_final is not None and v != "sac":
            hits = [
                int(r["step"][np.argmax(r["mean_return"] >= sac_final)])
                if (r["mean_return"] >= sac_final).any()
                else None
                for r in runs
            ]
            reach = ", ".join("not reached" if h is None else str(h) for h in hits)
        seconds = np.mean([r["seconds"][-1] for r in runs])
        lines.append(
            f"| {v} | {int(steps[n - 1])} | {np.mean(finals):.0f} ± {np.std(finals):.0f} "
            f"| {np.mean(at_third):.0f} ± {np.std(at_third):.0f} | {reach} | {seconds:.0f} |"
        )
    if sac_final is not None:
        ax.axhline(sac_final, color="grey", ls=":", lw=1, label="SAC's final mean")
    ax.set_xlabel("real env steps")
    ax.set_ylabel("return")
    ax.set_title(args.env)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "returns.png", dpi=120)
    lines += iqm_table(final_returns, reps=args.reps)
    lines += _model_table(out, list(curves), seeds)
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def aggregate(dirs: list[str], out: str, scale: float = 1000.0, reps: int = REPS) -> str:
    """Pool several envs' experiments (their ``--out`` folders) into one IQM table.

    Per variant, the final returns of the seeds that every env has, divided
    by ``scale`` (DM Control's maximum return), as a ``(runs, tasks)`` score
    matrix: rliable's stratified bootstrap resamples runs within each env.
    Writes and returns ``OUT/aggregate.md``.
    """
    per_env: dict[str, dict[str, dict[int, float]]] = {}
    for d in dirs:
        runs = sorted(Path(d).glob("runs/*.csv"))
        if not runs:
            raise ValueError(f"{d} holds no finished runs (runs/<variant>_<seed>.csv)")
        for path in runs:
            variant, seed = path.stem.rsplit("_", 1)
            per_env.setdefault(variant, {}).setdefault(d, {})[int(seed)] = float(
                _read(path)["mean_return"][-1]
            )
    finals, seeds_used = {}, {}
    for variant, envs in per_env.items():
        if len(envs) < len(dirs):
            continue  # a variant not run in every env cannot be pooled
        common = sorted(set.intersection(*(set(s) for s in envs.values())))
        if len(common) >= 2:
            finals[variant] = np.array([[envs[d][s] for d in dirs] for s in common])
            seeds_used[variant] = common
    lines = [
        f"Pooled over {', '.join(Path(d).name for d in dirs)}: final return per (seed, env).",
        "",
        *(f"- {v}: seeds {s}" for v, s in seeds_used.items()),
        *iqm_table(finals, scale=scale, reps=reps),
    ]
    text = "\n".join(lines) + "\n"
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "aggregate.md").write_text(text)
    return text


#: Options that must be >= 1, checked before anything runs.
POSITIVE_OPTIONS = (
    "sac_steps", "mbpo_steps", "eval_every", "checkpoint_every", "eval_episodes", "reps",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests build their runs' arguments with it too)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", default="1-3")
    parser.add_argument("--sac-steps", type=int, default=15_000)
    parser.add_argument("--mbpo-steps", type=int, default=5_000)
    parser.add_argument("--learning-starts", type=int, default=1_000)
    parser.add_argument("--eval-every", type=int, default=1_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument(
        "--checkpoint-every", type=int, default=5_000,
        help="real steps between checkpoints (a rerun of the command resumes from them)",
    )  # fmt: skip
    parser.add_argument(
        "--model-target", choices=("delta", "next_state"), default="delta",
        help="what MBPO's members predict: s' - s (MBPO) or s' (FTFL, arXiv 2510.01457)",
    )  # fmt: skip
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument(
        "--elites", type=int, default=None,
        help="members drawn in rollouts: those of lowest held-out error (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--rollout-keep", type=float, default=1.0,
        help="share of each rollout step's transitions kept, least ensemble disagreement first",
    )  # fmt: skip
    parser.add_argument(
        "--rollout-anchor", action="store_true",
        help="first rollout step: the real transition moved by the model's action response",
    )  # fmt: skip
    parser.add_argument("--model-train-freq", type=int, default=250)
    parser.add_argument("--model-epochs", type=float, default=5.0)
    parser.add_argument("--rollout-length", type=int, default=1)
    parser.add_argument("--rollout-batch-size", type=int, default=5_000)
    parser.add_argument("--gradient-steps", type=int, default=10, help="SAC updates per real step")
    parser.add_argument("--real-ratio", type=float, default=0.05)
    parser.add_argument(
        "--jacobian-loss", default="state-jacobian-l1-sparse-only",
        help="loss of mbpo-mlp-jacobian",
    )  # fmt: skip
    parser.add_argument(
        "--mode-dim", type=int, default=0, help="mode code of mbpo-local_mask's heads (0: none)"
    )
    parser.add_argument(
        "--contact-features", action="store_true",
        help="mbpo-local_mask: the mask network also gets each body's floor distance",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument(
        "--reps", type=int, default=REPS,
        help="bootstrap resamples of each statistic in the summary (curves: at most 2,000)",
    )  # fmt: skip
    parser.add_argument(
        "--aggregate", nargs="+", metavar="DIR",
        help="only pool finished experiments (their --out folders) into OUT/aggregate.md",
    )  # fmt: skip
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    for name in POSITIVE_OPTIONS:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.aggregate:
        print(aggregate(args.aggregate, args.out, reps=args.reps))
        return
    seeds = parse_seeds(args.seeds)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "args.json").write_text(json.dumps(vars(args), indent=1))
    jobs = [(v, s) for s in seeds for v in args.variants]
    if args.workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        spawn = multiprocessing.get_context("spawn")  # no fork of a process holding JAX
        # One process per run: a run's memory (its buffers, JAX executables) goes back
        # before the next starts (a CheetahRun worker reusing its process was OOM-killed).
        with ProcessPoolExecutor(args.workers, mp_context=spawn, max_tasks_per_child=1) as pool:
            for path in pool.map(run_one, *zip(*jobs, strict=True), [args] * len(jobs)):
                print("done", path, flush=True)
    else:
        for v, s in jobs:
            print("done", run_one(v, s, args), flush=True)
    print(summarise(args, list(args.variants), seeds))


if __name__ == "__main__":
    main()
