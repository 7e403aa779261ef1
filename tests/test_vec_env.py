"""PlaygroundVecEnv: SB3's VecEnv contract, Jacobians, seeding, PPO on it."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor

import jacobian_wrappers as jw

N = 3


@pytest.fixture(scope="module")
def vec64() -> jw.PlaygroundVecEnv:
    return jw.PlaygroundVecEnv("CartpoleBalance", N, seed=7, precision="float64", episode_length=4)


def test_shapes_and_info_keys(vec64) -> None:
    obs = vec64.reset()
    assert obs.shape == (N, 5) and obs.dtype == np.float64
    obs, rewards, dones, infos = vec64.step(np.zeros((N, 1)))
    assert obs.shape == (N, 5)
    assert rewards.shape == (N,) and dones.shape == (N,) and dones.dtype == bool
    assert len(infos) == N
    for info in infos:
        assert info["state"].shape == (4,) and info["next_state"].shape == (4,)
        assert info["jacobian_state"].shape == (4, 4)
        assert info["jacobian_action"].shape == (4, 1)
        assert isinstance(info["jacobian_state"], np.ndarray)
    np.testing.assert_array_equal(np.stack([i["next_state"] for i in infos]), vec64.states)


def test_auto_reset_terminal_observation_and_truncation(vec64) -> None:
    vec64.reset()
    last_obs = None
    for t in range(4):
        prev = vec64.states
        obs, _, dones, infos = vec64.step(np.full((N, 1), 0.3))
        np.testing.assert_array_equal(np.stack([i["state"] for i in infos]), prev)
        if t < 3:
            assert not dones.any()
            last_obs = obs
    assert dones.all()
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        term = info["terminal_observation"]
        assert term.shape == (5,) and not np.array_equal(term, last_obs[i])
        assert not np.array_equal(term, obs[i])  # obs is already the next episode's first
    # After the reset, the step counter restarts: 3 more steps without a done.
    for _ in range(3):
        _, _, dones, _ = vec64.step(np.zeros((N, 1)))
        assert not dones.any()


def test_done_step_jacobian_equals_single_env(vec64) -> None:
    """The done step's Jacobian is that of its real last transition (before auto-reset)."""
    vec64.seed(21)
    vec64.reset()
    single = jw.JacobianWrapper(
        jw.PlaygroundEnv("CartpoleBalance", precision="float64", episode_length=4)
    )
    _obs1, _ = single.reset(seed=22)  # env 1 of the vec env is seeded 21 + 1
    actions = np.linspace(-0.5, 0.5, N)[:, None]
    for _ in range(4):
        _obs, _, dones, infos = vec64.step(actions)
        _, _, _, trunc, info = single.step(actions[1])
    assert dones[1] and trunc
    for key in ("state", "next_state", "jacobian_state", "jacobian_action"):
        np.testing.assert_allclose(infos[1][key], info[key], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(infos[1]["terminal_observation"], single.unwrapped._obs, atol=1e-12)


def test_jacobian_every() -> None:
    vec = jw.PlaygroundVecEnv("CartpoleBalance", 2, precision="float64", jacobian_every=3)
    vec.reset()
    has = []
    for _ in range(6):
        *_, infos = vec.step(np.zeros((2, 1)))
        has.append("jacobian_state" in infos[0])
        assert ("jacobian_state" in infos[0]) == ("jacobian_state" in infos[1])
        assert ("state" in infos[0]) == has[-1]
    assert has == [True, False, False, True, False, False]
    off = jw.PlaygroundVecEnv("CartpoleBalance", 2, precision="float64", jacobians=False)
    off.reset()
    *_, infos = off.step(np.zeros((2, 1)))
    assert "jacobian_state" not in infos[0]


def test_envs_of_one_kind_share_one_compiled_step(vec64) -> None:
    """A second env of the same task, precision, episode length and method (an evaluation
    env, a resumed run) reuses the first one's program: its first step compiles nothing."""
    vec64.reset()
    vec64.step(np.zeros((N, 1)))
    program = vec64._step_fns[True].__wrapped__  # the jax.jit under the precision scope
    compiled = program._cache_size()
    other = jw.PlaygroundVecEnv("CartpoleBalance", N, seed=1, precision="float64", episode_length=4)
    assert other._step_fns[True] is vec64._step_fns[True]
    other.reset()
    _, _, _, infos = other.step(np.zeros((N, 1)))
    assert program._cache_size() == compiled and "jacobian_state" in infos[0]
    # The recomputation of unverified rows too: the second env's compiles nothing.
    recompute = jw.vec_env._recompute_program(vec64.sim).__wrapped__
    first, _ = vec64._recompute(vec64._state, np.arange(N))
    programs = recompute._cache_size()
    again, _ = other._recompute(other._state, np.arange(N))
    assert recompute._cache_size() == programs and again.shape == first.shape
    longer = jw.PlaygroundVecEnv("CartpoleBalance", N, precision="float64", episode_length=5)
    assert longer._step_fns[True] is not vec64._step_fns[True]  # another limit, another program


def test_seeding_is_reproducible(cartpole64) -> None:
    a = jw.PlaygroundVecEnv("CartpoleBalance", N, seed=3, precision="float64")
    b = jw.PlaygroundVecEnv("CartpoleBalance", N, seed=3, precision="float64")
    oa, ob = a.reset(), b.reset()
    np.testing.assert_array_equal(oa, ob)
    assert not np.array_equal(oa[0], oa[1])
    # Env i is seeded like PlaygroundEnv(seed=seed + i).
    for i in range(N):
        single, _ = cartpole64.reset(seed=3 + i)
        np.testing.assert_array_equal(oa[i], single)
    # SB3's seed(): applies to the next reset.
    a.seed(100)
    np.testing.assert_array_equal(a.reset()[2], cartpole64.reset(seed=102)[0])
    # Unseeded resets continue the stream.
    assert not np.array_equal(a.reset(), a.reset())


def test_bad_vec_input() -> None:
    with pytest.raises(ValueError, match="n_envs must be >= 1, got 0"):
        jw.PlaygroundVecEnv("CartpoleBalance", 0)
    with pytest.raises(ValueError, match="jacobian_every must be >= 1, got 0"):
        jw.PlaygroundVecEnv("CartpoleBalance", 2, jacobian_every=0)
    with pytest.raises(ValueError, match="precision must be one of"):
        jw.PlaygroundVecEnv("CartpoleBalance", 2, precision="double")


def test_bad_actions(vec64) -> None:
    vec64.reset()
    with pytest.raises(ValueError, match=r"shape \(3, 1\), got shape \(3,\)"):
        vec64.step(np.zeros(N))
    bad = np.zeros((N, 1))
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"finite, got \[nan\] at index \[\[1, 0\]\]"):
        vec64.step(bad)


