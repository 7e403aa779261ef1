"""Collect transitions with exact Jacobians from a Playground task into an HDF5 data set.

    python examples/collect_dataset.py --env CheetahRun --steps 100000 --policy random \
        --precision float64 --out data/cheetah.h5
    python examples/collect_dataset.py --env CheetahRun --steps 100000 \
        --policy experts/CheetahRun.zip --out data/cheetah_expert.h5

An interrupted run (Ctrl-C, or killed) keeps every complete chunk; ``--resume``
continues the file up to ``--steps`` rows.

In shards (docs/scale.md): ``--shard K/N`` collects shard K of N (``--steps``
rows) to ``<out>.shard-K-of-N.h5``, from any launcher; ``--ray [ADDRESS]
--shards N`` runs the N shards (``--steps`` rows in all) as Ray tasks.
``--devices D`` splits the env batch over D local JAX devices (default: all
that divide ``--n-envs``).
"""

from __future__ import annotations

import argparse

# Heavy imports (JAX, MJX, SB3) come after parse_args: --help answers at once.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="Playground task, e.g. CheetahRun")
    parser.add_argument("--steps", type=int, required=True, help="transitions in the file")
    parser.add_argument(
        "--policy", default="random",
        help="'random', 'expert:<Task>' (a shipped agent) or an SB3 model .zip",
    )  # fmt: skip
    parser.add_argument("--precision", default="float64", choices=("float32", "float64"))
    parser.add_argument("--out", required=True, help="HDF5 file to write")
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--backend",
        default="mjx",
        choices=("mjx", "mujoco"),
        help="Jacobians by exact MJX autodiff or MuJoCo's C finite differences (not exact)",
    )
    parser.add_argument(
        "--jacobian-method",
        default=None,
        choices=("implicit", "unrolled"),
        help="how exact (mjx) Jacobians pass the constraint solver; the same Jacobians "
        "(default: implicit in float64, unrolled in float32)",
    )
    parser.add_argument("--episode-length", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=1e-15, help="zero threshold")
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument(
        "--compression", default=None, choices=["lzf", "gzip"], help="default: none (fastest)"
    )
    parser.add_argument("--no-jacobians", action="store_true", help="store s, a, s' only")
    parser.add_argument("--devices", type=int, default=None, help="JAX devices (default: all)")
    parser.add_argument("--shard", default=None, metavar="K/N", help="collect shard K of N")
    parser.add_argument(
        "--ray", nargs="?", const=True, default=False, metavar="ADDRESS",
        help="--shards as Ray tasks: a local Ray instance, or the cluster at ADDRESS",
    )  # fmt: skip
    parser.add_argument("--shards", type=int, default=None, help="--ray: shards (Ray tasks)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue an existing file")
    group.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args()
    import jacobian_wrappers as jw

    env_kwargs = dict(
        precision=args.precision,
        jacobians=not args.no_jacobians,
        episode_length=args.episode_length,
        backend=args.backend,
        jacobian_method=args.jacobian_method,
        devices=args.devices,
    )
    if args.ray or args.shard:
        shards(parser, args, env_kwargs)
        return

    env = jw.PlaygroundVecEnv(args.env, args.n_envs, seed=args.seed, **env_kwargs)
    try:
        result = jw.collect(
            env,
            args.steps,
            args.out,
            policy=args.policy,
            seed=args.seed,
            threshold=args.threshold,
            chunk_size=args.chunk_size,
            compression=args.compression,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=True,
        )
    except KeyboardInterrupt:
        with jw.TransitionReader(args.out) as reader:
            print(f"\ninterrupted: {len(reader)} complete transitions kept in {args.out}")
            print("continue with the same command and --resume")
        raise SystemExit(130) from None
    print(
        f"{result.rows} transitions in {result.path} ({result.new_rows} new, "
        f"{result.seconds:.1f} s, {result.steps_per_second:.0f} steps/s after the first step)"
    )
    if result.skipped_nonfinite:
        print(f"skipped {result.skipped_nonfinite} non-finite transitions")


def shards(parser: argparse.ArgumentParser, args: argparse.Namespace, env_kwargs: dict) -> None:
    """``--shard K/N`` (this process collects one shard) or ``--ray --shards N``."""
    from dynamic_sparsity.analysis import open_reader
    from dynamic_sparsity.sweeps import collect_shard, collect_shards, import_ray

    common = dict(n_envs=args.n_envs, seed=args.seed, policy=args.policy, **env_kwargs)
    common.update(
        threshold=args.threshold, chunk_size=args.chunk_size, compression=args.compression
    )
    if args.shard:
        if args.ray:
            parser.error("--shard K/N collects one shard here; --ray --shards N runs them all")
        k, _, n = args.shard.partition("/")
        if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
            parser.error(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
        path = collect_shard(
            args.env, args.steps, args.out, int(k), int(n),
            resume=args.resume, overwrite=args.overwrite, **common,
        )  # fmt: skip
        files = [path]
    else:
        if not args.shards or args.shards < 1:
            parser.error("--ray needs --shards N (N >= 1)")
        try:
            import_ray()
        except ImportError as err:
            parser.error(str(err))
        files = collect_shards(
            args.env, args.steps, args.out, args.shards, ray=args.ray,
            resume=args.resume, overwrite=args.overwrite, **common,
        )  # fmt: skip
    with open_reader(files) as data:
        print(f"{len(data)} transitions in {len(files)} shard(s): {', '.join(files)}")


if __name__ == "__main__":
    main()
