"""Streaming the stored transition data sets into training batches.

* :func:`open_datasets` opens one or more HDF5 files of one env.
* :func:`split_episodes` splits them into train and test by whole episodes.
* :func:`fit_normaliser` fits the z-scores on the train split, chunk by chunk.
* :class:`TransitionStream` is an ``IterableDataset`` of :class:`Batch` es: it
  reads chunks of rows in a random order, keeps the rows of one split,
  shuffles within a buffer of chunks and normalises; the data set is never
  loaded whole. Only the ``episode`` column of every file is read in full
  (8 bytes a row) to draw the split.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from torch import Tensor

from world_models.normaliser import Normaliser

if TYPE_CHECKING:
    from dynamic_sparsity.analysis.storage import TransitionReader

__all__ = [
    "NONSMOOTH_POLICIES",
    "Batch",
    "DataSource",
    "EpisodeSplit",
    "InMemoryBatches",
    "TransitionStream",
    "fit_normaliser",
    "has_jacobians",
    "open_datasets",
    "rows_to_batch",
    "split_episodes",
]

#: A data set path, an open reader, or a list of either.
DataSource = Union[
    str, os.PathLike, "TransitionReader", Sequence[Union[str, os.PathLike, "TransitionReader"]]
]

_BASE_KEYS = ("state", "action", "next_state", "episode")
_JAC_KEYS = ("jacobian_state", "jacobian_action", "jacobian_nonsmooth")
#: What the batches do with Jacobian columns taken at a non-smooth point.
NONSMOOTH_POLICIES = ("mask", "keep")


def open_datasets(data: DataSource) -> list[TransitionReader]:
    """Open the data set(s) of one env; readers passed in are used as they are.

    A folder or a glob is one data set of shards
    (:class:`~dynamic_sparsity.analysis.ShardedReader`).

    Raises:
        ValueError: No data, files of different envs or dimensions, an empty
            file, or a state whose Jacobian rows are tangent coordinates
            (``d_t != d_s``, free or ball joints), which the models do not handle.
    """
    from dynamic_sparsity.analysis.shards import ShardedReader, open_reader
    from dynamic_sparsity.analysis.storage import TransitionReader

    opened = (TransitionReader, ShardedReader)
    items = [data] if isinstance(data, (str, os.PathLike, *opened)) else list(data)
    if not items:
        raise ValueError("no data set given")
    readers = [x if isinstance(x, opened) else open_reader(x) for x in items]
    first = readers[0].meta
    for r in readers:
        m = r.meta
        if (m.env_name, m.state_labels, m.action_labels) != (
            first.env_name,
            first.state_labels,
            first.action_labels,
        ):
            raise ValueError(
                f"all data sets must be of one env with the same state and action; "
                f"{readers[0].path} is {first.env_name} (d_s={first.d_s}, d_a={first.d_a}), "
                f"{r.path} is {m.env_name} (d_s={m.d_s}, d_a={m.d_a})"
            )
        if m.d_t != m.d_s:
            raise ValueError(
                f"{r.path}: world models need d_t == d_s (no free or ball joints); "
                f"{m.env_name} has d_s={m.d_s}, d_t={m.d_t}"
            )
        if len(r) == 0:
            raise ValueError(f"{r.path} holds no rows")
    return readers


def has_jacobians(readers: Sequence[TransitionReader]) -> bool:
    """Whether every data set stores Jacobians."""
    return all(r.meta.jacobians for r in readers)


@dataclass(frozen=True)
class EpisodeSplit:
    """Which episodes of which file are test episodes.

    Attributes:
        test: Per file, the sorted episode ids of the test split.
        n_episodes: Episodes over all files.
        test_fraction: Fraction asked for.
        seed: Seed of the draw.
    """

    test: tuple[np.ndarray, ...]
    n_episodes: int
    test_fraction: float
    seed: int

    def is_test(self, file_index: int, episodes: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows (given by their episode ids) in the test split."""
        return np.isin(episodes, self.test[file_index])

    def rows(self, part: str, file_index: int, episodes: np.ndarray) -> np.ndarray:
        """Mask of the rows of ``part`` (``"train"``, ``"test"`` or ``"all"``)."""
        if part == "all":
            return np.ones(len(episodes), dtype=bool)
        test = self.is_test(file_index, episodes)
        return test if part == "test" else ~test


