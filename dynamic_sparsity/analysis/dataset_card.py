"""What a collected data set is, in one record: rows, episodes, the policy's return, a digest.

The study's data sets are too large to commit; ``dataset_card(path)`` says
what a file holds so that a copy made elsewhere can be checked against the
docs: its rows and complete episodes, the mean return of the policy over
those episodes (the return it had while collecting), its size, and a
SHA-256 digest of its content (every stored array, in row order, by
name), which does not depend on HDF5's chunking, compression or metadata.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from dynamic_sparsity.analysis.storage import TransitionReader

__all__ = ["content_digest", "dataset_card", "episode_returns"]


def content_digest(reader: TransitionReader, chunk_size: int = 65_536) -> str:
    """SHA-256 of every stored array's bytes (C order, little-endian), arrays by name.

    Two files with the same rows give the same digest whatever their chunk
    size, compression or attributes.
    """
    digest = hashlib.sha256()
    for name in sorted(reader.columns):
        digest.update(name.encode())
        for block in reader.iter_chunks([name], chunk_size):
            array = np.ascontiguousarray(block[name])
            digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def episode_returns(reader: TransitionReader) -> np.ndarray:
    """Sum of rewards of every complete episode (its last row terminated or truncated).

    An episode still running when the collection stopped is left out: its
    partial sum is not a return.
    """
    episode = reader.read("episode")
    reward = reader.read("reward").astype(np.float64)
    done = reader.read("terminated") | reader.read("truncated")
    ids, inverse = np.unique(episode, return_inverse=True)
    sums = np.bincount(inverse, weights=reward, minlength=len(ids))
    ended = np.zeros(len(ids), bool)
    ended[inverse[done]] = True
    return sums[ended]


def dataset_card(path: str | os.PathLike) -> dict[str, Any]:
    """The record of one data set (see the module docstring).

    Returns:
        ``env_name``, ``policy``, ``precision``, ``rows``, ``episodes``
        (complete), ``mean_return``/``std_return`` over them (``None`` if
        none ended), ``bytes`` (the file), ``sha256`` (:func:`content_digest`).
    """
    with TransitionReader(path) as reader:
        returns = episode_returns(reader)
        return {
            "env_name": reader.meta.env_name,
            "policy": reader.meta.policy,
            "precision": reader.meta.precision,
            "rows": len(reader),
            "episodes": len(returns),
            "mean_return": round(float(returns.mean()), 2) if len(returns) else None,
            "std_return": round(float(returns.std()), 2) if len(returns) else None,
            "bytes": Path(path).stat().st_size,
            "sha256": content_digest(reader),
        }
