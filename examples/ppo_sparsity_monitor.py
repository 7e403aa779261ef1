"""Train SB3 PPO on a Playground task and watch the sparsity of its true dynamics live.

    python examples/ppo_sparsity_monitor.py --env CheetahRun --timesteps 100000 --n-envs 8 \
        --logdir runs/
    tensorboard --logdir runs/

Copy it: the only additions to a plain SB3 script are the env and the callback.
"""

from __future__ import annotations

import argparse
import time

# Heavy imports (JAX, MJX, SB3) come after parse_args: --help answers at once.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CheetahRun", help="Playground task")
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--logdir", default="runs/")
    parser.add_argument("--precision", default="float64", choices=("float32", "float64"))
    parser.add_argument("--threshold", type=float, default=1e-15, help="zero threshold")
    parser.add_argument("--jacobian-every", type=int, default=1)
    parser.add_argument("--log-freq", type=int, default=64, help="vector steps between logs")
    parser.add_argument("--heatmap-freq", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    import jacobian_wrappers as jw
    from callbacks import SparsityCallback

    start = time.perf_counter()
    venv = jw.PlaygroundVecEnv(
        args.env,
        args.n_envs,
        seed=args.seed,
        precision=args.precision,
        jacobian_every=args.jacobian_every,
    )
    venv.warm_up()  # compile first (a notice says how long), so PPO's timing starts after
    # Short runs: shrink the rollout so PPO does not overshoot --timesteps (default 2048 per env).
    n_steps = min(2048, max(64, args.timesteps // args.n_envs))
    model = PPO(
        "MlpPolicy",
        VecMonitor(venv),
        n_steps=n_steps,
        seed=args.seed,
        tensorboard_log=args.logdir,
    )
    sparsity = SparsityCallback(
        threshold=args.threshold, log_freq=args.log_freq, heatmap_freq=args.heatmap_freq
    )
    model.learn(total_timesteps=args.timesteps, callback=sparsity, tb_log_name=args.env)
    wall = time.perf_counter() - start

    gz = sparsity.global_zeros
    d_s = gz.shape[0]
    counts = gz.counts(d_s)
    labels = [*venv.tangent_labels, *venv.action_labels]
    print(f"\n{args.env}: PPO {model.num_timesteps} steps on {args.n_envs} envs in {wall:.0f} s")
    print(f"Jacobians seen: {gz.samples} ({args.precision}, zero when |J| < {args.threshold:g})")
    print(f"mean sparsity of [J_s | J_a]: {gz.frequency().mean():.3f}")
    print(
        f"global zeros: J_s {counts['state']} of {d_s * d_s} ({counts['state_pct']:.1f}%), "
        f"J_a {counts['action']} of {d_s} x {gz.shape[1] - d_s}"
    )
    print(f"distinct zero patterns: {sparsity.patterns.distinct}")
    print(
        f"mean run length (steps): zero {sparsity.runs.mean_zero_run():.1f}, "
        f"non-zero {sparsity.runs.mean_nonzero_run():.1f}"
    )
    for i, j in zip(*gz.mask().nonzero(), strict=True):
        print(f"  d {venv.tangent_labels[i]} / d {labels[j]} = 0 at every step")
    print(f"TensorBoard: tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
