"""The shipped expert agents: they load, act in their envs, drive a collection; bad names and
mismatched envs are refused before any step."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import jacobian_wrappers as jw
from jacobian_wrappers.expert_agents import EXPERT_DIR, STUDY_RETURNS, expert_record


def test_every_shipped_agent_has_its_record() -> None:
    records = json.loads((EXPERT_DIR / "returns.json").read_text())
    assert set(jw.available_experts()) == set(records) and records
    for name, r in records.items():
        assert name in STUDY_RETURNS and r["study_return"] == STUDY_RETURNS[name]
        assert r["meets_study"] == (r["mean_return"] >= r["study_return"])
        assert r["episodes"] >= 10 and r["policy"] == "stochastic" and r["timesteps"] > 0


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match="no expert agent 'Nope'; available: .*ReacherHard"):
        jw.load_expert("Nope")


def test_an_env_of_other_shapes_is_refused_naming_both() -> None:
    """ReacherHard's agent (obs 6, action 2) in an env of CartpoleBalance's shapes."""
    other = gym.Env()
    other.observation_space = gym.spaces.Box(-1, 1, (5,))
    other.action_space = gym.spaces.Box(-1, 1, (2,))
    with pytest.raises(ValueError, match=r"observations of shape \(6,\).* shape \(5,\)"):
        jw.load_expert("ReacherHard", other)
    other.observation_space = gym.spaces.Box(-1, 1, (6,))
    other.action_space = gym.spaces.Box(-1, 1, (1,))
    with pytest.raises(ValueError, match=r"actions of shape \(2,\).* shape \(1,\)"):
        jw.load_expert("ReacherHard", other)


@pytest.mark.slow
@pytest.mark.parametrize("name", jw.available_experts())
def test_each_agent_drives_its_env(name: str, tmp_path) -> None:
    """collect(policy="expert:<name>"): the agent's stochastic actions, in its box, stored."""
    env = jw.PlaygroundVecEnv(name, 2, seed=0, jacobians=False, episode_length=20)
    model = jw.load_expert(name, env)
    result = jw.collect(env, 40, tmp_path / "x.h5", policy=f"expert:{name}")
    with jw.TransitionReader(result.path) as data:
        assert len(data) == 40 and f"shipped expert {name}" in data.meta.policy
        actions = data.read("action")
    assert np.all(np.abs(actions) <= 1.0) and actions.std() > 0
    obs = env.reset()
    assert model.predict(obs, deterministic=False)[0].shape == (2, *env.action_space.shape)
    # Stochastic: two draws of the policy's Gaussian differ before clipping or squashing (a
    # policy that saturates, as FingerSpin's, clips both onto the same bound).
    obs_t = model.policy.obs_to_tensor(obs)[0]
    if hasattr(model.policy, "get_distribution"):  # PPO
        dist = model.policy.get_distribution(obs_t)
    else:  # SAC: its actor's squashed Gaussian
        mean, log_std, kwargs = model.actor.get_action_dist_params(obs_t)
        dist = model.actor.action_dist.proba_distribution(mean, log_std, **kwargs)
    gaussian = dist.distribution
    assert not torch.equal(gaussian.sample(), gaussian.sample())
    assert type(model).__name__ == expert_record(name).get("algorithm", "PPO")


