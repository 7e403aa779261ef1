"""``ModelVecEnv``: a trained world model (or ensemble) as an SB3 ``VecEnv``.

Every ``step`` predicts the next states of all envs in one batched torch
call (CPU or GPU) from the model, one ensemble member drawn per env and
step (MBPO's way of using the ensemble's spread; :attr:`ModelVecEnv.members`
limits the draw to MBPO's elites). Observation and reward
come from functions of the predicted state: the simulator's own
(:class:`jacobian_wrappers.TaskFunctions`, :meth:`ModelVecEnv.from_env`) or a
learned reward (``reward="learned"``, the ensemble's :class:`RewardModel`).
Episodes end as the real env's do: truncation after ``episode_length``
steps (DM Control tasks never terminate), a termination function where the
task has one, and a predicted state that is not finite, which is reported
(``infos[i]["nonfinite"]``) and ends the episode as truncated. Auto-reset
follows SB3's contract (``terminal_observation``, ``TimeLimit.truncated``), so
any SB3 algorithm trains in it.

:meth:`ModelVecEnv.set_states` puts envs at given states (the branched
rollouts of MBPO start from real states); :meth:`ModelVecEnv.step_arrays`
is the step without per-env ``infos`` dicts, for large batches, and can
anchor a step to a known transition from the same state (the model then
predicts only the change that a different action makes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices

from jacobian_wrappers.batched_vec_env import BatchedVecEnv
from jacobian_wrappers.task_functions import TaskFunctions
from jacobian_wrappers.vec_env import PlaygroundVecEnv
from world_models.base import DynamicsModel
from world_models.ensemble import DynamicsEnsemble

__all__ = ["ModelVecEnv", "StepArrays"]

#: ``states -> observations``, both ``(n, ...)`` arrays.
Observe = Callable[[np.ndarray], np.ndarray]
#: ``(states, actions, next_states) -> rewards (n,)``.
Reward = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: ``(next_states, actions) -> observations``: what the real env shows after a step.
ObserveAfter = Callable[[np.ndarray, np.ndarray], np.ndarray]


class StepArrays(dict):
    """One model step of all envs as arrays (:meth:`ModelVecEnv.step_arrays`).

    Keys: ``state``, ``action``, ``next_state``, ``reward``, ``terminated``,
    ``truncated``, ``nonfinite``, ``member``, ``observation`` (of
    ``next_state``, before any reset).
    """


class ModelVecEnv(BatchedVecEnv):
    """``n_envs`` rollouts of a world model as one SB3 ``VecEnv``.

    Args:
        model: A :class:`~world_models.DynamicsModel` or a
            :class:`~world_models.DynamicsEnsemble`, with its normaliser set.
        n_envs: Number of envs.
        observation_space: The real env's (what the agent sees).
        action_space: The real env's; actions are clipped to it, as the
            simulator clamps its controls.
        start_states: ``(m, d_s)`` states to start episodes from (drawn
            uniformly), or a function ``(n, rng) -> (n, d_s)`` states.
        observe: ``states -> observations``; ``None``: the state is the
            observation (the observation space must have the state's shape).
        observe_after: ``(next_states, actions) -> observations`` after a
            model step, where the real env's observation after a step is not
            ``observe(s')`` (MJX reads positions before the last substep);
            ``None``: ``observe``.
        reward: ``(s, a, s') -> rewards``, or ``"learned"`` (the ensemble's reward).
        terminate: ``next_states -> bool (n,)``; ``None``: never (DM Control).
        episode_length: Steps until truncation.
        device: Torch device of the model.
        seed: Seed of the member draws and start states.

    Raises:
        ValueError: Start states or observations of the wrong size (names
            both sizes), ``n_envs < 1``, or ``reward="learned"`` for a model
            without a learned reward.
    """

    def __init__(
        self,
        model: DynamicsModel | DynamicsEnsemble,
        n_envs: int,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        *,
        start_states: np.ndarray | Callable[[int, np.random.Generator], np.ndarray],
        observe: Observe | None = None,
        observe_after: ObserveAfter | None = None,
        reward: Reward | str,
        terminate: Callable[[np.ndarray], np.ndarray] | None = None,
        episode_length: int = 1000,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        if int(n_envs) < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.render_mode = None  # read by SB3's VecEnv.__init__ (it warns without one)
        super().__init__(int(n_envs), observation_space, action_space)
        self.model = DynamicsEnsemble.of(model)  # a single model: a one-member ensemble
        self.d_s = model.d_s
        self.n_members = self.model.n_members
        if model.d_a != int(np.prod(action_space.shape)):
            raise ValueError(
                f"the model takes actions of size {model.d_a}; the action space has "
                f"shape {action_space.shape}"
            )
        if reward == "learned":
            if self.model.reward is None:
                raise ValueError(
                    "reward='learned' needs a DynamicsEnsemble with a learned reward "
                    "(learn_reward=True); pass a reward function instead"
                )
        elif not callable(reward):
            raise ValueError(
                f"reward must be a function (s, a, s') -> r or 'learned', got {reward!r}"
            )
        if observe is None and tuple(observation_space.shape) != (self.d_s,):
            raise ValueError(
                f"observe=None uses the state (size {self.d_s}) as the observation, but the "
                f"observation space has shape {observation_space.shape}; pass observe"
            )
        self.observe_fn, self.reward_fn, self.terminate_fn = observe, reward, terminate
        self.observe_after_fn = observe_after
        self.episode_length = int(episode_length)
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        if callable(start_states):
            self._draw_states = start_states
        else:
            pool = self._check_states(start_states, len(np.asarray(start_states)), "start_states")
            self._draw_states = lambda n, rng: pool[rng.integers(0, len(pool), size=n)]
        self._states: np.ndarray | None = None
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._actions: np.ndarray | None = None
        self._seeds: list[int | None] = [None] * self.num_envs

    # ------------------------------------------------------------ construction
    @classmethod
    def from_env(
        cls,
        env: VecEnv,
        model: DynamicsModel | DynamicsEnsemble,
        n_envs: int | None = None,
        *,
        reward: str = "simulator",
        start_states: np.ndarray | Callable | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> ModelVecEnv:
        """The model of a real Playground env: its spaces, episode length and task functions.

        Args:
            env: A ``PlaygroundVecEnv`` (possibly wrapped).
            model: Model or ensemble of that env's state.
            n_envs: Envs (default: the real env's).
            reward: ``"simulator"`` (the task's reward at the predicted state,
                :class:`~jacobian_wrappers.TaskFunctions`) or ``"learned"``.
            start_states: As for the constructor; default: the real env's
                reset distribution (simulator resets).
            device: Torch device of the model.
            seed: Seed.

        Raises:
            ValueError: ``env`` is not a Playground env, or the model's state
                size differs from the env's (the message names both).
        """
        import jax

        base = env.unwrapped
        if not isinstance(base, PlaygroundVecEnv):
            raise ValueError(
                f"from_env needs a PlaygroundVecEnv, got {type(base).__name__}; build "
                "ModelVecEnv(...) with your own observe/reward functions instead"
            )
        if reward not in ("simulator", "learned"):
            raise ValueError(f"reward must be 'simulator' or 'learned', got {reward!r}")
        sim = base.sim
        if model.d_s != sim.space.dim:
            raise ValueError(
                f"the model predicts states of size {model.d_s}; {sim.env_name}'s state "
                f"has size {sim.space.dim} ({', '.join(sim.space.labels)})"
            )
        task = TaskFunctions(sim)
        if start_states is None:

            def start_states(n: int, rng: np.random.Generator) -> np.ndarray:
                keys = jax.random.split(jax.random.PRNGKey(int(rng.integers(2**31))), n)
                with sim.scope():
                    return np.asarray(jax.vmap(sim.space.get)(sim.batch_reset(keys).data))

        def sim_reward(s: np.ndarray, a: np.ndarray, s2: np.ndarray) -> np.ndarray:
            return task.reward(s2, a)

        return cls(
            model,
            base.num_envs if n_envs is None else n_envs,
            env.observation_space,
            env.action_space,
            start_states=start_states,
            observe=task.observe,
            observe_after=task.observe_after,
            reward=sim_reward if reward == "simulator" else "learned",
            episode_length=sim.episode_length,
            device=device,
            seed=seed,
        )

    # ------------------------------------------------------------ helpers
    def _check_states(self, states: Any, n: int, name: str) -> np.ndarray:
        arr = np.array(states, dtype=np.float64)  # a copy: JAX's arrays are read-only
        if arr.ndim != 2 or arr.shape != (n, self.d_s):
            raise ValueError(
                f"{name} must have shape ({n}, {self.d_s}) (the model's state size "
                f"{self.d_s}), got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite")
        return arr

    def _check_anchor(self, anchor: Any) -> tuple[np.ndarray, np.ndarray]:
        """The anchor's actions (clipped, as a step's) and next states, checked."""
        try:
            actions, next_states = anchor
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"anchor must be a pair (actions, next_states), got {type(anchor).__name__}"
            ) from err
        d_a = int(np.prod(self.action_space.shape))
        a0 = np.array(actions, dtype=np.float64)
        if a0.shape != (self.num_envs, d_a) or not np.isfinite(a0).all():
            raise ValueError(
                f"anchor actions must be finite, of shape ({self.num_envs}, {d_a}), "
                f"got shape {a0.shape}"
            )
        a0 = np.clip(a0, self.action_space.low, self.action_space.high)
        return a0, self._check_states(next_states, self.num_envs, "anchor next_states")

    def _observe(self, states: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        """Observations at ``states`` (set directly), or after a step with ``actions``."""
        if actions is not None and self.observe_after_fn is not None:
            obs = self.observe_after_fn(states, actions)
        elif self.observe_fn is None:
            obs = states
        else:
            obs = self.observe_fn(states)
        obs = np.asarray(obs, dtype=self.observation_space.dtype)
        if obs.shape != (len(states), *self.observation_space.shape):
            raise ValueError(
                f"observe gave shape {obs.shape}; the observation space needs "
                f"({len(states)}, {', '.join(map(str, self.observation_space.shape))})"
            )
        return obs

    def _draw(self, n: int) -> np.ndarray:
        return self._check_states(self._draw_states(n, self.rng), n, "start states")

    # ------------------------------------------------------------ VecEnv API
    def reset(self) -> np.ndarray:
        """Start every env from a drawn start state."""
        self._states = self._draw(self.num_envs)
        self._elapsed[:] = 0
        self._seeds = [None] * self.num_envs
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._observe(self._states)

    @property
    def states(self) -> np.ndarray:
        """Current (predicted) states ``(n_envs, d_s)``."""
        if self._states is None:
            raise RuntimeError("call reset() first")
        return self._states.copy()

    def set_states(self, states: np.ndarray, indices: VecEnvIndices = None) -> np.ndarray:
        """Put envs ``indices`` at ``states`` (their episodes restart); returns all observations.

        Raises:
            ValueError: ``states`` is not ``(len(indices), d_s)`` or not finite.
        """
        if self._states is None:
            self.reset()
        idx = np.asarray(list(self._get_indices(indices)), dtype=int)
        self._states[idx] = self._check_states(states, len(idx), "states")
        self._elapsed[idx] = 0
        return self._observe(self._states)

    @property
    def members(self) -> np.ndarray:
        """Indices of the ensemble members a step draws from (the model's elites)."""
        return self.model.elites

    @members.setter
    def members(self, indices: Sequence[int]) -> None:
        """Draw only from ``indices`` (MBPO's elites; ``DynamicsEnsemble.elites``).

        Raises:
            ValueError: No index, a repeated one, or one outside ``[0, n_members)``.
        """
        self.model.elites = indices

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions for ``step_wait``."""
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)

    @torch.no_grad()
    def _predict(self, states: np.ndarray, actions: np.ndarray, member: np.ndarray) -> np.ndarray:
        s = torch.as_tensor(states, dtype=torch.float32, device=self.device)
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        out = self.model.predict_raw(s, a, torch.as_tensor(member, device=self.device))
        return out.double().cpu().numpy()

    def step_arrays(
        self, actions: np.ndarray, anchor: tuple[np.ndarray, np.ndarray] | None = None
    ) -> StepArrays:
        """One step of every env, as arrays, with auto-reset (no per-env ``infos``).

        Args:
            actions: ``(n_envs, d_a)`` actions (clipped to the action space).
            anchor: ``(actions, next_states)`` of a known transition from each
                env's current state (a real one, for MBPO's branches): the step
                predicts ``next_states + f(s, a) - f(s, anchor actions)`` with
                the drawn member ``f``, so the model's error at the state cancels
                and only its error in the response to the change of action is
                left (none at the anchor's own action).

        Returns:
            :class:`StepArrays`; the envs that are done are reset afterwards
            (:attr:`states` holds their new start states).

        Raises:
            ValueError: An anchor of the wrong shape or not finite.
        """
        if self._states is None:
            raise RuntimeError("call reset() before step()")
        low, high = self.action_space.low, self.action_space.high
        a = np.clip(np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1), low, high)
        elites = self.model.elites
        member = elites[self.rng.integers(0, len(elites), size=self.num_envs)]
        s = self._states
        if anchor is None:
            s2 = self._predict(s, a, member)
        else:
            a0, s2_0 = self._check_anchor(anchor)
            # One batched call for both actions; the same member for both halves.
            both = self._predict(np.concatenate([s, s]), np.concatenate([a, a0]),
                                 np.concatenate([member, member]))  # fmt: skip
            s2 = s2_0 + both[: self.num_envs] - both[self.num_envs :]
        nonfinite = ~np.isfinite(s2).all(axis=1)
        s2 = np.where(nonfinite[:, None], s, s2)  # the last finite state ends the episode
        if self.reward_fn == "learned":
            with torch.no_grad():
                t = lambda x: torch.as_tensor(x, dtype=torch.float32, device=self.device)  # noqa: E731
                r = self.model.predict_reward(t(s), t(a), t(s2)).cpu().numpy()
        else:
            r = np.asarray(self.reward_fn(s, a, s2), dtype=np.float32)
        r = np.where(nonfinite, 0.0, r).astype(np.float32)
        terminated = (
            np.zeros(self.num_envs, bool)
            if self.terminate_fn is None
            else np.asarray(self.terminate_fn(s2), bool)
        )
        self._elapsed += 1
        truncated = ((self._elapsed >= self.episode_length) | nonfinite) & ~terminated
        obs = self._observe(s2, a)
        out = StepArrays(
            state=s, action=a, next_state=s2, reward=r, terminated=terminated,
            truncated=truncated, nonfinite=nonfinite, member=member, observation=obs,
        )  # fmt: skip
        self._states = s2.copy()
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            self._states[done] = self._draw(len(done))
            self._elapsed[done] = 0
        return out

    def step_wait(self):
        """SB3's step: observations (after auto-reset), rewards, dones, infos."""
        out = self.step_arrays(self._actions)
        dones = out["terminated"] | out["truncated"]
        obs = out["observation"].copy()
        infos: list[dict[str, Any]] = [
            {"member": int(out["member"][i]), "next_state": out["next_state"][i]}
            for i in range(self.num_envs)
        ]
        done = np.flatnonzero(dones)
        if len(done):
            obs[done] = self._observe(self._states[done])
            for i in done:
                infos[i]["terminal_observation"] = out["observation"][i]
                infos[i]["TimeLimit.truncated"] = bool(out["truncated"][i])
                if out["nonfinite"][i]:
                    infos[i]["nonfinite"] = True
        return obs, out["reward"], dones, infos

    def close(self) -> None:
        """Nothing to release."""

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Reseed the member and start-state draws."""
        self.rng = np.random.default_rng(seed)
        return [seed] * self.num_envs
