"""Reproduce the study's sparsity analysis: collect float64 data on its eight envs, report.

    python examples/reproduce_paper.py --steps 2000 --out paper/
    python examples/reproduce_paper.py --steps 1000000 --policy experts --out paper-experts/
    python examples/reproduce_paper.py --envs gym --steps 100000 --n-envs 4 --out gym-random/

``--policy experts``: each env's shipped expert agent
(``jacobian_wrappers.load_expert``, its stochastic policy as the study used),
a uniform random policy where none is shipped (said in the output and the
report); ``--policy random`` everywhere; ``--policy-dir DIR``: ``DIR/<Env>.zip``
where it exists.
``--envs`` takes Playground task names and Gymnasium MuJoCo ids
(``HalfCheetah-v5``; ``gym`` stands for Gymnasium's ten v5 envs, ``study`` for
the study's eight): a Gymnasium env runs as a ``DummyVecEnv`` of
``JacobianWrapper(gym.make(id), backend=--gym-backend)`` (default: each
env's default, exact MJX where it agrees with the env, MuJoCo's C finite
differences with the noise-aware zero test otherwise).
Data go to ``OUT/data/<Env>.h5`` (an existing file is resumed), the report to
``OUT/report/report.md``, and each data set's card (rows, complete episodes,
the policy's mean return over them, size, content SHA-256,
``dynamic_sparsity.analysis.dataset_card``) with its collection time to
``OUT/datasets.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Heavy imports (JAX, MJX, SB3) come after parse_args: --help answers at once.
GYM_ENVS = (  # jacobian_wrappers.gym_mujoco.GYM_V5_ENVS, without importing JAX for --help
    "Ant-v5",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Humanoid-v5",
    "Swimmer-v5",
    "Reacher-v5",
    "Pusher-v5",
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
)
STUDY_ENVS = (  # jacobian_wrappers.STUDY_ENVS, without importing JAX for --help
    "BallInCup",
    "CartpoleBalance",
    "CheetahRun",
    "ReacherHard",
    "FingerSpin",
    "FingerTurnEasy",
    "WalkerRun",
    "SwimmerSwimmer6",
)


def make_env(name: str, n_envs: int, seed: int, gym_backend: str | None):
    """A float64 VecEnv with Jacobians: Playground's batched env, or Gymnasium's envs."""
    import jacobian_wrappers as jw

    if name not in GYM_ENVS:
        return jw.PlaygroundVecEnv(name, n_envs, seed=seed, precision="float64")
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: jw.JacobianWrapper(gym.make(name), backend=gym_backend)] * n_envs)
    venv.seed(seed)
    return venv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--envs", nargs="+", default=["study"], help="task names, Gymnasium ids, 'study', 'gym'"
    )
    parser.add_argument(
        "--gym-backend", default=None, choices=("mjx", "mujoco"), help="Gymnasium envs' backend"
    )
    parser.add_argument("--steps", type=int, default=1_000_000, help="transitions per env")
    parser.add_argument("--policy", default="random", choices=("random", "experts"))
    parser.add_argument("--policy-dir", default=None, help="directory of <Env>.zip agents")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--tsne-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    groups = {"study": STUDY_ENVS, "gym": GYM_ENVS}
    envs = [e for name in args.envs for e in groups.get(name, (name,))]
    import jacobian_wrappers as jw
    from dynamic_sparsity.analysis import analyse_dataset, dataset_card, write_report

    out = Path(args.out)
    cards_path = out / "datasets.json"
    cards = json.loads(cards_path.read_text()) if cards_path.exists() else {}
    start = time.perf_counter()
    analyses = []
    for name in envs:
        t0 = time.perf_counter()
        policy = "random"
        if args.policy == "experts" and name in jw.available_experts():
            policy = f"expert:{name}"
        elif args.policy_dir and (Path(args.policy_dir) / f"{name}.zip").exists():
            policy = str(Path(args.policy_dir) / f"{name}.zip")
        path = out / "data" / f"{name}.h5"
        env = make_env(name, args.n_envs, args.seed, args.gym_backend)
        result = jw.collect(
            env, args.steps, path, policy=policy, seed=args.seed, resume=True, progress=True
        )
        t1 = time.perf_counter()
        cards[name] = {
            **dataset_card(path),
            "collect_seconds_this_run": round(t1 - t0, 1),
            "command": "python examples/reproduce_paper.py " + " ".join(sys.argv[1:]),
        }
        cards_path.write_text(json.dumps(cards, indent=1) + "\n")
        analyses.append(analyse_dataset(path, tsne_samples=args.tsne_samples, seed=args.seed))
        print(
            f"{name}: {result.rows} transitions ({policy}), collected in {t1 - t0:.0f} s, "
            f"analysed in {time.perf_counter() - t1:.0f} s"
        )
    report = write_report(analyses, out / "report", title="Reproduction of the study's Q1-Q3")
    print((out / "report" / "summary.md").read_text())
    print(f"report: {report} (total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