def split_episodes(
    readers: Sequence[TransitionReader], test_fraction: float = 0.1, seed: int = 0
) -> EpisodeSplit:
    """Draw a test split of whole episodes, deterministic in ``seed``.

    ``round(test_fraction * n_episodes)`` episodes (at least one) over all
    files go to test; every row of an episode lands on the same side.

    Raises:
        ValueError: ``test_fraction`` outside ``(0, 1)`` or fewer than two episodes.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    ids = []
    for r in readers:
        seen = np.unique(np.concatenate([c["episode"] for c in r.iter_chunks(["episode"])]))
        ids.append(seen)
    n = sum(len(i) for i in ids)
    if n < 2:
        raise ValueError(f"need at least 2 episodes to split by episode, the data hold {n}")
    pairs = np.concatenate([np.stack([np.full(len(e), f), e], 1) for f, e in enumerate(ids)])
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    chosen = pairs[np.random.default_rng(seed).permutation(n)[:n_test]]
    test = tuple(np.sort(chosen[chosen[:, 0] == f, 1]) for f in range(len(readers)))
    return EpisodeSplit(test, n, float(test_fraction), int(seed))


def fit_normaliser(
    readers: Sequence[TransitionReader],
    split: EpisodeSplit | None = None,
    part: str = "train",
    eps: float = 1e-8,
) -> Normaliser:
    """Fit the z-scores on one part of the data (train by default), chunk by chunk."""

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        for f, r in enumerate(readers):
            for c in r.iter_chunks(_BASE_KEYS):
                keep = split.rows(part, f, c["episode"]) if split is not None else slice(None)
                yield {k: c[k][keep] for k in ("state", "action", "next_state")}

    return Normaliser.fit(chunks(), eps=eps)


@dataclass
class Batch:
    """A batch of transitions in normalised coordinates.

    Attributes:
        state: ``(B, d_s)`` normalised ``s``.
        action: ``(B, d_a)`` normalised ``a``.
        next_state: ``(B, d_s)`` normalised ``s'``.
        delta: ``(B, d_s)`` normalised ``s' - s`` (target of delta models).
        jacobian: ``(B, d_s, d_s + d_a)`` normalised ``[J_s | J_a]`` of ``s'``, or ``None``.
        zero_mask: ``(B, d_s, d_s + d_a)`` bool, ``|J| < threshold`` on the raw
            Jacobian (as the statistics count zeros), and not in a masked
            non-smooth column; or ``None``.
        jacobian_valid: ``(B, d_s + d_a)`` bool, ``False`` for the columns of
            ``J`` taken at a non-smooth point of the step (an action on its
            control bound), which the Jacobian losses leave out; ``None``: all
            columns count.
        reward: ``(B,)`` raw rewards, when the rows had them (a learned reward); or ``None``.
    """

    state: Tensor
    action: Tensor
    next_state: Tensor
    delta: Tensor
    jacobian: Tensor | None = None
    zero_mask: Tensor | None = None
    jacobian_valid: Tensor | None = None
    reward: Tensor | None = None

    def __len__(self) -> int:
        return self.state.shape[0]

    def map(self, fn: Callable[[Tensor], Tensor]) -> Batch:
        """A batch of ``fn`` applied to every tensor (absent fields stay ``None``)."""
        return Batch(
            **{
                f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                for f in fields(self)
            }
        )

    def to(self, device: str | torch.device) -> Batch:
        """The batch on ``device``."""
        return self.map(lambda t: t.to(device))


def rows_to_batch(
    rows: dict[str, np.ndarray],
    normaliser: Normaliser,
    *,
    jacobians: bool,
    threshold: float,
    nonsmooth: str = "mask",
    dtype: torch.dtype = torch.float32,
) -> Batch:
    """Raw transition rows (a data set's columns) as a normalised :class:`Batch`.

    The one conversion of every source of rows: data-set files
    (:class:`TransitionStream`) and in-memory buffers (the replay buffer of
    :mod:`dynamic_sparsity.mbrl`).

    Args:
        rows: ``state``, ``action``, ``next_state`` (``reward``: kept raw) and,
            with ``jacobians``, ``jacobian_state``, ``jacobian_action``,
            ``jacobian_nonsmooth``.
        normaliser: Coordinates of the batch.
        jacobians: Build the normalised Jacobian and zero mask.
        threshold: Zero threshold of the mask (on the raw Jacobian).
        nonsmooth: ``"mask"``: mark the non-smooth columns invalid; ``"keep"``.
        dtype: Floating dtype of the tensors.
    """
    from dynamic_sparsity.analysis.stats import combine, zero_mask

    norm = normaliser
    s, a, s2 = rows["state"], rows["action"], rows["next_state"]
    out = {
        "state": norm.normalise("state", s),
        "action": norm.normalise("action", a),
        "next_state": norm.normalise("next_state", s2),
        "delta": norm.normalise("delta", np.asarray(s2, np.float64) - s),
    }
    if "reward" in rows:
        out["reward"] = rows["reward"]
    tensors = {k: torch.as_tensor(v, dtype=dtype) for k, v in out.items()}
    if jacobians:
        jac = combine(rows["jacobian_state"], rows["jacobian_action"])
        # The mask comes from the raw Jacobian, as the sparsity statistics count zeros.
        zeros = zero_mask(jac, threshold)
        if nonsmooth == "mask":
            valid = ~rows["jacobian_nonsmooth"]
            zeros &= valid[:, None, :]
            tensors["jacobian_valid"] = torch.as_tensor(valid)
        tensors["zero_mask"] = torch.as_tensor(zeros)
        tensors["jacobian"] = torch.as_tensor(norm.jacobian_to_normalised(jac), dtype=dtype)
    return Batch(**tensors)


class TransitionStream(torch.utils.data.IterableDataset):
    """Shuffled batches of one split, streamed from the data sets chunk by chunk.

    Every pass (``iter``) visits the file chunks in a new random order
    (``seed`` and the epoch set by :meth:`set_epoch`), pools ``buffer_chunks``
    of them, shuffles the pooled rows and cuts batches; rows left over are
    carried into the next pool. Use it directly, or in a
    ``DataLoader(stream, batch_size=None)`` (no workers: HDF5 handles do not
    survive a fork).

    Args:
        readers: Open data sets (:func:`open_datasets`).
        split: Episode split; ``None`` uses every row.
        part: ``"train"``, ``"test"`` or ``"all"``.
        normaliser: Coordinates of the batches; the raw ones when ``None``.
        batch_size: Rows per batch.
        shuffle: Random chunk order and shuffled rows; ``False`` reads in file order.
        buffer_chunks: Chunks pooled before shuffling.
        chunk_size: Rows per read; the files' HDF5 chunk by default.
        jacobians: Yield Jacobians and zero masks (default: when the files have them).
        threshold: Zero threshold of the masks; the data set's own by default.
        nonsmooth: ``"mask"`` (default): mark the non-smooth Jacobian columns
            invalid (:attr:`Batch.jacobian_valid`) so that the losses leave them
            out; ``"keep"``: use them as they are.
        drop_last: Drop a last batch smaller than ``batch_size``.
        seed: Seed of the shuffling.
        dtype: Floating dtype of the tensors.

    Raises:
        ValueError: Bad ``part``/sizes, or ``jacobians=True`` on files without them.
    """

    def __init__(
        self,
        readers: Sequence[TransitionReader],
        split: EpisodeSplit | None = None,
        part: str = "train",
        normaliser: Normaliser | None = None,
        *,
        batch_size: int = 512,
        shuffle: bool = True,
        buffer_chunks: int = 8,
        chunk_size: int | None = None,
        jacobians: bool | None = None,
        threshold: float | None = None,
        nonsmooth: str = "mask",
        drop_last: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if part not in ("train", "test", "all"):
            raise ValueError(f"part must be 'train', 'test' or 'all', got {part!r}")
        if nonsmooth not in NONSMOOTH_POLICIES:
            raise ValueError(f"nonsmooth must be one of {NONSMOOTH_POLICIES}, got {nonsmooth!r}")
        for name, value in (("batch_size", batch_size), ("buffer_chunks", buffer_chunks)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if split is not None and len(split.test) != len(readers):
            raise ValueError(f"split is for {len(split.test)} files, got {len(readers)} readers")
        available = has_jacobians(readers)
        if jacobians and not available:
            missing = [str(r.path) for r in readers if not r.meta.jacobians]
            raise ValueError(f"jacobians=True but these data sets have no Jacobians: {missing}")
        self.readers = list(readers)
        self.split, self.part = split, part
        meta = self.readers[0].meta
        self.normaliser = normaliser or Normaliser.identity(meta.d_s, meta.d_a)
        self.batch_size, self.shuffle = int(batch_size), bool(shuffle)
        self.buffer_chunks = int(buffer_chunks)
        self.chunk_size = int(chunk_size or self.readers[0].chunk_size)
        self.jacobians = available if jacobians is None else bool(jacobians)
        self.threshold = float(threshold if threshold is not None else meta.threshold)
        self.nonsmooth = nonsmooth
        self.drop_last, self.seed, self.dtype = bool(drop_last), int(seed), dtype
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently for each epoch (deterministic in seed and epoch)."""
        self.epoch = int(epoch)

    def _chunk_list(self, rng: np.random.Generator) -> list[tuple[int, int, int]]:
        spans = [
            (f, lo, min(lo + self.chunk_size, len(r)))
            for f, r in enumerate(self.readers)
            for lo in range(0, len(r), self.chunk_size)
        ]
        if self.shuffle:
            spans = [spans[i] for i in rng.permutation(len(spans))]
        return spans

    def _read(self, f: int, lo: int, hi: int) -> dict[str, np.ndarray]:
        keys = _BASE_KEYS + (_JAC_KEYS if self.jacobians else ())
        chunk = next(self.readers[f].iter_chunks(keys, chunk_size=hi - lo, start=lo, stop=hi))
        if self.split is not None:
            keep = self.split.rows(self.part, f, chunk["episode"])
            chunk = {k: v[keep] for k, v in chunk.items()}
        return chunk

    def _to_batch(self, rows: dict[str, np.ndarray]) -> Batch:
        return rows_to_batch(
            rows,
            self.normaliser,
            jacobians=self.jacobians,
            threshold=self.threshold,
            nonsmooth=self.nonsmooth,
            dtype=self.dtype,
        )

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, self.epoch])
        spans = self._chunk_list(rng)
        pool: list[dict[str, np.ndarray]] = []
        for i in range(0, len(spans), self.buffer_chunks):
            pool.extend(self._read(*span) for span in spans[i : i + self.buffer_chunks])
            rows = {k: np.concatenate([c[k] for c in pool]) for k in pool[0]}
            n = len(rows["state"])
            if self.shuffle:
                order = rng.permutation(n)
                rows = {k: v[order] for k, v in rows.items()}
            n_full = n - n % self.batch_size
            for lo in range(0, n_full, self.batch_size):
                yield self._to_batch({k: v[lo : lo + self.batch_size] for k, v in rows.items()})
            pool = [{k: v[n_full:] for k, v in rows.items()}] if n_full < n else []
        if pool and not self.drop_last:
            yield self._to_batch(pool[0])

    def n_rows(self) -> int:
        """Rows of this part over all files (reads the episode columns)."""
        total = 0
        for f, r in enumerate(self.readers):
            for c in r.iter_chunks(["episode"]):
                total += int(
                    self.split.rows(self.part, f, c["episode"]).sum()
                    if self.split is not None
                    else len(c["episode"])
                )
        return total


