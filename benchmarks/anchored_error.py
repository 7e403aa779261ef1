"""How much anchoring a model step to a real transition lowers its error, at new actions.

    python benchmarks/anchored_error.py --env CartpoleBalance --train-steps 3000 --fresh-steps 500

An ensemble of MBPO's members (``MBPO_MODEL_CONFIG``, ``state`` loss) is
trained on ``--train-steps`` real steps of random actions and scored on
``--fresh-steps`` steps it has not seen. For each fresh transition
``(s, a_real, s'_real)`` a new action ``a`` is drawn within ``±delta`` of
``a_real`` (clipped to the box), the truth ``step(s, a)`` comes from the
simulator (:class:`dynamic_sparsity.mbrl.SimulatorModel`), and each member ``f`` predicts it
plainly, ``f(s, a)``, and anchored, ``s'_real + f(s, a) - f(s, a_real)``
(``MBPO(rollout_anchor=True)``'s first rollout step). Printed: the
normalised MSE of both (the next state's std, as ``model/fresh_mse``),
averaged over members, and their ratio.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def collect(env, steps: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``steps`` vector steps of uniform random actions, as flat rows of the ground truth."""
    env.reset()
    low, high = env.action_space.low, env.action_space.high
    rows: dict[str, list[np.ndarray]] = {"state": [], "action": [], "next_state": []}
    for _ in range(steps):
        env.step(rng.uniform(low, high, (env.num_envs, *env.action_space.shape)))
        for key, column in rows.items():
            column.append(np.array(env.last_transition[key]))
    return {key: np.concatenate(column) for key, column in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--fresh-steps", type=int, default=500)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--epochs", type=float, default=5.0)
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import jacobian_wrappers as jw
    from dynamic_sparsity.mbrl import MBPO_MODEL_CONFIG, SimulatorModel
    from world_models import DynamicsEnsemble, EnsembleTrainer

    rng = np.random.default_rng(args.seed)
    env = jw.PlaygroundVecEnv(args.env, 1, seed=args.seed, jacobians=False, precision="float64")
    train, fresh = collect(env, args.train_steps, rng), collect(env, args.fresh_steps, rng)
    d_s, d_a = train["state"].shape[1], train["action"].shape[1]
    ens = DynamicsEnsemble.build(
        "mlp", d_s, d_a, args.members, seed=args.seed, **MBPO_MODEL_CONFIG.model_kwargs(args.env)
    )
    EnsembleTrainer(ens, "state", MBPO_MODEL_CONFIG, 0.0, args.seed).fit(train, args.epochs)
    sim = SimulatorModel(args.env, "float64")
    s, a_real, s2_real = fresh["state"], fresh["action"], fresh["next_state"]
    low, high = env.action_space.low, env.action_space.high
    t = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    print(
        f"{args.env}: {args.train_steps} training steps, {args.fresh_steps} fresh steps, "
        f"{args.members} members; normalised MSE at actions a = a_real + U(-delta, delta)"
    )
    print("| delta | plain | anchored | plain / anchored |")
    print("|---|---|---|---|")
    for delta in args.deltas:
        a = np.clip(a_real + rng.uniform(-delta, delta, a_real.shape), low, high)
        truth = sim.predict_raw(torch.as_tensor(s), torch.as_tensor(a)).numpy()
        plain, anchored = [], []
        with torch.no_grad():
            for f in ens.members:
                scale = f.out_scale.double().numpy()
                p = f.predict_raw(t(s), t(a)).double().numpy()
                p_real = f.predict_raw(t(s), t(a_real)).double().numpy()
                plain.append(np.mean(((p - truth) / scale) ** 2))
                anchored.append(np.mean(((s2_real + p - p_real - truth) / scale) ** 2))
        ratio = np.mean(plain) / np.mean(anchored)
        print(f"| {delta:g} | {np.mean(plain):.3g} | {np.mean(anchored):.3g} | {ratio:.0f}x |")


if __name__ == "__main__":
    main()
