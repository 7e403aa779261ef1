"""An ensemble of dynamics models, trained on rows in memory (a replay buffer's).

MBPO's world model is an ensemble: several models of one architecture,
trained on the same data in different orders from different initialisations;
a model rollout draws one member per step, so the members' disagreement acts
as the model's uncertainty. Here the members are any of the project's models
(:data:`~world_models.registry.MODELS`: the study's MLP or a masked model),
deterministic (MSE) rather than MBPO's Gaussian heads, and every loss mode
of :mod:`world_models.losses` trains them, the Jacobian modes included.

* :class:`RewardModel`: an optional learned reward ``r(s, a, s')``, for envs
  whose reward cannot be computed from the state by the simulator.
* :class:`DynamicsEnsemble`: the members, one normaliser, prediction with a
  member per row.
* :class:`EnsembleTrainer`: fits the ensemble on a dict of rows (refitting
  the normaliser, holding rows out to measure the error), one Adam over all
  members, so that repeated calls continue training (as MBPO retrains).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dynamic_sparsity.analysis.stats import DEFAULT_THRESHOLD
from world_models.base import DynamicsModel
from world_models.config import TrainConfig
from world_models.data import InMemoryBatches, rows_to_batch
from world_models.losses import LossMode, check_model_for_mode, compute_loss, configure_mask
from world_models.model import ACTIVATIONS
from world_models.normaliser import Normaliser
from world_models.registry import build_model

__all__ = ["DynamicsEnsemble", "EnsembleTrainer", "RewardModel"]


class RewardModel(nn.Module):
    """A learned reward ``r(s, a, s')``: an MLP on the normalised inputs.

    Args:
        d_s: State dimension.
        d_a: Action dimension.
        width: Hidden units.
        depth: Hidden layers.
        activation: One of :data:`~world_models.model.ACTIVATIONS`.
    """

    def __init__(
        self, d_s: int, d_a: int, width: int = 200, depth: int = 2, activation: str = "silu"
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation][0]
        sizes = [2 * d_s + d_a] + [int(width)] * int(depth)
        layers: list[nn.Module] = []
        for i, o in itertools.pairwise(sizes):
            layers += [nn.Linear(i, o), _Lambda(act)]
        layers.append(nn.Linear(sizes[-1], 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def set_scale(self, rewards: np.ndarray) -> None:
        """Normalise the target by the rewards' mean and standard deviation."""
        with torch.no_grad():
            self.mean.fill_(float(np.mean(rewards)))
            self.scale.fill_(float(np.std(rewards)) + 1e-8)

    def forward(self, state_n: Tensor, action_n: Tensor, next_state_n: Tensor) -> Tensor:
        """Normalised reward from normalised ``(s, a, s')``."""
        return self.net(torch.cat([state_n, action_n, next_state_n], -1)).squeeze(-1)


class _Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class DynamicsEnsemble(nn.Module):
    """Members of one dynamics model class sharing one normaliser.

    A single model is a one-member ensemble (:meth:`of`), so code that runs
    models (``ModelVecEnv``, MBPO) has one interface. The ensemble owns its
    :attr:`elites`: the members that rollouts draw from (MBPO's elites).

    Args:
        members: The models (same ``d_s``, ``d_a`` and class).
        reward: A learned reward, or ``None``.

    Raises:
        ValueError: No members, or members of different sizes or classes.
    """

    def __init__(self, members: Sequence[DynamicsModel], reward: RewardModel | None = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        sizes = {(m.d_s, m.d_a, type(m).__name__) for m in members}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members differ in (d_s, d_a, class): {sorted(sizes)}")
        self.members = nn.ModuleList(members)
        self.reward = reward
        self.d_s, self.d_a = members[0].d_s, members[0].d_a
        self.name = members[0].name
        self.normaliser: Normaliser | None = None
        self._elites = np.arange(len(members))

    @classmethod
    def of(cls, model: DynamicsModel | DynamicsEnsemble) -> DynamicsEnsemble:
        """``model`` itself if it is an ensemble, else a one-member ensemble of it.

        The member keeps its own normaliser (already in its buffers); the
        ensemble's :attr:`normaliser` is the model's, where it has one.
        """
        if isinstance(model, DynamicsEnsemble):
            return model
        ensemble = cls([model])
        ensemble.normaliser = getattr(model, "normaliser", None)
        return ensemble

    @property
    def elites(self) -> np.ndarray:
        """Indices of the members a rollout draws from (default: all), sorted."""
        return self._elites.copy()

    @elites.setter
    def elites(self, indices: Sequence[int]) -> None:
        """Draw only from ``indices`` (MBPO's elites).

        Raises:
            ValueError: No index, a repeated one, or one outside ``[0, n_members)``.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if (
            not len(idx)
            or len(set(idx.tolist())) != len(idx)
            or not ((idx >= 0) & (idx < self.n_members)).all()
        ):
            raise ValueError(
                f"members must be distinct indices in [0, {self.n_members}), got {idx.tolist()}"
            )
        self._elites = np.sort(idx)

    @classmethod
    def build(
        cls,
        model: str,
        d_s: int,
        d_a: int,
        n_members: int = 5,
        *,
        learn_reward: bool = False,
        seed: int = 0,
        **model_kwargs: Any,
    ) -> DynamicsEnsemble:
        """``n_members`` new models ``model`` (``build_model``), seeded ``seed``.

        Raises:
            ValueError: ``n_members < 1``, an unknown model or option.
        """
        if int(n_members) < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            members = [build_model(model, d_s, d_a, **model_kwargs) for _ in range(n_members)]
            reward = RewardModel(d_s, d_a) if learn_reward else None
        return cls(members, reward)

    @property
    def n_members(self) -> int:
        """Number of members."""
        return len(self.members)

    @property
    def predict_delta(self) -> bool:
        """Whether the members predict ``s' - s``."""
        return self.members[0].predict_delta

    def set_normaliser(self, normaliser: Normaliser) -> None:
        """Give every member (and the normaliser of the learned reward) ``normaliser``."""
        for m in self.members:
            m.set_normaliser(normaliser)
        self.normaliser = normaliser

    @torch.no_grad()
    def predict_raw(self, state: Tensor, action: Tensor, member: Tensor | None = None) -> Tensor:
        """Next states from raw ``(s, a)``; row ``i`` by member ``member[i]`` (default: 0).

        The evaluation network of each member (no dropout, hard masks),
        whatever mode the ensemble is in; every member runs once, on its own
        rows only.
        """
        if member is None:
            member = torch.zeros(len(state), dtype=torch.long, device=state.device)
        out = None  # in the members' own dtype (the simulator's step is float64)
        for k in torch.unique(member).tolist():
            rows = member == k
            m = self.members[k]
            was = m.training
            m.eval()
            pred = m.predict_raw(state[rows], action[rows])
            m.train(was)
            if out is None:
                out = pred.new_empty((len(state), pred.shape[-1]))
            out[rows] = pred
        return torch.empty_like(state) if out is None else out

    @torch.no_grad()
    def disagreement(
        self, state: Tensor, action: Tensor, members: Sequence[int] | None = None
    ) -> Tensor:
        """How much ``members`` disagree on the next state of raw ``(s, a)``, per row.

        The largest over state dimensions of the members' standard deviation,
        in normalised next-state units (the units of the next-state error), as
        MOPO's uncertainty ``max_i std_k``.

        Args:
            state: ``(n, d_s)`` raw states.
            action: ``(n, d_a)`` raw actions.
            members: Member indices (default: all); at least two.

        Raises:
            ValueError: Fewer than two members, an index out of range, or no normaliser.
        """
        idx = list(range(self.n_members)) if members is None else [int(k) for k in members]
        if len(idx) < 2 or not all(0 <= k < self.n_members for k in idx):
            raise ValueError(
                f"disagreement needs at least two member indices in [0, {self.n_members}), "
                f"got {idx}"
            )
        if self.normaliser is None:
            raise ValueError("the ensemble has not been fitted yet (no normaliser)")
        rows = torch.ones(len(state), dtype=torch.long, device=state.device)
        preds = torch.stack([self.predict_raw(state, action, rows * k) for k in idx])
        return (preds / self.members[0].out_scale).std(0, correction=0).amax(-1)

    @torch.no_grad()
    def predict_reward(self, state: Tensor, action: Tensor, next_state: Tensor) -> Tensor:
        """The learned reward of raw ``(s, a, s')``.

        Raises:
            ValueError: The ensemble has no learned reward.
        """
        if self.reward is None or self.normaliser is None:
            raise ValueError("this ensemble has no learned reward (learn_reward=False)")
        t = self.members[0]
        x = (torch.cat([state, action], -1) - t.in_mean) / t.in_scale
        s2 = (next_state - t.out_mean) / t.out_scale
        was = self.reward.training
        self.reward.eval()
        r = self.reward(x[..., : self.d_s], x[..., self.d_s :], s2)
        self.reward.train(was)
        return r * self.reward.scale + self.reward.mean


class EnsembleTrainer:
    """Trains a :class:`DynamicsEnsemble` on rows in memory with any loss mode.

    Every :meth:`fit` refits the normaliser on the rows it gets, holds out a
    random ``holdout_fraction`` of them, and trains each member on the rest
    in its own random order. One Adam covers all members (Adam's update is
    per parameter, so this is the same as one optimiser per member) and
    persists between calls.

    Args:
        ensemble: The ensemble.
        loss_mode: One of :data:`~world_models.losses.LOSS_MODES`.
        config: Hyperparameters (``lr``, ``weight_decay``, ``batch_size``,
            ``weights``, ``jacobian_columns``, ``threshold``, ``nonsmooth``,
            ``mask_*``); the rest of :class:`TrainConfig` is not used.
        holdout_fraction: Share of the rows held out for :meth:`fit`'s error.
        seed: Seed of the shuffles and holdout draws.

    Raises:
        ValueError: Unknown loss mode, mask supervision of an unmasked model,
            or a holdout fraction outside ``[0, 1)``.
    """

    def __init__(
        self,
        ensemble: DynamicsEnsemble,
        loss_mode: str = "state",
        config: TrainConfig | None = None,
        holdout_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.config = config = config or TrainConfig()
        self.mode = LossMode.of(loss_mode)  # checked once; the losses take the object
        check_model_for_mode(self.mode, ensemble.members[0])
        if not 0 <= float(holdout_fraction) < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        self.ensemble, self.loss_mode = ensemble, self.mode.name
        self.holdout_fraction, self.seed = float(holdout_fraction), int(seed)
        for m in ensemble.members:
            configure_mask(m, self.mode, config.mask_straight_through)
        groups = [
            g
            for m in ensemble.members
            for g in m.parameter_groups(config.weight_decay, config.mask_weight_decay)
        ]
        if ensemble.reward is not None:
            groups.append({"params": list(ensemble.reward.parameters()), "weight_decay": 0.0})
        self.optimizer = torch.optim.Adam(groups, lr=config.lr)
        self.calls = 0
        self.steps = 0
        #: Per member, the normalised next-state MSE on the last fit's held-out rows.
        self.holdout_member_mse: np.ndarray | None = None

    @property
    def jacobians(self) -> bool:
        """Whether the loss mode needs the ground-truth Jacobians."""
        return self.mode.needs_ground_truth_jacobian

    def _batch(self, rows: Mapping[str, np.ndarray]):
        c = self.config
        threshold = DEFAULT_THRESHOLD if c.threshold is None else c.threshold
        return rows_to_batch(
            dict(rows), self.ensemble.normaliser, jacobians=self.jacobians,
            threshold=threshold, nonsmooth=c.nonsmooth,
        )  # fmt: skip

    def fit(
        self, rows: Mapping[str, np.ndarray], epochs: float = 1.0, max_steps: int | None = None
    ) -> dict[str, float]:
        """Train every member for ``epochs`` passes over ``rows`` (at most ``max_steps`` steps).

        Args:
            rows: ``state``, ``action``, ``next_state`` (``reward`` for a
                learned reward; ``jacobian_*`` for the Jacobian modes).
            epochs: Passes over the train rows (fractions allowed).
            max_steps: Cap on optimiser steps (each steps every member once).

        Returns:
            ``loss`` (mean total of the last pass), ``holdout_mse`` (normalised
            next-state MSE on the held-out rows, mean over members),
            ``reward_mse`` (learned reward, normalised), ``steps``, ``seconds``.

        Raises:
            ValueError: Jacobians missing for a Jacobian mode, or too few rows.
        """
        if self.jacobians and "jacobian_state" not in rows:
            raise ValueError(
                f"loss mode {self.loss_mode!r} needs the rows' Jacobians (jacobian_state, "
                "jacobian_action); collect with Jacobians or use a state mode"
            )
        n = len(rows["state"])
        if n < 2:
            raise ValueError(f"need at least 2 rows to train, got {n}")
        start = time.perf_counter()
        rng = np.random.default_rng([self.seed, self.calls])
        self.calls += 1
        order = rng.permutation(n)
        n_hold = round(self.holdout_fraction * n)
        hold, train = order[:n_hold], order[n_hold:]
        pick = {k: np.asarray(v)[train] for k, v in rows.items()}
        self.ensemble.set_normaliser(Normaliser.fit([pick], eps=self.config.normaliser_eps))
        if self.ensemble.reward is not None:
            self.ensemble.reward.set_scale(pick["reward"])
        data = self._batch(pick)
        bs = self.config.batch_size
        streams = [
            InMemoryBatches.from_batch(data, bs, seed=self.seed * 7919 + self.calls * 101 + k)
            for k in range(self.ensemble.n_members)
        ]
        per_epoch = math.ceil(len(data) / bs)
        total = max(1, math.ceil(epochs * per_epoch))
        if max_steps is not None:
            total = min(total, int(max_steps))
        for m in self.ensemble.members:
            m.train()
        iters = [self._cycle(s) for s in streams]
        losses, steps = [], 0
        while steps < total:
            batches = [next(it) for it in iters]
            loss = self._step(batches)
            losses.append(loss)
            steps += 1
        self.steps += steps
        self.ensemble.eval()  # predictions (rollouts) use the evaluation network
        out = {
            "loss": float(np.mean(losses[-per_epoch:])),
            "steps": float(steps),
            "seconds": time.perf_counter() - start,
        }
        self.holdout_member_mse = None
        if n_hold:
            scores, self.holdout_member_mse = self._scores(
                {k: np.asarray(v)[hold] for k, v in rows.items()}
            )
            out.update(scores)
        return out

    @staticmethod
    def _cycle(stream: InMemoryBatches):
        epoch = 0
        while True:
            stream.set_epoch(epoch)
            yield from stream
            epoch += 1

    def _step(self, batches) -> float:
        c = self.config
        total = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = None
        for member, batch in zip(self.ensemble.members, batches, strict=True):
            loss, _ = compute_loss(member, batch, self.mode, c.weights, c.jacobian_columns)
            reward = self.ensemble.reward
            if reward is not None and member is self.ensemble.members[0]:
                pred = reward(batch.state, batch.action, batch.next_state)
                loss = loss + torch.mean((pred - (batch.reward - reward.mean) / reward.scale) ** 2)
            loss_sum = loss if loss_sum is None else loss_sum + loss
            total += float(loss.detach())
        loss_sum.backward()
        self.optimizer.step()
        for m in self.ensemble.members:
            m.after_step()
        return total / self.ensemble.n_members

    @torch.no_grad()
    def member_mse(self, rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """Normalised next-state MSE of each member on ``rows``: ``(n_members,)``.

        Raises:
            ValueError: The ensemble has not been fitted yet.
        """
        if self.ensemble.normaliser is None:
            raise ValueError("the ensemble has not been fitted yet")
        batch = rows_to_batch(dict(rows), self.ensemble.normaliser, jacobians=False, threshold=0.0)
        errors = []
        for m in self.ensemble.members:
            m.eval()
            pred = m.predict(batch.state, batch.action)
            errors.append(float(torch.mean((pred - batch.next_state) ** 2)))
        return np.array(errors)

    @torch.no_grad()
    def evaluate(self, rows: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Normalised next-state MSE of every member on ``rows`` (and the reward's).

        Returns:
            ``holdout_mse`` (mean over members), ``holdout_mse_min`` and,
            with a learned reward, ``reward_mse``.
        """
        return self._scores(rows)[0]

    @torch.no_grad()
    def _scores(self, rows: Mapping[str, np.ndarray]) -> tuple[dict[str, float], np.ndarray]:
        """:meth:`evaluate`'s scores and the per-member errors they summarise."""
        errors = self.member_mse(rows)
        out = {"holdout_mse": float(np.mean(errors)), "holdout_mse_min": float(np.min(errors))}
        if self.ensemble.reward is not None and "reward" in rows:
            r = self.ensemble.predict_reward(
                torch.as_tensor(rows["state"], dtype=torch.float32),
                torch.as_tensor(rows["action"], dtype=torch.float32),
                torch.as_tensor(rows["next_state"], dtype=torch.float32),
            )
            target = torch.as_tensor(rows["reward"], dtype=torch.float32)
            out["reward_mse"] = float(torch.mean(((r - target) / self.ensemble.reward.scale) ** 2))
        return out, errors
