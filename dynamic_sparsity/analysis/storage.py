"""Data sets of transitions with their Jacobians: chunked HDF5 (compression optional).

One file holds one env's transitions ``(s, a, s', J_s, J_a)`` with episode id,
step index, reward, done flags, active contacts and the non-smooth columns of
the Jacobian, one row per transition, and the metadata needed to read it
without the simulator (env, precision, ``dt``, labels, threshold, policy,
package versions).

Every HDF5 chunk carries a Fletcher-32 checksum (format version 2): a chunk
whose bytes changed on disk raises a ``ValueError`` naming the file, the
array and the rows, instead of returning wrong numbers. Version-1 files (no
checksums, no ``jacobian_nonsmooth`` column) still open, with a warning; their
non-smooth columns read as all ``False``.

Rows are buffered and written a chunk at a time; after each chunk the row
count attribute ``n_complete`` is updated and the file flushed. A collection
killed at any point (even ``SIGKILL``) therefore leaves a file whose first
``n_complete`` rows are whole and readable; readers ignore anything beyond,
and :class:`TransitionWriter` with ``resume=True`` cuts it off and appends.
The HDF5 chunk of every array is the writer's chunk of rows, so reading a
chunk of rows touches exactly one HDF5 chunk per array.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dynamic_sparsity.analysis._versions import installed_versions
from dynamic_sparsity.analysis.stats import DEFAULT_THRESHOLD

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DatasetMeta",
    "TransitionReader",
    "TransitionWriter",
    "episode_rows",
    "package_versions",
]

FORMAT_NAME = "dynamic-sparsity/transitions"
FORMAT_VERSION = 2
#: Versions this package reads (1: no checksums, no ``jacobian_nonsmooth``).
READABLE_VERSIONS = (1, 2)
_VERSIONED = (
    "dynamic-sparsity",
    "jax",
    "mujoco",
    "mujoco-mjx",
    "playground",
    "stable-baselines3",
    "numpy",
    "h5py",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages a data set's numbers depend on."""
    return installed_versions(_VERSIONED)


