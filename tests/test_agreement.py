"""A Jacobian that is not the env's own never passes silently (jacobian_wrappers.agreement).

Every step compares the next state of the Jacobian's backend with the env's own;
where they differ the step is flagged ``jacobian_mismatch`` and left out. The
reference is always central differences of the env's own C step.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import jacobian_wrappers as jw
from callbacks import SparsityCallback
from dynamic_sparsity.analysis import analyse_dataset
from dynamic_sparsity.analysis.stats import mismatch_rows
from jacobian_wrappers.agreement import (
    MISMATCH_TOLERANCE,
    divergence_cause,
    error_against_central_differences,
    mark_mismatch,
    next_state_error,
)
from jacobian_wrappers.gym_mujoco import GYM_V5_ENVS, default_backend


# ------------------------------------------------------------ pure functions
def test_next_state_error_by_hand() -> None:
    env_next = np.array([[0.0, 2.0, -3.0], [1.0, 1.0, 1.0]])
    backend = np.array([[1e-12, 2.0 + 3e-9, -3.0], [1.0, np.nan, 1.0]])
    err = next_state_error(backend, env_next)
    assert err[0] == pytest.approx(max(1e-12 / 1.0, 3e-9 / 3.0))
    assert err[1] == np.inf  # a non-finite next state is never agreement


def test_mark_mismatch_sets_every_column_of_the_flagged_rows() -> None:
    nonsmooth = np.zeros((3, 5), bool)
    nonsmooth[1, 4] = True  # an action on its bound
    marked = mark_mismatch(nonsmooth, np.array([False, False, True]))
    assert marked[2].all() and marked[1].tolist() == [False] * 4 + [True] and not marked[0].any()
    assert mark_mismatch(nonsmooth, np.zeros(3, bool)) is nonsmooth  # unchanged, no copy
    # The flags count back: a control bound never flags a state column.
    assert mismatch_rows(marked, 3).tolist() == [False, False, True]
    assert not mismatch_rows(marked, 0).any()


# ------------------------------------------------- the default backend per model
def test_divergence_cause_follows_the_friction_cone() -> None:
    ant = gym.make("Ant-v5").unwrapped.model
    assert "pyramidal" in divergence_cause(ant)
    ant.opt.cone = mujoco.mjtCone.mjCONE_ELLIPTIC  # frame-free cone: nothing to diverge
    assert divergence_cause(ant) is None
    for planar in ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"):
        assert divergence_cause(gym.make(planar).unwrapped.model) is None


@pytest.mark.parametrize(
    ("env_id", "cause"), [("Ant-v5", "pyramidal friction cone"), ("Humanoid-v5", "mjSOL_PGS")]
)
def test_models_mjx_cannot_follow_default_to_c_with_a_warning(env_id: str, cause: str) -> None:
    with pytest.warns(UserWarning, match=f"finite differences.*{cause}"):
        env = jw.JacobianWrapper(gym.make(env_id))
    assert env.gym_jacobians.backend == "mujoco"
    assert env.jacobian_source["backend"] == "mujoco"


def test_default_backend_is_exact_where_mjx_follows() -> None:
    assert default_backend(gym.make("HalfCheetah-v5").unwrapped.model) == ("mjx", None)


def test_refusals_are_unchanged() -> None:
    with pytest.raises(ValueError, match="mjSOL_PGS.*backend='mujoco'"):
        jw.JacobianWrapper(gym.make("Humanoid-v5"), backend="mjx")
    with pytest.raises(ValueError, match="backend must be one of"):
        jw.JacobianWrapper(gym.make("Ant-v5"), backend="jax")
    with pytest.warns(UserWarning, match="jacobian_mismatch"):  # asked for: allowed, warned
        jw.JacobianWrapper(gym.make("Ant-v5"), backend="mjx")


# ------------------------------------------------- real steps against the env's own
def _steps(env: gym.Env, n: int, seed: int):
    """``n`` steps at actions within half the box; yields (s, warm, ctrl, info)."""
    inner = env.unwrapped
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    lo, hi = env.action_space.low, env.action_space.high
    for _ in range(n):
        d = inner.data
        s, warm = np.concatenate([d.qpos, d.qvel, d.act]), d.qacc_warmstart.copy()
        action = (lo + hi) / 2 + (hi - lo) / 4 * rng.uniform(-1, 1, lo.shape)
        _, _, terminated, truncated, info = env.step(action)
        yield s, warm, inner.data.ctrl.copy(), info
        if terminated or truncated:
            env.reset()


def _wrong(env: gym.Env, s, warm, ctrl, info) -> bool:
    """Whether the step's Jacobian differs from central differences beyond their own error."""
    jac = np.concatenate([info["jacobian_state"], info["jacobian_action"]], axis=1)
    return error_against_central_differences(env.unwrapped, s, warm, ctrl, jac)[0]


@pytest.fixture(scope="module")
def ant_mjx() -> jw.JacobianWrapper:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return jw.JacobianWrapper(gym.make("Ant-v5"), backend="mjx")


@pytest.mark.slow
def test_ant_mjx_steps_are_flagged_or_exact(ant_mjx) -> None:
    """MJX leaves Ant-v5's C step (its friction pyramid): each such step is flagged and
    left out whole; an unflagged one equals central differences of the env's step."""
    flagged = unflagged = 0
    for s, warm, ctrl, info in _steps(ant_mjx, 16, seed=3):
        mismatch = info.get("jacobian_mismatch", False)
        backend_next = ant_mjx.gym_jacobians.backend_next_state
        err = next_state_error(backend_next, info["next_state"])
        assert mismatch == (err > MISMATCH_TOLERANCE["float64"])
        if mismatch:
            flagged += 1
            assert info["jacobian_nonsmooth"].all()
        else:
            unflagged += 1
            assert not _wrong(ant_mjx, s, warm, ctrl, info)
    assert flagged >= 8  # the feet touch the floor from the third step on


