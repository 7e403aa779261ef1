"""SAC alone against MBPO with world models of the project: returns against real env steps.

    python examples/mbrl_experiment.py --env CartpoleBalance --out results/mbrl/cartpole \
        --sac-steps 15000 --mbpo-steps 5000 --seeds 1-3 --workers 2

Variants (``--variants``): ``sac`` (SB3's SAC, one update per step),
``mbpo-mlp`` (MBPO, MLP ensemble, ``state`` loss), ``mbpo-mlp-jacobian``
(MLP with ``--jacobian-loss``, fed by the env's Jacobians) and
``mbpo-local_mask`` (masked ensemble, mask supervised with the true zero
pattern: ``state-mask``); the control ``mbpo-oracle`` is ``mbpo-mlp`` whose
rollouts use the simulator's own step (a perfect model:
``MBPO(rollout_dynamics="simulator")``). ``--mode-dim`` and
``--contact-features`` give ``mbpo-local_mask``'s members a mode code and
the env's floor distances in their mask network
(``TrainConfig(mode_dim=..., contact_features=True)``); ``--elites``,
``--rollout-keep`` and ``--rollout-anchor`` guard every MBPO variant against
model error (``MBPO(n_elites=..., rollout_keep=..., rollout_anchor=True)``).
Every variant acts in the same env
(``PlaygroundVecEnv(jacobians=True, precision="float64")``) and is
evaluated every ``--eval-every`` real steps by its deterministic policy on
``--eval-episodes`` full episodes of a separate env. Each (variant, seed)
writes ``runs/<variant>_<seed>.csv`` (step, mean and std of the return) and
its TensorBoard log; a finished run is read back, not rerun. The summary:
``returns.png`` (mean ± std over seeds against real steps), ``results.md``
(final return per variant; real steps each MBPO variant needs to reach SAC's
final mean return; per seed, the world model's error on the fresh real steps,
held-out error, Jacobian sparsity next to the true one, the Jacobian's error
and training seconds at its last training, read back from the TensorBoard logs).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

VARIANTS = ("sac", "mbpo-mlp", "mbpo-mlp-jacobian", "mbpo-local_mask", "mbpo-oracle")
#: What runs without ``--variants``: the comparison, not the control.
DEFAULT_VARIANTS = VARIANTS[:4]


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


def run_one(variant: str, seed: int, args: argparse.Namespace) -> Path:
    """Train one variant with one seed; write its evaluation curve; return the CSV path."""
    out = Path(args.out) / "runs" / f"{variant}_{seed}.csv"
    if out.exists():
        return out
    import torch

    torch.set_num_threads(args.threads)
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    import jacobian_wrappers as jw
    from dynamic_sparsity.mbrl import MBPO, MBPO_MODEL_CONFIG

    env = jw.PlaygroundVecEnv(args.env, n_envs=1, seed=seed, jacobians=True, precision="float64")
    eval_env = jw.PlaygroundVecEnv(
        args.env, n_envs=args.eval_episodes, seed=10_000 + seed, jacobians=False
    )
    common = dict(
        learning_starts=args.learning_starts, seed=seed, verbose=0,
        tensorboard_log=str(Path(args.out) / "tb"),
    )  # fmt: skip
    if variant == "sac":
        model = SAC("MlpPolicy", env, **common)
        steps = args.sac_steps
    else:
        world_model, loss = {
            "mbpo-mlp": ("mlp", "state"),
            "mbpo-mlp-jacobian": ("mlp", args.jacobian_loss),
            "mbpo-local_mask": ("local_mask", "state-mask"),
            "mbpo-oracle": ("mlp", "state"),
        }[variant]
        model = MBPO(
            "MlpPolicy", env, world_model=world_model, loss_mode=loss,
            n_members=args.members, n_elites=args.elites, rollout_keep=args.rollout_keep,
            rollout_anchor=args.rollout_anchor, model_train_freq=args.model_train_freq,
            model_epochs=args.model_epochs, rollout_length=args.rollout_length,
            rollout_batch_size=args.rollout_batch_size, gradient_steps=args.gradient_steps,
            real_ratio=args.real_ratio,
            model_config=dataclasses.replace(
                MBPO_MODEL_CONFIG, mode_dim=args.mode_dim,
                contact_features=args.contact_features,
            ),
            rollout_dynamics="simulator" if variant == "mbpo-oracle" else "model", **common,
        )  # fmt: skip
        steps = args.mbpo_steps
    rows: list[tuple[int, float, float, float]] = []
    start = time.perf_counter()

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % args.eval_every == 0:
                mean, std = _evaluate(self.model, eval_env, args.eval_episodes)
                rows.append((self.num_timesteps, mean, std, time.perf_counter() - start))
                self.logger.record("eval/mean_return", mean)
            return True

    model.learn(steps, callback=Evaluate(), tb_log_name=f"{variant}_{seed}")
    model.logger.dump(model.num_timesteps)  # SB3 dumps per episodes: keep the last values
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "mean_return", "std_return", "seconds"])
        w.writerows(rows)
    tmp.replace(out)
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
        f"{args.eval_episodes} episodes, mean ± std over seeds {seeds}.",
        "",
        "| variant | real steps | final return | return at 1/3 of SAC's steps "
        "| real steps to SAC's final mean | seconds per run |",
        "|---|---|---|---|---|---|",
    ]
    sac_final = None
    if "sac" in curves:
        sac_final = float(np.mean([c["mean_return"][-1] for c in curves["sac"]]))
    third = args.sac_steps // 3
    for v, runs in curves.items():
        steps = runs[0]["step"]
        n = min(len(r["step"]) for r in runs)
        mean = np.mean([r["mean_return"][:n] for r in runs], axis=0)
        std = np.std([r["mean_return"][:n] for r in runs], axis=0)
        ax.plot(steps[:n], mean, label=v)
        ax.fill_between(steps[:n], mean - std, mean + std, alpha=0.2)
        finals = [r["mean_return"][n - 1] for r in runs]
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
    lines += _model_table(out, list(curves), seeds)
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def main() -> None:
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
    args = parser.parse_args()
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
