"""World models in the RL loop: the Jacobian replay buffer, the ensemble, ModelVecEnv, MBPO.

Checked against independent computations: the buffer's rows against the
steps fed to it and the states chaining within episodes, its HDF5 export
against the file read back, the ensemble's per-row members against each
member run alone, ModelVecEnv's steps against the model's prediction, the
task functions against the real env, MBPO's logged true sparsity against a
direct count on the buffer's Jacobians, and a resumed run against the saved one.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

import jacobian_wrappers as jw
from dynamic_sparsity.analysis.storage import TransitionReader
from dynamic_sparsity.mbrl import (
    MBPO,
    JacobianReplayBuffer,
    MBPOCheckpointCallback,
    MixedSampler,
    ModelBuffer,
    ModelVecEnv,
    SimulatorModel,
)
from jacobian_wrappers.vec_transitions import dataset_meta
from tests.helpers import D_A, D_S, A, B
from world_models import (
    DynamicsEnsemble,
    EnsembleTrainer,
    Normaliser,
    TrainConfig,
)
from world_models.contact_features import contact_spec

CONFIG = TrainConfig(width=32, depth=2, dropout=0.0, lr=3e-3, weight_decay=0.0, batch_size=64)


@pytest.fixture(scope="module")
def cartpole_env():
    """A float64 CartpoleBalance VecEnv with Jacobians and short episodes (dones happen)."""
    return jw.PlaygroundVecEnv("CartpoleBalance", 2, seed=0, precision="float64", episode_length=15)


def _fill(env, buffer, steps: int, seed: int = 0):
    """Step ``env`` with random actions into ``buffer``; return the transitions fed."""
    rng = np.random.default_rng(seed)
    obs = env.reset()
    fed = []
    for _ in range(steps):
        a = rng.uniform(-1, 1, (env.num_envs, 1))
        new_obs, r, d, infos = env.step(a)
        buffer.add(obs, new_obs, a, r, d, infos)
        fed.append({k: np.array(v) for k, v in env.last_transition.items()})
        obs = new_obs
    return fed


def _linear_rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, D_S))
    a = rng.uniform(-1, 1, (n, D_A))
    s2 = s @ A.T + a @ B.T
    return {
        "state": s, "action": a, "next_state": s2, "reward": s2[:, 0] - 0.5 * a[:, 1],
        "jacobian_state": np.broadcast_to(A, (n, D_S, D_S)).copy(),
        "jacobian_action": np.broadcast_to(B, (n, D_S, D_A)).copy(),
        "jacobian_nonsmooth": np.zeros((n, D_S + D_A), bool),
    }  # fmt: skip


# ----------------------------------------------------------------- replay buffer
def test_buffer_keeps_the_ground_truth_of_every_step(cartpole_env) -> None:
    env = cartpole_env
    buf = JacobianReplayBuffer(80, env.observation_space, env.action_space, n_envs=2)
    fed = _fill(env, buf, 30)
    rows = buf.rows()
    for key in ("state", "action", "next_state", "jacobian_state", "jacobian_action"):
        want = np.concatenate([f[key] for f in fed])  # slot-major, env-minor, as rows()
        np.testing.assert_array_equal(rows[key], want)
    assert buf.has_jacobians and rows["has_jacobian"].all()
    # Within an episode the next state of one step is the state of the next (per env).
    for e in range(2):
        ep, s, s2 = rows["episode"][e::2], rows["state"][e::2], rows["next_state"][e::2]
        same = ep[1:] == ep[:-1]
        np.testing.assert_array_equal(s2[:-1][same], s[1:][same])
        assert (~same).sum() == 1  # one episode boundary in 30 steps of 15
    assert len(np.unique(rows["episode"])) == 4
    # SB3's own fields are untouched by the subclass.
    np.testing.assert_array_equal(buf.rewards[:30], np.stack([f["reward"] for f in fed]))


def test_buffer_wraps_around_oldest_first_and_float32_storage(cartpole_env) -> None:
    env = cartpole_env
    buf = JacobianReplayBuffer(
        20, env.observation_space, env.action_space, n_envs=2, dtype="float32"
    )  # 10 slots of 2 envs
    fed = _fill(env, buf, 25, seed=1)
    rows = buf.rows()
    want = np.concatenate([f["state"] for f in fed[-10:]]).astype(np.float32)
    np.testing.assert_array_equal(rows["state"], want)
    assert rows["jacobian_state"].dtype == np.float32
    per_slot = sum(a.nbytes for a in buf.truth.values()) / (buf.buffer_size * buf.n_envs)
    assert per_slot == JacobianReplayBuffer.row_nbytes(4, 1, "float32")
    assert JacobianReplayBuffer.row_nbytes(18, 6, "float32") == 1939  # CheetahRun, README


def test_buffer_hdf5_round_trip(cartpole_env, tmp_path) -> None:
    env = cartpole_env
    buf = JacobianReplayBuffer(100, env.observation_space, env.action_space, n_envs=2)
    _fill(env, buf, 30, seed=2)
    path = tmp_path / "buffer.h5"
    assert buf.to_hdf5(path, dataset_meta(env)) == 60
    rows = buf.rows()
    with TransitionReader(path) as r:
        assert r.meta.jacobians and len(r) == 60
        ep = r.read("episode")
        assert (np.diff(ep) >= 0).all()  # episodes contiguous
        order = np.lexsort((rows["step"], rows["episode"]))
        np.testing.assert_array_equal(r.read("state"), rows["state"][order])
        np.testing.assert_array_equal(r.read("jacobian_action"), rows["jacobian_action"][order])
    # Import into a fresh buffer, observations from the task's own function.
    task = jw.TaskFunctions("CartpoleBalance", "float64")
    back = JacobianReplayBuffer(100, env.observation_space, env.action_space)
    assert back.load_hdf5(path, observe=task.observe) == 60
    got = back.rows()
    with TransitionReader(path) as r:
        np.testing.assert_array_equal(got["next_state"], r.read("next_state"))
        np.testing.assert_array_equal(got["episode"], r.read("episode"))
        np.testing.assert_allclose(
            back.observations[:60, 0], task.observe(r.read("state")), rtol=1e-6
        )
    with pytest.raises(ValueError, match="observe="):
        JacobianReplayBuffer(100, env.observation_space, env.action_space).load_hdf5(path)
    # With observe_after the imported observations are the ones the real env
    # returned (it reads the pole one substep back); observe alone is off.
    exact = JacobianReplayBuffer(100, env.observation_space, env.action_space)
    exact.load_hdf5(path, observe=task.observe, observe_after=task.observe_after)
    real, mine = buf.rows(["observation", "episode", "step"]), exact.rows(["episode", "step"])
    want, have = (
        np.lexsort((real["step"], real["episode"])),
        np.lexsort((mine["step"], mine["episode"])),
    )
    np.testing.assert_allclose(
        exact.observations[:60, 0][have], real["observation"][want], atol=1e-9
    )
    # (_fill stores the next episode's first observation after a done step.)
    go_on = buf.dones[:30].reshape(60)[want] == 0
    real_next = buf.next_observations[:30].reshape(60, -1)[want][go_on]
    np.testing.assert_allclose(exact.next_observations[:60, 0][have][go_on], real_next, atol=1e-9)
    assert np.abs(back.next_observations[:60, 0][have][go_on] - real_next).max() > 1e-4
    with pytest.raises(ValueError, match="observe_after needs observe"):
        exact.load_hdf5(path, observe_after=task.observe_after)


def test_buffer_import_scales_actions_to_the_policy_box(linear_h5) -> None:
    obs = spaces.Box(-np.inf, np.inf, (D_S,), np.float64)
    act = spaces.Box(np.zeros(D_A), 4 * np.ones(D_A), dtype=np.float64)
    buf = JacobianReplayBuffer(1000, obs, act)
    n = buf.load_hdf5(linear_h5)  # observation = state
    with TransitionReader(linear_h5) as r:
        a = r.read("action")
        np.testing.assert_allclose(buf.actions[:n, 0], a / 2 - 1, rtol=1e-6)  # [0,4] -> [-1,1]
        np.testing.assert_allclose(buf.observations[:n, 0], r.read("state"), rtol=1e-6)
        assert buf.timeouts[:n, 0].sum() == r.read("truncated").sum()


def test_buffer_bad_input(cartpole_env) -> None:
    env = cartpole_env
    with pytest.raises(ValueError, match="optimize_memory_usage"):
        JacobianReplayBuffer(
            10, env.observation_space, env.action_space, optimize_memory_usage=True,
            handle_timeout_termination=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="dtype"):
        JacobianReplayBuffer(10, env.observation_space, env.action_space, dtype="float16")
    plain = jw.PlaygroundVecEnv("CartpoleBalance", 2, seed=0, precision="float64", jacobians=False)
    buf = JacobianReplayBuffer(10, plain.observation_space, plain.action_space, n_envs=2)
    with pytest.raises(ValueError, match="JacobianWrapper"):
        _fill(plain, buf, 1)
    obs = plain.reset()
    plain.step(np.zeros((2, 1)))
    bad = dict(plain.last_transition)
    bad["next_state"] = bad["next_state"].copy()
    bad["next_state"][1, 0] = np.nan
    buf.stage(bad)
    with pytest.raises(ValueError, match=r"non-finite next_state in envs \[1\]"):
        buf.add(obs, obs, np.zeros((2, 1)), np.zeros(2), np.zeros(2), [{}, {}])
    assert buf.size() == 0  # nothing written


@pytest.mark.slow  # compiles the task functions / trains SAC briefly
def test_sac_fills_the_buffer_from_jacobian_wrapper_envs() -> None:
    """Plain SB3 SAC with ``replay_buffer_class=JacobianReplayBuffer`` on JacobianWrapper envs."""
    from stable_baselines3 import SAC

    venv = DummyVecEnv([lambda: jw.JacobianWrapper(jw.PlaygroundEnv("CartpoleBalance", seed=0))])
    sac = SAC("MlpPolicy", venv, replay_buffer_class=JacobianReplayBuffer, learning_starts=10,
              buffer_size=100, seed=0)  # fmt: skip
    sac.learn(30)
    rows = sac.replay_buffer.rows()
    assert len(rows["state"]) == 30 and sac.replay_buffer.has_jacobians
    np.testing.assert_array_equal(rows["next_state"][:-1], rows["state"][1:])
    # The stored action is what the env applied; SB3's is the policy's scaled one (same box).
    np.testing.assert_allclose(rows["action"], sac.replay_buffer.actions[:30, 0], rtol=1e-6)


# ----------------------------------------------------------------- ensemble
def test_ensemble_learns_the_linear_system_and_routes_rows_to_members() -> None:
    ens = DynamicsEnsemble.build(
        "mlp", D_S, D_A, 3, learn_reward=True, seed=0, **CONFIG.model_kwargs()
    )
    trainer = EnsembleTrainer(ens, "state-jacobian", CONFIG, holdout_fraction=0.2)
    rows = _linear_rows(2000)
    first = trainer.fit(rows, epochs=1)
    for _ in range(4):
        last = trainer.fit(rows, epochs=3)
    assert last["holdout_mse"] < 0.2 * first["holdout_mse"] and last["holdout_mse"] < 0.01
    assert last["reward_mse"] < 0.05
    s = torch.randn(50, D_S)
    a = torch.rand(50, D_A) * 2 - 1
    member = torch.arange(50) % 3
    out = ens.predict_raw(s, a, member)
    for k in range(3):
        with torch.no_grad():
            alone = ens.members[k].predict_raw(s[member == k], a[member == k])
        torch.testing.assert_close(out[member == k], alone)
    # Members start from different weights, so they differ off the data.
    assert not torch.allclose(
        ens.predict_raw(s, a, member * 0), ens.predict_raw(s, a, member * 0 + 1)
    )
    truth = torch.as_tensor(s.numpy() @ A.T + a.numpy() @ B.T, dtype=torch.float32)
    assert torch.mean((out - truth) ** 2) < 0.05


def test_ensemble_bad_input() -> None:
    ens = DynamicsEnsemble.build("mlp", D_S, D_A, 2, **CONFIG.model_kwargs())
    trainer = EnsembleTrainer(ens, "state-jacobian", CONFIG)
    rows = {k: v for k, v in _linear_rows(100).items() if not k.startswith("jacobian")}
    with pytest.raises(ValueError, match="state mode"):
        trainer.fit(rows)
    with pytest.raises(ValueError, match="needs a masked model|mask"):
        EnsembleTrainer(ens, "state-mask", CONFIG)
    with pytest.raises(ValueError, match="unknown model"):
        DynamicsEnsemble.build("transformer", D_S, D_A, 2)
    with pytest.raises(ValueError, match="learned reward"):
        ens.predict_reward(torch.zeros(1, D_S), torch.zeros(1, D_A), torch.zeros(1, D_S))


def test_ensemble_disagreement_and_per_member_holdout_errors() -> None:
    ens = DynamicsEnsemble.build("mlp", D_S, D_A, 3, seed=0, **CONFIG.model_kwargs())
    trainer = EnsembleTrainer(ens, "state", CONFIG, holdout_fraction=0.2)
    out = trainer.fit(_linear_rows(500), epochs=2)
    errors = trainer.holdout_member_mse
    assert errors.shape == (3,)
    assert out["holdout_mse"] == pytest.approx(errors.mean())
    assert out["holdout_mse_min"] == pytest.approx(errors.min())
    s, a = torch.randn(40, D_S), torch.rand(40, D_A) * 2 - 1
    with torch.no_grad():  # each member alone, in the normalised units of the next state
        preds = np.stack([m.predict_raw(s, a).numpy() for m in ens.members])
    scale = ens.normaliser.std["next_state"] + ens.normaliser.eps
    for idx in ([0, 1, 2], [0, 2]):
        want = (preds[idx] / scale).std(0).max(-1)
        got = ens.disagreement(s, a, idx).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert (ens.disagreement(s, a) > 0).all()
    twins = DynamicsEnsemble([ens.members[1], ens.members[1]])  # one model twice: no spread
    twins.set_normaliser(ens.normaliser)
    np.testing.assert_array_equal(twins.disagreement(s, a).numpy(), 0.0)
    with pytest.raises(ValueError, match=r"at least two member indices in \[0, 3\), got \[1\]"):
        ens.disagreement(s, a, [1])
    with pytest.raises(ValueError, match=r"got \[0, 3\]"):
        ens.disagreement(s, a, [0, 3])


# ----------------------------------------------------------------- ModelVecEnv
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


# ----------------------------------------------------------------- MBPO
def test_mixed_sampler_draws_the_real_share() -> None:
    obs = spaces.Box(-np.inf, np.inf, (D_S,), np.float32)
    act = spaces.Box(-1, 1, (D_A,), np.float32)
    real = JacobianReplayBuffer(100, obs, act)
    for _ in range(20):
        real.stage({"state": np.zeros((1, D_S)), "action": np.zeros((1, D_A)),
                    "next_state": np.zeros((1, D_S)), "terminated": np.zeros(1, bool),
                    "truncated": np.zeros(1, bool)})  # fmt: skip
        real.add(np.zeros((1, D_S)), np.zeros((1, D_S)), np.zeros((1, D_A)), np.ones(1),
                 np.zeros(1), [{}])  # fmt: skip
    model = ModelBuffer(50, D_S, D_A)
    model.add(np.ones((30, D_S)), np.zeros((30, D_A)), -np.ones(30), np.ones((30, D_S)),
              np.zeros(30))  # fmt: skip
    batch = MixedSampler(real, model, 0.25).sample(64)
    assert (batch.rewards == 1).sum() == 16 and (batch.rewards == -1).sum() == 48
    assert batch.observations.shape == (64, D_S)
    with pytest.raises(ValueError, match="real_ratio"):
        MixedSampler(real, model, 1.5)


def _mbpo_config() -> TrainConfig:
    return TrainConfig(width=32, depth=2, dropout=0.0, weight_decay=0.0, batch_size=64, lr=1e-3)


def _mbpo(env, **kwargs) -> MBPO:
    kwargs = {
        "n_members": 2, "model_train_freq": 40, "model_epochs": 2.0,
        "rollout_batch_size": 64, "rollout_length": 2, "learning_starts": 40,
        "gradient_steps": 1, "batch_size": 32, "seed": 0, "model_config": _mbpo_config(),
        **kwargs,
    }  # fmt: skip
    return MBPO("MlpPolicy", env, **kwargs)


@pytest.fixture(scope="module")
def mbpo_run(cartpole_env, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("mbpo_tb")
    model = _mbpo(cartpole_env, loss_mode="state-jacobian", tensorboard_log=str(logdir))
    model.learn(120)
    return model, logdir


def _scalars(logdir) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list(logdir.rglob("events.out.tfevents.*"))
    assert len(files) == 1, files
    acc = EventAccumulator(str(files[0].parent), size_guidance={"scalars": 0}).Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


@pytest.mark.slow  # a short MBPO run (about a minute on 2 cores)
def test_mbpo_trains_the_ensemble_and_rolls_out_into_the_model_buffer(mbpo_run) -> None:
    m, logdir = mbpo_run
    logged = _scalars(logdir)  # the TensorBoard event file read back
    for key in ("model/holdout_mse", "model/fresh_mse", "model/loss", "model/train_seconds"):
        assert key in logged and all(np.isfinite(v) for v in logged[key].values()), key
    assert set(logged["model/rollout_length"].values()) == {2.0}
    assert set(logged["model/jacobian_sparsity_combined"].values()) == {0.0}  # MLP: no zero
    assert all(0.05 < v < 0.3 for v in logged["model/true_sparsity_combined"].values())
    # Trained at 42 and 82 real steps; each round rolls 64 real states out 2 steps.
    assert m.ensemble_trainer.calls == 2
    assert m.model_buffer.size() == m.ensemble_trainer.calls * 64 * 2
    # Model transitions hold the task's observations after the predicted steps
    # (Cartpole's action box is [-1, 1]: the buffer's scaled actions are the actions).
    task = jw.TaskFunctions("CartpoleBalance", "float64")
    pred = m.model_env.states  # the last round's predicted states (no env was reset)
    last = slice(m.model_buffer.pos - 64, m.model_buffer.pos)
    np.testing.assert_allclose(
        m.model_buffer.next_obs[last],
        task.observe_after(pred, m.model_buffer.actions[last]).astype(np.float32),
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip
    # ... and start from real observations: a branch's first step starts where the
    # real env showed that state (its timing), not at observe(s).
    first = m.model_buffer.obs[m.model_buffer.pos - 128 : m.model_buffer.pos - 64]
    real = m.replay_buffer.rows(["observation"])["observation"]
    assert all(np.abs(real - o).max(axis=1).min() < 1e-6 for o in first)  # float32 copies


@pytest.mark.slow  # a short MBPO run (about a minute on 2 cores)
def test_mbpo_logs_the_true_sparsity_of_the_fresh_steps(cartpole_env) -> None:
    m = _mbpo(cartpole_env, loss_mode="state")
    m.learn(80)
    last = m._last_model_train
    fresh = m.replay_buffer.rows(since=m._fresh_since())
    assert len(fresh["state"]) == m.num_timesteps - last > 0
    jac = np.concatenate([fresh["jacobian_state"], fresh["jacobian_action"]], 2)
    valid = ~fresh["jacobian_nonsmooth"][:, None, :].repeat(4, 1)
    # The model Jacobian's error (scored before the training), by autograd of the
    # member's raw prediction, scaled by hand.
    member = m.ensemble.members[m.elites[0]]
    s = torch.as_tensor(fresh["state"], dtype=torch.float32)
    a = torch.as_tensor(fresh["action"], dtype=torch.float32)
    model_jac = torch.stack([
        torch.cat(torch.autograd.functional.jacobian(member.predict_raw, (si[None], ai[None])),
                  -1)[0, :, 0]
        for si, ai in zip(s, a, strict=True)
    ]).numpy()  # fmt: skip
    norm = m.ensemble.normaliser
    in_scale = np.concatenate([norm.std["state"], norm.std["action"]]) + norm.eps
    out_scale = norm.std["next_state"] + norm.eps
    err = ((model_jac - jac) * in_scale[None, None, :] / out_scale[None, :, None]) ** 2
    logs = m.train_world_model()
    assert logs["jacobian_mse_state"] == pytest.approx(
        err[..., :4][valid[..., :4]].mean(), rel=1e-3
    )
    assert logs["jacobian_mse_action"] == pytest.approx(
        err[..., 4:][valid[..., 4:]].mean(), rel=1e-3
    )
    want = np.mean([np.mean(np.abs(j)[v] < 1e-15) for j, v in zip(jac, valid, strict=True)])
    assert logs["true_sparsity_combined"] == pytest.approx(want)
    assert 0.05 < want < 0.3  # CartpoleBalance: about 15 % of [J_s | J_a] is exactly zero
    assert logs["jacobian_sparsity_combined"] == pytest.approx(0.0)  # an MLP has no exact zero
    assert logs["jacobian_mse_state"] > 0 and logs["jacobian_mse_action"] > 0


@pytest.mark.slow  # a short MBPO run (about a minute on 2 cores)
def test_mbpo_checkpoint_resumes_with_both_buffers_and_the_ensemble(cartpole_env, tmp_path) -> None:
    config = dataclasses.replace(_mbpo_config(), contact_features=True)
    m = _mbpo(
        cartpole_env, world_model="local_mask", loss_mode="state-mask", model_config=config,
        n_elites=1,
    )  # fmt: skip
    m.learn(90, callback=MBPOCheckpointCallback(45, tmp_path / "ck"))  # saved after step 90
    back = MBPO.load_checkpoint(tmp_path / "ck", cartpole_env)
    assert back.num_timesteps == 90 and back.world_model == "local_mask"
    assert back.elites == m.elites and len(m.elites) == 1  # the rollouts' member too
    np.testing.assert_array_equal(back.model_env.members, m.elites)
    # The members' masks see the env's floor distances (the cart's and the pole's), loaded too.
    assert back.ensemble.members[0].contact == contact_spec("CartpoleBalance")
    assert back.ensemble.members[1].contact_features.labels[:2] == ("cart@floor", "pole_1@floor")
    for key in ("state", "next_state", "jacobian_state"):  # the last step is in it too
        np.testing.assert_array_equal(back.replay_buffer.rows()[key], m.replay_buffer.rows()[key])
    np.testing.assert_array_equal(back.model_buffer.obs, m.model_buffer.obs)
    # Saved at the end of the run: every weight, buffer and optimiser moment restored exactly.
    m.save_checkpoint(tmp_path / "end")
    back = MBPO.load_checkpoint(tmp_path / "end", cartpole_env)
    for name in ("ensemble", "policy"):
        saved, loaded = getattr(m, name).state_dict(), getattr(back, name).state_dict()
        assert saved.keys() == loaded.keys()
        for key in saved:
            torch.testing.assert_close(loaded[key], saved[key], rtol=0, atol=0)
    moments = [s["exp_avg"] for s in back.ensemble_trainer.optimizer.state_dict()["state"].values()]
    want = [s["exp_avg"] for s in m.ensemble_trainer.optimizer.state_dict()["state"].values()]
    assert len(moments) == len(want) > 0
    for x, y in zip(moments, want, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    np.testing.assert_array_equal(
        back.ensemble.normaliser.mean["state"], m.ensemble.normaliser.mean["state"]
    )
    back.learn(30, reset_num_timesteps=False)
    # The schedule is restored too: the next model training is due at 122, not at once.
    assert back.num_timesteps == 120 and back.ensemble_trainer.calls == 0
    (tmp_path / "ck" / "model_buffer.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="model_buffer.pkl"):
        MBPO.load_checkpoint(tmp_path / "ck", cartpole_env)


def test_mbpo_members_take_the_options_of_their_own_model(cartpole_env) -> None:
    config = dataclasses.replace(_mbpo_config(), head_width=16, mode_dim=2, contact_features=True)
    m = _mbpo(cartpole_env, world_model="local_mask", loss_mode="state-mask", model_config=config)
    member = m.ensemble.members[0]
    # The masked options, not the MLP's width of 32 (the config's own model is set to local_mask).
    assert m.model_config.model == "local_mask"
    assert (member.width, member.depth, member.mode_dim) == (16, 2, 2)
    assert member.contact == contact_spec("CartpoleBalance")
    assert _mbpo(cartpole_env, model_config=config).ensemble.members[0].width == 32  # the MLP


def test_mbpo_rolls_out_with_its_elites_and_keeps_the_transitions_they_agree_on(
    cartpole_env,
) -> None:
    m = _mbpo(cartpole_env, n_members=3, n_elites=2, rollout_keep=0.5, rollout_batch_size=8)
    m.set_logger(configure(None, []))
    _fill(cartpole_env, m.replay_buffer, 60, seed=3)
    logs = m.train_world_model()
    errors = m.ensemble_trainer.holdout_member_mse
    # The two members of lowest held-out error, the only ones a rollout draws.
    assert m.elites == sorted(np.argsort(errors)[:2].tolist()) and len(set(errors)) == 3
    np.testing.assert_array_equal(m.model_env.members, m.elites)
    assert logs["elite_holdout_mse"] == pytest.approx(np.mean(errors[m.elites]))
    assert logs["elite_holdout_mse"] < logs["holdout_mse"]
    # Of the live rows, the half of least disagreement between the elites.
    rows = m.replay_buffer.rows()
    s, a = rows["state"][:20], rows["action"][:20]
    alive = np.ones(20, bool)
    alive[[3, 7]] = False
    kept = m._certain(s, a, alive, log := [])
    with torch.no_grad():
        preds = np.stack([
            m.ensemble.members[k].predict_raw(torch.as_tensor(s, dtype=torch.float32),
                                              torch.as_tensor(a, dtype=torch.float32)).numpy()
            for k in m.elites
        ])  # fmt: skip
    u = (preds / (m.ensemble.normaliser.std["next_state"] + 1e-8)).std(0).max(-1)
    live = np.flatnonzero(alive)
    assert kept.sum() == 9 and not kept[[3, 7]].any()
    assert u[kept].max() <= u[live][~kept[live]].min()
    np.testing.assert_allclose(log[0], u[live], rtol=1e-4)
    with pytest.raises(ValueError, match=r"n_elites must be in \[1, n_members=3\], got 4"):
        _mbpo(cartpole_env, n_members=3, n_elites=4)
    with pytest.raises(ValueError, match="holdout_fraction must be > 0"):
        _mbpo(cartpole_env, n_members=3, n_elites=2, holdout_fraction=0.0)
    with pytest.raises(ValueError, match=r"rollout_keep must be in \(0, 1\], got 0"):
        _mbpo(cartpole_env, rollout_keep=0)
    with pytest.raises(ValueError, match="at least two elites.*n_elites=1"):
        _mbpo(cartpole_env, n_elites=1, rollout_keep=0.5)
    with pytest.raises(ValueError, match="rollout_dynamics='simulator'"):
        _mbpo(cartpole_env, rollout_keep=0.5, rollout_dynamics="simulator")


@pytest.mark.slow  # compiles the task functions
def test_mbpo_rollout_keep_ends_the_uncertain_branches(cartpole_env) -> None:
    m = _mbpo(cartpole_env, n_members=3, rollout_keep=0.5, rollout_batch_size=8, rollout_length=3)
    m.set_logger(configure(None, []))
    _fill(cartpole_env, m.replay_buffer, 60, seed=3)
    m.train_world_model()
    logs = m.rollout_model()
    # 8 branches: 4 kept at the first step, 2 of those at the second, 1 at the third.
    assert m.model_buffer.size() == logs["rollout_transitions"] == 4 + 2 + 1
    assert logs["rollout_kept"] == pytest.approx(7 / (8 + 4 + 2))
    assert logs["rollout_disagreement"] > 0


def test_mbpo_bad_input(cartpole_env) -> None:
    plain = jw.PlaygroundVecEnv("CartpoleBalance", 1, seed=0, jacobians=False)
    with pytest.raises(ValueError, match=r"jacobians=True.*'state'"):
        _mbpo(plain, loss_mode="state-jacobian")
    _mbpo(plain, loss_mode="state")  # a state mode needs no Jacobians
    gym_env = DummyVecEnv([lambda: jw.JacobianWrapper(jw.PlaygroundEnv("CartpoleBalance"))])
    with pytest.raises(ValueError, match="PlaygroundVecEnv.*DummyVecEnv"):
        _mbpo(gym_env)
    with pytest.raises(ValueError, match="unknown model"):
        _mbpo(cartpole_env, world_model="gru")
    with pytest.raises(ValueError, match="unknown loss mode"):
        _mbpo(cartpole_env, loss_mode="nll")
    with pytest.raises(ValueError, match="real_ratio"):
        _mbpo(cartpole_env, real_ratio=2.0)
    with pytest.raises(ValueError, match="rollout_dynamics must be 'model' or 'simulator'.*'sim'"):
        _mbpo(cartpole_env, rollout_dynamics="sim")
    with pytest.raises(ValueError, match="rollout_dynamics='simulator' needs reward='simulator'"):
        _mbpo(cartpole_env, rollout_dynamics="simulator", reward="learned")


@pytest.mark.slow  # compiles the task functions
def test_mbpo_simulator_rollouts_are_the_real_steps(cartpole_env) -> None:
    model = _mbpo(cartpole_env, rollout_dynamics="simulator", rollout_batch_size=8)
    (member,) = model.model_env.model.members  # the simulator, a one-member ensemble
    assert isinstance(member, SimulatorModel)
    buf = model.replay_buffer
    _fill(cartpole_env, buf, 10, seed=5)
    rows = buf.rows()
    env = model.model_env
    env.set_states(rows["state"][:8])
    out = env.step_arrays(rows["action"][:8])
    # float32 on the way in (ModelVecEnv's torch call), the true step after it
    np.testing.assert_allclose(out["next_state"], rows["next_state"][:8], rtol=1e-5, atol=1e-6)
    model.set_logger(configure(None, []))
    model.rollout_model()
    assert model.model_buffer.size() == 8 * 2  # rollout_length 2, no episode ends


class _StateBiased(torch.nn.Module):
    """The true step plus an error that depends on the state alone."""

    name = "state_biased"

    def __init__(self, sim: SimulatorModel) -> None:
        super().__init__()
        self.sim, self.d_s, self.d_a = sim, sim.d_s, sim.d_a

    def predict_raw(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.sim.predict_raw(state, action) + 0.1 * torch.tanh(state.double())


@pytest.mark.slow  # compiles the task functions
def test_mbpo_anchored_rollouts_cancel_the_model_error_at_the_start_state(cartpole_env) -> None:
    import copy

    model = _mbpo(cartpole_env, rollout_dynamics="simulator", rollout_batch_size=8,
                  rollout_length=1, rollout_anchor=True)  # fmt: skip
    model.set_logger(configure(None, []))
    _fill(cartpole_env, model.replay_buffer, 10, seed=6)
    env, (sim,) = model.model_env, model.model_env.model.members
    env.model = DynamicsEnsemble.of(_StateBiased(sim))
    rng = copy.deepcopy(model._rng)  # the branch draw rollout_model will make
    model.rollout_model()
    s = model.replay_buffer.sample_rows(8, rng, keys=["state"])["state"]
    a = model.policy.unscale_action(model.model_buffer.actions[:8])
    with torch.no_grad():
        true = sim.predict_raw(torch.as_tensor(s), torch.as_tensor(a)).numpy()
    want = env._observe(true, a)
    # The policy's actions differ from the real ones, and still the true step's
    # observation: the model's error at the start state cancelled.
    rows = model.replay_buffer.rows(keys=["action"])["action"]
    assert not np.isin(a, rows).any()
    np.testing.assert_allclose(model.model_buffer.next_obs[:8], want, rtol=1e-4, atol=1e-5)
    # Without the anchor, the same biased model misses the true step.
    model.rollout_anchor = False
    model.model_buffer.pos = 0
    rng = copy.deepcopy(model._rng)
    model.rollout_model()
    s = model.replay_buffer.sample_rows(8, rng, keys=["state"])["state"]
    a = model.policy.unscale_action(model.model_buffer.actions[:8])
    with torch.no_grad():
        true = sim.predict_raw(torch.as_tensor(s), torch.as_tensor(a)).numpy()
    assert np.abs(model.model_buffer.next_obs[:8] - env._observe(true, a)).max() > 1e-2


@pytest.mark.slow  # two short real runs with full-episode evaluations
def test_mbrl_experiment_script_writes_curves_table_and_figure(tmp_path) -> None:
    import csv
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "mbrl_experiment.py"
    out = tmp_path / "exp"
    cmd = [
        sys.executable, str(script), "--out", str(out), "--variants", "sac", "mbpo-mlp",
        "--seeds", "1", "--sac-steps", "60", "--mbpo-steps", "60", "--learning-starts", "20",
        "--eval-every", "20", "--eval-episodes", "1", "--members", "2",
        "--model-train-freq", "20", "--rollout-batch-size", "32", "--gradient-steps", "1",
        "--workers", "2",  # the process pool, one fresh process per run
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "runs" / "mbpo-mlp_1.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    assert all(0 <= float(r["mean_return"]) <= 1000 for r in rows)  # DM Control: reward in [0, 1]
    table = (out / "results.md").read_text()
    assert "| sac | 60 |" in table and "| mbpo-mlp | 60 |" in table
    # The world model's statistics: the last values of its TensorBoard log, read back here.
    logged = _scalars(out / "tb" / "mbpo-mlp_1_1")
    last = {k: v[max(v)] for k, v in logged.items()}
    row = [line for line in table.splitlines() if line.startswith("| mbpo-mlp |")][1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{last['model/fresh_mse']:.4f}"
    assert cells[3] == f"0.000 / {last['model/true_sparsity_combined']:.3f}"  # an MLP: no zero
    assert cells[4] == (
        f"{last['model/jacobian_mse_state']:.3g} / {last['model/jacobian_mse_action']:.3g}"
    )
    assert 0.05 < last["model/true_sparsity_combined"] < 0.3
    assert (out / "returns.png").stat().st_size > 0
