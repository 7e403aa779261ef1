"""The buffer of model-generated transitions that SAC trains on (MBPO's model buffer).

A first-in first-out store of ``(obs, action, reward, next_obs, done)`` in the
policy's coordinates (actions scaled to ``[-1, 1]``, as SB3 stores them),
filled in blocks of any size by the branched rollouts, sampled as SB3's
``ReplayBufferSamples``. Model transitions have no timeouts: a rollout that
reaches the episode's length simply stops, so ``done`` is a termination.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.type_aliases import ReplayBufferSamples

__all__ = ["MixedSampler", "ModelBuffer", "concat_samples"]


class ModelBuffer:
    """FIFO buffer of model transitions.

    Args:
        capacity: Transitions kept; the oldest are overwritten.
        obs_dim: Observation size.
        action_dim: Action size.
        device: Torch device of the samples.

    Raises:
        ValueError: A non-positive size.
    """

    def __init__(
        self, capacity: int, obs_dim: int, action_dim: int, device: str | torch.device = "cpu"
    ) -> None:
        for name, value in (
            ("capacity", capacity),
            ("obs_dim", obs_dim),
            ("action_dim", action_dim),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.actions = np.zeros((self.capacity, action_dim), np.float32)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.dones = np.zeros(self.capacity, np.float32)
        self.pos, self.full = 0, False

    def size(self) -> int:
        """Transitions stored."""
        return self.capacity if self.full else self.pos

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        dones: np.ndarray,
    ) -> None:
        """Append a block of ``n`` transitions (beyond the capacity: the last are kept)."""
        n = len(obs)
        if n > self.capacity:
            obs, actions, rewards, next_obs, dones = (
                x[-self.capacity :] for x in (obs, actions, rewards, next_obs, dones)
            )
            n = self.capacity
        idx = (self.pos + np.arange(n)) % self.capacity
        self.obs[idx], self.actions[idx], self.rewards[idx] = obs, actions, rewards
        self.next_obs[idx], self.dones[idx] = next_obs, dones
        if self.pos + n >= self.capacity:
            self.full = True
        self.pos = int((self.pos + n) % self.capacity)

    def sample(self, batch_size: int, env=None) -> ReplayBufferSamples:
        """``batch_size`` transitions drawn uniformly (``env`` unused: no VecNormalize)."""
        if self.size() == 0:
            raise ValueError("the model buffer is empty")
        # NumPy's global generator, as SB3's buffers: SB3's seeding covers it.
        idx = np.random.randint(0, self.size(), size=int(batch_size))  # noqa: NPY002
        t = lambda x: torch.as_tensor(x, device=self.device)  # noqa: E731
        return ReplayBufferSamples(
            t(self.obs[idx]),
            t(self.actions[idx]),
            t(self.next_obs[idx]),
            t(self.dones[idx, None]),
            t(self.rewards[idx, None]),
        )


def concat_samples(a: ReplayBufferSamples, b: ReplayBufferSamples) -> ReplayBufferSamples:
    """One batch of the rows of ``a`` then ``b`` (n-step discounts are not mixed)."""
    if a.discounts is not None or b.discounts is not None:
        raise ValueError("n-step replay samples (discounts) cannot be mixed with model samples")
    return ReplayBufferSamples(
        *(torch.cat([x, y.to(x.device, x.dtype)]) for x, y in zip(a[:5], b[:5], strict=True))
    )


class MixedSampler:
    """Samples a ``real_ratio`` share of each batch from the real buffer, the rest from the model's.

    Stands in for the algorithm's ``replay_buffer`` while it trains (SAC
    calls only ``sample``).

    Args:
        real: The real replay buffer.
        model: The :class:`ModelBuffer`.
        real_ratio: Share of real transitions per batch, in ``[0, 1]``.
    """

    def __init__(self, real, model: ModelBuffer, real_ratio: float) -> None:
        if not 0.0 <= float(real_ratio) <= 1.0:
            raise ValueError(f"real_ratio must be in [0, 1], got {real_ratio}")
        self.real, self.model, self.real_ratio = real, model, float(real_ratio)

    def sample(self, batch_size: int, env=None) -> ReplayBufferSamples:
        """One mixed batch (real rows first)."""
        n_real = round(batch_size * self.real_ratio)
        if n_real == batch_size or self.model.size() == 0:
            return self.real.sample(batch_size, env=env)
        if n_real == 0:
            return self.model.sample(batch_size)
        return concat_samples(
            self.real.sample(n_real, env=env), self.model.sample(batch_size - n_real)
        )
