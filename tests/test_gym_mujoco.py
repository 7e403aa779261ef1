"""Gymnasium's own MuJoCo envs: Jacobians against a finite difference of the env's own C step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import jacobian_wrappers as jw
from dynamic_sparsity.analysis.stats import FD_ZERO_THRESHOLD
from jacobian_wrappers.agreement import env_step_central_difference


def _check(env_id: str, backend: str, steps: int = 12, rtol: float = 1e-5) -> None:
    env = jw.JacobianWrapper(gym.make(env_id), backend=backend)
    env.reset(seed=0)
    env.action_space.seed(0)
    inner = env.unwrapped
    m = inner.model
    checked = 0
    for t in range(steps):
        d = inner.data
        s = np.concatenate([d.qpos, d.qvel, d.act])
        warm = d.qacc_warmstart.copy()
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        np.testing.assert_array_equal(info["state"], s)
        np.testing.assert_array_equal(info["next_state"], np.concatenate([d.qpos, d.qvel, d.act]))
        np.testing.assert_array_equal(info["action"], d.ctrl)
        # A step whose backend left the env's step is flagged (tests/test_agreement.py);
        # here no step of these envs is.
        assert not info.get("jacobian_mismatch", False)
        if t % 4 == 3:  # a few steps, contacts included on the contact envs
            jac = np.concatenate([info["jacobian_state"], info["jacobian_action"]], axis=1)
            assert jac.shape == (2 * m.nv + m.na, 2 * m.nv + m.na + m.nu)
            fd = env_step_central_difference(inner, s, warm, d.ctrl.copy())
            np.testing.assert_allclose(jac, fd, rtol=rtol, atol=rtol * np.abs(fd).max())
            checked += 1
        if terminated or truncated:
            env.reset()
    assert checked >= 1
    assert len(env.get_wrapper_attr("action_labels")) == m.nu
    assert len(env.get_wrapper_attr("tangent_labels")) == 2 * m.nv + m.na


GYM_ENVS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Reacher-v5", "Ant-v5")
#: Ant-v5's MJX step is not its C step: flagged, tested in tests/test_agreement.py.
MJX_ENVS = GYM_ENVS[:-1]


@pytest.mark.parametrize("backend", ["mjx", "mujoco"])
def test_inverted_pendulum_rk4(backend: str) -> None:
    """RK4 integrator: MJX differentiates it; the C backend differences the whole step."""
    _check("InvertedPendulum-v5", backend)


@pytest.mark.parametrize("env_id", GYM_ENVS)
def test_c_backend_matches_the_env_step(env_id: str) -> None:
    """Ant has a free joint: tangent space (quaternion -> 3-vector), as mjd_transitionFD."""
    _check(env_id, "mujoco", steps=8, rtol=1e-4 if env_id == "Ant-v5" else 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", MJX_ENVS)
def test_mjx_backend_is_exact(env_id: str) -> None:
    """MJX of the env's own model: equal to the C step's finite difference (contacts, RK4),
    the implicit solver tangent where verified and unrolled elsewhere."""
    _check(env_id, "mjx", steps=12)


def test_sparsity_callback_on_gymnasium_envs(tmp_path) -> None:
    """SB3 PPO on a DummyVecEnv of wrapped Gymnasium envs logs the sparsity statistics."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from callbacks import SparsityCallback

    venv = DummyVecEnv(
        [
            lambda: jw.JacobianWrapper(gym.make("InvertedPendulum-v5"), backend="mujoco")
            for _ in range(2)
        ]
    )
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, tensorboard_log=tmp_path)
    callback = SparsityCallback(log_freq=32)
    model.learn(128, callback=callback)
    assert callback.threshold == FD_ZERO_THRESHOLD  # the C backend's finite differences
    (run,) = list(tmp_path.iterdir())
    acc = EventAccumulator(str(run)).Reload()
    combined = [e.value for e in acc.Scalars("sparsity/combined")]
    samples = [e.value for e in acc.Scalars("sparsity/samples")]
    assert combined and all(0.0 <= v <= 1.0 for v in combined)
    assert max(samples) == 128  # one rollout of 64 steps x 2 envs, every step with Jacobians