@dataclass(frozen=True)
class DatasetMeta:
    """What a data set is: env, precision, layout and provenance.

    Attributes:
        env_name: Playground task.
        precision: ``"float32"`` or ``"float64"`` of the simulator that made it.
        dt: Control time step (s).
        state_labels: ``d_s`` names of the state ``s`` (``"qpos:rootx"``, ...).
        tangent_labels: ``d_t`` names of the Jacobian rows and state columns.
        action_labels: ``d_a`` actuator names.
        jacobians: Whether the file holds ``jacobian_state``/``jacobian_action``.
        threshold: Zero threshold the collection was meant for (analysis default).
        policy: Human-readable description of the policy that acted.
        versions: Package versions at collection time.
        created: UTC time the file was created (ISO 8601).
        extra: Any further JSON-serialisable notes.
    """

    env_name: str
    precision: str
    dt: float
    state_labels: tuple[str, ...]
    tangent_labels: tuple[str, ...]
    action_labels: tuple[str, ...]
    jacobians: bool = True
    threshold: float = DEFAULT_THRESHOLD
    policy: str = "unknown"
    versions: dict[str, str] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def d_s(self) -> int:
        """State dimension."""
        return len(self.state_labels)

    @property
    def d_t(self) -> int:
        """Tangent dimension (Jacobian rows)."""
        return len(self.tangent_labels)

    @property
    def d_a(self) -> int:
        """Action dimension."""
        return len(self.action_labels)

    @property
    def dtype(self) -> np.dtype:
        """Float dtype of the stored arrays."""
        return np.dtype(self.precision)

    def columns(self, version: int = FORMAT_VERSION) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-row shape and dtype of every stored array (of a file of ``version``)."""
        f = self.dtype
        cols: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            "state": ((self.d_s,), f),
            "action": ((self.d_a,), f),
            "next_state": ((self.d_s,), f),
            "reward": ((), f),
            "episode": ((), np.dtype(np.int64)),
            "step": ((), np.dtype(np.int32)),
            "terminated": ((), np.dtype(bool)),
            "truncated": ((), np.dtype(bool)),
            "n_contacts": ((), np.dtype(np.int32)),
        }
        if self.jacobians:
            cols["jacobian_state"] = ((self.d_t, self.d_t), f)
            cols["jacobian_action"] = ((self.d_t, self.d_a), f)
            if version >= 2:
                cols["jacobian_nonsmooth"] = ((self.d_t + self.d_a,), np.dtype(bool))
        return cols

    def to_attrs(self) -> dict[str, Any]:
        """As HDF5 attributes (lists and dicts JSON-encoded)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (tuple, list, dict)):
                value = json.dumps(list(value) if isinstance(value, tuple) else value)
            out[f.name] = value
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> DatasetMeta:
        """Inverse of :meth:`to_attrs`."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = attrs[f.name]
            if isinstance(value, bytes):
                value = value.decode()
            if f.name in ("state_labels", "tangent_labels", "action_labels"):
                value = tuple(json.loads(value))
            elif f.name in ("versions", "extra"):
                value = json.loads(value)
            elif f.name == "jacobians":
                value = bool(value)
            elif f.name in ("dt", "threshold"):
                value = float(value)
            else:
                value = str(value)
            kwargs[f.name] = value
        return cls(**kwargs)

    @classmethod
    def from_simulator(cls, sim: Any, **kwargs: Any) -> DatasetMeta:
        """Metadata of a :class:`~jacobian_wrappers.Simulator`'s task."""
        return cls(
            env_name=sim.env_name,
            precision=sim.precision,
            dt=sim.dt,
            state_labels=tuple(sim.space.labels),
            tangent_labels=tuple(sim.space.tangent_labels),
            action_labels=tuple(sim.action_labels),
            **kwargs,
        )


