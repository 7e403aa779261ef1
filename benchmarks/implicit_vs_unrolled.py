"""The exact path's two solver tangents, element by element, on random-policy transitions.

For each env, ``--n-envs`` envs under a uniform random policy (float64), at
every step from the same states: the default path (implicit solver tangent,
each transition it cannot verify recomputed unrolled, as ``PlaygroundVecEnv``
does) and the unrolled one (tangents through every solver iteration).
Printed: the share verified; the largest difference relative to each
Jacobian's largest element; and the elements whose zero test
``|J| < 1e-15`` differs, split by direction, with their largest magnitude
relative to the Jacobian's largest element (round-off is ~1e-16).

    python benchmarks/implicit_vs_unrolled.py [--envs CheetahRun WalkerRun] [--steps 8]
        [--n-envs 64]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jacobian_wrappers as jw
from dynamic_sparsity.analysis import DEFAULT_THRESHOLD


def compare(env_name: str, steps: int, n: int, seed: int = 0) -> dict[str, float]:
    """Counts over ``steps x n`` transitions of ``env_name``."""
    sim = jw.get_simulator(env_name, "float64")

    def program(method: str):
        fn = jax.vmap(lambda st, a: sim.transition(st, a, True, method))
        return sim.scoped(jax.jit(fn))

    fast, plain = program("implicit"), program("unrolled")
    step = sim.scoped(jax.jit(jax.vmap(lambda st, a: sim.transition(st, a, False).state)))
    rng = np.random.default_rng(seed)
    with sim.scope():
        state = sim.batch_reset(jax.random.split(jax.random.PRNGKey(seed), n))
    out = dict.fromkeys(["transitions", "verified", "elements", "lost", "gained"], 0)
    out.update(rel_diff=0.0, flip_rel=0.0)
    for _ in range(steps):
        actions = jnp.asarray(rng.uniform(sim.action_low, sim.action_high, (n, sim.action_size)))
        a, b = fast(state, actions), plain(state, actions)
        verified = np.asarray(a.verified)
        ref = np.asarray(b.jacobian)
        exact = np.where(verified[:, None, None], np.asarray(a.jacobian), ref)
        scale = np.abs(ref).max(axis=(1, 2), keepdims=True)
        z_exact, z_ref = np.abs(exact) < DEFAULT_THRESHOLD, np.abs(ref) < DEFAULT_THRESHOLD
        flips = z_exact != z_ref
        out["transitions"] += n
        out["verified"] += int(verified.sum())
        out["elements"] += ref.size
        out["gained"] += int((z_exact & ~z_ref).sum())  # zero only on the default path
        out["lost"] += int((z_ref & ~z_exact).sum())  # zero only on the unrolled path
        out["rel_diff"] = max(out["rel_diff"], float((np.abs(exact - ref) / scale).max()))
        mag = np.maximum(np.abs(exact), np.abs(ref)) / scale
        out["flip_rel"] = max(out["flip_rel"], float(mag[flips].max(initial=0.0)))
        state = step(state, actions)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(jw.STUDY_ENVS))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--n-envs", type=int, default=64)
    args = parser.parse_args()
    print(
        "| env | transitions | implicit verified | max rel diff J | elements | zero only "
        "on default path | zero only unrolled | largest flipped |J| / max |J| |"
    )
    print("|---" * 8 + "|")
    for env_name in args.envs:
        r = compare(env_name, args.steps, args.n_envs)
        print(
            f"| {env_name} | {r['transitions']} | {r['verified'] / r['transitions']:.1%} "
            f"| {r['rel_diff']:.1e} | {r['elements']:,} | {r['gained']} | {r['lost']} "
            f"| {r['flip_rel']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