@pytest.mark.slow
def test_ant_both_backends_against_central_differences(ant_mjx) -> None:
    """The C backend (Ant's default) agrees at every step; MJX is wrong where it is flagged."""
    with pytest.warns(UserWarning, match="finite differences"):
        ant_c = jw.JacobianWrapper(gym.make("Ant-v5"))
    wrong_c = [_wrong(ant_c, *step) for step in _steps(ant_c, 8, seed=3)]
    assert not any(wrong_c)
    wrong_mjx = [
        (_wrong(ant_mjx, *step), step[3].get("jacobian_mismatch", False))
        for step in _steps(ant_mjx, 8, seed=3)
    ]
    assert any(w for w, _ in wrong_mjx)  # the disagreement is real ...
    assert all(flag for w, flag in wrong_mjx if w)  # ... and never unflagged


@pytest.mark.slow
@pytest.mark.parametrize("env_id", GYM_V5_ENVS)
def test_no_step_is_unflagged_and_wrong(env_id: str) -> None:
    """Gymnasium's ten MuJoCo v5 envs with the default backend, a few steps each."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        env = jw.JacobianWrapper(gym.make(env_id))
    for s, warm, ctrl, info in _steps(env, 6, seed=3):
        if not info.get("jacobian_mismatch", False):
            assert not _wrong(env, s, warm, ctrl, info)


@pytest.mark.slow
def test_mismatches_are_counted_live_stored_and_left_out(ant_mjx, tmp_path: Path) -> None:
    """SparsityCallback logs the share (read back from the event file); collect stores the
    flags; the analysis counts them and leaves those steps out."""

    class Flags(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.flags: list[bool] = []

        def _on_step(self) -> bool:
            self.flags += [bool(i.get("jacobian_mismatch", False)) for i in self.locals["infos"]]
            return True

    venv = DummyVecEnv([lambda: ant_mjx])
    flags = Flags()
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0)
    model.set_logger(configure(str(tmp_path / "tb"), ["tensorboard"]))
    model.learn(32, callback=CallbackList([flags, SparsityCallback(log_freq=16)]))
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("sparsity/mismatch_fraction")}
    assert logged == pytest.approx({16: np.mean(flags.flags[:16]), 32: np.mean(flags.flags[16:])})
    assert any(flags.flags)

    path = tmp_path / "ant.h5"
    result = jw.collect(venv, 24, path, seed=1)
    with jw.TransitionReader(path) as reader:
        stored = mismatch_rows(reader.read("jacobian_nonsmooth"), reader.meta.d_t)
    analysis = analyse_dataset(path, tsne_samples=0)
    assert analysis.mismatch_samples == int(stored.sum()) > 0
    assert result.rows == 24
    # Left out whole: a flagged row has no valid element, so its sparsity is undefined.
    assert np.isnan(analysis.sparsity["combined"][stored]).all()
    assert not np.isnan(analysis.sparsity["combined"][~stored]).any()


# ------------------------------------------------- the Playground C backend
@pytest.mark.slow
def test_playground_c_backend_flags_where_the_mjx_step_leaves_it() -> None:
    """FingerSpin caps its solver: the C step's next state leaves MJX's on some steps;
    those (and only those, by an independent mj_step) are flagged."""
    venv = jw.PlaygroundVecEnv("FingerSpin", 8, seed=0, precision="float64", backend="mujoco")
    venv.reset()
    model = venv.sim.env.mj_model
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    nq, nv = model.nq, model.nv
    flagged = 0
    for _ in range(30):
        warm = venv.warmstarts
        venv.step_async(rng.uniform(-1, 1, (8, venv.action_space.shape[0])))
        _, _, _, infos = venv.step_wait()
        t = venv.last_transition
        for i, info in enumerate(infos):
            mujoco.mj_resetData(model, data)
            data.qpos[:], data.qvel[:] = t["state"][i, :nq], t["state"][i, nq : nq + nv]
            data.qacc_warmstart[:], data.ctrl[:] = warm[i], t["action"][i]
            for _ in range(venv.sim.env.n_substeps):
                mujoco.mj_step(model, data)
            c_next = np.concatenate([data.qpos, data.qvel])
            gap = np.max(np.abs(c_next - t["next_state"][i]) / (1 + np.abs(t["next_state"][i])))
            mismatch = info.get("jacobian_mismatch", False)
            assert mismatch == (gap > MISMATCH_TOLERANCE["float64"])
            assert t["jacobian_nonsmooth"][i].all() == mismatch
            flagged += mismatch
    assert flagged > 0


def test_envs_of_one_model_share_one_program() -> None:
    """A DummyVecEnv of one Gymnasium id compiles once: equal models, one program."""
    from jacobian_wrappers.gym_mujoco import mjx_step_jacobian, model_fingerprint

    a, b = (gym.make("InvertedPendulum-v5").unwrapped.model for _ in range(2))
    assert model_fingerprint(a) == model_fingerprint(b)
    assert mjx_step_jacobian(a, 2) is mjx_step_jacobian(b, 2)
    b.body_mass[1] += 1.0  # another model: another program
    assert model_fingerprint(a) != model_fingerprint(b)
    assert mjx_step_jacobian(a, 2) is not mjx_step_jacobian(b, 2)
    assert mjx_step_jacobian(a, 2) is not mjx_step_jacobian(a, 2, "unrolled")
