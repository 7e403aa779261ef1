"""The fast exact path: implicit solver tangents, verified, against unrolled ones (float64)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jacobian_wrappers as jw

ZERO = 1e-15
# Round-off of a float64 Jacobian: 64 ulps of its largest element. Two programs for the same
# derivative put a few such elements on either side of ZERO; the unrolled solver iterations
# also blur exact structural zeros into noise of this size, which the implicit tangent does
# not (docs/env.md#exact-and-fast).
ROUND_OFF_ULPS = 64
CONTACT_ENVS = {"BallInCup", "CheetahRun", "FingerSpin", "FingerTurnEasy", "WalkerRun"}


def _recorded(sim: jw.Simulator, seed: int, n_steps: int = 400, every: int = 50):
    """Transitions ``(state, action)`` of a random-policy rollout: every ``every``-th, and
    the first 4 others that start in contact."""
    rng = np.random.default_rng(seed)
    state = sim.reset(jax.random.PRNGKey(seed))
    picked, touching, in_contact = [], [], False
    for t in range(n_steps):
        action = rng.uniform(sim.action_low, sim.action_high)
        if t % every == every - 1:
            picked.append((state, action))
        elif in_contact and len(touching) < 4:
            touching.append((state, action))
        out = sim.step(state, action)
        state, in_contact = out.state, int(out.n_contacts) > 0
    return picked + touching, len(touching)


def _ball_resting_in_cup(sim: jw.Simulator, seed: int):
    """BallInCup states with the ball on the cup's floor (a random policy rarely gets there:
    0.02 % of its steps touch). The floor capsule's top is at z = 0.508, the ball's radius
    0.025, its body 0.2 below the cup's: ``ball_z = 0.332`` presses it 1 mm in."""
    state = sim.reset(jax.random.PRNGKey(seed))
    rows = []
    for ball_x, ball_z, ball_vz, push in (
        (0, 0.332, -0.1, 0),
        (0.01, 0.331, 0, 0),
        (0, 0.331, 0, 0.5),
    ):
        s = np.array([0.0, 0.0, ball_x, ball_z, 0.0, 0.0, 0.0, ball_vz])
        with sim.scope():
            data = sim.space.set(state.data, jax.numpy.asarray(s))
        rows.append((sim.refresh(state.replace(data=data)), np.array([push, push], float)))
    assert all(int(sim.step(st, a).n_contacts) > 0 for st, a in rows)
    return rows


def _assert_same_jacobians(fast: np.ndarray, plain: np.ndarray) -> None:
    """Equal Jacobians, and zero patterns at ZERO equal except in round-off elements."""
    scale = np.abs(plain).max(axis=(-2, -1), keepdims=True)
    np.testing.assert_array_less(np.abs(fast - plain) / scale, 1e-9)
    round_off = ROUND_OFF_ULPS * np.finfo(np.float64).eps * np.broadcast_to(scale, plain.shape)
    # No exact zero of the unrolled path is lost ...
    assert np.abs(fast[plain == 0.0]).max(initial=0.0) < ZERO
    # ... and where the patterns differ, both values are round-off.
    flips = (np.abs(fast) < ZERO) != (np.abs(plain) < ZERO)
    worst = np.maximum(np.abs(fast), np.abs(plain))[flips] / round_off[flips]
    assert worst.max(initial=0.0) < 1.0


@pytest.mark.slow
@pytest.mark.parametrize("env_name", sorted(jw.STUDY_ENVS))
def test_implicit_jacobians_equal_unrolled_ones(env_name: str) -> None:
    """On recorded states of each study env, contact states included, the default path
    (implicit where verified, recomputed elsewhere) gives the unrolled path's Jacobians."""
    sim = jw.get_simulator(env_name, "float64")
    rows, n_touching = _recorded(sim, seed=1)
    if env_name == "BallInCup":
        rows += _ball_resting_in_cup(sim, seed=0)
        n_touching += 3
    if env_name in CONTACT_ENVS:
        assert n_touching > 0, "no contact state recorded"
    fast = np.stack([np.asarray(sim.jacobian(st, a, "implicit")[2]) for st, a in rows])
    plain = np.stack([np.asarray(sim.jacobian(st, a, "unrolled")[2]) for st, a in rows])
    _assert_same_jacobians(fast, plain)