def _gym_venv(env_id: str, n: int, vec_cls=None, backend: str = "mujoco"):
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make(seed: int):
        def thunk():
            env = jw.JacobianWrapper(gym.make(env_id), backend=backend)
            env.reset(seed=seed)
            return env

        return thunk

    return (vec_cls or DummyVecEnv)([make(i) for i in range(n)])


def test_collect_from_a_vec_env_of_gymnasium_envs(tmp_path) -> None:
    """collect() takes a DummyVecEnv of JacobianWrapper envs: rows from the infos, episode ids
    across resets (Hopper-v5 falls and terminates), metadata from the envs' labels."""
    venv = _gym_venv("Hopper-v5", 3)
    path = tmp_path / "hopper.h5"
    result = jw.collect(venv, 300, path)
    assert result.rows == 300
    with jw.TransitionReader(path) as r:
        meta, rows = r.meta, {k: r.read(k) for k in r.meta.columns()}
    assert meta.env_name == "Hopper-v5" and meta.precision == "float64"
    assert meta.state_labels == venv.get_attr("state_labels")[0]
    assert meta.extra["jacobian_backend"] == "mujoco"
    # Finite differences: the noise-aware zero threshold is the analysis default.
    assert meta.threshold == FD_ZERO_THRESHOLD == 1e-8
    assert meta.dt == pytest.approx(venv.get_attr("dt")[0])
    assert rows["jacobian_state"].shape == (300, 12, 12)
    ends = rows["terminated"] | rows["truncated"]
    assert rows["terminated"].any()  # a random Hopper falls within 100 steps
    for env in range(3):  # rows of one env are interleaved every 3 rows until they stop
        mine = np.arange(env, 300, 3)
        ep, step = rows["episode"][mine], rows["step"][mine]
        s, s_next = rows["state"][mine], rows["next_state"][mine]
        for t in range(len(mine) - 1):
            if ends[mine[t]]:
                assert ep[t + 1] != ep[t] and step[t + 1] == 0
            else:  # one trajectory: the next row starts where this one ended
                assert ep[t + 1] == ep[t] and step[t + 1] == step[t] + 1
                np.testing.assert_array_equal(s[t + 1], s_next[t])
    assert len(np.unique(rows["episode"])) == 3 + ends[:-3].sum()
    # A masked world model with contact features reads the Gymnasium env's own geometry.
    from world_models import TrainConfig, Trainer, contact_spec

    cfg = TrainConfig(
        model="local_mask", contact_features=True, epochs=1, progress=False, horizon=0,
        head_width=8,
    )  # fmt: skip
    trainer = Trainer(path, "state-mask", cfg)
    assert trainer.model.contact == contact_spec("Hopper-v5")
    assert "foot_geom@floor" in trainer.model.contact_features.labels
    assert np.isfinite(trainer.fit().metrics.mse_normalised)


