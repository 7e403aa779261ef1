"""An SB3 replay buffer that also keeps the simulator's states and Jacobians.

:class:`JacobianReplayBuffer` is a drop-in ``replay_buffer_class`` for SB3's
off-policy algorithms (SAC, TD3, ...). Next to SB3's fields (observations,
actions in the policy's scale, rewards, dones, timeouts) every slot holds the
ground truth of the transition: the state ``s``, the action as the env
applied it, the next state ``s'`` and, where the env computed them, the
Jacobians ``[J_s | J_a]`` and their non-smooth columns. World models read
these rows directly (:meth:`JacobianReplayBuffer.rows`,
:meth:`JacobianReplayBuffer.batches`), without a file round trip, and the
buffer exports to and imports from the project's HDF5 data sets.

Where the rows come from, in this order:

* a transition staged with :meth:`JacobianReplayBuffer.stage` (the dict of
  arrays of :func:`jacobian_wrappers.vec_transition`, as the model-based
  trainer passes every step; works for every env of the project, Jacobians
  or not);
* otherwise the step's ``infos``, which carry the keys of
  :class:`~jacobian_wrappers.JacobianWrapper` (a ``JacobianWrapper`` env, or a
  ``PlaygroundVecEnv(jacobians=True, jacobian_every=1)``).

Memory per stored transition, on top of SB3's: ``(2 d_s + d_a)`` floats of
state and action, ``d_s (d_s + d_a)`` floats of Jacobian, ``d_s + d_a + 1``
bytes of flags, 2 of done flags and 16 of episode, step and contact count;
:meth:`row_nbytes` computes it (CheetahRun, float32 storage: 1,939 bytes,
1.9 GB per million transitions; float64: 3.8 GB).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer

from dynamic_sparsity.analysis.stats import DEFAULT_THRESHOLD
from dynamic_sparsity.analysis.storage import DatasetMeta, TransitionReader, TransitionWriter
from jacobian_wrappers.collection import EpisodeIds
from jacobian_wrappers.vec_transitions import transition_from_infos
from world_models.data import Batch, rows_to_batch
from world_models.normaliser import Normaliser

__all__ = ["STORAGE_DTYPES", "JacobianReplayBuffer"]

#: Float dtypes of the ground-truth arrays (``None``: as the env gives them).
STORAGE_DTYPES = ("float32", "float64", None)

_FLOATS = ("state", "action", "next_state")
_JACS = ("jacobian_state", "jacobian_action")


def _predecessors(episode: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Per row, the row whose step reached its state (same episode, step - 1), or -1."""
    key = episode.astype(np.int64) * (int(step.max(initial=0)) + 2) + step
    order = np.argsort(key, kind="stable")
    pos = np.minimum(np.searchsorted(key[order], key - 1), len(key) - 1)
    return np.where(key[order][pos] == key - 1, order[pos], -1)


