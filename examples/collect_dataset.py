"""Collect transitions with exact Jacobians from a Playground task into an HDF5 data set.

    python examples/collect_dataset.py --env CheetahRun --steps 100000 --policy random \
        --precision float64 --out data/cheetah.h5
    python examples/collect_dataset.py --env CheetahRun --steps 100000 \
        --policy experts/CheetahRun.zip --out data/cheetah_expert.h5

An interrupted run (Ctrl-C, or killed) keeps every complete chunk; ``--resume``
continues the file up to ``--steps`` rows.
"""

from __future__ import annotations

import argparse

import jacobian_wrappers as jw
from sparsity import DEFAULT_THRESHOLD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, choices=jw.available_envs())
    parser.add_argument("--steps", type=int, required=True, help="transitions in the file")
    parser.add_argument("--policy", default="random", help="'random' or an SB3 model .zip")
    parser.add_argument("--precision", default="float64", choices=jw.PRECISIONS)
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
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument(
        "--compression", default=None, choices=["lzf", "gzip"], help="default: none (fastest)"
    )
    parser.add_argument("--no-jacobians", action="store_true", help="store s, a, s' only")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue an existing file")
    group.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args()

    env = jw.PlaygroundVecEnv(
        args.env,
        args.n_envs,
        seed=args.seed,
        precision=args.precision,
        jacobians=not args.no_jacobians,
        episode_length=args.episode_length,
        backend=args.backend,
        jacobian_method=args.jacobian_method,
    )
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


if __name__ == "__main__":
    main()
