"""dynamic_sparsity.mbrl.mbpo: MBPO over SB3's SAC.

Its logged true sparsity against a direct count on the buffer's Jacobians, a
resumed run against the saved one, its rollouts against the real steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

import jacobian_wrappers as jw
from dynamic_sparsity.mbrl import (
    MBPO,
    JacobianReplayBuffer,
    MBPOCheckpointCallback,
    MixedSampler,
    ModelBuffer,
    SimulatorModel,
)
from tests.helpers import D_A, D_S
from tests.helpers import fill_buffer as _fill
from world_models import (
    DynamicsEnsemble,
    TrainConfig,
)
from world_models.contact_features import contact_spec


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
    # The MLP takes its own width from the same config; the masked-only options are refused
    # for it (test_mbpo_bad_input).
    heads_only = dataclasses.replace(_mbpo_config(), head_width=16)
    assert _mbpo(cartpole_env, model_config=heads_only).ensemble.members[0].width == 32


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
    with pytest.raises(ValueError, match="model_target must be 'delta', 'next_state'.*'s2'"):
        _mbpo(cartpole_env, model_target="s2")
    with pytest.raises(ValueError, match="rollout_length must be >= 1, got -2"):
        _mbpo(cartpole_env, rollout_length=-2)
    masked_options = dataclasses.replace(_mbpo_config(), mode_dim=4, contact_features=True)
    with pytest.raises(ValueError, match="mode_dim=4, contact_features=True.*'mlp' has no mask"):
        _mbpo(cartpole_env, model_config=masked_options)


def test_mbpo_model_target_picks_what_the_members_predict(cartpole_env) -> None:
    """FTFL's direct next-state prediction: the members' output is s' itself (no skip)."""
    direct = _mbpo(cartpole_env, model_target="next_state", learning_starts=10)
    residual = _mbpo(cartpole_env, model_target="delta", learning_starts=10)
    assert not direct.model_config.predict_delta and residual.model_config.predict_delta
    assert not any(m.predict_delta for m in direct.ensemble.members)
    assert all(m.predict_delta for m in residual.ensemble.members)
    # None keeps the config's own choice.
    assert _mbpo(cartpole_env).model_config.predict_delta == _mbpo_config().predict_delta


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


