"""What the model-based loop costs per 1,000 real steps, part by part, side by side.

    python benchmarks/mbrl_overhead.py --env CartpoleBalance --steps 2000 \
        --variants mlp:state mlp:state-jacobian-l1-sparse-only local_mask:state-mask

For each ``world_model:loss_mode`` an MBPO run of ``--steps`` real steps
(after ``--learning-starts`` steps of warm-up, not timed) is timed by part:
the env steps and the policy's actions, the ensemble's training, the model
rollouts, and SAC's updates. Printed per 1,000 real steps, and the loop's
own overhead (model training + rollouts) as a share of the whole. Plain SAC
with the same number of updates per step is run alongside as the reference.
``--elites``, ``--rollout-keep`` and ``--rollout-anchor`` time MBPO's guards
against model error (every variant gets them). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch


def _timed(store: dict, name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            store[name] += time.perf_counter() - start

    return wrapper


def measure(args: argparse.Namespace, variant: str) -> dict[str, float]:
    """Seconds per part for ``args.steps`` timed real steps of one variant (``"sac"`` or MBPO)."""
    from stable_baselines3 import SAC

    import jacobian_wrappers as jw
    from dynamic_sparsity.mbrl import MBPO

    env = jw.PlaygroundVecEnv(args.env, n_envs=1, seed=0, jacobians=True, precision="float64")
    common = dict(learning_starts=args.learning_starts, gradient_steps=args.gradient_steps, seed=0)
    if variant == "sac":
        model = SAC("MlpPolicy", env, **common)
    else:
        world_model, loss = variant.split(":")
        model = MBPO(
            "MlpPolicy", env, world_model=world_model, loss_mode=loss,
            n_members=args.members, n_elites=args.elites, rollout_keep=args.rollout_keep,
            rollout_anchor=args.rollout_anchor, rollout_batch_size=args.rollout_batch_size,
            model_epochs=args.model_epochs, **common,
        )  # fmt: skip
    model.learn(args.learning_starts + 250)  # compile, first model training, first rollouts
    times: dict[str, float] = defaultdict(float)
    if variant != "sac":
        model.train_world_model = _timed(times, "model training", model.train_world_model)
        model.rollout_model = _timed(times, "rollouts", model.rollout_model)
    model.train = _timed(times, "train", model.train)
    start = time.perf_counter()
    model.learn(args.steps, reset_num_timesteps=False)
    total = time.perf_counter() - start
    sac = times.pop("train") - times["model training"] - times["rollouts"]
    return {
        "env + policy": total - sac - times["model training"] - times["rollouts"],
        "model training": times["model training"],
        "rollouts": times["rollouts"],
        "SAC updates": sac,
        "total": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument(
        "--variants", nargs="+",
        default=["mlp:state", "mlp:state-jacobian-l1-sparse-only", "local_mask:state-mask"],
    )  # fmt: skip
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--elites", type=int, default=None, help="MBPO(n_elites=...)")
    parser.add_argument("--rollout-keep", type=float, default=1.0, help="MBPO(rollout_keep=...)")
    parser.add_argument("--rollout-anchor", action="store_true", help="MBPO(rollout_anchor=True)")
    parser.add_argument("--rollout-batch-size", type=int, default=5000)
    parser.add_argument("--model-epochs", type=float, default=5.0)
    parser.add_argument("--gradient-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {v: measure(args, v) for v in ["sac", *args.variants]}
    per = 1000 / args.steps
    parts = ["env + policy", "model training", "rollouts", "SAC updates", "total"]
    print(f"{args.env}: seconds per 1,000 real steps ({args.steps} timed, "
          f"{args.gradient_steps} SAC updates per step, {args.members} members, "
          f"{args.elites or args.members} elites, rollout_keep {args.rollout_keep}, "
          f"rollout_anchor {args.rollout_anchor}, "
          f"{args.rollout_batch_size} rollouts per {250} steps)")  # fmt: skip
    print("| variant | " + " | ".join(parts) + " | overhead share | total / SAC |")
    print("|---" * (len(parts) + 3) + "|")
    base = rows["sac"]["total"]
    for v, r in rows.items():
        share = (r["model training"] + r["rollouts"]) / r["total"]
        cells = " | ".join(f"{r[p] * per:.1f}" for p in parts)
        print(f"| {v} | {cells} | {share:.0%} | {r['total'] / base:.2f}x |")


if __name__ == "__main__":
    main()