def test_scripts_list_the_study_envs_as_the_package_does() -> None:
    """examples/reproduce_paper.py keeps its own copy (its --help imports no JAX)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "reproduce_paper.py"
    spec = importlib.util.spec_from_file_location("reproduce_paper", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert tuple(module.STUDY_ENVS) == jw.STUDY_ENVS
    assert tuple(module.GYM_ENVS) == jw.gym_mujoco.GYM_V5_ENVS
    assert set(STUDY_RETURNS) == set(jw.STUDY_ENVS)


def test_train_all_experts_resumes_each_agent_with_its_own_algorithm() -> None:
    """The script's SAC envs are those whose shipped agent is SAC (train_expert.py refuses
    to resume an agent with another algorithm)."""
    import re
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "examples" / "train_all_experts.sh").read_text()
    sac = set(re.findall(r"\[(\w+)\]=sac", script))
    shipped_sac = {n for n in jw.available_experts() if expert_record(n).get("algorithm") == "SAC"}
    assert shipped_sac <= sac and sac <= set(jw.STUDY_ENVS)
    assert all(f"[{env}]=" in script for env in jw.STUDY_ENVS)  # a step count for each


@pytest.mark.slow  # compiles CartpoleBalance's float64 step
def test_reproduce_paper_with_the_expert_writes_data_cards_and_report(tmp_path) -> None:
    """The one command of the study at scale, at a tiny scale: the shipped expert drives the
    collection, the card's return is the mean over the file's complete episodes."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from dynamic_sparsity.analysis import TransitionReader, episode_returns

    script = Path(__file__).resolve().parents[1] / "examples" / "reproduce_paper.py"
    cmd = [
        sys.executable,
        str(script),
        "--envs",
        "CartpoleBalance",
        "--steps",
        "2400",
        "--n-envs",
        "2",
        "--policy",
        "experts",
        "--tsne-samples",
        "0",
        "--out",
        str(tmp_path),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=900)  # fmt: skip
    card = json.loads((tmp_path / "datasets.json").read_text())["CartpoleBalance"]
    with TransitionReader(tmp_path / "data" / "CartpoleBalance.h5") as data:
        returns = episode_returns(data)
        assert "shipped expert CartpoleBalance" in data.meta.policy
    assert card["rows"] == 2400 and card["episodes"] == len(returns) == 2  # 1000-step episodes
    assert card["mean_return"] == pytest.approx(returns.mean(), abs=0.01)
    assert card["mean_return"] > 900  # the expert balances; a random policy scores far less
    assert (tmp_path / "report" / "report.md").exists()


def test_train_expert_resumes_sac_with_its_newest_replay_buffer(tmp_path) -> None:
    """A stopped SAC run resumes with the buffer it had (older buffers are deleted, a model
    saved without its buffer is passed over); a shipped agent of another algorithm is
    refused before any compile."""
    import subprocess
    import sys
    from pathlib import Path

    from stable_baselines3 import SAC
    from stable_baselines3.common.save_util import load_from_pkl

    script = Path(__file__).resolve().parents[1] / "examples" / "train_expert.py"
    out = tmp_path / "agent.zip"
    base = [sys.executable, str(script), "--env", "CartpoleBalance", "--algo", "sac"]
    base += ["--out", str(out), "--logdir", str(tmp_path / "tb"), "--eval-freq", "100000"]
    base += ["--eval-episodes", "1", "--checkpoint-freq", "100"]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(base + list(extra), capture_output=True, text=True, timeout=600)

    first = run("--timesteps", "200")
    assert first.returncode == 0, first.stderr[-2000:]
    ckpt = tmp_path / "agent_ckpt"
    assert sorted(p.name for p in ckpt.glob("sac_replay_buffer_*")) == [
        "sac_replay_buffer_200_steps.pkl"
    ]
    assert {p.name for p in ckpt.glob("sac_*_steps.zip")} == {
        "sac_100_steps.zip",
        "sac_200_steps.zip",
    }
    # A run stopped after saving a model but before its buffer resumes from the one before.
    (ckpt / "sac_250_steps.zip").write_bytes(b"")
    second = run("--timesteps", "300", "--resume")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "(200 steps)" in second.stdout and "warning" not in second.stdout
    assert SAC.load(out).num_timesteps == 300
    # SB3 checkpoints in the step's callback, before it stores the step's transition, so a
    # buffer saved at step n holds n - 1 rows: 199 loaded + 99 new. Without it: 99.
    assert load_from_pkl(ckpt / "sac_replay_buffer_300_steps.pkl").size() == 298
    assert not (ckpt / "sac_replay_buffer_200_steps.pkl").exists()

    ppo_env = next(n for n in jw.available_experts() if expert_record(n).get("algorithm") is None)
    shipped = EXPERT_DIR / f"{ppo_env}.zip"
    before = shipped.stat().st_mtime
    cmd = [sys.executable, str(script), "--env", ppo_env, "--algo", "sac", "--resume"]
    refused = subprocess.run(
        [*cmd, "--timesteps", "1"], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2
    assert f"the shipped {ppo_env} agent is PPO, not SAC" in refused.stderr
    assert "compiling" not in refused.stderr and shipped.stat().st_mtime == before
