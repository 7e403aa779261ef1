"""Exact Jacobians against central finite differences of the same compiled step (float64)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jacobian_wrappers as jw
from tests.helpers import finite_difference_jacobian, rollout_states

ZERO = 1e-15


def _check_against_fd(sim: jw.Simulator, state, action: np.ndarray) -> None:
    jac = np.asarray(sim.step_jacobian(state, action).jacobian)
    fd = finite_difference_jacobian(sim, state, action)
    assert jac.shape == (sim.space.tangent_dim, sim.space.tangent_dim + sim.action_size)
    np.testing.assert_allclose(jac, fd, rtol=1e-4, atol=1e-5)
    # An exact zero of the Jacobian is a zero (to round-off) of the finite difference. At
    # h=1e-6 the difference's round-off floor is ~eps |s'| / h: 2.5e-8 was seen on CheetahRun
    # for d qvel / d qpos:rootx, zero by translation invariance; h=1e-4 lowers it 100x.
    zeros = np.abs(jac) < ZERO
    coarse = finite_difference_jacobian(sim, state, action, h=1e-4)
    assert np.abs(coarse[zeros]).max(initial=0.0) < 1e-8


@pytest.mark.parametrize("env_name", ["CartpoleBalance", "ReacherHard"])
def test_jacobian_matches_finite_difference(env_name: str) -> None:
    sim = jw.get_simulator(env_name, "float64")
    states = rollout_states(sim, n_steps=60, every=20, seed=3)
    assert len(states) == 3
    for state, action in states:
        _check_against_fd(sim, state, action)


def _at_rest(sim: jw.Simulator, seed: int):
    """A FingerSpin state with the friction-loss hinge exactly at rest (as after reset)."""
    state, action = rollout_states(sim, n_steps=60, every=60, seed=seed)[0]
    s = np.array(sim.space.get(state.data))
    assert s[5] == 0.0  # the finger has not touched the spinner: it never moved
    return state, action


def test_jacobian_with_contacts_matches_finite_difference() -> None:
    """FingerSpin: the finger pushes the spinner (contacts), the spinner turns or rests."""
    sim = jw.get_simulator("FingerSpin", "float64")
    checked = 0
    for i, (state, action) in enumerate(rollout_states(sim, n_steps=120, every=30, seed=1)):
        if i % 2:  # half of the states with the spinner turning, as when the finger spins it
            s = np.array(sim.space.get(state.data))
            s[5] = 2.0 + s[5]
            with sim.scope():
                state = state.replace(data=sim.space.set(state.data, jax.numpy.asarray(s)))
        _check_against_fd(sim, state, action)
        checked += 1
    assert checked == 4


def test_frictionloss_at_rest_matches_finite_difference() -> None:
    """At exactly zero velocity of FingerSpin's friction-loss hinge the solver stops before
    its first iteration; plain jacfwd then returns the tangent of the solver's initial guess
    (165.8 for d qvel:hinge / d qvel:hinge). The corrected tangent matches the finite
    difference in every column."""
    sim = jw.get_simulator("FingerSpin", "float64")
    state, action = _at_rest(sim, seed=0)
    jac = np.asarray(sim.step_jacobian(state, action).jacobian)
    fd = finite_difference_jacobian(sim, state, action)
    np.testing.assert_allclose(jac, fd, rtol=1e-4, atol=1e-5)
    assert abs(fd[5, 5]) < 1.0  # the friction holds the spinner: a small perturbation dies out
    # Without the correction (MJX's solver as it is), forward mode gets it wrong.
    space = sim.space

    def plain(x):
        s0 = space.get(state.data)
        new = sim.env.step(
            state.replace(data=space.set(state.data, s0 + x[: space.tangent_dim])),
            jax.numpy.asarray(action) + x[space.tangent_dim :],
        )
        return space.get(new.data)

    with sim.scope():
        raw = np.asarray(jax.jit(jax.jacfwd(plain))(jax.numpy.zeros(jac.shape[1])))
    assert abs(raw[5, 5]) > 10 * abs(fd[5, 5]) + 1.0


def test_action_on_its_control_bound_is_flagged_non_smooth() -> None:
    """clip() is not differentiable at a bound: autodiff (and a central difference) report half
    the slope from inside. The column is flagged; elsewhere nothing is."""
    sim = jw.get_simulator("CartpoleBalance", "float64")
    state, _ = rollout_states(sim, n_steps=10, every=10, seed=0)[0]
    out = sim.step_jacobian(state, np.array([1.0]))
    np.testing.assert_array_equal(np.asarray(out.nonsmooth), [False] * 4 + [True])
    h = 1e-7
    with sim.scope():
        inside = (
            np.asarray(sim.step(state, np.array([1.0])).s_next)
            - np.asarray(sim.step(state, np.array([1.0 - h])).s_next)
        ) / h
    jac_a = np.asarray(out.jacobian)[:, 4]
    np.testing.assert_allclose(jac_a, inside / 2, rtol=1e-4, atol=1e-9)
    for a in (0.999, -0.3, 1.5):  # inside, or outside where the slope is truly 0
        flags = np.asarray(sim.step_jacobian(state, np.array([a])).nonsmooth)
        assert not flags.any(), a


@pytest.mark.slow
def test_cheetah_ground_contacts_match_finite_difference() -> None:
    sim = jw.get_simulator("CheetahRun", "float64")
    for state, action in rollout_states(sim, n_steps=90, every=30, seed=2):
        _check_against_fd(sim, state, action)


def test_float32_turns_exact_zeros_into_round_off(cartpole32, cartpole64) -> None:
    """The same transition in both precisions: float64 zeros stay small in float32."""
    env64, env32 = jw.JacobianWrapper(cartpole64), jw.JacobianWrapper(cartpole32)
    env64.reset(seed=5)
    env32.reset(seed=5)
    env32.unwrapped.set_state(env64.unwrapped.state.astype(np.float32))
    _, _, _, _, i64 = env64.step(np.array([0.5]))
    _, _, _, _, i32 = env32.step(np.array([0.5]))
    assert i64["jacobian_state"].dtype == np.float64
    assert i32["jacobian_state"].dtype == np.float32
    np.testing.assert_allclose(i32["jacobian_state"], i64["jacobian_state"], rtol=1e-3, atol=1e-5)
    zeros64 = np.abs(i64["jacobian_state"]) < ZERO
    assert zeros64.any()
    assert np.abs(i32["jacobian_state"][zeros64]).max() < 1e-6


@pytest.mark.slow
def test_free_joint_jacobian_is_in_tangent_space() -> None:
    """FishSwim has a free joint (nq=14, nv=13): J_s is (2 nv, 2 nv), checked by FD."""
    sim = jw.get_simulator("FishSwim", "float64")
    assert sim.space.dim == 27 and sim.space.tangent_dim == 26
    assert sim.space.tangent_labels[3:6] == ("qpos:root:rx", "qpos:root:ry", "qpos:root:rz")
    for state, action in rollout_states(sim, n_steps=20, every=10, seed=0):
        _check_against_fd(sim, state, action)