def _experiment_script():
    """examples/mbrl_experiment.py as a module (its functions, not a subprocess)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "mbrl_experiment.py"
    spec = importlib.util.spec_from_file_location("mbrl_experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # two short real runs, each interrupted once and resumed
@pytest.mark.parametrize("variant", ["sac", "mbpo-mlp"])
def test_mbrl_experiment_run_resumes_from_its_checkpoint(
    tmp_path, monkeypatch, capsys, variant
) -> None:
    import csv
    import json

    script = _experiment_script()
    args = script.build_parser().parse_args(
        ["--out", str(tmp_path), "--sac-steps", "60", "--mbpo-steps", "60",
         "--learning-starts", "20", "--eval-every", "20", "--checkpoint-every", "20",
         "--eval-episodes", "1", "--members", "2", "--model-train-freq", "20",
         "--rollout-batch-size", "32", "--gradient-steps", "1"]
    )  # fmt: skip
    evaluate = script._evaluate

    def killed_at_60(model, env, episodes):
        if model.num_timesteps == 60:
            raise KeyboardInterrupt  # the session ends mid-run
        return evaluate(model, env, episodes)

    monkeypatch.setattr(script, "_evaluate", killed_at_60)
    with pytest.raises(KeyboardInterrupt):
        script.run_one(variant, 1, args)
    ckpt = tmp_path / "ckpt" / f"{variant}_1"
    saved = json.loads((ckpt / "rows.json").read_text())
    assert [r[0] for r in saved] == [20, 40]
    assert not (tmp_path / "runs").exists()

    monkeypatch.setattr(script, "_evaluate", evaluate)
    path = script.run_one(variant, 1, args)  # the same call again: continues
    assert f"{variant}_1: resumed at 40 steps" in capsys.readouterr().out
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    assert [float(r["mean_return"]) for r in rows[:2]] == [r[1] for r in saved]
    assert float(rows[2]["seconds"]) > saved[-1][3]  # the clock goes on from the checkpoint
    assert not ckpt.exists() and not (tmp_path / "ckpt" / f"{variant}_1.tmp").exists()
    # One TensorBoard run, continued: the model table reads its last values.
    assert [p.name for p in (tmp_path / "tb").iterdir()] == [f"{variant}_1_1"]
    assert script.run_one(variant, 1, args) == path  # finished: read back, not rerun


def test_mbrl_experiment_pools_envs_into_one_iqm_table(tmp_path) -> None:
    script = _experiment_script()
    finals = {"CheetahRun": [300.0, 320.0, 340.0], "WalkerRun": [200.0, 260.0, 230.0]}
    for env, values in finals.items():
        runs = tmp_path / env / "runs"
        runs.mkdir(parents=True)
        for seed, value in enumerate(values, 1):
            for variant, shift in (("sac", 0.0), ("mbpo-mlp", 500.0)):
                (runs / f"{variant}_{seed}.csv").write_text(
                    f"step,mean_return,std_return,seconds\n1000,0,0,1\n2000,{value + shift},0,2\n"
                )
    text = script.aggregate([str(tmp_path / e) for e in finals], str(tmp_path / "both"), reps=300)
    assert (tmp_path / "both" / "aggregate.md").read_text() == text
    pooled = np.array(list(finals.values())).T / 1000  # (seeds, envs)
    from scipy import stats

    row = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert f"| {stats.trim_mean(pooled.ravel(), 0.25):.3g} [" in row["sac"]
    # MBPO beat SAC by 0.5 in every (seed, env): every MBPO run beats every SAC run.
    cells = [c.strip() for c in row["mbpo-mlp"].strip("|").split("|")]
    low, high = (float(x) for x in cells[3].split("[")[1].rstrip("]").split(","))
    assert cells[3].startswith("0.5 [") and 0 < low <= 0.5 <= high
    assert cells[4] == "1 [1, 1]"
    with pytest.raises(ValueError, match="holds no finished runs"):
        script.aggregate([str(tmp_path / "nothing")], str(tmp_path / "x"))


def test_mbrl_experiment_summary_reports_iqm_and_draws_iqm_curves(tmp_path) -> None:
    """Three seeds of two variants, written as finished runs: the table's IQM row is the
    trimmed mean of the final returns, and the figure is drawn from the IQM curves."""
    import argparse

    from scipy import stats

    script = _experiment_script()
    finals = {"sac": [100.0, 200.0, 300.0], "mbpo-mlp": [400.0, 500.0, 650.0]}
    (tmp_path / "runs").mkdir()
    for variant, values in finals.items():
        for seed, value in enumerate(values, 1):
            (tmp_path / "runs" / f"{variant}_{seed}.csv").write_text(
                f"step,mean_return,std_return,seconds\n1000,{value / 2},0,10\n2000,{value},0,20\n"
            )
    args = argparse.Namespace(
        out=str(tmp_path), env="CheetahRun", eval_episodes=5, sac_steps=2000, reps=300
    )
    text = script.summarise(args, list(finals), [1, 2, 3])
    assert (tmp_path / "results.md").read_text() == text
    assert (tmp_path / "returns.png").stat().st_size > 0
    lines = text.splitlines()
    assert any(line.startswith("| mbpo-mlp | 2000 | 517 ± 103 |") for line in lines)  # mean ± std
    (iqm_row,) = [line for line in lines if line.startswith("| mbpo-mlp | 3 |")]
    assert f"| {stats.trim_mean(finals['mbpo-mlp'], 0.25):.3g} [" in iqm_row
    assert "| 1 [1, 1] |" in iqm_row  # every MBPO run above every SAC run
