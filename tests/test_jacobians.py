"""Exact Jacobians against central finite differences of the same compiled step (float64)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jacobian_wrappers as jw
from tests.conftest import finite_difference_jacobian, rollout_states

ZERO = 1e-15


def _check_against_fd(sim: jw.Simulator, state, action: np.ndarray) -> None:
    jac = np.asarray(sim.step_jacobian(state, action).jacobian)
    fd = finite_difference_jacobian(sim, state, action)
    assert jac.shape == (sim.space.tangent_dim, sim.space.tangent_dim + sim.action_size)
    np.testing.assert_allclose(jac, fd, rtol=1e-4, atol=1e-5)
    # An exact zero of the Jacobian is a zero (to round-off) of the finite difference.
    zeros = np.abs(jac) < ZERO
    assert np.abs(fd[zeros]).max(initial=0.0) < 1e-8


@pytest.mark.parametrize("env_name", ["CartpoleBalance", "ReacherHard"])
def test_jacobian_matches_finite_difference(env_name: str) -> None:
    sim = jw.get_simulator(env_name, "float64")
    states = rollout_states(sim, n_steps=60, every=20, seed=3)
    assert len(states) == 3
    for state, action in states:
        _check_against_fd(sim, state, action)


def test_jacobian_with_contacts_matches_finite_difference() -> None:
    """FingerSpin: the finger pushes the spinner (contacts), the spinner turns."""
    sim = jw.get_simulator("FingerSpin", "float64")
    checked = 0
    for state, action in rollout_states(sim, n_steps=120, every=30, seed=1):
        s = np.array(sim.space.get(state.data))
        # Friction-loss hinge at rest is a known MJX autodiff artifact (test below);
        # give the spinner a real velocity, as when the finger spins it.
        s[5] = 2.0 + s[5]
        with sim.scope():
            state = state.replace(data=sim.space.set(state.data, jax.numpy.asarray(s)))
        _check_against_fd(sim, state, action)
        checked += 1
    assert checked == 4


def test_frictionloss_at_rest_is_a_known_autodiff_artifact() -> None:
    """At exactly zero velocity of FingerSpin's friction-loss hinge, MJX autodiff
    disagrees with the finite difference in that column only (documented in README)."""
    sim = jw.get_simulator("FingerSpin", "float64")
    state, action = rollout_states(sim, n_steps=60, every=60, seed=1)[0]
    s = np.array(sim.space.get(state.data))
    s[5] = 0.0
    with sim.scope():
        state = state.replace(data=sim.space.set(state.data, jax.numpy.asarray(s)))
    jac = np.asarray(sim.step_jacobian(state, action).jacobian)
    fd = finite_difference_jacobian(sim, state, action)
    other = np.ones(jac.shape[1], dtype=bool)
    other[5] = False
    np.testing.assert_allclose(jac[:, other], fd[:, other], rtol=1e-4, atol=1e-5)
    assert not np.allclose(jac[:, 5], fd[:, 5], rtol=1e-2, atol=1e-3)


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
