"""Train an SB3 PPO (or SAC) agent on a Playground task, log its evaluation return, save it.

    python examples/train_expert.py --env CartpoleBalance --timesteps 200000 \
        --out experts/CartpoleBalance.zip
    python examples/collect_dataset.py --env CartpoleBalance --steps 100000 \
        --policy experts/CartpoleBalance.zip --out data/cartpole_expert.h5

Training needs no Jacobians, so the env runs with ``jacobians=False`` (fast);
the saved agent then drives collection with its stochastic policy, so the
evaluation scores the stochastic policy too, as the study did.

Long runs checkpoint every ``--checkpoint-freq`` steps (``<out stem>_ckpt/``);
``--resume`` continues from the newest checkpoint up to ``--timesteps`` in all
(SAC's checkpoints carry its replay buffer, so a resumed SAC run loses nothing; only
the newest buffer is kept: each holds the whole preallocated buffer, ~100 MB).

PPO is the study's algorithm and the default. ``--algo sac`` is for the locomotion
tasks, where PPO needs tens of millions of steps (Playground's own PPO recipe for
CheetahRun: 60M) that one CPU core cannot give in a session, while SAC reaches
the study's returns in a few hundred thousand (docs/data.md#expert-agents).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

# Heavy imports (JAX, MJX, SB3) come after parse_args: --help answers at once.

# PPO settings per env; every other task gets DEFAULT.
DEFAULT = {
    "n_envs": 16,
    "n_steps": 256,
    "batch_size": 512,
    "n_epochs": 10,
    "learning_rate": 3e-4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "policy_kwargs": {"net_arch": {"pi": [128, 128], "vf": [128, 128]}},
}
# SAC settings (SB3's defaults with the usual DMC ones: 256x256 nets, batch 256, one
# update per env step).
SAC_DEFAULT = {
    "n_envs": 1,
    "learning_rate": 3e-4,
    "buffer_size": 1_000_000,
    "learning_starts": 5_000,
    "batch_size": 256,
    "gamma": 0.99,
    "tau": 0.005,
    "train_freq": 1,
    "gradient_steps": 1,
    "policy_kwargs": {"net_arch": [256, 256]},
}
HYPERPARAMS: dict[str, dict] = {
    "CartpoleBalance": {},
    "ReacherHard": {"n_envs": 32, "learning_rate": 1e-3, "gamma": 0.95, "n_steps": 128},
    "CheetahRun": {"n_envs": 32, "learning_rate": 3e-4, "gamma": 0.99, "n_steps": 256},
}


def hyperparameters(env_name: str, algo: str = "ppo") -> dict:
    """Settings of ``algo`` for ``env_name`` (PPO: DEFAULT updated by the env's entry)."""
    if algo == "sac":
        return dict(SAC_DEFAULT)
    return {**DEFAULT, **HYPERPARAMS.get(env_name, {})}


def _steps(path: Path) -> int:
    """The steps in an SB3 checkpoint's name (``<prefix>_<steps>_steps.zip``, ``.pkl``)."""
    return int(path.stem.split("_")[-2])


def _latest_checkpoint(folder: Path, algo: str) -> Path | None:
    """The checkpoint of ``folder`` with the most steps (``<algo>_<steps>_steps.zip``).

    For SAC, the newest one whose replay buffer was saved too: a run stopped between
    the two files resumes from the checkpoint before, with its buffer.
    """
    found = sorted(folder.glob(f"{algo}_*_steps.zip"), key=_steps)
    if algo == "sac":
        found = [p for p in found if _replay_buffer(folder, algo, _steps(p)).exists()]
    return found[-1] if found else None


def _replay_buffer(folder: Path, algo: str, steps: int) -> Path:
    """Where SB3's CheckpointCallback saves the replay buffer of the checkpoint at ``steps``."""
    return folder / f"{algo}_replay_buffer_{steps}_steps.pkl"


def _prune_replay_buffers(folder: Path, algo: str) -> None:
    """Delete all but the newest ``<algo>_replay_buffer_<steps>_steps.pkl`` of ``folder``.

    Each holds SB3's whole preallocated buffer (116 MB for FingerTurnEasy's 1M rows, full or
    not), and a resumed run needs only the newest.
    """
    found = sorted(folder.glob(f"{algo}_replay_buffer_*_steps.pkl"), key=_steps)
    for old in found[:-1]:
        old.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="Playground task, e.g. CheetahRun")
    parser.add_argument("--timesteps", type=int, required=True)
    parser.add_argument(
        "--out",
        default=None,
        help="where to save the model (.zip); default: the shipped "
        "jacobian_wrappers/experts/<env>.zip, whose returns.json gets its evaluation",
    )
    parser.add_argument(
        "--algo", choices=("ppo", "sac"), default="ppo", help="SB3 algorithm (default: ppo)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default="runs/experts")
    parser.add_argument("--eval-freq", type=int, default=50_000, help="env steps between evals")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--checkpoint-freq", type=int, default=25_000, help="env steps")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint, else from --out itself if it exists",
    )
    args = parser.parse_args()
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecMonitor

    import jacobian_wrappers as jw

    out = Path(args.out) if args.out else jw.expert_agents.EXPERT_DIR / f"{args.env}.zip"
    ckpt_dir = out.parent / f"{out.stem}_ckpt"
    latest = _latest_checkpoint(ckpt_dir, args.algo) if args.resume else None
    if args.resume and latest is None and out.exists():
        latest = out  # a shipped agent: trained further from where it stopped
        # Checked before any compile: an agent resumes only with its own algorithm.
        record = out.parent == jw.expert_agents.EXPERT_DIR
        trained = jw.expert_agents.expert_record(args.env).get("algorithm", "PPO") if record else ""
        if record and trained.lower() != args.algo:
            parser.error(
                f"--resume: the shipped {args.env} agent is {trained}, not {args.algo.upper()}; "
                f"pass --out to train a {args.algo.upper()} agent apart"
            )
    algo_class = {"ppo": PPO, "sac": SAC}[args.algo]
    params = hyperparameters(args.env, args.algo)
    n_envs = params.pop("n_envs")
    env = VecMonitor(jw.PlaygroundVecEnv(args.env, n_envs, seed=args.seed, jacobians=False))
    eval_env = VecMonitor(
        jw.PlaygroundVecEnv(args.env, args.eval_episodes, seed=10_000 + args.seed, jacobians=False)
    )
    evaluator = EvalCallback(
        eval_env,
        n_eval_episodes=args.eval_episodes,
        eval_freq=max(1, args.eval_freq // n_envs),
        best_model_save_path=str(out.parent / f"{out.stem}_best"),
        deterministic=False,
        verbose=1,
    )

    class Checkpoints(CheckpointCallback):
        """SB3's checkpoints, keeping only the newest replay buffer."""

        def _on_step(self) -> bool:
            go_on = super()._on_step()
            if self.save_replay_buffer and self.n_calls % self.save_freq == 0:
                _prune_replay_buffers(Path(self.save_path), self.name_prefix)
            return go_on

    checkpoints = Checkpoints(
        max(1, args.checkpoint_freq // n_envs),
        str(ckpt_dir),
        args.algo,
        save_replay_buffer=args.algo == "sac",
    )
    if latest is not None:
        model = algo_class.load(latest, env=env, tensorboard_log=args.logdir)
        buffer = _replay_buffer(latest.parent, args.algo, model.num_timesteps)
        if args.algo == "sac" and buffer.exists():
            model.load_replay_buffer(buffer)
        elif args.algo == "sac":
            print(f"warning: no {buffer.name}: SAC resumes with an empty replay buffer")
        print(f"resuming from {latest} ({model.num_timesteps} steps)")
    else:
        model = algo_class(
            "MlpPolicy", env, seed=args.seed, tensorboard_log=args.logdir, verbose=0, **params
        )
    start, done_before = time.perf_counter(), model.num_timesteps
    model.learn(
        max(0, args.timesteps - done_before),
        callback=[evaluator, checkpoints],
        tb_log_name=args.env,
        reset_num_timesteps=latest is None,
    )
    wall = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    returns = [float(np.mean(r)) for r in evaluator.evaluations_results]
    steps = [int(t) for t in evaluator.evaluations_timesteps]
    print(
        f"{args.env}: {model.num_timesteps} steps in {wall:.0f} s "
        f"({(model.num_timesteps - done_before) / max(wall, 1e-9):.0f} steps/s)"
    )
    for t, r in zip(steps, returns, strict=True):
        print(f"  eval at {t:>8} steps: mean return {r:7.1f} ({args.eval_episodes} episodes)")
    # The saved agent's own return: its stochastic policy, as the study evaluated.
    command = (
        f"python examples/train_expert.py --env {args.env} --timesteps {args.timesteps} "
        f"--algo {args.algo} --resume"
    )
    if out.parent == jw.expert_agents.EXPERT_DIR:
        r = jw.expert_agents.evaluate_expert(model, args.env, args.eval_episodes, command=command)
        mean, std, target = r["mean_return"], r["std_return"], r["study_return"]
    else:
        mean, std = evaluate_policy(model, eval_env, args.eval_episodes, deterministic=False)
        target = jw.expert_agents.STUDY_RETURNS.get(args.env)
    print(f"saved {out}: mean return {mean:.1f} ± {std:.1f} (study: {target})")


if __name__ == "__main__":
    main()
