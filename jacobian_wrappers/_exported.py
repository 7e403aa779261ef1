"""Skip re-tracing on a warm start: serialise traced programs with ``jax.export``.

JAX's persistent cache skips XLA compilation, but tracing an MJX step under
``jax.jacfwd`` still costs seconds of Python on every start (3.6 s of the 12 s
to CheetahRun's first Jacobian, measured). A serialised ``jax.export.Exported``
is loaded in milliseconds; its compilation then hits the persistent cache.
The file name hashes everything the program depends on (versions, env,
config, precision, input shapes, this package's source), so a stale file is
never used.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from dynamic_sparsity.analysis._versions import installed_versions

__all__ = ["exported_or_jit"]

_VERSIONED = ("jax", "jaxlib", "mujoco", "mujoco-mjx", "playground", "dynamic-sparsity")


@functools.cache
def _source_hash() -> str:
    """Hash of this package's source: an edited step never loads a stale export."""
    h = hashlib.sha256()
    for file in sorted(Path(__file__).parent.glob("*.py")):
        h.update(file.read_bytes())
    return h.hexdigest()[:16]


def _versions() -> str:
    versions = installed_versions(_VERSIONED)
    return ";".join([f"source={_source_hash()}", *(f"{k}={v}" for k, v in versions.items())])


def _signature(args: Sequence) -> str:
    return repr([(x.shape, str(x.dtype)) for x in jax.tree.leaves(args)])


def exported_or_jit(fn: Callable, args: Sequence, key: str, cache_dir: Path | None) -> Callable:
    """``jax.jit(fn)``, loaded from or saved to ``cache_dir`` as a serialised export.

    Args:
        fn: Function of flat arrays (lists of arrays in, list of arrays out).
        args: Example arguments with the shapes and dtypes of every later call.
        key: What else identifies ``fn`` (env, config, precision, variant).
        cache_dir: Where exports live; ``None`` (cache off) returns ``jax.jit(fn)``.

    Returns:
        A callable with ``fn``'s signature; it must be called inside the same
        precision scope as this function.
    """
    jitted = jax.jit(fn)
    if cache_dir is None:
        return jitted
    try:
        from jax import export
    except ImportError:  # pragma: no cover - very old jax
        return jitted
    digest = hashlib.sha256(
        "|".join([key, _versions(), jax.default_backend(), _signature(args)]).encode()
    ).hexdigest()[:24]
    path = Path(cache_dir) / "exported" / f"{digest}.jaxexport"
    exp = None
    if path.exists():
        try:
            exp = export.deserialize(bytearray(path.read_bytes()))
        except Exception:  # corrupt or foreign file: export again
            exp = None
    if exp is None:
        try:
            exp = export.export(jitted)(*args)
            blob = exp.serialize()
        except Exception:  # e.g. flatbuffers missing: plain jit still works
            return jitted
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    return jax.jit(exp.call)
