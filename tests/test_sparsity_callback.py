"""SparsityCallback during real SB3 training, checked against the TensorBoard event file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard._utils import figure_to_image

import jacobian_wrappers as jw
from callbacks import SparsityCallback
from dynamic_sparsity.analysis.figures import zero_frequency_figure
from tests.reference import episode_runs

THRESHOLD = 1e-15


class _Recorder(BaseCallback):
    """The trivial second callback: keeps every step's Jacobians, dones and valid masks.

    ``valid`` is False for the elements of non-smooth columns (actions that SB3 clipped
    onto their bound), which the statistics leave out.
    """

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[int, list[np.ndarray], np.ndarray]] = []
        self.valid: list[list[np.ndarray]] = []

    def _on_step(self) -> bool:
        infos = [i for i in self.locals["infos"] if "jacobian_state" in i]
        jacs = [np.concatenate([i["jacobian_state"], i["jacobian_action"]], axis=1) for i in infos]
        valid = [
            np.broadcast_to(~i["jacobian_nonsmooth"], j.shape)
            for i, j in zip(infos, jacs, strict=True)
        ]
        self.steps.append((self.num_timesteps, jacs, np.array(self.locals["dones"])))
        self.valid.append(valid)
        return True

    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """All recorded zero masks and valid masks, in order."""
        zeros = np.stack([np.abs(j) < THRESHOLD for _, jacs, _ in self.steps for j in jacs])
        return zeros, np.stack([v for valid in self.valid for v in valid])


def _scalars(logdir: Path, tag: str) -> dict[int, float]:
    files = list(logdir.rglob("events.out.tfevents.*"))
    assert len(files) == 1, files
    acc = EventAccumulator(str(files[0].parent), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}, acc


def _sparsity(jac: np.ndarray, valid: np.ndarray) -> float:
    """Share of zeros among the valid elements of one Jacobian."""
    return float(((np.abs(jac) < THRESHOLD) & valid).sum() / valid.sum())


def _expected(recorder: _Recorder, log_freq: int) -> dict[int, tuple[float, float]]:
    """Per window of log_freq calls: mean sparsity of [J_s | J_a], share of non-smooth samples."""
    out, steps = {}, recorder.steps
    for start in range(0, len(steps) - log_freq + 1, log_freq):
        window = range(start, start + log_freq)
        pairs = [
            (jac, valid)
            for k in window
            for jac, valid in zip(steps[k][1], recorder.valid[k], strict=True)
        ]
        mean = float(np.mean([_sparsity(j, v) for j, v in pairs]))
        nonsmooth = float(np.mean([not v.all() for _, v in pairs]))
        out[steps[start + log_freq - 1][0]] = (mean, nonsmooth)
    return out


def _train_ppo(env, logdir: Path, heatmap_freq: int) -> tuple[_Recorder, SparsityCallback]:
    """PPO for 128 steps with the recorder and a SparsityCallback logging every 8 calls."""
    recorder = _Recorder()
    cb = SparsityCallback(threshold=THRESHOLD, log_freq=8, heatmap_freq=heatmap_freq)
    model = PPO(
        "MlpPolicy", env, n_steps=16, batch_size=32, n_epochs=1, seed=0, tensorboard_log=logdir
    )
    model.learn(total_timesteps=128, callback=CallbackList([recorder, cb]))
    return recorder, cb


def test_ppo_logs_to_tensorboard(tmp_path: Path) -> None:
    venv = jw.PlaygroundVecEnv("CartpoleBalance", 2, seed=0, precision="float64", episode_length=20)
    recorder, cb = _train_ppo(VecMonitor(venv), tmp_path, heatmap_freq=16)

    logged, acc = _scalars(tmp_path, "sparsity/combined")
    flagged = {e.step: e.value for e in acc.Scalars("sparsity/nonsmooth_fraction")}
    expected = _expected(recorder, 8)
    assert set(logged) == set(expected) and len(logged) == 8
    for step, (value, nonsmooth) in expected.items():
        assert logged[step] == pytest.approx(value, rel=1e-6)
        assert flagged[step] == pytest.approx(nonsmooth, rel=1e-6)
    zeros, valid = recorder.samples()
    assert not valid.all()  # PPO's clipped actions sit on their bound: masked, not counted

    tags = acc.Tags()
    for tag in (
        "sparsity/state",
        "sparsity/action",
        "sparsity/global_zeros_state",
        "sparsity/global_zeros_state_pct",
        "sparsity/global_zeros_action",
        "sparsity/distinct_patterns",
        "sparsity/nonsmooth_fraction",
    ):  # the run means appear once a streak has finished (test below)
        assert tag in tags["scalars"], tag
    assert "sparsity/combined_hist" in tags["histograms"]
    assert "sparsity/zero_frequency" in tags["images"]
    assert "sparsity/timeline" in tags["images"]

    # Global zeros at the end: zero wherever valid, over every recorded Jacobian.
    always = (zeros | ~valid).all(axis=0) & valid.any(axis=0)
    gz_state = {e.step: e.value for e in acc.Scalars("sparsity/global_zeros_state")}
    gz_action = {e.step: e.value for e in acc.Scalars("sparsity/global_zeros_action")}
    assert gz_state[max(gz_state)] == always[:, :4].sum()
    assert gz_action[max(gz_action)] == always[:, 4:].sum()
    patterns = {e.step: e.value for e in acc.Scalars("sparsity/distinct_patterns")}
    distinct = {(z & v).tobytes() for z, v in zip(zeros, valid, strict=True)}
    assert patterns[max(patterns)] == len(distinct)
    left_out = {e.step: e.value for e in acc.Scalars("sparsity/distinct_left_out")}
    assert left_out[max(left_out)] == len({(~v).tobytes() for v in valid if not v.all()})
    for tag in tags["scalars"]:  # a statistic not yet defined is absent, never NaN
        assert all(np.isfinite(e.value) for e in acc.Scalars(tag)), tag
    assert cb.state_labels == venv.tangent_labels and cb.action_labels == venv.action_labels

    # The heatmap in the event file is the full figure of the recorded zero frequency.
    event = acc.Images("sparsity/zero_frequency")[-1]
    logged_png = np.asarray(PILImage.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    freq = (zeros & valid).sum(axis=0) / np.maximum(valid.sum(axis=0), 1)
    title = f"zero frequency (|J| < {THRESHOLD:g}), {len(zeros)} samples"
    fig = zero_frequency_figure(freq, venv.tangent_labels, venv.action_labels, title=title)
    expected_png = figure_to_image(fig, close=True).transpose(1, 2, 0)[..., :3]
    np.testing.assert_array_equal(logged_png, expected_png)


def test_run_lengths_and_timeline_match_offline_computation(tmp_path: Path) -> None:
    """FingerSpin (contacts switch elements on and off): streaks exist to be measured."""
    venv = jw.PlaygroundVecEnv("FingerSpin", 2, seed=0, precision="float64", episode_length=20)
    recorder, cb = _train_ppo(venv, tmp_path, heatmap_freq=1000)
    _, acc = _scalars(tmp_path, "sparsity/combined")

    # Streaks since training start, from each env's episodes, computed offline: an element's
    # streaks run over the steps where it is valid (its non-smooth steps are skipped).
    zero_runs, nonzero_runs = [], []
    for env_i in range(2):
        episode, valid = [], []
        for k, (_, jacs, dones) in enumerate(recorder.steps):
            episode.append(np.abs(jacs[env_i]) < THRESHOLD)
            valid.append(recorder.valid[k][env_i])
            if dones[env_i] or k == len(recorder.steps) - 1:
                z, v = np.stack(episode).reshape(len(episode), -1), np.stack(valid)
                for e in range(z.shape[1]):
                    seen = z[v.reshape(len(z), -1)[:, e], e]
                    zr, nr = episode_runs(seen, complete=bool(dones[env_i]))
                    zero_runs.extend(zr)
                    nonzero_runs.extend(nr)
                episode, valid = [], []
    assert zero_runs and nonzero_runs
    for tag, runs in (("zero_run_mean", zero_runs), ("nonzero_run_mean", nonzero_runs)):
        logged_runs = {e.step: e.value for e in acc.Scalars(f"sparsity/{tag}")}
        assert logged_runs[max(logged_runs)] == pytest.approx(np.mean(runs), rel=1e-6), tag

    # The timeline is env 0's last finished episode (steps 41..60 of 64).
    ends = [k for k, (_, _, dones) in enumerate(recorder.steps) if dones[0]]
    last = range(ends[-2] + 1, ends[-1] + 1)
    expected_timeline = [_sparsity(recorder.steps[k][1][0], recorder.valid[k][0]) for k in last]
    np.testing.assert_allclose(cb.last_episode_timeline, expected_timeline)


def test_sac_with_dummy_vec_env_of_wrappers(tmp_path: Path) -> None:
    env = DummyVecEnv(
        [lambda: jw.JacobianWrapper(jw.PlaygroundEnv("CartpoleBalance", precision="float64"))]
    )
    recorder = _Recorder()
    cb = SparsityCallback(threshold=THRESHOLD, log_freq=5, heatmap_freq=1000)
    model = SAC(
        "MlpPolicy", env, learning_starts=10, batch_size=16, seed=0, tensorboard_log=tmp_path
    )
    model.learn(total_timesteps=30, callback=CallbackList([recorder, cb]))
    logged, _ = _scalars(tmp_path, "sparsity/combined")
    expected = _expected(recorder, 5)
    assert len(expected) == 6
    for step, (value, _) in expected.items():
        assert logged[step] == pytest.approx(value, rel=1e-6)


def test_env_without_jacobians_is_a_clear_error() -> None:
    env = jw.PlaygroundVecEnv("CartpoleBalance", 2, precision="float64", jacobians=False)
    model = PPO("MlpPolicy", env, n_steps=8, batch_size=16)
    with pytest.raises(ValueError, match=r"JacobianWrapper|jacobians=True"):
        model.learn(16, callback=SparsityCallback())
    plain = DummyVecEnv([lambda: jw.PlaygroundEnv("CartpoleBalance", precision="float64")])
    with pytest.raises(ValueError, match="provides none"):
        PPO("MlpPolicy", plain, n_steps=8, batch_size=8).learn(8, callback=SparsityCallback())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"threshold": 0}, "threshold must be > 0"), ({"log_freq": 0}, "log_freq must be >= 1")],
)
def test_bad_callback_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        SparsityCallback(**kwargs)


def test_short_run_still_logs_its_figures(tmp_path: Path) -> None:
    """PPO for 512 steps on 4 envs with the default callback (heatmap_freq=1000 calls)."""
    venv = jw.PlaygroundVecEnv("CartpoleBalance", 4, seed=0, precision="float64")
    recorder, cb = _Recorder(), SparsityCallback()
    model = PPO(
        "MlpPolicy", venv, n_steps=128, batch_size=128, n_epochs=1, tensorboard_log=tmp_path
    )
    model.learn(total_timesteps=512, callback=CallbackList([recorder, cb]))
    _, acc = _scalars(tmp_path, "sparsity/combined")
    assert {"sparsity/zero_frequency", "sparsity/timeline"} <= set(acc.Tags()["images"])
    assert len(acc.Images("sparsity/zero_frequency")) == 1  # once, at the end
    # No episode of 1000 steps has finished: the timeline is env 0's 128 steps so far.
    pairs = zip(recorder.steps, recorder.valid, strict=True)
    expected = [_sparsity(jacs[0], valid[0]) for (_, jacs, _), valid in pairs]
    np.testing.assert_allclose(cb._episode0, expected)
    image = acc.Images("sparsity/timeline")[-1]
    assert image.width > 0 and image.height > 0