def test_nonfinite_env_is_truncated_and_reset(vec64) -> None:
    obs0 = vec64.reset()
    states = vec64.states
    states[1, 2:] = 1e200
    obs_set = vec64.set_states(states[1:2], indices=[1])
    np.testing.assert_array_equal(obs_set[[0, 2]], obs0[[0, 2]])  # the others untouched
    assert not np.array_equal(obs_set[1], obs0[1])
    obs, _, dones, infos = vec64.step(np.zeros((N, 1)))
    assert dones.tolist() == [False, True, False]
    assert infos[1]["nonfinite"] is True and infos[1]["TimeLimit.truncated"] is True
    np.testing.assert_array_equal(infos[1]["terminal_observation"], obs_set[1])
    assert np.isfinite(obs).all()
    assert "nonfinite" not in infos[0]


def test_ppo_learns_on_vec_env(tmp_path) -> None:
    env = VecMonitor(jw.PlaygroundVecEnv("CartpoleBalance", 4, seed=0, jacobian_every=2))
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, verbose=0)
    model.learn(total_timesteps=512)
    assert model.num_timesteps == 512
    model.save(tmp_path / "ppo.zip")
    assert (tmp_path / "ppo.zip").stat().st_size > 0


def test_info_keys_are_renamed_like_the_wrapper() -> None:
    env = jw.PlaygroundVecEnv("CartpoleBalance", 2, info_keys={"jacobian_state": "J_s"})
    env.reset()
    _, _, _, infos = env.step(np.zeros((2, 1)))
    assert "J_s" in infos[0] and "jacobian_state" not in infos[0]
    assert infos[0]["J_s"].shape == (4, 4) and "jacobian_action" in infos[0]
    with pytest.raises(ValueError, match="unknown entries"):
        jw.PlaygroundVecEnv("CartpoleBalance", 2, info_keys={"bogus": "x"})
