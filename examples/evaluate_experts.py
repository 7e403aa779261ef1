"""Evaluate the shipped expert agents as the study did; update their returns.json.

    python examples/evaluate_experts.py [--envs ReacherHard ...] [--episodes 10]

Each agent's stochastic policy runs ``--episodes`` full episodes; the mean and
std of the return, its training steps and the study's Table A1.1 value go to
``jacobian_wrappers/experts/returns.json`` (docs/data.md#expert-agents).
"""

from __future__ import annotations

import argparse

# Heavy imports (JAX, MJX, SB3) come after parse_args: --help answers at once.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="*", default=None, help="default: every shipped agent")
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    import jacobian_wrappers as jw
    from jacobian_wrappers.expert_agents import evaluate_expert, expert_record

    print("| env | steps | mean return (stochastic) | study (Table A1.1) | met |")
    print("|---|---|---|---|---|")
    for name in args.envs or jw.available_experts():
        model = jw.load_expert(name)
        try:
            command = expert_record(name)["command"]
        except (KeyError, FileNotFoundError):
            command = f"python examples/train_expert.py --env {name} --timesteps N --resume"
        r = evaluate_expert(model, name, args.episodes, command=command)
        print(
            f"| {name} | {r['timesteps']:,} | {r['mean_return']:.1f} ± {r['std_return']:.1f} "
            f"| {r['study_return']} | {'yes' if r['meets_study'] else 'no'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
