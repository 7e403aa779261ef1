"""``backend="mujoco"``: MuJoCo's C finite differences of the control step, against autodiff."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jacobian_wrappers as jw
from jacobian_wrappers.mujoco_fd import FiniteDifferenceJacobian
from tests.helpers import rollout_states


def _batch(sim: jw.Simulator, n_steps: int, every: int, seed: int):
    """States, actions, warm starts and exact Jacobians/next states of recorded steps."""
    rows = []
    for state, action in rollout_states(sim, n_steps=n_steps, every=every, seed=seed):
        out = sim.step_jacobian(state, action)
        rows.append(
            (
                np.asarray(out.s),
                action,
                np.asarray(state.data.qacc_warmstart),
                np.asarray(out.jacobian),
                np.asarray(out.s_next),
            )
        )
    return [np.stack(col) for col in zip(*rows, strict=True)]


@pytest.mark.parametrize("env_name", ["CartpoleBalance", "FingerSpin"])
def test_c_finite_differences_match_autodiff(env_name: str) -> None:
    """Same next state as MJX (same model, warm start and substeps); Jacobian within FD error.

    FingerSpin's states include the finger touching the spinner (contacts) and the
    spinner at rest (friction loss), where the exact tangent needed a correction.
    """
    sim = jw.get_simulator(env_name, "float64")
    s, actions, warm, exact, s_next = _batch(sim, n_steps=120, every=20, seed=1)
    fd = FiniteDifferenceJacobian(sim.env.mj_model, sim.env.n_substeps, n_threads=1)
    fd_next, fd_jac = fd(s, actions, warm)
    np.testing.assert_allclose(fd_next, s_next, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fd_jac, exact, rtol=1e-4, atol=1e-5)
    # Threads split the batch; every row is the same computation.
    threaded = FiniteDifferenceJacobian(sim.env.mj_model, sim.env.n_substeps, n_threads=2)
    np.testing.assert_array_equal(threaded(s, actions, warm)[1], fd_jac)
    threaded.close()


def test_c_chain_equals_one_step_fd_of_a_single_substep_model() -> None:
    """With one substep the chain is MuJoCo's own mjd_transitionFD, unchanged."""
    import mujoco

    sim = jw.get_simulator("CartpoleBalance", "float64")
    m = sim.env.mj_model
    s, actions, warm, _, _ = _batch(sim, n_steps=20, every=20, seed=0)
    _, jac = FiniteDifferenceJacobian(m, 1, n_threads=1)(s, actions, warm)
    d = mujoco.MjData(m)
    d.qpos[:], d.qvel[:], d.ctrl[:] = s[0, : m.nq], s[0, m.nq :], actions[0]
    d.qacc_warmstart[:] = warm[0]
    a, b = np.zeros((2 * m.nv, 2 * m.nv)), np.zeros((2 * m.nv, m.nu))
    mujoco.mjd_transitionFD(m, d, 1e-6, True, a, b, None, None)
    np.testing.assert_array_equal(jac[0], np.concatenate([a, b], axis=1))


def test_env_backends_agree(cartpole64) -> None:
    """The same steps through the wrapper: C FD Jacobians close to the exact ones, same states."""
    infos = {}
    for backend in ("mjx", "mujoco"):
        env = jw.JacobianWrapper(
            jw.PlaygroundEnv("CartpoleBalance", seed=0, precision="float64", backend=backend)
        )
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        infos[backend] = [env.step(rng.uniform(-1, 1, 1))[4] for _ in range(5)]
    for exact, fd in zip(infos["mjx"], infos["mujoco"], strict=True):
        np.testing.assert_array_equal(fd["next_state"], exact["next_state"])
        for key in ("jacobian_state", "jacobian_action"):
            np.testing.assert_allclose(fd[key], exact[key], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(fd["jacobian_nonsmooth"], exact["jacobian_nonsmooth"])


def test_vec_env_backend_mujoco() -> None:
    venv = jw.PlaygroundVecEnv("CartpoleBalance", 3, seed=0, precision="float64", backend="mujoco")
    venv.reset()
    sim = venv.sim
    actions = np.array([[0.3], [-1.0], [1.0]])  # the last one on its control bound
    warm, before = venv.warmstarts, venv.states
    _, _, _, infos = venv.step(actions)
    tr = venv.last_transition
    np.testing.assert_array_equal(tr["state"], before)
    exact = np.stack(
        [
            np.asarray(sim.jacobian(_state_at(sim, before[i], warm[i]), actions[i])[2])
            for i in range(3)
        ]
    )
    got = np.concatenate([tr["jacobian_state"], tr["jacobian_action"]], axis=2)
    assert tr["jacobian_nonsmooth"][:, -1].tolist() == [False, True, True]
    np.testing.assert_allclose(got[0], exact[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[1:, :, :4], exact[1:, :, :4], rtol=1e-4, atol=1e-6)
    # On its bound an action's column is flagged, and the backends differ there: autodiff
    # (like a central difference) gives half the slope, MuJoCo's FD the one-sided inner one.
    np.testing.assert_allclose(got[1:, :, 4], 2 * exact[1:, :, 4], rtol=1e-4, atol=1e-6)
    assert warm.shape == (3, sim.env.mj_model.nv)
    np.testing.assert_array_equal(infos[2]["jacobian_state"], tr["jacobian_state"][2])


def _state_at(sim: jw.Simulator, s: np.ndarray, warmstart: np.ndarray):
    """A single ``State`` put at ``s`` with the solver's warm start ``warmstart``."""
    with sim.scope():
        state = sim.reset(jax.random.PRNGKey(0))
        data = sim.space.set(state.data, jax.numpy.asarray(s))
        return state.replace(data=data.replace(qacc_warmstart=jax.numpy.asarray(warmstart)))


@pytest.mark.parametrize("bad", ["jax", "MuJoCo", None])
def test_unknown_backend_is_refused_before_compiling(bad) -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        jw.PlaygroundEnv("CheetahRun", backend=bad)
    with pytest.raises(ValueError, match=r"'mjx', 'mujoco'"):
        jw.PlaygroundVecEnv("CheetahRun", 2, backend=bad)


def test_collected_backend_is_recorded_and_reported(tmp_path) -> None:
    """A data set says which backend made its Jacobians; the report says they are not exact."""
    from dynamic_sparsity import analysis as sparsity

    venv = jw.PlaygroundVecEnv("CartpoleBalance", 2, seed=0, precision="float64", backend="mujoco")
    jw.collect(venv, 40, tmp_path / "fd.h5", chunk_size=16)
    reader = sparsity.TransitionReader(tmp_path / "fd.h5")
    assert reader.meta.extra["jacobian_backend"] == "mujoco"
    assert np.isfinite(reader.read("jacobian_state")).all()
    analysis = sparsity.analyse_dataset(tmp_path / "fd.h5", tsne_samples=0)
    assert analysis.jacobian_backend == "mujoco"
    sparsity.write_report([analysis], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Except for CartpoleBalance: those Jacobians are MuJoCo's C finite differences" in text