class JacobianReplayBuffer(ReplayBuffer):
    """SB3 ``ReplayBuffer`` with the ground-truth states and Jacobians of every transition.

    Args:
        buffer_size: Transitions kept (over all envs), as SB3's.
        observation_space: As SB3's.
        action_space: As SB3's.
        device: As SB3's.
        n_envs: As SB3's.
        optimize_memory_usage: Must be ``False`` (next observations and next
            states are kept per slot).
        handle_timeout_termination: As SB3's.
        dtype: ``"float32"`` halves the memory of float64 envs; ``None``
            stores what the env gives.
        jacobians: Keep Jacobians when the transitions carry them; ``False``
            stores states only.

    Raises:
        ValueError: ``optimize_memory_usage=True`` or an unknown ``dtype``.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        dtype: str | None = None,
        jacobians: bool = True,
    ) -> None:
        if optimize_memory_usage:
            raise ValueError(
                "JacobianReplayBuffer keeps next states per slot; "
                "optimize_memory_usage=True is not supported"
            )
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device,
            n_envs=n_envs,
            optimize_memory_usage=False,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.storage_dtype, self.keep_jacobians = dtype, bool(jacobians)
        self.truth: dict[str, np.ndarray] | None = None  # allocated on the first row
        self._staged: Mapping[str, np.ndarray] | None = None
        self.ids = EpisodeIds(self.n_envs)

    # ------------------------------------------------------------ layout
    @staticmethod
    def row_nbytes(d_s: int, d_a: int, dtype: str = "float32", jacobians: bool = True) -> int:
        """Bytes of ground truth per transition (on top of SB3's fields)."""
        item = np.dtype(dtype).itemsize
        n = d_s + d_a
        floats = 2 * d_s + d_a + (d_s * n if jacobians else 0)
        flags = 2 + (1 + n if jacobians else 0)  # terminated, truncated; has_jacobian, nonsmooth
        return floats * item + flags + 8 + 4 + 4  # episode (int64), step, n_contacts (int32)

    @property
    def d_s(self) -> int:
        """State dimension (after the first transition)."""
        self._check_allocated()
        return self.truth["state"].shape[-1]

    @property
    def d_a(self) -> int:
        """Action dimension."""
        return self.action_dim

    def _check_allocated(self) -> None:
        if self.truth is None:
            raise ValueError("the buffer holds no transition yet")

    def _allocate(self, transition: Mapping[str, np.ndarray]) -> None:
        d_s = int(np.shape(transition["state"])[-1])
        d_a = int(np.shape(transition["action"])[-1])
        if d_a != self.action_dim:
            raise ValueError(
                f"transitions have actions of size {d_a}; the action space has {self.action_dim}"
            )
        dtype = np.dtype(self.storage_dtype or np.asarray(transition["state"]).dtype)
        shape = (self.buffer_size, self.n_envs)
        truth = {
            k: np.zeros((*shape, d), dtype) for k, d in zip(_FLOATS, (d_s, d_a, d_s), strict=True)
        }
        truth["episode"] = np.zeros(shape, np.int64)
        truth["step"] = np.zeros(shape, np.int32)
        truth["terminated"] = np.zeros(shape, bool)
        truth["truncated"] = np.zeros(shape, bool)
        truth["n_contacts"] = np.zeros(shape, np.int32)
        if self.keep_jacobians:
            truth["jacobian_state"] = np.zeros((*shape, d_s, d_s), dtype)
            truth["jacobian_action"] = np.zeros((*shape, d_s, d_a), dtype)
            truth["jacobian_nonsmooth"] = np.ones((*shape, d_s + d_a), bool)
            truth["has_jacobian"] = np.zeros(shape, bool)
        self.truth = truth

    # ------------------------------------------------------------ adding
    def stage(self, transition: Mapping[str, np.ndarray]) -> None:
        """The ground truth of the next :meth:`add` (``vec_transition``'s dict of arrays)."""
        self._staged = transition

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """SB3's ``add``, plus the ground truth of the step (staged, or from ``infos``).

        Raises:
            ValueError: The step carries no ground-truth state (an env without
                ``JacobianWrapper`` and nothing staged), or a state that is not
                finite (the slot is not written).
        """
        transition = self._staged
        self._staged = None
        if transition is None:
            try:
                transition = transition_from_infos(infos, reward, done)
            except KeyError as err:
                raise ValueError(
                    "JacobianReplayBuffer needs the ground-truth state of every step: wrap "
                    "each env in jacobian_wrappers.JacobianWrapper, use "
                    "PlaygroundVecEnv(jacobians=True, jacobian_every=1), or stage() the "
                    f"step's vec_transition first ({err.args[0]})"
                ) from None
        for key in ("state", "next_state"):
            bad = ~np.isfinite(np.asarray(transition[key])).all(axis=-1)
            if bad.any():
                raise ValueError(
                    f"non-finite {key} in envs {np.flatnonzero(bad).tolist()}; not stored"
                )
        if self.truth is None:
            self._allocate(transition)
        self._write_truth(self.pos, transition)
        super().add(obs, next_obs, action, reward, done, infos)
        self.ids.advance(np.asarray(transition["terminated"]) | np.asarray(transition["truncated"]))

    def _write_truth(self, pos: int, transition: Mapping[str, np.ndarray]) -> None:
        t = self.truth
        for key in _FLOATS:
            t[key][pos] = np.asarray(transition[key]).reshape(self.n_envs, -1)
        t["episode"][pos] = self.ids.episode
        t["step"][pos] = self.ids.step
        for key in ("terminated", "truncated"):
            t[key][pos] = np.asarray(transition[key], bool)
        t["n_contacts"][pos] = np.asarray(transition.get("n_contacts", 0), np.int32)
        if self.keep_jacobians:
            has = "jacobian_state" in transition
            t["has_jacobian"][pos] = has
            if has:
                for key in _JACS:
                    t[key][pos] = transition[key]
                flags = transition.get("jacobian_nonsmooth")  # absent in version-1 files
                t["jacobian_nonsmooth"][pos] = False if flags is None else flags
            else:  # no Jacobian this step: every column left out of Jacobian losses
                for key in _JACS:
                    t[key][pos] = 0.0
                t["jacobian_nonsmooth"][pos] = True

    # ----------------------------------------------------------- reading
    def _slots(self) -> np.ndarray:
        """Filled time slots, oldest first."""
        if self.full:
            return (np.arange(self.buffer_size) + self.pos) % self.buffer_size
        return np.arange(self.pos)

    @property
    def has_jacobians(self) -> bool:
        """Whether every stored transition has its Jacobian."""
        if self.truth is None or "has_jacobian" not in self.truth:
            return False
        return bool(self.truth["has_jacobian"][self._slots()].all()) and self.size() > 0

    def rows(
        self, keys: Sequence[str] | None = None, since: int = 0, index: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Stored ground truth as flat ``(rows, ...)`` arrays, oldest first (env-major per slot).

        Args:
            keys: Columns to return (default: all of the ground truth); ``"reward"``
                and ``"observation"`` are SB3's fields, in the same layout.
            since: Skip the first ``since`` filled slots (e.g. to get the newest rows).
            index: Row numbers into the flat layout instead (``size() * n_envs`` rows).
        """
        self._check_allocated()
        keys = list(keys or self.truth)
        slots = self._slots()[int(since) :]
        sb3 = {"reward": self.rewards, "observation": self.observations}
        out = {}
        for k in keys:
            column = sb3[k] if k in sb3 else self.truth[k]
            flat = column[slots].reshape(len(slots) * self.n_envs, *column.shape[2:])
            out[k] = flat if index is None else flat[index]
        return out

    def batch(
        self,
        normaliser: Normaliser,
        *,
        jacobians: bool = False,
        threshold: float = DEFAULT_THRESHOLD,
        nonsmooth: str = "mask",
        index: np.ndarray | None = None,
        since: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> Batch:
        """Stored rows as one normalised :class:`~world_models.Batch` (the world-model data source).

        With ``jacobians``, rows without a Jacobian have every column marked
        invalid, so the Jacobian losses leave them out.

        Raises:
            ValueError: ``jacobians=True`` on a buffer that keeps none.
        """
        if jacobians and "has_jacobian" not in (self.truth or {}):
            raise ValueError("jacobians=True but this buffer keeps no Jacobians")
        rows = self.rows(since=since, index=index)
        return rows_to_batch(
            rows,
            normaliser,
            jacobians=jacobians,
            threshold=threshold,
            nonsmooth=nonsmooth,
            dtype=dtype,
        )

    def sample_rows(
        self, n: int, rng: np.random.Generator, keys: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """``n`` stored rows drawn uniformly (with replacement): start states of model rollouts.

        ``keys`` as for :meth:`rows`.
        """
        total = self.size() * self.n_envs
        if total == 0:
            raise ValueError("the buffer holds no transition yet")
        return self.rows(keys, index=rng.integers(0, total, size=int(n)))

    # ------------------------------------------------------- HDF5 files
    def to_hdf5(
        self, path: str | os.PathLike, meta: DatasetMeta, *, overwrite: bool = False
    ) -> int:
        """Write the stored transitions as a data set of :mod:`dynamic_sparsity.analysis.storage`.

        Jacobians are written when every stored transition has one (and
        ``meta.jacobians`` asks for them). Episode ids are the buffer's own
        (global over its envs), as a collection would write them.

        Args:
            path: New HDF5 file.
            meta: The data set's metadata (``jacobian_wrappers.dataset_meta(env)``).
            overwrite: Replace an existing file.

        Returns:
            Rows written.

        Raises:
            ValueError: ``meta`` asks for Jacobians the buffer does not have all of,
                or its dimensions differ from the buffer's.
        """
        self._check_allocated()
        if (meta.d_s, meta.d_a) != (self.d_s, self.d_a):
            raise ValueError(
                f"meta is for d_s={meta.d_s}, d_a={meta.d_a}; "
                f"the buffer holds d_s={self.d_s}, d_a={self.d_a}"
            )
        if meta.jacobians and not self.has_jacobians:
            raise ValueError(
                "meta.jacobians is True but not every stored transition has a Jacobian; "
                "pass dataclasses.replace(meta, jacobians=False)"
            )
        rows = self.rows([*self.truth, "reward"])
        order = np.lexsort((rows["step"], rows["episode"]))  # episodes contiguous, in time
        with TransitionWriter(path, meta, overwrite=overwrite) as writer:
            cols = meta.columns()
            writer.append({k: np.asarray(rows[k][order], cols[k][1]) for k in cols})
        return len(order)

    def load_hdf5(
        self,
        data: str | os.PathLike | TransitionReader,
        observe: Callable[[np.ndarray], np.ndarray] | None = None,
        observe_after: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> int:
        """Append the rows of a data set, as if they had been collected.

        SB3's fields are filled from the ground truth: the observation is
        ``observe(state)`` (``None``: the state itself, when the observation
        space has the state's shape), the action is scaled to the policy's
        ``[-1, 1]`` box as SAC stores it, ``done`` is ``terminated or
        truncated`` with ``truncated`` as the timeout. Rows beyond the
        buffer's size overwrite the oldest, as collection would.

        A real env's observation after a step is not always ``observe`` of
        the state it reached: MJX reads positions before its last substep
        (:meth:`~jacobian_wrappers.TaskFunctions.observe_after`). With
        ``observe_after(next_states, actions)`` the next observation of
        every row is read that way, and so is the observation of every row
        whose state the data reached by a step (the row of the same episode
        and the step before, anywhere in the file); only an episode's first
        row in the data uses ``observe``. Without it every observation is
        ``observe`` of its state, one substep off on such tasks
        (CartpoleBalance's pole angle).

        Returns:
            Rows added.

        Raises:
            ValueError: A data set of other dimensions, a buffer of
                ``n_envs != 1`` (rows are added one at a time), no
                ``observe`` where the observation is not the state, or
                ``observe_after`` without ``observe``.
        """
        reader = data if isinstance(data, TransitionReader) else TransitionReader(data)
        meta = reader.meta
        if self.n_envs != 1:
            raise ValueError(f"load_hdf5 needs a buffer with n_envs=1, got {self.n_envs}")
        if meta.d_a != self.action_dim:
            raise ValueError(
                f"{reader.path} has actions of size {meta.d_a}; the buffer {self.action_dim}"
            )
        if observe_after is not None and observe is None:
            raise ValueError("observe_after needs observe too (for an episode's first row)")
        if observe is None:
            if tuple(self.obs_shape) != (meta.d_s,):
                raise ValueError(
                    f"observations have shape {tuple(self.obs_shape)}, states ({meta.d_s},): "
                    "pass observe=state -> observation (e.g. TaskFunctions.observe)"
                )
            observe = np.asarray
        low, high = self.action_space.low, self.action_space.high
        added = 0
        offset = 0 if self.size() == 0 else self.ids.next  # ids after the stored ones
        if observe_after is not None:
            actions = reader.read("action")
            before = _predecessors(reader.read("episode"), reader.read("step"))
        start = 0
        for chunk in reader.iter_chunks(list(reader.columns)):
            n = len(chunk["state"])
            if observe_after is None:
                obs, next_obs = observe(chunk["state"]), observe(chunk["next_state"])
            else:
                next_obs = observe_after(chunk["next_state"], chunk["action"])
                prev = before[start : start + n]
                reached = (prev >= 0)[:, None]  # the state was reached by a step of the data
                # Whole chunks in both calls: a jitted observation function
                # compiles once per batch size, not once per subset's size.
                obs = observe_after(chunk["state"], np.where(reached, actions[prev], 0.0))
                if not reached.all():
                    obs = np.where(reached, obs, observe(chunk["state"]))
            start += n
            scaled = 2.0 * (chunk["action"] - low) / (high - low) - 1.0
            done = chunk["terminated"] | chunk["truncated"]
            for i in range(n):
                row = {k: v[i : i + 1] for k, v in chunk.items()}
                self.ids.episode[:] = offset + row["episode"]
                self.ids.step[:] = row["step"]
                self.stage(row)
                self.add(
                    obs[i : i + 1],
                    next_obs[i : i + 1],
                    scaled[i : i + 1],
                    chunk["reward"][i : i + 1],
                    done[i : i + 1],
                    [{"TimeLimit.truncated": bool(chunk["truncated"][i])}],
                )
            added += n
        # The next collected step starts an episode after the imported ones.
        self.ids = EpisodeIds(1, offset + int(reader.read("episode").max(initial=-1)) + 1)
        return added
