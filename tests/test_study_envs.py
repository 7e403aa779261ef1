"""All eight environments of the study: construct, step with Jacobians (slow: ~8 compiles)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import jacobian_wrappers as jw
from tests.helpers import finite_difference_jacobian

D_S = {
    "BallInCup": 8,
    "CartpoleBalance": 4,
    "CheetahRun": 18,
    "ReacherHard": 4,
    "FingerSpin": 6,
    "FingerTurnEasy": 6,
    "WalkerRun": 18,
    "SwimmerSwimmer6": 16,
}


def test_study_envs_are_registered() -> None:
    assert set(jw.STUDY_ENVS) == set(D_S)
    for name in jw.STUDY_ENVS:
        assert name in jw.available_envs()
        assert jw.gym_id(name) in gym.registry


@pytest.mark.slow
@pytest.mark.parametrize("env_name", sorted(D_S))
def test_study_env_steps_with_jacobians(env_name: str) -> None:
    env = jw.JacobianWrapper(gym.make(jw.gym_id(env_name), precision="float64"))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    d_s, d_a = D_S[env_name], env.action_space.shape[0]
    assert len(env.unwrapped.state_labels) == d_s
    assert len(env.unwrapped.action_labels) == d_a
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert info["jacobian_state"].shape == (d_s, d_s)
    assert info["jacobian_action"].shape == (d_s, d_a)
    assert np.isfinite(info["jacobian_state"]).all() and np.isfinite(info["jacobian_action"]).all()
    assert np.isfinite(reward) and not terminated and not truncated
    # One more step, its Jacobian against central differences of the same compiled step,
    # where the step is smooth (the two step sizes agree: no contact switch inside h).
    inner = env.unwrapped
    state, action = inner._state, env.action_space.sample()
    info = env.step(action)[4]
    jac = np.concatenate([info["jacobian_state"], info["jacobian_action"]], axis=1)
    fd6 = finite_difference_jacobian(inner.sim, state, info["action"], h=1e-6)
    fd5 = finite_difference_jacobian(inner.sim, state, info["action"], h=1e-5)
    scale = np.abs(fd6).max()
    smooth = (np.abs(fd5 - fd6) <= 1e-6 * scale) & ~info["jacobian_nonsmooth"][None, :]
    assert smooth.mean() > 0.8, smooth.mean()
    np.testing.assert_allclose(jac[smooth], fd6[smooth], rtol=1e-4, atol=1e-6 * scale)


def _avals(tree) -> list:
    import jax

    return [(jax.tree_util.keystr(p), x.shape, x.dtype, x.weak_type)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)]  # fmt: skip


def test_a_reset_state_has_the_types_a_step_returns() -> None:
    """Else the jitted step compiles twice: once for the reset's state, once for its own.

    CheetahRun's reset leaves ``data.time`` a Python float, which became a weakly
    typed array and cost a second compile of 33-90 s. Traced only, the step is not
    compiled (the other study envs' resets hold arrays only; checked once, 160 s).
    """
    import jax

    sim = jw.get_simulator("CheetahRun", "float32")
    with sim.scope():
        state = jax.eval_shape(sim.pure_reset, jax.random.PRNGKey(0))
        action = jax.ShapeDtypeStruct((sim.action_size,), sim.dtype)
        after = jax.eval_shape(lambda s, a: sim.transition(s, a, False).state, state, action)
    assert _avals(state) == _avals(after)
