"""PlaygroundEnv and JacobianWrapper: Gymnasium/SB3 API, labels, precision, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import jacobian_wrappers as jw


def test_gymnasium_and_sb3_env_checkers(cartpole32) -> None:
    gym_check_env(cartpole32, skip_render_check=True)
    sb3_check_env(cartpole32, warn=True)
    wrapped = jw.JacobianWrapper(cartpole32)
    gym_check_env(wrapped, skip_render_check=True)
    sb3_check_env(wrapped, warn=True)


def test_spaces_and_labels() -> None:
    cart = jw.PlaygroundEnv("CartpoleBalance", precision="float64")
    assert cart.observation_space.shape == (5,)
    assert cart.observation_space.dtype == np.float64
    assert cart.action_space.shape == (1,)
    np.testing.assert_array_equal(cart.action_space.low, [-1.0])
    assert cart.state_labels == ("qpos:slider", "qpos:hinge_1", "qvel:slider", "qvel:hinge_1")
    assert cart.tangent_labels == cart.state_labels
    assert cart.action_labels == ("slide",)
    assert cart.episode_length == 1000


def test_cheetah_labels_from_joint_names() -> None:
    # Labels come from the MuJoCo model; no compile needed.
    from mujoco_playground import registry

    env = registry.load("CheetahRun", config_overrides={"impl": "jax"})
    space = jw.StateSpace.from_model(env.mj_model)
    assert space.dim == 18
    assert space.labels[0] == "qpos:rootx"
    assert "qvel:bthigh" in space.labels
    assert space.labels.index("qvel:bthigh") == 9 + space.labels.index("qpos:bthigh")


def test_reset_is_reproducible(cartpole64) -> None:
    a, _ = cartpole64.reset(seed=11)
    s_a = cartpole64.state
    cartpole64.step(np.array([0.2]))
    b, _ = cartpole64.reset(seed=11)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s_a, cartpole64.state)
    c, _ = cartpole64.reset(seed=12)
    assert not np.array_equal(a, c)
    # Unseeded resets continue the stream: different episodes, same sequence per seed.
    cartpole64.reset(seed=11)
    seq2 = [cartpole64.reset()[0] for _ in range(2)]
    cartpole64.reset(seed=11)
    seq3 = [cartpole64.reset()[0] for _ in range(2)]
    np.testing.assert_array_equal(np.stack(seq2), np.stack(seq3))
    assert not np.array_equal(seq3[0], seq3[1])


def test_wrapper_info_holds_exact_transition(cartpole64) -> None:
    env = jw.JacobianWrapper(cartpole64)
    env.reset(seed=0)
    s0 = env.unwrapped.state
    obs, reward, _terminated, _truncated, info = env.step(np.array([0.4]))
    assert set(jw.DEFAULT_INFO_KEYS.values()) <= set(info)
    np.testing.assert_array_equal(info["state"], s0)
    np.testing.assert_array_equal(info["next_state"], env.unwrapped.state)
    assert info["jacobian_state"].shape == (4, 4)
    assert info["jacobian_action"].shape == (4, 1)
    assert all(isinstance(info[k], np.ndarray) for k in jw.DEFAULT_INFO_KEYS.values())
    # The step with Jacobians is the same step as without; the env itself is not changed.
    cartpole64.reset(seed=0)
    obs2, reward2, *_ = cartpole64.step(np.array([0.4]))
    np.testing.assert_array_equal(obs, obs2)
    assert reward == reward2
    fresh = jw.PlaygroundEnv("CartpoleBalance", precision="float64")
    fresh.reset(seed=0)
    assert vars(cartpole64).keys() == vars(fresh).keys()  # no flag was added by the wrapper
    # The same Jacobians as the simulator's combined step-and-Jacobian pass.
    cartpole64.reset(seed=0)
    out = cartpole64.sim.step_jacobian(cartpole64._state, np.array([0.4]))
    np.testing.assert_array_equal(info["jacobian_state"], np.asarray(out.jacobian)[:, :4])


class _InfoWriter(gym.Wrapper):
    def step(self, action):
        obs, r, te, tr, info = self.env.step(action)
        info["state"] = "mine"
        return obs, r, te, tr, info


def test_existing_info_keys_are_never_overwritten(cartpole64) -> None:
    env = jw.JacobianWrapper(_InfoWriter(cartpole64))
    env.reset(seed=0)
    *_, info = env.step(np.array([0.0]))
    assert info["state"] == "mine"
    assert info["jacobian_state"].shape == (4, 4)
    renamed = jw.JacobianWrapper(cartpole64, info_keys={"state": "s_t"})
    *_, info = renamed.step(np.array([0.0]))
    assert "s_t" in info and "state" not in info
    with pytest.raises(ValueError, match="unknown entries"):
        jw.JacobianWrapper(cartpole64, info_keys={"bogus": "x"})


def test_gym_make_registered_ids(cartpole64) -> None:
    for name in jw.available_envs():
        assert jw.gym_id(name) in gym.registry
    env = gym.make("Playground/CartpoleBalance-v0", precision="float64")
    assert isinstance(env.unwrapped, jw.PlaygroundEnv)
    env = jw.JacobianWrapper(env)
    env.reset(seed=0)
    *_, info = env.step(np.array([0.1], dtype=np.float64))
    assert info["jacobian_state"].dtype == np.float64


def test_truncation_at_episode_length() -> None:
    env = jw.PlaygroundEnv("CartpoleBalance", precision="float64", episode_length=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(1))[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_terminated_from_playground_done(cartpole64) -> None:
    """Playground's DM Control envs report done only for NaN states; both paths covered
    by the non-finite test. Here: a healthy step is neither terminated nor truncated."""
    cartpole64.reset(seed=0)
    _, _, terminated, truncated, _ = cartpole64.step(np.zeros(1))
    assert (terminated, truncated) == (False, False)


# ----------------------------------------------------------------- bad input
def test_unknown_env_name_lists_available() -> None:
    with pytest.raises(ValueError, match=r"Available DM Control Suite envs: .*CheetahRun"):
        jw.PlaygroundEnv("CheetahRunn")
    with pytest.raises(ValueError, match="CartpoleBalance"):
        jw.PlaygroundVecEnv("Nope", 2)


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.zeros(2), r"shape \(1,\), got shape \(2,\)"),
        (np.zeros((1, 1)), r"got shape \(1, 1\)"),
        (np.array([np.nan]), r"finite, got \[nan\]"),
        (np.array([np.inf]), r"finite, got \[inf\]"),
    ],
)
def test_bad_action(cartpole64, action, match) -> None:
    cartpole64.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        cartpole64.step(action)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "float16"}, "precision must be one of"),
        ({"episode_length": 0}, "episode_length must be >= 1, got 0"),
        ({"render_mode": "human"}, "render_mode must be None or 'rgb_array'"),
        ({"config_overrides": {"impl": "warp"}}, "must be 'jax'"),
    ],
)
def test_bad_constructor_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        jw.PlaygroundEnv("CartpoleBalance", **kwargs)


def test_wrapping_a_non_playground_env_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"supports jacobian_wrappers\.PlaygroundEnv"):
        jw.JacobianWrapper(gym.make("CartPole-v1"))


def test_nonfinite_state_is_reported_and_never_observed(cartpole64) -> None:
    env = jw.JacobianWrapper(cartpole64)
    last_obs, _ = env.reset(seed=0)
    s = env.unwrapped.state
    s[2:] = 1e200  # velocities whose squares overflow float64
    set_obs = env.unwrapped.set_state(s)
    assert np.isfinite(set_obs).all() and not np.array_equal(set_obs, last_obs)
    obs, _reward, terminated, truncated, info = env.step(np.zeros(1))
    assert info["nonfinite"] is True
    assert truncated and not terminated
    assert np.isfinite(obs).all()
    np.testing.assert_array_equal(obs, set_obs)  # the last finite observation
    assert not np.isfinite(info["next_state"]).all()  # the report, not an observation
    with pytest.raises(ValueError, match="state must be finite"):
        env.unwrapped.set_state(np.full(4, np.nan))


# ----------------------------------------------------------------- render
def test_render_rgb_array() -> None:
    try:
        env = jw.PlaygroundEnv("CartpoleBalance", render_mode="rgb_array")
    except RuntimeError as err:  # a machine without EGL/OSMesa: the error path is tested below
        pytest.skip(f"no OpenGL context on this machine: {err}")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    assert frame.std() > 1.0  # a picture, not a blank buffer
    env.close()


def test_render_without_opengl_is_a_clear_error() -> None:
    code = (
        "import jacobian_wrappers as jw\n"
        "try:\n"
        "    jw.PlaygroundEnv('CartpoleBalance', render_mode='rgb_array')\n"
        "except RuntimeError as e:\n"
        "    print('CLEAR:', e)\n"
    )
    env = {**os.environ, "MUJOCO_GL": "glfw"}
    env.pop("DISPLAY", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert "CLEAR: render_mode='rgb_array' needs an OpenGL context" in out.stdout, out.stderr
    assert "MUJOCO_GL=egl" in out.stdout


def test_set_state_returns_the_new_observation() -> None:
    """ReacherHard's observation (qpos, finger-to-target, qvel) checked with MuJoCo's C forward."""
    import mujoco
    from mujoco import mjx

    env = jw.PlaygroundEnv("ReacherHard", precision="float64")
    old, _ = env.reset(seed=3)
    obs = env.set_state(np.array([1.0, -1.0, 0.3, 0.0]))
    np.testing.assert_array_equal(obs[:2], [1.0, -1.0])
    np.testing.assert_array_equal(obs[4:], [0.3, 0.0])
    model = env.sim.env.mj_model
    data = mjx.get_data(model, env._state.data)  # the target lives in mocap_pos
    data.qpos[:] = [1.0, -1.0]
    mujoco.mj_forward(model, data)
    gid = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, i): i for i in range(model.ngeom)}
    to_target = data.geom_xpos[gid["target"], :2] - data.geom_xpos[gid["finger"], :2]
    np.testing.assert_allclose(obs[2:4], to_target, atol=1e-12)
    assert not np.allclose(obs[2:4], old[2:4])
    np.testing.assert_array_equal(env.step(np.zeros(2))[0][:2], env.state[:2])  # steps on


def test_arguments_are_checked_before_anything_compiles(monkeypatch) -> None:
    """Bad arguments raise TypeError/ValueError naming them; no simulator is built."""
    from mujoco_playground import registry

    import jacobian_wrappers.playground_env as pe
    import jacobian_wrappers.vec_env as ve

    def no_compiling(*args, **kwargs):
        raise AssertionError("a simulator was built for bad arguments")

    monkeypatch.setattr(pe, "get_simulator", no_compiling)
    monkeypatch.setattr(ve, "get_simulator", no_compiling)
    monkeypatch.setattr(registry, "load", no_compiling)  # what builds an MJX env
    cases = [
        (
            lambda: jw.PlaygroundVecEnv("CheetahRun", 2.7),
            TypeError,
            r"n_envs must be an int, got 2\.7",
        ),
        (
            lambda: jw.PlaygroundVecEnv("CheetahRun", None),
            TypeError,
            "n_envs must be an int, got None",
        ),
        (lambda: jw.PlaygroundVecEnv("CheetahRun", True), TypeError, "n_envs must be an int"),
        (lambda: jw.PlaygroundVecEnv("CheetahRun", 0), ValueError, "n_envs must be >= 1, got 0"),
        (
            lambda: jw.PlaygroundVecEnv("CheetahRun", 2, jacobian_every=1.5),
            TypeError,
            "jacobian_every must be an int",
        ),
        (
            lambda: jw.PlaygroundVecEnv("CheetahRun", 2, episode_length=0),
            ValueError,
            "episode_length must be >= 1, got 0",
        ),
        (
            lambda: jw.PlaygroundEnv("CheetahRun", episode_length=0),
            ValueError,
            "episode_length must be >= 1, got 0",
        ),
        (
            lambda: jw.PlaygroundEnv("CheetahRun", episode_length=2.7),
            TypeError,
            r"episode_length must be an int, got 2\.7",
        ),
        (
            lambda: jw.PlaygroundEnv("CheetahRun", episode_length="10"),
            TypeError,
            "episode_length must be an int, got '10'",
        ),
        (lambda: jw.PlaygroundEnv("CheetahRun", seed="1"), TypeError, "seed must be an int"),
        (
            lambda: jw.PlaygroundVecEnv("CheetahRun", 2, jacobians="yes"),
            TypeError,
            "jacobians must be a bool",
        ),
    ]
    for make, error, match in cases:
        with pytest.raises(error, match=match):
            make()
    with pytest.raises(
        ValueError, match=r"keys \['episode_lenght'\].*valid keys: .*episode_length"
    ):
        jw.get_simulator("CheetahRun", config_overrides={"episode_lenght": 10})
    with pytest.raises(ValueError, match=r"\['vision\.nope'\]"):
        jw.get_simulator("CartpoleBalance", config_overrides={"vision.nope": 1})
    with pytest.raises(TypeError, match="config_overrides must be a dict"):
        jw.get_simulator("CheetahRun", config_overrides=[("impl", "jax")])


def test_arguments_are_checked_once_where_the_user_gives_them(monkeypatch) -> None:
    """A new env checks its task, precision and overrides once (one load of the task's
    default config); the task functions of a built simulator, and a second env of the same
    arguments, check nothing again."""
    from mujoco_playground import registry

    import jacobian_wrappers.registry as jw_registry
    import jacobian_wrappers.simulator as sim_mod

    calls: list[str] = []

    def counted(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counted(registry, "get_default_config")
    counted(jw_registry, "check_env_name")
    counted(sim_mod, "check_precision")
    # Overrides no other test uses: this simulator is built here, not found in the cache.
    overrides = {"episode_length": 37}
    env = jw.PlaygroundVecEnv("CartpoleBalance", 2, config_overrides=overrides)
    assert sorted(calls) == ["check_env_name", "check_precision", "get_default_config"]
    assert env.sim.episode_length == 37 and env.sim.config_overrides["impl"] == "jax"
    calls.clear()
    again = jw.PlaygroundVecEnv("CartpoleBalance", 3, config_overrides=overrides)
    task = jw.TaskFunctions(env.sim)
    assert again.sim is env.sim and task.sim is env.sim and calls == []


def test_complex_action_is_refused(cartpole64) -> None:
    cartpole64.reset(seed=0)
    with pytest.raises(TypeError, match="action must be real, got a complex array"):
        cartpole64.step(np.array([0.5 + 0.1j]))


def test_playground_model_deprecation_is_quiet_and_other_warnings_pass() -> None:
    """MuJoCo's 'settotalmass' notice about Playground's own XML is dropped while it loads;
    any other MuJoCo warning still reaches the handler that was there before."""
    import mujoco

    from jacobian_wrappers.simulator import _quiet_model_deprecations

    seen: list[str] = []
    mujoco.set_mju_user_warning(seen.append)
    try:
        with _quiet_model_deprecations():
            mujoco.MjModel.from_xml_string(
                '<mujoco><compiler settotalmass="2"/><worldbody><body><joint/>'
                '<geom size="0.1"/></body></worldbody></mujoco>'
            )
            mujoco.get_mju_user_warning()("some other warning")  # as MuJoCo would call it
        assert seen == ["some other warning"]
        assert mujoco.get_mju_user_warning() is not None  # the previous handler is back
    finally:
        mujoco.set_mju_user_warning(None)


def test_cpu_xla_flag_is_left_out_under_an_accelerator_jaxlib(tmp_path, monkeypatch) -> None:
    """With a GPU plugin importable, the CPU-only flag is not set (unless JAX_PLATFORMS=cpu)."""
    import importlib

    from jacobian_wrappers import _xla_flags

    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    assert not _xla_flags._accelerator_jaxlib()  # this machine: CPU-only jaxlib
    (tmp_path / "jax_cuda12_plugin").mkdir()
    (tmp_path / "jax_cuda12_plugin" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert _xla_flags._accelerator_jaxlib()
    assert _xla_flags.configure_xla_cpu() is False and os.environ["XLA_FLAGS"] == ""
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert not _xla_flags._accelerator_jaxlib()
