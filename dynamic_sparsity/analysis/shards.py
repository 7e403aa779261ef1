"""A set of HDF5 shards (one per process or host) read as one data set.

A collection spread over processes writes one file per process
(:func:`shard_path`: ``cheetah.shard-003-of-008.h5``); :class:`ShardedReader`
reads such a set with the interface of :class:`~dynamic_sparsity.analysis.storage.TransitionReader`,
rows in shard order and episode ids made global (each shard's ids shifted
past the previous shards'), so the report and the world models take it as
one data set. :func:`open_reader` opens a file, a folder of shards, a glob or
a list of files, whichever it is given.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynamic_sparsity.analysis.storage import TransitionReader, episode_rows

__all__ = ["ShardedReader", "check_same_data_set", "open_reader", "shard_path", "shard_paths"]

DataPaths = str | os.PathLike | Sequence[str | os.PathLike]


def shard_path(path: str | os.PathLike, index: int, count: int) -> Path:
    """``data/cheetah.h5``, shard 3 of 8 -> ``data/cheetah.shard-003-of-008.h5``.

    Raises:
        ValueError: ``index`` not in ``[0, count)``.
    """
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}), got {index}")
    p = Path(path)
    return p.with_name(f"{p.stem}.shard-{index:03d}-of-{count:03d}{p.suffix or '.h5'}")


def shard_paths(source: DataPaths) -> list[Path]:
    """The files of ``source``: a file, a folder (its ``*.h5``), a glob, or a list of them.

    Raises:
        FileNotFoundError: Nothing matches.
    """
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.h5"))
        elif glob.has_magic(str(item)):
            found = sorted(Path(f) for f in glob.glob(str(item)))
        else:
            found = [p]
        if not found:
            raise FileNotFoundError(f"no data set matches {str(item)!r}")
        paths += found
    return paths


def open_reader(source: DataPaths) -> TransitionReader | ShardedReader:
    """One file as a `TransitionReader`; a folder, glob or list as a :class:`ShardedReader`."""
    paths = shard_paths(source)
    return TransitionReader(paths[0]) if len(paths) == 1 else ShardedReader(paths)


def _shard_order(reader: TransitionReader) -> tuple[int, int]:
    index, count = reader.meta.extra.get("shard", (0, 1))
    return int(index), int(count)


class ShardedReader:
    """Several data sets of one env and precision read as one.

    Rows follow the shards' order (their ``shard`` index when the collection
    recorded one, else the order given); ``"episode"`` is global: shard
    ``k``'s ids are shifted by one more than the largest id of the shards
    before it. Everything else is read as stored.

    Args:
        paths: The shard files.

    Attributes:
        readers: One :class:`TransitionReader` per shard, in row order.
        paths: Their files.
        meta: The first shard's metadata.
        episode_offsets: Shift of each shard's episode ids.

    Raises:
        ValueError: Shards of different envs, precisions, layouts, or some
            with Jacobians and some without (the message names both files);
            two shards with the same index.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        if not paths:
            raise ValueError("no shards given")
        readers = [TransitionReader(p) for p in paths]
        try:
            check_same_data_set(readers)
            orders = [_shard_order(r) for r in readers]
            recorded = [r for r in readers if "shard" in r.meta.extra]
            if len(recorded) == len(readers):
                seen: dict[int, Path] = {}
                for r, (index, _) in zip(readers, orders, strict=True):
                    if index in seen:
                        raise ValueError(
                            f"{seen[index]} and {r.path} are both shard {index} of one collection"
                        )
                    seen[index] = r.path
                readers = [
                    r for _, r in sorted(zip(orders, readers, strict=True), key=lambda x: x[0])
                ]
        except Exception:
            for r in readers:
                r.close()
            raise
        self.readers = readers
        self.paths = [r.path for r in readers]
        self.path = self.paths[0].parent
        self.meta = readers[0].meta
        self.chunk_size = readers[0].chunk_size
        self._starts = np.cumsum([0] + [len(r) for r in readers])
        offsets, nxt = [], 0
        for r in readers:
            offsets.append(nxt)
            if len(r):
                nxt += int(r.read("episode").max()) + 1
        self.episode_offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the stored arrays."""
        return self.readers[0].columns

    @property
    def nbytes(self) -> int:
        """Uncompressed size of all rows."""
        return sum(r.nbytes for r in self.readers)

    def _fix(self, key: str, k: int, values: np.ndarray) -> np.ndarray:
        return values + self.episode_offsets[k] if key == "episode" else values

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of one array, across shards."""
        start, stop, _ = slice(start, stop).indices(len(self))
        parts = [self.readers[0].read(key, 0, 0)]  # the dtype and shape of an empty read
        for k, r in enumerate(self.readers):
            lo, hi = max(start, self._starts[k]), min(stop, self._starts[k + 1])
            if hi > lo:
                a, b = int(lo - self._starts[k]), int(hi - self._starts[k])
                parts.append(self._fix(key, k, r.read(key, a, b)))
        return np.concatenate(parts)

    def read_rows(self, index: np.ndarray, keys: Sequence[str] | None = None) -> dict:
        """Rows at sorted global positions ``index``."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"row index out of range [0, {len(self)})")
        shard = np.searchsorted(self._starts, index, side="right") - 1
        keys = list(keys or self.columns)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for k in np.unique(shard) if index.size else [0]:
            local = index[shard == k] - self._starts[k]
            got = self.readers[k].read_rows(local, keys)
            for key in keys:
                parts[key].append(self._fix(key, int(k), got[key]))
        return {key: np.concatenate(v) for key, v in parts.items()}

    def iter_chunks(
        self,
        keys: Sequence[str] | None = None,
        chunk_size: int | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive blocks of ``chunk_size`` rows, as one file's (a block may span shards)."""
        start, stop, _ = slice(start, stop).indices(len(self))
        keys = list(keys or self.columns)
        step = int(chunk_size or self.chunk_size)
        if step < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        for lo in range(start, stop, step):
            hi = min(lo + step, stop)
            yield {key: self.read(key, lo, hi) for key in keys}

    def episode_index(self) -> dict[int, np.ndarray]:
        """Global row positions of every (global) episode."""
        return episode_rows(self.read("episode"))

    def close(self) -> None:
        """Close every shard."""
        for r in self.readers:
            r.close()

    def __enter__(self) -> ShardedReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"ShardedReader({len(self.readers)} shards in {str(self.path)!r}: {m.env_name}, "
            f"{len(self)} rows, {m.precision}, d_s={m.d_s}, d_a={m.d_a})"
        )


def check_same_data_set(readers: Sequence[Any]) -> None:
    """Raise ``ValueError`` naming two files if the readers are not one data set's shards.

    They must agree on env, precision, state, tangent and action labels, and
    whether they hold Jacobians.
    """
    first = readers[0]
    for r in readers[1:]:
        for what in ("env_name", "precision", "jacobians", "state_labels", "action_labels"):
            a, b = getattr(first.meta, what), getattr(r.meta, what)
            if a != b:
                shown = (a, b) if what in ("env_name", "precision", "jacobians") else ("...", "...")
                raise ValueError(
                    f"{first.path} and {r.path} are not shards of one data set: {what} "
                    f"{shown[0]!r} != {shown[1]!r}"
                )
