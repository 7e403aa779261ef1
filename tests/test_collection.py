"""Collection from the real VecEnv, the training-time callback, and the report on real data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from stable_baselines3 import PPO

import jacobian_wrappers as jw
from callbacks import DatasetCallback
from dynamic_sparsity.analysis import analyse_dataset, contact_stats, write_report
from dynamic_sparsity.analysis.stats import combine, zero_mask

N_ENVS, EPISODE, ROWS = 8, 40, 500


@pytest.fixture(scope="session")
def cartpole_vec64() -> jw.PlaygroundVecEnv:
    return jw.PlaygroundVecEnv(
        "CartpoleBalance", N_ENVS, seed=3, precision="float64", episode_length=EPISODE
    )


@pytest.fixture(scope="session")
def cartpole_data(cartpole_vec64, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "cartpole.h5"
    result = jw.collect(cartpole_vec64, ROWS, path, chunk_size=128)
    assert result.rows == ROWS and result.skipped_nonfinite == 0
    return str(path)


def test_collected_rows_are_real_transitions(cartpole_data, cartpole64):
    with jw.TransitionReader(cartpole_data) as r:
        assert len(r) == ROWS
        assert r.meta.env_name == "CartpoleBalance" and r.meta.precision == "float64"
        assert r.meta.threshold == 1e-15  # exact Jacobians: the study's threshold
        assert r.meta.policy.startswith("random")
        data = {k: r.read(k) for k in r.columns}
        episodes = r.episode_index()
    for rows in episodes.values():
        # Consecutive steps of an episode chain: s_{t+1} of one row is s_t of the next.
        np.testing.assert_array_equal(data["step"][rows], np.arange(len(rows)))
        np.testing.assert_array_equal(data["next_state"][rows[:-1]], data["state"][rows[1:]])
        done = data["terminated"][rows] | data["truncated"][rows]
        assert not done[:-1].any()
    complete = [rows for rows in episodes.values() if len(rows) == EPISODE]
    assert complete and all(data["truncated"][rows[-1]] for rows in complete)
    # A stored Jacobian equals the single env's for the same state and action.
    i = int(episodes[1][7])
    cartpole64.reset(seed=0)
    cartpole64.set_state(data["state"][i])
    wrapped = jw.JacobianWrapper(cartpole64)
    _, _, _, _, info = wrapped.step(data["action"][i])
    np.testing.assert_allclose(info["next_state"], data["next_state"][i], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(info["jacobian_state"], data["jacobian_state"][i], atol=1e-12)
    np.testing.assert_allclose(info["jacobian_action"], data["jacobian_action"][i], atol=1e-12)


def test_resume_continues_episodes(cartpole_vec64, tmp_path):
    path = tmp_path / "resumed.h5"
    jw.collect(cartpole_vec64, 100, path, chunk_size=32)
    result = jw.collect(cartpole_vec64, 260, path, chunk_size=32, resume=True, seed=1)
    assert result.rows == 260 and result.new_rows == 160
    with jw.TransitionReader(path) as r:
        episodes = r.read("episode")
        first, second = set(episodes[:100]), set(episodes[100:])
        assert not first & second  # a resumed run never reuses an episode id
        assert len(r) == 260


def test_collect_bad_input(cartpole_vec64, tmp_path):
    with pytest.raises(ValueError, match="n_steps"):
        jw.collect(cartpole_vec64, 0, tmp_path / "x.h5")
    with pytest.raises(ValueError, match="policy"):
        jw.collect(cartpole_vec64, 10, tmp_path / "x.h5", policy="nonexistent.zip")
    every = jw.PlaygroundVecEnv("CartpoleBalance", 2, precision="float64", jacobian_every=2)
    with pytest.raises(ValueError, match="jacobian_every=2"):
        jw.collect(every, 10, tmp_path / "y.h5")


def test_collect_with_saved_sb3_policy(tmp_path):
    env = jw.PlaygroundVecEnv("CartpoleBalance", 4, precision="float32")
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=64, seed=0)
    model.save(tmp_path / "agent.zip")
    result = jw.collect(env, 64, tmp_path / "agent.h5", policy=str(tmp_path / "agent.zip"))
    with jw.TransitionReader(result.path) as r:
        assert "PPO" in r.meta.policy and len(r) == 64
        assert np.all(np.abs(r.read("action")) <= 1.0)


def test_dataset_callback_records_training(tmp_path):
    env = jw.PlaygroundVecEnv("CartpoleBalance", 4, precision="float64", episode_length=30)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=1, seed=0)
    path = tmp_path / "train.h5"
    model.learn(128, callback=DatasetCallback(path, chunk_size=50))
    with jw.TransitionReader(path) as r:
        assert len(r) == model.num_timesteps == 128
        assert "PPO" in r.meta.policy
        assert np.isfinite(r.read("jacobian_state")).all()
        assert r.read("truncated").sum() == 4 * (128 // 4 // 30)  # 4 envs, episodes of 30
    from stable_baselines3.common.env_util import make_vec_env

    dummy = make_vec_env("CartPole-v1", n_envs=1)
    with pytest.raises(ValueError, match="PlaygroundVecEnv"):
        PPO("MlpPolicy", dummy, n_steps=16, batch_size=16).learn(
            16, callback=DatasetCallback(tmp_path / "no.h5")
        )


def test_report_numbers_match_direct_computation(cartpole_data, tmp_path):
    analysis = analyse_dataset(cartpole_data, tsne_samples=200)
    report = write_report([analysis], tmp_path / "report")
    out = report.parent
    for name in (
        "report.md",
        "summary.csv",
        "summary.json",
        "summary.md",
        "CartpoleBalance_q1_zero_frequency.png",
        "CartpoleBalance_q2_sparsity_histogram.png",
        "CartpoleBalance_q2_tsne.png",
        "CartpoleBalance_q3_timeline.png",
        "CartpoleBalance_q3_run_lengths.png",
    ):
        assert (out / name).stat().st_size > 0, name
    with jw.TransitionReader(cartpole_data) as r:
        jac = combine(r.read("jacobian_state"), r.read("jacobian_action"))
    zeros = zero_mask(jac, 1e-15)
    d_s = 4
    row = json.loads((out / "summary.json").read_text())[0]
    assert row["samples"] == ROWS
    assert row["global_zeros_J_s"] == int(zeros.all(axis=0)[:, :d_s].sum())
    assert row["global_zeros_J_a"] == int(zeros.all(axis=0)[:, d_s:].sum())
    assert row["mean_sparsity"] == pytest.approx(zeros.mean(), abs=1e-4)
    assert row["mean_sparsity_J_s"] == pytest.approx(zeros[:, :, :d_s].mean(), abs=1e-4)
    md = (out / "report.md").read_text()
    assert "float64" in md and "CartpoleBalance" in md and "Q3" in md
    with jw.TransitionReader(cartpole_data) as r:  # episodes cut off by the end, said so
        ended, step = r.read("terminated") | r.read("truncated"), r.read("step")
        last = {ep: rows[np.argmax(step[rows])] for ep, rows in r.episode_index().items()}
    complete = sum(bool(ended[i]) for i in last.values())
    assert analysis.complete_episodes == complete and analysis.n_episodes == len(last)
    assert 0 < complete < len(last)  # 500 rows of 4 envs: both kinds
    assert f"{complete} complete, {len(last) - complete} cut off by the end of collection" in md
    assert "| CartpoleBalance | 4 | 1 | 500 |" in (out / "summary.md").read_text()


def test_contact_stats_hand_built():
    combined = np.array([0.5, 0.1, 0.1, 0.5, 0.5])
    contacts = np.array([0, 1, 1, 0, 0])
    pattern = np.array([True, False, True, False])
    contact = np.array([True, False, True, False])
    c = contact_stats(combined, contacts, pattern, contact)
    assert c.steps_with_contact == pytest.approx(0.4)
    assert c.sparsity_with_contact == pytest.approx(0.1)
    assert c.sparsity_without_contact == pytest.approx(0.5)
    assert (c.pattern_changes, c.contact_changes, c.both_change) == (2, 2, 2)
    assert c.p_contact_given_pattern == 1.0 and c.lift == pytest.approx(2.0)


@pytest.mark.slow
def test_cli_collect_and_report_on_contact_env(tmp_path):
    """The two example scripts end to end on CheetahRun, whose feet touch the ground."""
    data, out = tmp_path / "cheetah.h5", tmp_path / "report"
    cmd = [sys.executable, "examples/collect_dataset.py", "--env", "CheetahRun"]
    cmd += ["--steps", "256", "--n-envs", "8", "--out", str(data)]
    subprocess.run(cmd, check=True, timeout=600)
    cmd = [sys.executable, "examples/sparsity_report.py", "--data", str(data)]
    cmd += ["--out", str(out), "--tsne-samples", "100"]
    subprocess.run(cmd, check=True, timeout=600)
    row = json.loads((out / "summary.json").read_text())[0]
    assert row["env"] == "CheetahRun" and row["d_s"] == 18 and row["d_a"] == 6
    assert row["steps_with_contact_pct"] > 0  # the feet touch the floor
    with jw.TransitionReader(data) as r:
        assert r.read("n_contacts").max() >= 1


def test_threshold_sweep_matches_direct_computation(cartpole_data):
    analysis = analyse_dataset(cartpole_data, tsne_samples=0)
    with jw.TransitionReader(cartpole_data) as r:
        jac = combine(r.read("jacobian_state"), r.read("jacobian_action"))
    assert [row["threshold"] for row in analysis.sweep] == [1e-15, 1e-13, 1e-11, 1e-9]
    for row in analysis.sweep:
        zeros = zero_mask(jac, row["threshold"])
        assert row["global_zeros_J_s"] == int(zeros.all(axis=0)[:, :4].sum())
        assert row["global_zeros_J_a"] == int(zeros.all(axis=0)[:, 4:].sum())
        assert row["mean_sparsity"] == pytest.approx(zeros.mean(), abs=1e-4)
    sweeps = [row["mean_sparsity"] for row in analysis.sweep]
    assert sweeps == sorted(sweeps)  # a larger threshold can only find more zeros


def test_non_smooth_transitions_are_stored_and_masked(cartpole_vec64, tmp_path):
    """SB3-style clipped actions: the ones on the bound are flagged, stored, and left out."""
    rng = np.random.default_rng(0)

    def clipped(obs):
        return np.clip(rng.normal(0.0, 1.5, size=(len(obs), 1)), -1.0, 1.0)

    path = tmp_path / "clipped.h5"
    jw.collect(cartpole_vec64, 256, path, policy=clipped, chunk_size=64)
    with jw.TransitionReader(path) as r:
        flags, action = r.read("jacobian_nonsmooth"), r.read("action")
        jac = combine(r.read("jacobian_state"), r.read("jacobian_action"))
    on_bound = np.abs(action[:, 0]) == 1.0
    assert 0 < on_bound.sum() < len(on_bound)
    np.testing.assert_array_equal(flags[:, 4], on_bound)
    assert not flags[:, :4].any()
    zeros = zero_mask(jac, 1e-15)
    masked = analyse_dataset(path, tsne_samples=0)
    kept = analyse_dataset(path, tsne_samples=0, nonsmooth="keep")
    assert masked.nonsmooth_samples == kept.nonsmooth_samples == on_bound.sum()
    assert masked.nonsmooth_columns.tolist() == [0, 0, 0, 0, int(on_bound.sum())]
    valid = np.ones_like(zeros)
    valid[on_bound, :, 4] = False
    per_sample = (zeros & valid).sum(axis=(1, 2)) / valid.sum(axis=(1, 2))
    assert masked.summary()["mean_sparsity"] == pytest.approx(per_sample.mean(), abs=1e-4)
    assert masked.summary()["mean_sparsity_J_a"] == pytest.approx(
        zeros[~on_bound][:, :, 4].mean(), abs=1e-4
    )
    np.testing.assert_allclose(
        masked.global_zeros.frequency()[:, 4], zeros[~on_bound][:, :, 4].mean(axis=0)
    )
    assert kept.summary()["mean_sparsity"] == pytest.approx(zeros.mean(), abs=1e-4)
    with pytest.raises(ValueError, match="nonsmooth must be one of"):
        analyse_dataset(path, nonsmooth="drop")
    report = (write_report([masked], tmp_path / "report")).read_text()
    assert f"{on_bound.sum()} of 256 transitions" in report and "Threshold sensitivity" in report


def test_collect_builds_no_per_env_jacobian_dicts(cartpole_vec64, tmp_path):
    """collect reads the batch arrays; the VecEnv's infos carry no Jacobians meanwhile, and
    do again afterwards."""
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class Infos(VecEnvWrapper):
        def __init__(self, venv):
            super().__init__(venv)
            self.keys: set[str] = set()

        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            obs, rewards, dones, infos = self.venv.step_wait()
            self.keys |= {k for info in infos for k in info}
            return obs, rewards, dones, infos

    seen = Infos(cartpole_vec64)
    jw.collect(seen, 4 * N_ENVS, tmp_path / "quiet.h5")
    assert "n_contacts" in seen.keys and "jacobian_state" not in seen.keys
    with jw.TransitionReader(tmp_path / "quiet.h5") as r:
        assert np.isfinite(r.read("jacobian_state")).all() and len(r) == 4 * N_ENVS
    assert cartpole_vec64.jacobians_in_infos
    cartpole_vec64.reset()
    infos = cartpole_vec64.step(np.zeros((N_ENVS, 1)))[3]
    assert "jacobian_state" in infos[0]