class InMemoryBatches:
    """One split held in memory as tensors, reshuffled every epoch.

    For data that fit in memory, a :class:`TransitionStream` re-reads and
    re-normalises every row in every epoch (about 1.3 s per epoch for 90k
    CheetahRun rows with Jacobians, 15-30 % of a fast epoch). This reads them
    once through the stream and then only permutes: each epoch is a full
    shuffle drawn from ``seed`` and the epoch, so resumed runs see the same
    batches.

    Args:
        stream: The stream to read once (its ``shuffle`` is ignored).
    """

    def __init__(self, stream: TransitionStream) -> None:
        once = TransitionStream(
            stream.readers,
            stream.split,
            stream.part,
            stream.normaliser,
            batch_size=max(stream.batch_size, 8192),
            shuffle=False,
            chunk_size=stream.chunk_size,
            jacobians=stream.jacobians,
            threshold=stream.threshold,
            nonsmooth=stream.nonsmooth,
            dtype=stream.dtype,
        )
        parts = list(once)
        if not parts:
            raise ValueError(f"the {stream.part!r} split has no rows")
        data = Batch(
            **{
                f.name: None
                if getattr(parts[0], f.name) is None
                else torch.cat([getattr(b, f.name) for b in parts])
                for f in fields(Batch)
            }
        )
        self._setup(data, stream.batch_size, stream.seed, stream.drop_last)

    def _setup(self, data: Batch, batch_size: int, seed: int, drop_last: bool) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size, self.seed, self.drop_last = int(batch_size), int(seed), bool(drop_last)
        self.epoch = 0

    @classmethod
    def from_batch(
        cls, data: Batch, batch_size: int = 512, seed: int = 0, drop_last: bool = False
    ) -> InMemoryBatches:
        """Shuffled batches of rows already in memory (e.g. of a replay buffer).

        Raises:
            ValueError: No rows, or a non-positive ``batch_size``.
        """
        if len(data) == 0:
            raise ValueError("no rows to make batches of")
        self = cls.__new__(cls)
        self._setup(data, batch_size, seed, drop_last)
        return self

    @staticmethod
    def nbytes(stream: TransitionStream) -> int:
        """Memory the tensors of ``stream``'s split would take (counts its rows)."""
        meta = stream.readers[0].meta
        floats = 3 * meta.d_s + meta.d_a  # state, next state, delta; action
        cols = meta.d_s + meta.d_a if stream.jacobians else 0
        jac = meta.d_s * cols
        item = torch.empty(0, dtype=stream.dtype).element_size()
        return stream.n_rows() * ((floats + jac) * item + jac + cols)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently for each epoch (deterministic in seed and epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.data)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=gen)
        stop = n - n % self.batch_size if self.drop_last else n
        for lo in range(0, stop, self.batch_size):
            idx = order[lo : lo + self.batch_size]
            yield self.data.map(lambda t, idx=idx: t[idx])