def _open_ours(path: str | os.PathLike, mode: str) -> h5py.File:
    """Open ``path`` and check it is one of our data sets.

    Raises:
        FileNotFoundError: No such file.
        BlockingIOError: Another process is writing the file.
        ValueError: Not an HDF5 file, truncated or corrupt, or not our format.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no data set at {path}")
    try:
        f = h5py.File(path, mode)
    except BlockingIOError as err:  # HDF5's file lock: a writer has it open
        raise BlockingIOError(
            f"{path} is open for writing by another process (HDF5 file lock); open it "
            "once that collection has finished or been stopped"
        ) from err
    except OSError as err:
        raise ValueError(
            f"{path} is not a readable HDF5 file (truncated, corrupt or another format): {err}"
        ) from err
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT_NAME:
        f.close()
        raise ValueError(
            f"{path} is an HDF5 file but not a dynamic-sparsity transitions data set "
            f"(attribute 'format' is {fmt!r}, expected {FORMAT_NAME!r})"
        )
    version = int(f.attrs.get("format_version", -1))
    if version not in READABLE_VERSIONS:
        f.close()
        raise ValueError(
            f"{path} has format version {version}; this package reads versions "
            f"{list(READABLE_VERSIONS)}"
        )
    return f


def _format_version(f: h5py.File) -> int:
    return int(f.attrs["format_version"])


class TransitionWriter:
    """Appends transitions to a data set, a chunk of rows at a time.

    Use as a context manager; leaving it (also by an exception such as
    ``KeyboardInterrupt``) writes the rows still buffered.

    Args:
        path: File to create (or to append to with ``resume=True``).
        meta: What the data set is; with ``resume=True`` it must match the
            file's (env, precision, labels, Jacobians).
        chunk_size: Rows per chunk (also the HDF5 chunk length).
        compression: ``None`` (default), ``"lzf"`` or ``"gzip"``. Measured on
            CheetahRun float64 data, compression saves only 5-12% (Jacobian
            mantissas are noise to a compressor) and cuts reading from
            4 GB/s to 0.5 (lzf) or 0.3 GB/s (gzip): worth it only for archives.
        resume: Append to an existing file instead of refusing to overwrite it.
        overwrite: Replace an existing file.
        checksums: Store a Fletcher-32 checksum with every HDF5 chunk (costs
            ~1% of writing and reading; ``benchmarks/dataset_io.py``).

    Raises:
        FileExistsError: ``path`` exists and neither ``resume`` nor ``overwrite``.
        ValueError: Bad ``chunk_size``/``compression``, or a resumed file whose
            metadata or format version differs from ``meta``'s.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        meta: DatasetMeta,
        *,
        chunk_size: int = 4096,
        compression: str | None = None,
        resume: bool = False,
        overwrite: bool = False,
        checksums: bool = True,
    ) -> None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if compression not in ("lzf", "gzip", None):
            raise ValueError(f"compression must be 'lzf', 'gzip' or None, got {compression!r}")
        self.path = Path(path)
        self.meta = meta
        self.chunk_size = int(chunk_size)
        self._columns = meta.columns()
        if self.path.exists() and resume:
            self._open_to_resume()
        else:
            if self.path.exists() and not overwrite:
                raise FileExistsError(
                    f"{self.path} exists; pass resume=True to append or overwrite=True"
                )
            self._create(compression, checksums)
        self._buffer = {
            name: np.empty((self.chunk_size, *shape), dtype=dtype)
            for name, (shape, dtype) in self._columns.items()
        }
        self._fill = 0

    def _open_to_resume(self) -> None:
        """Open the existing file, check it matches, drop an unfinished chunk."""
        self._file = _open_ours(self.path, "a")
        version = _format_version(self._file)
        if version != FORMAT_VERSION:
            self._file.close()
            raise ValueError(
                f"cannot resume {self.path}: it has format version {version}, this "
                f"package writes version {FORMAT_VERSION}; collect into a new file"
            )
        stored = DatasetMeta.from_attrs(self._file.attrs)
        self._check_resume(stored)
        self.meta = stored
        self.n_rows = int(self._file.attrs["n_complete"])
        for name in self._columns:  # drop rows of an unfinished chunk
            self._file[name].resize(self.n_rows, axis=0)
        ep = self._file["episode"]
        self.next_episode = int(ep[: self.n_rows].max()) + 1 if self.n_rows else 0

    def _create(self, compression: str | None, checksums: bool) -> None:
        """A new file with the metadata and an empty, chunked array per column."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.path, "w")
        self._file.attrs["format"] = FORMAT_NAME
        self._file.attrs["format_version"] = FORMAT_VERSION
        for key, value in self.meta.to_attrs().items():
            self._file.attrs[key] = value
        for name, (shape, dtype) in self._columns.items():
            self._file.create_dataset(
                name,
                shape=(0, *shape),
                maxshape=(None, *shape),
                dtype=dtype,
                chunks=(self.chunk_size, *shape),
                compression=compression,
                shuffle=compression is not None and dtype.kind == "f",
                fletcher32=bool(checksums),
            )
        self._file.attrs["n_complete"] = 0
        self._file.flush()
        self.n_rows = 0
        self.next_episode = 0

    def _check_resume(self, old: DatasetMeta) -> None:
        fields = ("env_name", "precision", "state_labels", "action_labels", "jacobians")
        diff = {
            f: (getattr(old, f), getattr(self.meta, f))
            for f in fields
            if getattr(old, f) != getattr(self.meta, f)
        }
        if diff:
            self._file.close()
            raise ValueError(
                f"cannot resume {self.path}: its metadata differs in "
                + ", ".join(f"{k} (file {a!r}, given {b!r})" for k, (a, b) in diff.items())
            )

    @property
    def total_rows(self) -> int:
        """Rows appended so far, written or buffered."""
        return self.n_rows + self._fill

    def append(self, rows: Mapping[str, np.ndarray]) -> None:
        """Append a batch of rows (one array per column, same leading length).

        Raises:
            ValueError: A column missing, of the wrong shape, or rows of unequal length.
        """
        missing = set(self._columns) - set(rows)
        if missing:
            raise ValueError(f"rows lack columns {sorted(missing)}; need {sorted(self._columns)}")
        arrays = {k: np.asarray(rows[k]) for k in self._columns}
        n = len(arrays["state"])
        for name, (shape, _) in self._columns.items():
            if arrays[name].shape != (n, *shape):
                raise ValueError(
                    f"column {name!r} must have shape {(n, *shape)}, got {arrays[name].shape}"
                )
        start = 0
        while start < n:
            take = min(n - start, self.chunk_size - self._fill)
            for name, arr in arrays.items():
                self._buffer[name][self._fill : self._fill + take] = arr[start : start + take]
            self._fill += take
            start += take
            if self._fill == self.chunk_size:
                self.flush()

    def flush(self) -> None:
        """Write the buffered rows and commit them (``n_complete``), then sync."""
        if self._fill == 0:
            return
        lo, hi = self.n_rows, self.n_rows + self._fill
        for name, buf in self._buffer.items():
            ds = self._file[name]
            ds.resize(hi, axis=0)
            ds[lo:hi] = buf[: self._fill]
        self._file.attrs["n_complete"] = hi
        self._file.flush()
        self.n_rows, self._fill = hi, 0

    def close(self) -> None:
        """Write what is buffered and close the file."""
        if self._file.id.valid:
            self.flush()
            self._file.close()

    def __enter__(self) -> TransitionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def episode_rows(episode: np.ndarray) -> dict[int, np.ndarray]:
    """``{episode_id: row positions}`` of an ``episode`` column (rows sorted)."""
    order = np.argsort(episode, kind="stable")
    ids, starts = np.unique(episode[order], return_index=True)
    bounds = np.append(starts, len(order))
    return {int(i): order[bounds[j] : bounds[j + 1]] for j, i in enumerate(ids)}


class TransitionReader:
    """Lazy, chunked reader of a data set written by :class:`TransitionWriter`.

    Nothing is loaded at opening; arrays are read on request, a slice or a
    chunk of rows at a time. Only the first ``n_complete`` rows exist for the
    reader (an interrupted collection's partial chunk is invisible).

    Args:
        path: The data set.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not an HDF5 file, truncated, not our format, or missing arrays.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = _open_ours(self.path, "r")
        try:
            self.meta = DatasetMeta.from_attrs(self._file.attrs)
            self._n = int(self._file.attrs["n_complete"])
        except (KeyError, ValueError, TypeError) as err:
            self._file.close()
            raise ValueError(f"{self.path} has incomplete or invalid metadata: {err}") from err
        self.format_version = _format_version(self._file)
        stored = self.meta.columns(self.format_version)
        # Columns a version-1 file lacks, read as their neutral value.
        self._virtual = {k: v for k, v in self.meta.columns().items() if k not in stored}
        for name, (shape, _) in stored.items():
            ds = self._file.get(name)
            if ds is None or ds.shape[1:] != shape or ds.shape[0] < self._n:
                self._file.close()
                raise ValueError(
                    f"{self.path} is damaged: array {name!r} is "
                    f"{'missing' if ds is None else f'of shape {ds.shape}'}, expected "
                    f"({self._n}, {', '.join(map(str, shape))})"
                )
        self.chunk_size = int(self._file["state"].chunks[0])
        unchecked = [name for name in stored if not self._file[name].fletcher32]
        if unchecked:
            warnings.warn(
                f"{self.path} stores no checksums for {unchecked} (format version "
                f"{self.format_version} or written with checksums=False): damaged bytes in "
                "those arrays would go unnoticed",
                UserWarning,
                stacklevel=2,
            )

    def __len__(self) -> int:
        return self._n

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the stored arrays."""
        return tuple(self.meta.columns())

    @property
    def nbytes(self) -> int:
        """Uncompressed size of all rows."""
        return sum(
            self._n * int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            for shape, dtype in self.meta.columns().values()
        )

    def _check_key(self, key: str) -> None:
        if key not in self.meta.columns():
            hint = (
                " (this data set was collected without Jacobians)"
                if key.startswith("jacobian")
                else ""
            )
            raise KeyError(f"no array {key!r}{hint}; stored: {list(self.columns)}")

    def _damaged(self, key: str, rows: np.ndarray, err: OSError) -> ValueError:
        """The error for a failed read of ``rows`` of ``key``, naming the damaged chunk."""
        ds, chunk = self._file[key], self.chunk_size
        for lo in sorted({int(r) // chunk * chunk for r in rows}):
            hi = min(lo + chunk, ds.shape[0])
            try:
                ds[lo:hi]
            except OSError:
                return ValueError(
                    f"{self.path} is damaged: array {key!r}, rows {lo}-{hi - 1} fail their "
                    f"checksum or cannot be decoded ({err})"
                )
        return ValueError(f"{self.path}: reading array {key!r} failed: {err}")

    def _get(self, key: str, index: Any, rows: np.ndarray) -> np.ndarray:
        """``self._file[key][index]``, with damage reported as a ``ValueError``."""
        if key in self._virtual:
            shape, dtype = self._virtual[key]
            return np.zeros((len(rows), *shape), dtype)
        try:
            return self._file[key][index]
        except OSError as err:
            raise self._damaged(key, rows, err) from err

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of one array.

        Raises:
            KeyError: No such array.
            ValueError: The rows are damaged on disk (checksum mismatch).
        """
        self._check_key(key)
        start, stop, _ = slice(start, stop).indices(self._n)
        return self._get(key, np.s_[start:stop], np.arange(start, max(start, stop)))

    def read_rows(self, index: np.ndarray, keys: Sequence[str] | None = None) -> dict:
        """Rows at sorted integer positions ``index`` (e.g. one episode, a sample)."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self._n):
            raise IndexError(f"row index out of range [0, {self._n})")
        out = {}
        for key in keys or self.columns:
            self._check_key(key)
            out[key] = self._get(key, index, index) if index.size else self.read(key, 0, 0)
        return out

    def iter_chunks(
        self,
        keys: Sequence[str] | None = None,
        chunk_size: int | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{key: rows}`` for consecutive blocks of rows.

        Args:
            keys: Arrays to read (all by default).
            chunk_size: Rows per block; the file's chunk size by default (fastest).
            start: First row.
            stop: End of the row range (exclusive; all rows when ``None``).
        """
        keys = list(keys or self.columns)
        for key in keys:
            self._check_key(key)
        step = int(chunk_size or self.chunk_size)
        if step < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        start, stop, _ = slice(start, stop).indices(self._n)
        for lo in range(start, stop, step):
            hi = min(lo + step, stop)
            out = {}
            for k in keys:
                if k in self._virtual:
                    out[k] = self._get(k, None, np.arange(lo, hi))
                    continue
                ds = self._file[k]
                out[k] = np.empty((hi - lo, *ds.shape[1:]), ds.dtype)
                if hi > lo:
                    try:
                        ds.read_direct(out[k], np.s_[lo:hi])
                    except OSError as err:
                        raise self._damaged(k, np.arange(lo, hi), err) from err
            yield out

    def episode_index(self) -> dict[int, np.ndarray]:
        """Row positions of every episode, ``{episode_id: rows}`` (rows sorted)."""
        return episode_rows(self.read("episode"))

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> TransitionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"TransitionReader({str(self.path)!r}: {m.env_name}, {self._n} rows, "
            f"{m.precision}, d_s={m.d_s}, d_a={m.d_a}, jacobians={m.jacobians})"
        )
