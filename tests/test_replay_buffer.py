"""dynamic_sparsity.mbrl.replay_buffer: the Jacobian replay buffer.

Its rows against the steps fed to it and the states chaining within episodes,
its HDF5 export against the file read back, SB3's SAC filling it.
"""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

import jacobian_wrappers as jw
from dynamic_sparsity.analysis.storage import TransitionReader
from dynamic_sparsity.mbrl import (
    JacobianReplayBuffer,
)
from jacobian_wrappers.vec_transitions import dataset_meta
from tests.helpers import D_A, D_S
from tests.helpers import fill_buffer as _fill


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
