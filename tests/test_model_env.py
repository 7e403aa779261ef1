"""dynamic_sparsity.mbrl.model_env (ModelVecEnv) and the task functions it uses.

ModelVecEnv's steps against the model's prediction, SB3 training inside it, the
task functions against the real env.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

import jacobian_wrappers as jw
from dynamic_sparsity.mbrl import (
    ModelVecEnv,
)
from tests.helpers import D_A, D_S
from tests.helpers import SMALL_CONFIG as CONFIG
from tests.helpers import linear_rows as _linear_rows
from world_models import (
    DynamicsEnsemble,
    EnsembleTrainer,
    Normaliser,
)


@pytest.fixture(scope="module")
def linear_ensemble():
    ens = DynamicsEnsemble.build("mlp", D_S, D_A, 2, seed=1, **CONFIG.model_kwargs())
    EnsembleTrainer(ens, "state", CONFIG).fit(_linear_rows(1000), epochs=5)
    return ens


def _linear_env(ens, n_envs=4, episode_length=5, **kwargs) -> ModelVecEnv:
    obs = spaces.Box(-np.inf, np.inf, (D_S,), np.float32)
    act = spaces.Box(-np.ones(D_A, np.float32), np.ones(D_A, np.float32))
    kwargs.setdefault("reward", lambda s, a, s2: s2[:, 0])
    return ModelVecEnv(
        ens, n_envs, obs, act, start_states=np.tile([0.0, 1.0, -1.0], (3, 1)),
        episode_length=episode_length, seed=0, **kwargs,
    )  # fmt: skip


def test_model_vec_env_steps_the_model_and_ends_episodes_as_the_real_env(linear_ensemble) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3 warned of a missing render_mode
        env = _linear_env(linear_ensemble)
    obs = env.reset()
    np.testing.assert_array_equal(obs, np.tile([0.0, 1.0, -1.0], (4, 1)))
    rng = np.random.default_rng(0)
    for t in range(1, 6):
        s = env.states
        a = rng.uniform(-2, 2, (4, D_A))  # clipped to the box, as the simulator clamps
        obs, r, dones, infos = env.step(a)
        member = torch.as_tensor([i["member"] for i in infos])
        with torch.no_grad():
            want = np.stack([
                linear_ensemble.members[int(m)].predict_raw(
                    torch.as_tensor(s[i : i + 1], dtype=torch.float32),
                    torch.as_tensor(np.clip(a[i : i + 1], -1, 1), dtype=torch.float32),
                )[0].numpy()
                for i, m in enumerate(member)
            ])  # fmt: skip
        s2 = np.stack([i["next_state"] for i in infos])
        np.testing.assert_allclose(s2, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r, want[:, 0], rtol=1e-5, atol=1e-6)
        assert dones.all() == (t == 5)
    assert all(i["TimeLimit.truncated"] for i in infos)
    np.testing.assert_allclose(np.stack([i["terminal_observation"] for i in infos]), s2, rtol=1e-6)
    np.testing.assert_array_equal(obs, np.tile([0.0, 1.0, -1.0], (4, 1)))  # auto-reset
    assert len(set(member.tolist()) | {0, 1}) == 2  # both members are drawn


def test_model_vec_env_draws_only_the_members_it_is_given(linear_ensemble) -> None:
    env = _linear_env(linear_ensemble, n_envs=16, episode_length=100)
    env.reset()
    np.testing.assert_array_equal(env.members, [0, 1])
    env.members = [1]
    s = env.states
    out = env.step_arrays(np.zeros((16, D_A)))
    np.testing.assert_array_equal(out["member"], 1)
    with torch.no_grad():
        want = linear_ensemble.members[1].predict_raw(
            torch.as_tensor(s, dtype=torch.float32), torch.zeros(16, D_A)
        )
    np.testing.assert_allclose(out["next_state"], want.numpy(), rtol=1e-5, atol=1e-6)
    for bad in ([], [0, 0], [2], [-1]):
        with pytest.raises(ValueError, match=r"distinct indices in \[0, 2\)"):
            env.members = bad


def test_model_vec_env_anchors_a_step_to_a_known_transition(linear_ensemble) -> None:
    env = _linear_env(linear_ensemble, n_envs=8, episode_length=100)
    env.reset()
    rng = np.random.default_rng(4)
    s = rng.normal(size=(8, D_S))
    env.set_states(s)
    a, a0 = rng.uniform(-1, 1, (8, D_A)), rng.uniform(-1, 1, (8, D_A))
    s2_0 = rng.normal(size=(8, D_S))  # any known next states: the anchor's
    out = env.step_arrays(a, anchor=(a0, s2_0))
    t = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        f = [linear_ensemble.members[int(m)] for m in out["member"]]
        want = np.stack([
            s2_0[i] + (f[i].predict_raw(t(s[i : i + 1]), t(a[i : i + 1]))
                       - f[i].predict_raw(t(s[i : i + 1]), t(a0[i : i + 1])))[0].numpy()
            for i in range(8)
        ])  # fmt: skip
    np.testing.assert_allclose(out["next_state"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["reward"], want[:, 0], rtol=1e-5, atol=1e-5)
    # At the anchor's own action the step is the anchor's, whatever the model's error.
    env.set_states(s)
    out = env.step_arrays(a0, anchor=(a0, s2_0))
    np.testing.assert_allclose(out["next_state"], s2_0, atol=1e-12)
    with pytest.raises(ValueError, match=r"anchor actions must be finite, of shape \(8, 2\)"):
        env.step_arrays(a, anchor=(a0[:3], s2_0))
    with pytest.raises(ValueError, match=r"anchor next_states must have shape \(8, 3\)"):
        env.step_arrays(a, anchor=(a0, s2_0[:, :2]))
    with pytest.raises(ValueError, match="anchor must be a pair"):
        env.step_arrays(a, anchor=a0)


def test_model_vec_env_reports_a_non_finite_prediction(linear_ensemble) -> None:
    import copy

    broken = copy.deepcopy(linear_ensemble)
    with torch.no_grad():
        for m in broken.members:
            m.out_mean[1] = float("inf")
    env = _linear_env(broken, episode_length=100)
    env.reset()
    obs, r, dones, infos = env.step(np.zeros((4, D_A)))
    assert dones.all() and all(i.get("nonfinite") for i in infos)
    assert all(i["TimeLimit.truncated"] for i in infos) and np.isfinite(obs).all()
    np.testing.assert_array_equal(r, 0.0)


def test_any_sb3_algorithm_trains_in_the_model(linear_ensemble) -> None:
    """PPO collects its rollouts in the model and updates its policy from them: the rewards it
    stored are the reward function of the model's predicted states."""
    env = _linear_env(linear_ensemble, n_envs=2, episode_length=8)
    agent = PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(32)
    assert agent.num_timesteps == 32
    assert any(
        not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True)
    )
    # The rollout buffer's observations are the model's states (observe = identity here), and
    # its rewards are s'[0] of the model's next states: the states the next row holds.
    buf = agent.rollout_buffer  # after training: observations flattened env by env
    obs, rewards = buf.observations.reshape(2, 16, D_S).swapaxes(0, 1), buf.rewards
    same_episode = ~buf.episode_starts.reshape(16, 2)[1:].astype(bool)
    np.testing.assert_allclose(rewards[:-1][same_episode], obs[1:, :, 0][same_episode], rtol=1e-5)