@pytest.mark.slow
def test_unverified_transitions_are_recomputed() -> None:
    """BallInCup runs one Newton iteration per substep: where it stops between two pieces
    of the solver's cost (the rope tightening, the ball touching the cup) the implicit
    tangent is not the step's derivative. Such transitions are flagged and recomputed."""
    sim = jw.get_simulator("BallInCup", "float64")
    raw = sim.scoped(jax.jit(lambda st, a: sim.transition(st, a, True, "implicit")))
    rows, _ = _recorded(sim, seed=2, every=25)
    rows += _ball_resting_in_cup(sim, seed=1)
    wrong = {True: 0.0, False: 0.0}
    for state, action in rows:
        out = raw(state, action)
        plain = np.asarray(sim.jacobian(state, action, "unrolled")[2])
        exact = sim.step_jacobian(state, action)
        assert bool(exact.verified) == bool(out.verified)
        _assert_same_jacobians(np.asarray(exact.jacobian), plain)
        err = np.abs(np.asarray(out.jacobian) - plain).max() / np.abs(plain).max()
        verified = bool(out.verified)
        wrong[verified] = max(wrong[verified], err)
    assert wrong[True] < 1e-9  # verified: the implicit tangent is the step's derivative
    assert wrong[False] > 1e-3  # not verified: it can be far off, hence the recomputation


@pytest.mark.slow
def test_vec_env_recomputes_unverified_rows() -> None:
    """The VecEnv's second call (the smallest bucket that holds the rows) fills the flagged rows:
    the same Jacobians as a VecEnv that unrolls every step, after a warm-up or without."""
    kwargs = {"n_envs": 10, "seed": 3, "precision": "float64"}
    fast = jw.PlaygroundVecEnv("BallInCup", **kwargs)
    plain = jw.PlaygroundVecEnv("BallInCup", jacobian_method="unrolled", **kwargs)
    fast.reset(), plain.reset()
    before = fast.states
    fast.warm_up()  # compiles the recomputation up front; changes no state, counts nothing
    np.testing.assert_array_equal(fast.states, before)
    assert fast.jacobian_counts == {"step": 0, "recomputed": 0}
    rng = np.random.default_rng(0)
    for _ in range(12):
        actions = rng.uniform(-1, 1, (10, 2))
        fast.step(actions), plain.step(actions)
        a, b = fast.last_transition, plain.last_transition
        np.testing.assert_allclose(a["next_state"], b["next_state"], rtol=0, atol=1e-10)
        for key in ("jacobian_state", "jacobian_action"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-7, atol=1e-9)
        np.testing.assert_array_equal(a["jacobian_nonsmooth"], b["jacobian_nonsmooth"])
    counts = fast.jacobian_counts
    assert counts["step"] + counts["recomputed"] == 120
    assert counts["recomputed"] > 0
    assert plain.jacobian_counts == {"step": 120, "recomputed": 0}
    # More rows than the smallest bucket (8) go in one call of the next (here n_envs = 10):
    # all ten rows of one more step, recomputed, are the unrolled VecEnv's Jacobians.
    assert fast._recompute_buckets() == (8, 10)
    state = fast._state
    actions = rng.uniform(-1, 1, (10, 2))
    fast.step(actions), plain.step(actions)
    flat, flags = fast._recompute(state, np.arange(10))
    b = plain.last_transition
    want = np.concatenate([b["jacobian_state"], b["jacobian_action"]], axis=2).reshape(10, -1)
    np.testing.assert_allclose(flat, want, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(flags, b["jacobian_nonsmooth"])


def test_jacobian_method_is_checked_before_compiling() -> None:
    for make in (
        lambda: jw.PlaygroundVecEnv("CartpoleBalance", 2, jacobian_method="exact"),
        lambda: jw.PlaygroundEnv("CartpoleBalance", jacobian_method=1),
    ):
        with pytest.raises(ValueError, match=r"jacobian_method must be one of \('implicit'"):
            make()
    env = jw.PlaygroundEnv("CartpoleBalance")
    with pytest.raises(ValueError, match="jacobian_method='unrolled': a Playground env"):
        jw.JacobianWrapper(env, jacobian_method="unrolled")


def test_default_method_follows_the_precision() -> None:
    """Implicit in float64; unrolled in float32, where round-off leaves most capped solves
    unverified (each computed twice); an explicit choice wins."""
    for precision, method in (("float64", "implicit"), ("float32", "unrolled")):
        assert jw.PlaygroundVecEnv("CartpoleBalance", 2, precision=precision).jacobian_method == (
            method
        )
        assert jw.PlaygroundEnv("CartpoleBalance", precision=precision).jacobian_method == method
    env = jw.PlaygroundVecEnv("CartpoleBalance", 2, precision="float32", jacobian_method="implicit")
    assert env.jacobian_method == "implicit"


def test_cartpole_implicit_and_unrolled_agree(cartpole64) -> None:
    """The default (implicit) Jacobians of the session's CartpoleBalance env are the unrolled
    ones; its solver's only constraint (the rail limit) is inactive, so all are verified."""
    sim = cartpole64.sim
    rows, _ = _recorded(sim, seed=2, n_steps=60, every=20)
    for state, action in rows:
        out = sim.step_jacobian(state, action)
        assert bool(out.verified)
        plain = np.asarray(sim.jacobian(state, action, "unrolled")[2])
        _assert_same_jacobians(np.asarray(out.jacobian), plain)
