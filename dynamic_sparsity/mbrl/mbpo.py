"""``MBPO``: model-based policy optimisation around SB3's SAC, with any world model of the project.

The loop of Janner et al. (2019), in SB3's terms. SAC acts in the real env
and stores every step, with its ground-truth state and Jacobians, in a
:class:`~dynamic_sparsity.mbrl.JacobianReplayBuffer`. Every ``model_train_freq`` real steps:

1. the ensemble (:class:`~world_models.DynamicsEnsemble` of ``world_model``:
   the study's MLP or a masked model) is evaluated on the real steps it has
   not seen yet (``model/fresh_mse``), then trained on the whole real
   buffer with ``loss_mode`` (the Jacobian modes use the buffer's
   Jacobians);
2. ``rollout_batch_size`` real states are drawn from the buffer and rolled
   out ``rollout_length`` steps in the model
   (:class:`~dynamic_sparsity.mbrl.ModelVecEnv`, a member drawn per step; reward and
   observation from the task's own functions or a learned reward) with the
   current policy, into a model buffer of the last ``model_retain`` rounds
   (``rollout_dynamics="simulator"``: with the true step instead, a
   perfect-model control, :class:`~dynamic_sparsity.mbrl.SimulatorModel`).

Two guards against model error, both off by default: ``n_elites`` members
of lowest held-out error after each training are the only ones drawn in
rollouts (MBPO's elites: 5 of 7), and ``rollout_keep < 1`` keeps, at every
rollout step, only that share of the transitions on which the elites agree
most (:meth:`~world_models.DynamicsEnsemble.disagreement`), ending the other
branches (the masking of M2AC, Pan et al. 2020). A third, also off by
default: ``rollout_anchor`` predicts each branch's first step as the real
transition its start state came with, moved by the model's response to the
policy's new action, ``s'_real + f(s, a) - f(s, a_real)``: the model's error
at the state cancels (its response to the action was measured right to
~1e-4 on CartpoleBalance, its state response less so).

Every SAC gradient step samples ``real_ratio`` of its batch from the real
buffer and the rest from the model buffer.

Logged through SB3's logger (TensorBoard with ``tensorboard_log``):
``model/loss``, ``model/holdout_mse``, ``model/fresh_mse``,
``model/reward_mse`` (learned reward), ``model/rollout_length``,
``model/rollout_kept`` (share of the branch steps kept),
``model/rollout_disagreement`` (mean over the steps drawn),
``model/elite_holdout_mse``, ``model/buffer_size``, ``model/train_seconds``,
``model/rollout_seconds``,
and the sparsity of the model's Jacobian next to the simulator's on the same
fresh real steps, per sample at ``sparsity_threshold``, as
:class:`~callbacks.SparsityCallback` counts it:
``model/jacobian_sparsity_{state,action,combined}`` and
``model/true_sparsity_{state,action,combined}``, and the model Jacobian's
error there (MSE of the normalised ``J_s``, ``J_a`` over the valid columns,
as :func:`~world_models.evaluate` scores a test set):
``model/jacobian_mse_{state,action}``.

Checkpoints: :meth:`MBPO.save_checkpoint` writes the SB3 zip (policy,
optimisers, ensemble and its optimiser), the real buffer and the model
buffer; :meth:`MBPO.load_checkpoint` restores all three and ``learn(...,
reset_num_timesteps=False)`` continues. :class:`MBPOCheckpointCallback`
saves every ``save_freq`` steps.
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback

from dynamic_sparsity.analysis.stats import (
    DEFAULT_THRESHOLD,
    combine,
    sample_sparsity,
    valid_mask,
    zero_mask,
)
from dynamic_sparsity.mbrl.model_buffer import MixedSampler, ModelBuffer
from dynamic_sparsity.mbrl.model_env import ModelVecEnv
from dynamic_sparsity.mbrl.oracle import SimulatorModel
from dynamic_sparsity.mbrl.replay_buffer import JacobianReplayBuffer
from jacobian_wrappers.vec_env import PlaygroundVecEnv
from jacobian_wrappers.vec_transitions import vec_transition
from world_models.config import TrainConfig
from world_models.ensemble import DynamicsEnsemble, EnsembleTrainer
from world_models.losses import LOSS_MODES, needs_ground_truth_jacobian
from world_models.normaliser import Normaliser, scale_jacobian
from world_models.registry import MASKED_MODELS, model_class

__all__ = ["MBPO", "MBPO_MODEL_CONFIG", "MBPOCheckpointCallback"]

#: World-model settings of the loop: mbrl-lib's 4 x 200 SiLU members, no dropout,
#: predicting ``s' - s`` as MBPO does. Measured on CartpoleBalance (3,000 real
#: steps, 5 epochs per training): error on the fresh real steps 0.0001-0.005
#: (normalised MSE) predicting the delta, 0.004-0.74 predicting ``s'`` itself.
MBPO_MODEL_CONFIG = TrainConfig(
    predict_delta=True,
    width=200,
    head_width=64,
    depth=4,
    activation="silu",
    dropout=0.0,
    lr=0.001,
    weight_decay=0.0,
    batch_size=256,
    progress=False,
)

_STATE_MODES = [m for m in LOSS_MODES if not needs_ground_truth_jacobian(m)]


def _check_env(env: Any, loss_mode: str) -> None:
    """The env must be a Playground env; a Jacobian loss needs its Jacobians."""
    base = env.unwrapped
    if not isinstance(base, PlaygroundVecEnv):
        raise ValueError(
            f"MBPO needs a jacobian_wrappers.PlaygroundVecEnv (possibly wrapped), got "
            f"{type(base).__name__}: the model rollouts evaluate the task's own "
            "observation and reward at predicted states"
        )
    if needs_ground_truth_jacobian(loss_mode) and not base.jacobians:
        raise ValueError(
            f"loss mode {loss_mode!r} trains on the env's Jacobians, but this env gives "
            "none: use PlaygroundVecEnv(..., jacobians=True) (or JacobianWrapper envs), "
            f"or a mode without ground-truth Jacobians: {_STATE_MODES}"
        )


class MBPO(SAC):
    """SAC trained mostly on branched rollouts of a learned world model (MBPO).

    Args:
        policy: As SAC's (``"MlpPolicy"``).
        env: A ``PlaygroundVecEnv`` (``jacobians=True`` for the Jacobian loss modes).
        world_model: Model of the ensemble members (:data:`~world_models.MODELS`).
        loss_mode: Their loss (:data:`~world_models.LOSS_MODES`).
        model_config: Their hyperparameters (:data:`MBPO_MODEL_CONFIG` by default);
            its ``model`` is set to ``world_model`` (whose options it selects:
            a masked model's head width, mode code, contact features).
        model_target: What the members predict: ``"delta"`` (``s' - s``, as MBPO
            does), ``"next_state"`` (``s'`` itself: the direct next-state
            prediction of "Fixing That Free Lunch", arXiv 2510.01457), or
            ``None`` (the config's ``predict_delta``). Either is z-scored per
            dimension, and a learned reward has its own scale: the paper's other
            fix, unit normalisation of each target, is how every model here trains.
        n_members: Ensemble size.
        n_elites: Members drawn in rollouts: the ``n_elites`` of lowest
            held-out error at the last training (``None``: all).
        model_train_freq: Real steps between model trainings (and rollout rounds).
        model_epochs: Passes over the real buffer per training.
        model_max_steps: Cap on optimiser steps per training (``None``: none).
        holdout_fraction: Share of the buffer held out for ``model/holdout_mse``.
        rollout_length: ``k``, or a function ``num_timesteps -> k`` (MBPO's schedules).
        rollout_batch_size: Real start states per rollout round.
        rollout_keep: Share of each rollout step's transitions kept (the
            ones of least ensemble disagreement); the others end their branch.
            ``1``: all.
        rollout_anchor: Anchor each branch's first step to the real transition
            its start state was drawn from: ``s' = s'_real + f(s, a) - f(s,
            a_real)`` with the drawn member ``f`` and the policy's action ``a``
            (:meth:`~dynamic_sparsity.mbrl.ModelVecEnv.step_arrays`), so the model's
            error at that state cancels and only its action response counts.
        model_retain: Rollout rounds the model buffer keeps.
        real_ratio: Share of real transitions in every SAC batch.
        reward: ``"simulator"`` (the task's reward at the predicted state) or
            ``"learned"`` (a reward model trained with the ensemble).
        buffer_dtype: Storage dtype of the real buffer's ground truth.
        sparsity_threshold: Zero threshold of the logged sparsity.
        sparsity_rows: Fresh real steps the logged sparsity is computed on.
        rollout_dynamics: ``"model"`` (the ensemble) or ``"simulator"`` (the
            true step: a perfect-model control; the ensemble is still trained
            and its errors logged).
        **kwargs: SAC's (``learning_starts``, ``gradient_steps``,
            ``buffer_size``, ``tensorboard_log``, ``seed``, ...).

    Raises:
        ValueError: An env that is not a Playground env, a Jacobian loss on an
            env without Jacobians, an unknown model or loss, or a bad size.

    Example:
        >>> import jacobian_wrappers as jw
        >>> from dynamic_sparsity.mbrl import MBPO
        >>> env = jw.PlaygroundVecEnv("CartpoleBalance", n_envs=1, episode_length=30)
        >>> agent = MBPO("MlpPolicy", env, n_members=2, model_train_freq=40, rollout_length=1,
        ...              rollout_batch_size=32, learning_starts=40, batch_size=32, seed=0)
        >>> agent = agent.learn(100)
        >>> agent.ensemble_trainer.calls, agent.model_buffer.size()  # trained twice, 32 each
        (2, 64)
    """

    def __init__(
        self,
        policy: Any,
        env: Any,
        *,
        world_model: str = "mlp",
        loss_mode: str = "state",
        model_config: TrainConfig | None = None,
        model_target: str | None = None,
        n_members: int = 5,
        n_elites: int | None = None,
        model_train_freq: int = 250,
        model_epochs: float = 1.0,
        model_max_steps: int | None = None,
        holdout_fraction: float = 0.1,
        rollout_length: int | Callable[[int], int] = 1,
        rollout_batch_size: int = 10_000,
        rollout_keep: float = 1.0,
        rollout_anchor: bool = False,
        model_retain: int = 4,
        real_ratio: float = 0.05,
        reward: str = "simulator",
        buffer_dtype: str | None = None,
        sparsity_threshold: float = DEFAULT_THRESHOLD,
        sparsity_rows: int = 256,
        rollout_dynamics: str = "model",
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        model_class(world_model)  # an unknown name raises, listing the models
        if loss_mode not in LOSS_MODES:
            raise ValueError(f"unknown loss mode {loss_mode!r}; modes: {list(LOSS_MODES)}")
        if reward not in ("simulator", "learned"):
            raise ValueError(f"reward must be 'simulator' or 'learned', got {reward!r}")
        if rollout_dynamics not in ("model", "simulator"):
            raise ValueError(
                f"rollout_dynamics must be 'model' or 'simulator', got {rollout_dynamics!r}"
            )
        if rollout_dynamics == "simulator" and reward == "learned":
            raise ValueError("rollout_dynamics='simulator' needs reward='simulator'")
        if model_target not in (None, "delta", "next_state"):
            raise ValueError(
                f"model_target must be 'delta', 'next_state' or None, got {model_target!r}"
            )
        if not callable(rollout_length) and int(rollout_length) < 1:
            raise ValueError(f"rollout_length must be >= 1, got {rollout_length}")
        for name, value in (
            ("n_members", n_members), ("model_train_freq", model_train_freq),
            ("rollout_batch_size", rollout_batch_size), ("model_retain", model_retain),
            ("sparsity_rows", sparsity_rows),
        ):  # fmt: skip
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= float(real_ratio) <= 1.0:
            raise ValueError(f"real_ratio must be in [0, 1], got {real_ratio}")
        config = model_config or MBPO_MODEL_CONFIG
        masked_only = {"mode_dim": config.mode_dim, "contact_features": config.contact_features}
        if world_model not in MASKED_MODELS and any(masked_only.values()):
            # An MLP would ignore them silently: the run would not be the one asked for.
            given = ", ".join(f"{k}={v!r}" for k, v in masked_only.items() if v)
            raise ValueError(
                f"model_config has {given}, options of the masked models {list(MASKED_MODELS)} "
                f"only; world_model={world_model!r} has no mask"
            )
        n_elites = int(n_members) if n_elites is None else int(n_elites)
        if not 1 <= n_elites <= int(n_members):
            raise ValueError(f"n_elites must be in [1, n_members={n_members}], got {n_elites}")
        if n_elites < int(n_members) and not float(holdout_fraction) > 0:
            raise ValueError(
                f"n_elites={n_elites} < n_members picks members by held-out error: "
                f"holdout_fraction must be > 0, got {holdout_fraction}"
            )
        if not 0.0 < float(rollout_keep) <= 1.0:
            raise ValueError(f"rollout_keep must be in (0, 1], got {rollout_keep}")
        if float(rollout_keep) < 1.0 and (n_elites < 2 or rollout_dynamics != "model"):
            raise ValueError(
                f"rollout_keep={rollout_keep} ranks model transitions by the disagreement "
                f"of at least two elites (got n_elites={n_elites}) in model rollouts (got "
                f"rollout_dynamics={rollout_dynamics!r})"
            )
        if env is not None:
            _check_env(env, loss_mode)
        self.world_model, self.loss_mode = world_model, loss_mode
        # The config's own model decides which of its options apply (model_kwargs).
        self.model_config = dataclasses.replace(config, model=world_model)
        if model_target is not None:
            self.model_config = dataclasses.replace(
                self.model_config, predict_delta=model_target == "delta"
            )
        self.n_members, self.model_train_freq = int(n_members), int(model_train_freq)
        self.n_elites, self.rollout_keep = n_elites, float(rollout_keep)
        self.rollout_anchor = bool(rollout_anchor)
        self.elites = list(range(self.n_members))  # saved with the run; set per training
        self.model_epochs, self.model_max_steps = float(model_epochs), model_max_steps
        self.holdout_fraction = float(holdout_fraction)
        self.rollout_length = rollout_length
        self.rollout_batch_size, self.model_retain = int(rollout_batch_size), int(model_retain)
        self.real_ratio, self.reward = float(real_ratio), reward
        self.rollout_dynamics = rollout_dynamics
        self.sparsity_threshold, self.sparsity_rows = float(sparsity_threshold), int(sparsity_rows)
        self._next_model_train = 0
        self._last_model_train = 0
        self._normaliser_state: dict | None = None
        buffer_kwargs = dict(kwargs.pop("replay_buffer_kwargs", None) or {})
        buffer_kwargs.setdefault("dtype", buffer_dtype)
        buffer_kwargs.setdefault("jacobians", True)
        kwargs.pop("replay_buffer_class", None)
        super().__init__(
            policy,
            env,
            replay_buffer_class=JacobianReplayBuffer,
            replay_buffer_kwargs=buffer_kwargs,
            _init_setup_model=_init_setup_model,
            **kwargs,
        )

    # ------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        super()._setup_model()
        sim = self.env.unwrapped.sim
        d_s, d_a = sim.space.dim, sim.action_size
        seed = 0 if self.seed is None else int(self.seed)
        self.ensemble = DynamicsEnsemble.build(
            self.world_model,
            d_s,
            d_a,
            self.n_members,
            learn_reward=self.reward == "learned",
            seed=seed,
            **self.model_config.model_kwargs(sim.env_name),
        ).to(self.device)
        self.ensemble_trainer = EnsembleTrainer(
            self.ensemble, self.loss_mode, self.model_config, self.holdout_fraction, seed
        )
        if self._normaliser_state is not None:  # loaded: the weights follow in set_parameters
            self.ensemble.set_normaliser(Normaliser.from_state_dict(self._normaliser_state))
        dynamics = self.ensemble
        if self.rollout_dynamics == "simulator":
            dynamics = SimulatorModel(sim.env_name, sim.precision, sim.config_overrides)
        self.model_env = ModelVecEnv.from_env(
            self.env, dynamics, self.rollout_batch_size, reward=self.reward,
            device=self.device, seed=seed,
        )  # fmt: skip
        if set(self.elites) - set(range(self.n_members)):  # a run saved before elites existed
            self.elites = list(range(self.n_members))
        if self.rollout_dynamics == "model":
            self.model_env.members = self.elites
        obs_dim = int(np.prod(self.observation_space.shape))
        act_dim = int(np.prod(self.action_space.shape))
        k_max = (
            self._rollout_length(10**12) if callable(self.rollout_length) else self.rollout_length
        )
        capacity = self.rollout_batch_size * int(k_max) * self.model_retain
        self.model_buffer = ModelBuffer(capacity, obs_dim, act_dim, self.device)
        self._rng = np.random.default_rng(seed)

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "ensemble", "ensemble_trainer", "model_env", "model_buffer", "_rng",
            "_checkpoint_request",
        ]  # fmt: skip

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "ensemble", "ensemble_trainer.optimizer"], variables

    def _rollout_length(self, timesteps: int) -> int:
        k = self.rollout_length(timesteps) if callable(self.rollout_length) else self.rollout_length
        if int(k) < 1:
            raise ValueError(f"rollout_length must be >= 1, got {k}")
        return int(k)

    # ------------------------------------------------------------ the loop
    def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos):
        # The ground truth of every step (PlaygroundVecEnv's batch arrays), Jacobians or not.
        replay_buffer.stage(vec_transition(self.env, infos, reward, dones))
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """Model training and rollouts when due, then SAC's updates on the real/model mix."""
        if self.num_timesteps >= self._next_model_train:
            self.train_world_model()
            self.rollout_model()
            self._next_model_train = self.num_timesteps + self.model_train_freq
        real = self.replay_buffer
        self.replay_buffer = MixedSampler(real, self.model_buffer, self.real_ratio)
        try:
            super().train(gradient_steps, batch_size)
        finally:
            self.replay_buffer = real

    def _fresh_since(self) -> int:
        """Filled slots of the real buffer before the first one the ensemble has not seen."""
        n_envs = self.replay_buffer.n_envs
        fresh = (self.num_timesteps - self._last_model_train) // n_envs
        return max(0, self.replay_buffer.size() - int(fresh))

    def train_world_model(self) -> dict[str, float]:
        """Evaluate the ensemble on the fresh real steps, then train it on the real buffer."""
        buf = self.replay_buffer
        fresh = buf.rows(since=self._fresh_since())
        logs: dict[str, float] = {}
        if self.ensemble.normaliser is not None and len(fresh["state"]):
            logs["fresh_mse"] = self.ensemble_trainer.evaluate(fresh)["holdout_mse"]
            logs.update(self._jacobian_scores(fresh))
        keys = ["state", "action", "next_state"]
        if self.reward == "learned":
            keys.append("reward")
        if self.ensemble_trainer.jacobians:
            keys += ["jacobian_state", "jacobian_action", "jacobian_nonsmooth"]
        rows = buf.rows(keys=keys)
        result = self.ensemble_trainer.fit(rows, self.model_epochs, self.model_max_steps)
        self._normaliser_state = self.ensemble.normaliser.state_dict()
        self._last_model_train = self.num_timesteps
        errors = self.ensemble_trainer.holdout_member_mse
        if errors is not None:
            self.elites = sorted(np.argsort(errors, kind="stable")[: self.n_elites].tolist())
            logs["elite_holdout_mse"] = float(np.mean(errors[self.elites]))
            if self.rollout_dynamics == "model":
                self.model_env.members = self.elites
        logs.update(
            loss=result["loss"], train_seconds=result["seconds"], train_steps=result["steps"]
        )
        for key in ("holdout_mse", "reward_mse"):
            if key in result:
                logs[key] = result[key]
        for key, value in logs.items():
            self.logger.record(f"model/{key}", value)
        return logs

    def _jacobian_scores(self, fresh: dict[str, np.ndarray]) -> dict[str, float]:
        """The model's Jacobian against the true one on fresh rows: sparsities and error."""
        if "has_jacobian" not in fresh:
            return {}
        rows = np.flatnonzero(fresh["has_jacobian"])[-self.sparsity_rows :]
        if not len(rows):
            return {}
        member = self.ensemble.members[self.elites[0]]
        s = torch.as_tensor(fresh["state"][rows], dtype=torch.float32, device=self.device)
        a = torch.as_tensor(fresh["action"][rows], dtype=torch.float32, device=self.device)
        j_model = member.jacobian_raw(s, a).detach().cpu().numpy()
        j_true = combine(fresh["jacobian_state"][rows], fresh["jacobian_action"][rows])
        d_s = j_true.shape[1]
        valid = valid_mask(fresh["jacobian_nonsmooth"][rows], d_s)
        out = {}
        for name, jac in (("jacobian_sparsity", j_model), ("true_sparsity", j_true)):
            stats = sample_sparsity(zero_mask(jac, self.sparsity_threshold), d_s, valid)
            for part, values in stats.items():
                out[f"{name}_{part}"] = float(np.nanmean(values))
        # How far the model's response to s and a is from the simulator's, in the
        # normalised units the Jacobian losses use (SAC's policy gradient follows the
        # critic's action response, which model transitions shape through J_a).
        in_scale, out_scale = (
            x.detach().cpu().numpy() for x in (member.in_scale, member.out_scale)
        )
        err = scale_jacobian(j_model - j_true, in_scale, out_scale, "normalised") ** 2
        valid = np.ones(err.shape, bool) if valid is None else valid
        for part, cols in (("state", slice(None, d_s)), ("action", slice(d_s, None))):
            if valid[..., cols].any():
                out[f"jacobian_mse_{part}"] = float(err[..., cols][valid[..., cols]].mean())
        return out

    def rollout_model(self) -> dict[str, float]:
        """Branched rollouts of ``rollout_length`` steps from real states into the model buffer."""
        start = time.perf_counter()
        k = self._rollout_length(self.num_timesteps)
        keys = ["state", "observation"]
        if self.rollout_anchor:
            keys += ["action", "next_state"]
        branch = self.replay_buffer.sample_rows(self.rollout_batch_size, self._rng, keys=keys)
        env = self.model_env
        env.set_states(branch["state"])
        # The real env's observation at those states, not the task's at a state set
        # directly: after a step MJX's observation reads positions before the last
        # substep, and a model transition must start as the real ones do.
        obs = branch["observation"]
        alive = np.ones(env.num_envs, dtype=bool)
        added, drawn, disagreement = 0, 0, []
        for step in range(k):
            actions, _ = self.predict(obs, deterministic=False)
            anchor = None
            if self.rollout_anchor and step == 0:
                anchor = (branch["action"], branch["next_state"])
            out = env.step_arrays(actions, anchor=anchor)
            buffer_actions = self.policy.scale_action(out["action"])
            drawn += int(alive.sum())
            if self.rollout_keep < 1.0:
                alive &= self._certain(out["state"], out["action"], alive, disagreement)
            keep = alive.copy()
            self.model_buffer.add(
                obs[keep],
                buffer_actions[keep],
                out["reward"][keep],
                out["observation"][keep],
                out["terminated"][keep].astype(np.float32),
            )
            added += int(keep.sum())
            alive &= ~(out["terminated"] | out["truncated"])
            if not alive.any():
                break
            obs = out["observation"]
        logs = {
            "rollout_length": float(k),
            "rollout_transitions": float(added),
            "rollout_kept": added / max(drawn, 1),
            "buffer_size": float(self.model_buffer.size()),
            "rollout_seconds": time.perf_counter() - start,
        }
        if disagreement:
            logs["rollout_disagreement"] = float(np.mean(np.concatenate(disagreement)))
        for key, value in logs.items():
            self.logger.record(f"model/{key}", value)
        return logs

    def _certain(
        self, states: np.ndarray, actions: np.ndarray, alive: np.ndarray, log: list[np.ndarray]
    ) -> np.ndarray:
        """Of the ``alive`` rows, the ``rollout_keep`` share the elites agree on most."""
        rows = np.flatnonzero(alive)
        t = lambda x: torch.as_tensor(x[rows], dtype=torch.float32, device=self.device)  # noqa: E731
        u = self.ensemble.disagreement(t(states), t(actions), self.elites).cpu().numpy()
        log.append(u)
        n_keep = max(1, round(self.rollout_keep * len(rows)))
        certain = np.zeros_like(alive)
        certain[rows[np.argsort(u, kind="stable")[:n_keep]]] = True
        return certain

    # ------------------------------------------------------------ checkpoints
    def request_checkpoint(self, directory: str | Path) -> None:
        """Save a checkpoint to ``directory`` once the current step is stored.

        SB3 calls the callbacks after the env step but before the step is
        stored in the replay buffer; a checkpoint written there would lack it.
        """
        self._checkpoint_request = Path(directory)

    def _on_step(self) -> None:
        super()._on_step()
        request = getattr(self, "_checkpoint_request", None)
        if request is not None:
            self._checkpoint_request = None
            self.save_checkpoint(request)

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write ``mbpo.zip`` (policy, ensemble, optimisers) and both buffers' ``.pkl``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save(directory / "mbpo.zip")
        self.save_replay_buffer(directory / "replay_buffer.pkl")
        tmp = directory / "model_buffer.pkl.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(self.model_buffer, f)
        tmp.replace(directory / "model_buffer.pkl")  # never a half-written buffer
        return directory

    @classmethod
    def load_checkpoint(cls, directory: str | Path, env: Any, **kwargs: Any) -> MBPO:
        """An MBPO run restored from :meth:`save_checkpoint`: buffers and ensemble included.

        Raises:
            FileNotFoundError: A file of the checkpoint is missing (names it).
        """
        directory = Path(directory)
        for name in ("mbpo.zip", "replay_buffer.pkl", "model_buffer.pkl"):
            if not (directory / name).exists():
                raise FileNotFoundError(f"checkpoint {directory} lacks {name}")
        model = cls.load(directory / "mbpo.zip", env=env, **kwargs)
        model.load_replay_buffer(directory / "replay_buffer.pkl")
        with open(directory / "model_buffer.pkl", "rb") as f:
            model.model_buffer = pickle.load(f)
        return model


class MBPOCheckpointCallback(BaseCallback):
    """Saves :meth:`MBPO.save_checkpoint` to ``directory`` every ``save_freq`` calls (env steps).

    The checkpoint is written right after the step is stored
    (:meth:`MBPO.request_checkpoint`), so a resumed run loses no transition.

    Args:
        save_freq: Steps of the vectorised env between checkpoints.
        directory: Checkpoint directory (overwritten each time).
    """

    def __init__(self, save_freq: int, directory: str | Path, verbose: int = 0) -> None:
        super().__init__(verbose)
        if int(save_freq) < 1:
            raise ValueError(f"save_freq must be >= 1, got {save_freq}")
        self.save_freq, self.directory = int(save_freq), Path(directory)

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            self.model.request_checkpoint(self.directory)
        return True
