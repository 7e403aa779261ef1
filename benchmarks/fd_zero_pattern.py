"""Autodiff against MuJoCo's C finite differences, element by element (float64).

On each env, a uniformly random policy runs ``PlaygroundVecEnv`` (float64);
at every step the exact Jacobians (``backend="mjx"``, zero: ``|J| < 1e-15``)
and MuJoCo's C finite differences of the same control steps from the same
states, actions and solver warm starts (``backend="mujoco"``, zero: exactly
0.0) are compared element by element. Printed per env: how many elements are
zero in each, in both, in only one; the largest difference; and the largest
difference between the C and the MJX next state.

Gymnasium ids (``HalfCheetah-v5``) run an exact and a C-FD ``JacobianWrapper``
of the env in lockstep (same seed, same actions: both take the env's own step).

    python benchmarks/fd_zero_pattern.py [--envs CartpoleBalance CheetahRun HalfCheetah-v5]
        [--steps 200] [--n-envs 16] [--fd-thresholds 0 1e-10 1e-8 1e-6]

``--fd-thresholds``: a second table, the noise-aware zero test of the finite
differences: an element is an FD zero when ``|J_fd| <= tau``. For each
``tau``, on the transitions whose C next state is the MJX one (to 1e-10,
relative) and on the columns that are smooth there: the **false-zero rate**
(FD zero where the exact Jacobian is not, share of the exact non-zeros) and
the **missed-zero rate** (exact zero that the FD test misses, share of the
exact zeros).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np

import jacobian_wrappers as jw
from dynamic_sparsity.analysis import DEFAULT_THRESHOLD
from jacobian_wrappers.gym_mujoco import GYM_V5_ENVS


def _playground_pairs(env_name: str, steps: int, n_envs: int, seed: int) -> Iterator[tuple]:
    """``(exact, fd, same, nonsmooth, state_diff)`` batches of a Playground env's steps.

    ``same``: rows whose C next state is the MJX one (to 1e-10, relative);
    ``state_diff``: the largest difference between the two.
    """
    venv = jw.PlaygroundVecEnv(env_name, n_envs, seed=seed, precision="float64")
    venv.reset()
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        actions = rng.uniform(-1, 1, (n_envs, *venv.action_space.shape))
        warm = venv.warmstarts
        venv.step(actions)
        tr = venv.last_transition
        ad = np.concatenate([tr["jacobian_state"], tr["jacobian_action"]], axis=2)
        c_next, fd, _ = venv.sim.fd_jacobian(tr["state"], actions, warm)
        diff = np.abs(c_next - tr["next_state"])
        same = np.all(diff <= 1e-10 * (1 + np.abs(tr["next_state"])), axis=1)
        yield ad, fd, same, tr["jacobian_nonsmooth"], float(diff.max())


def _gymnasium_pairs(env_id: str, steps: int, seed: int) -> Iterator[tuple]:
    """The same batches for a Gymnasium env: an exact and a C-FD wrapper in lockstep.

    Both wrap their own copy of the env, reset with the same seed and stepped
    with the same actions, so both take the env's own C step; the exact one's
    mismatch flag says where its MJX step left it.
    """
    import gymnasium as gym

    exact = jw.JacobianWrapper(gym.make(env_id), backend="mjx")
    fd = jw.JacobianWrapper(gym.make(env_id), backend="mujoco")
    exact.reset(seed=seed)
    fd.reset(seed=seed)
    space = exact.action_space
    rng = np.random.default_rng(seed)
    for k in range(steps):
        action = rng.uniform(space.low, space.high)
        _, _, term, trunc, e = exact.step(action)
        _, _, _, _, f = fd.step(action)

        def jac(info: dict) -> np.ndarray:
            return np.concatenate([info["jacobian_state"], info["jacobian_action"]], axis=1)[None]

        # Both differentiate the env's own step, unless MJX's left it (flagged).
        same = np.array([not e.get("jacobian_mismatch", False)])
        yield jac(e), jac(f), same, e["jacobian_nonsmooth"][None], 0.0
        if term or trunc:
            exact.reset(seed=seed + k + 1)
            fd.reset(seed=seed + k + 1)


def compare(
    env_name: str, steps: int, n_envs: int, seed: int = 0, thresholds: tuple[float, ...] = ()
) -> dict[str, float]:
    """Counts of zero elements of both Jacobians over the transitions of ``env_name``.

    A Playground task runs ``steps x n_envs`` transitions; a Gymnasium id
    (``HalfCheetah-v5``) runs ``steps x n_envs`` steps of one env pair.
    With ``thresholds``, also ``rates[tau] = (false_zero_rate, missed_zero_rate)``
    of the test ``|J_fd| <= tau`` (see the module docstring).
    """
    if env_name in GYM_V5_ENVS:
        pairs = _gymnasium_pairs(env_name, steps * n_envs, seed)
    else:
        pairs = _playground_pairs(env_name, steps, n_envs, seed)
    counts = dict.fromkeys(["elements", "ad", "fd", "both", "ad_only", "fd_only"], 0)
    max_diff = max_state_diff = 0.0
    # Per tau: FD zeros among exact non-zeros, exact zeros that FD misses, and the totals.
    tally = {t: np.zeros(4, np.int64) for t in thresholds}
    for ad, fd, same, nonsmooth, state_diff in pairs:
        ad_zero, fd_zero = np.abs(ad) < DEFAULT_THRESHOLD, fd == 0.0
        counts["elements"] += ad.size
        counts["ad"] += int(ad_zero.sum())
        counts["fd"] += int(fd_zero.sum())
        counts["both"] += int((ad_zero & fd_zero).sum())
        counts["ad_only"] += int((ad_zero & ~fd_zero).sum())
        counts["fd_only"] += int((fd_zero & ~ad_zero).sum())
        max_diff = max(max_diff, float(np.abs(ad - fd).max()))
        max_state_diff = max(max_state_diff, state_diff)  # not measured for Gymnasium pairs
        if thresholds:
            # Columns that are smooth at the step, in every row (d s'_i / d x_j for all i).
            smooth = np.broadcast_to((~nonsmooth)[:, None, :] & same[:, None, None], ad.shape)
            exact_zero = ad_zero & smooth
            exact_nonzero = ~ad_zero & smooth
            for tau, row in tally.items():
                fd_is_zero = np.abs(fd) <= tau
                row += [
                    int((fd_is_zero & exact_nonzero).sum()),
                    int((~fd_is_zero & exact_zero).sum()),
                    int(exact_nonzero.sum()),
                    int(exact_zero.sum()),
                ]
    rates = {
        t: (row[0] / max(row[2], 1), row[1] / max(row[3], 1), int(row[2] + row[3]))
        for t, row in tally.items()
    }
    return {**counts, "max_diff": max_diff, "max_state_diff": max_state_diff, "rates": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(jw.STUDY_ENVS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument(
        "--fd-thresholds", type=float, nargs="*", default=[], help="taus of |J_fd| <= tau"
    )
    args = parser.parse_args()
    print(
        "| env | transitions | zeros autodiff (%) | zeros C FD (%) | in both | autodiff only "
        "| C FD only | pattern agreement (%) | max abs diff J | max abs diff s' (C vs MJX) |"
    )
    print("|---" * 10 + "|")
    results = {}
    for env_name in args.envs:
        r = results[env_name] = compare(
            env_name, args.steps, args.n_envs, thresholds=tuple(args.fd_thresholds)
        )
        n = r["elements"]
        agree = 100 * (1 - (r["ad_only"] + r["fd_only"]) / n)
        print(
            f"| {env_name} | {args.steps * args.n_envs} | {100 * r['ad'] / n:.2f} "
            f"| {100 * r['fd'] / n:.2f} | {r['both']:,} | {r['ad_only']:,} | {r['fd_only']:,} "
            f"| {agree:.3f} | {r['max_diff']:.3g} | "
            f"{'-' if env_name in GYM_V5_ENVS else format(r['max_state_diff'], '.3g')} |",
            flush=True,
        )
    if args.fd_thresholds:
        taus = args.fd_thresholds
        print("\nNoise-aware FD zero test |J_fd| <= tau: false-zero rate / missed-zero rate (%)")
        print("| env | compared elements | " + " | ".join(f"tau={t:g}" for t in taus) + " |")
        print("|---" * (len(taus) + 2) + "|")
        for env_name, r in results.items():
            cells = [f"{100 * r['rates'][t][0]:.3f} / {100 * r['rates'][t][1]:.2f}" for t in taus]
            n = r["rates"][taus[0]][2]
            print(f"| {env_name} | {n:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