def test_dataset_callback_and_subproc_vec_env(tmp_path) -> None:
    """DatasetCallback records PPO's rollouts on a SubprocVecEnv of Gymnasium envs under
    VecNormalize: raw rewards and the actions the simulator received."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize

    from callbacks import DatasetCallback

    venv = VecNormalize(_gym_venv("InvertedPendulum-v5", 2, SubprocVecEnv))
    path = tmp_path / "ppo.h5"
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0)
    model.learn(128, callback=DatasetCallback(path))
    venv.close()
    with jw.TransitionReader(path) as r:
        rows = {k: r.read(k) for k in ("reward", "terminated", "action", "jacobian_action")}
        assert r.meta.env_name == "InvertedPendulum-v5"
        assert r.meta.threshold == FD_ZERO_THRESHOLD  # C finite differences
    assert len(rows["reward"]) == 128
    # The env's own reward (1 while the pole is up, 0 on the falling step), not normalised.
    np.testing.assert_array_equal(rows["reward"], 1.0 - rows["terminated"])
    assert rows["terminated"].any()
    assert np.abs(rows["action"]).max() <= 3.0  # clipped to the action space, as applied
    assert np.isfinite(rows["jacobian_action"]).all()


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="Gymnasium's MuJoCo envs"):
        jw.JacobianWrapper(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="backend must be one of"):
        jw.JacobianWrapper(gym.make("InvertedPendulum-v5"), backend="c")
    with pytest.raises(ValueError, match="computes its own Jacobians"):
        jw.JacobianWrapper(jw.PlaygroundEnv("CartpoleBalance"), backend="mujoco")
    with pytest.raises(ValueError, match="jacobian_method must be one of"):
        jw.JacobianWrapper(gym.make("InvertedPendulum-v5"), jacobian_method="exact")
    from stable_baselines3.common.vec_env import DummyVecEnv

    with pytest.raises(ValueError, match="collect needs Jacobians in the infos"):
        jw.collect(DummyVecEnv([lambda: gym.make("InvertedPendulum-v5")]), 10, "x.h5")
    with pytest.raises(TypeError, match="collect needs an SB3 VecEnv"):
        jw.collect(gym.make("InvertedPendulum-v5"), 10, "x.h5")


_IMPLICIT_XML = """<mujoco><option integrator="implicit"/><worldbody><body>
<joint name="hinge" type="hinge"/><geom size="0.1" pos="0 0 0.3"/></body></worldbody>
<actuator><motor joint="hinge" ctrlrange="-1 1"/></actuator></mujoco>"""


def test_model_mjx_cannot_simulate_names_the_feature(tmp_path) -> None:
    """The implicit integrator is not in MJX: a clear error, and the C backend still works."""
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
    from gymnasium.spaces import Box

    path = tmp_path / "implicit.xml"
    path.write_text(_IMPLICIT_XML)

    class Implicit(MujocoEnv):
        metadata = {"render_modes": ["rgb_array"], "render_fps": 100}

        def __init__(self) -> None:
            super().__init__(str(path), 5, Box(-np.inf, np.inf, (2,), np.float64))

        def step(self, action):
            self.do_simulation(action, self.frame_skip)
            return np.concatenate([self.data.qpos, self.data.qvel]), 0.0, False, False, {}

        def reset_model(self):
            self.set_state(self.init_qpos, self.init_qvel + 0.5)
            return np.concatenate([self.data.qpos, self.data.qvel])

    with pytest.raises(ValueError, match=r"mjINT_IMPLICIT.*backend='mujoco'"):
        jw.JacobianWrapper(Implicit(), backend="mjx")
    with pytest.warns(UserWarning, match=r"finite differences.*mjINT_IMPLICIT"):
        env = jw.JacobianWrapper(Implicit())  # the default follows what MJX can do
    assert env.gym_jacobians.backend == "mujoco"
    env.reset(seed=0)
    d = env.unwrapped.data
    s, warm = np.concatenate([d.qpos, d.qvel]), d.qacc_warmstart.copy()
    info = env.step(np.array([0.3]))[4]
    jac = np.concatenate([info["jacobian_state"], info["jacobian_action"]], axis=1)
    np.testing.assert_allclose(
        jac, env_step_central_difference(env.unwrapped, s, warm, np.array([0.3])), 1e-6
    )


def test_mbpo_refuses_a_gymnasium_env_and_says_why() -> None:
    """MBPO's rollouts evaluate the task's own reward at predicted states, which only
    Playground tasks expose (TaskFunctions): a Gymnasium env gets an error saying so."""
    from dynamic_sparsity.mbrl import MBPO

    venv = _gym_venv("InvertedPendulum-v5", 1)
    with pytest.raises(ValueError, match="MBPO needs a jacobian_wrappers.PlaygroundVecEnv") as err:
        MBPO("MlpPolicy", venv)
    assert "DummyVecEnv" in str(err.value) and "reward at predicted states" in str(err.value)