def test_model_vec_env_bad_input(linear_ensemble, cartpole_env) -> None:
    with pytest.raises(ValueError, match="learned reward"):
        _linear_env(linear_ensemble, reward="learned")
    with pytest.raises(ValueError, match=r"start_states must have shape \(2, 3\)"):
        _linear_env(linear_ensemble).__class__(
            linear_ensemble, 1, spaces.Box(-1, 1, (D_S,)), spaces.Box(-1, 1, (D_A,)),
            start_states=np.zeros((2, 5)), reward=lambda s, a, s2: s2[:, 0],
        )  # fmt: skip
    with pytest.raises(ValueError, match="observe=None"):
        ModelVecEnv(
            linear_ensemble, 1, spaces.Box(-1, 1, (7,)), spaces.Box(-1, 1, (D_A,)),
            start_states=np.zeros((1, D_S)), reward=lambda s, a, s2: s2[:, 0],
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"size 3.*CartpoleBalance.*size 4"):
        ModelVecEnv.from_env(cartpole_env, linear_ensemble)


@pytest.mark.slow  # compiles the task functions / trains SAC briefly
def test_model_vec_env_from_a_playground_env_uses_its_resets_and_task_functions(cartpole_env):
    ens = DynamicsEnsemble.build("mlp", 4, 1, 2, seed=0, **CONFIG.model_kwargs())
    ens.set_normaliser(Normaliser.identity(4, 1))
    env = ModelVecEnv.from_env(cartpole_env, ens, n_envs=8)
    assert env.episode_length == cartpole_env.sim.episode_length
    task = jw.TaskFunctions("CartpoleBalance", "float64")
    obs = env.reset()
    s = env.states
    np.testing.assert_allclose(obs, task.observe(s), rtol=1e-6)
    assert np.abs(s[:, 1]).max() < 0.1 and len(np.unique(s[:, 0])) == 8  # balance resets
    a = np.linspace(-1, 1, 8)[:, None]
    obs, r, _, infos = env.step(a)
    s2 = np.stack([i["next_state"] for i in infos])
    np.testing.assert_allclose(r, task.reward(s2, a), rtol=1e-5)
    np.testing.assert_allclose(obs, task.observe_after(s2, a), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- task functions
def test_task_functions_agree_with_the_real_env(cartpole_env) -> None:
    env = cartpole_env
    task = jw.TaskFunctions("CartpoleBalance", "float64")
    obs = env.reset()
    np.testing.assert_allclose(task.observe(env.states), obs, rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(3)
    for _ in range(14):  # no episode ends (episodes of 15)
        a = rng.uniform(-1, 1, (2, 1))
        obs, r, _, _ = env.step(a)
        t = env.last_transition
        # After a step the real env reads the pole's cos/sin at the positions before
        # its (only) physics substep, the cart position and velocities at s'.
        at_s2 = task.observe(t["next_state"])
        np.testing.assert_allclose(at_s2[:, [0, 3, 4]], obs[:, [0, 3, 4]], rtol=1e-9, atol=1e-12)
        assert np.abs(at_s2[:, 1:3] - obs[:, 1:3]).max() > 1e-6  # read at s', they differ
        after = task.observe_after(t["next_state"], a)
        np.testing.assert_allclose(after, obs, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(task.reward(t["next_state"], a), r, rtol=1e-6, atol=1e-7)
        # The task's own step from the recorded state is the real env's step (no
        # contacts on Cartpole, so the solver's warm start does not matter).
        np.testing.assert_allclose(task.step(t["state"], a), t["next_state"], rtol=0, atol=1e-12)
