"""JAX's persistent compilation cache, on by default so a second start is fast.

The first compile of a float64 MJX step with its Jacobian takes 30 s to 9 min
per env and batch size on a 2-core CPU (108-149 s on a GPU); with the cache
warm a new process loads the compiled program instead.
:func:`compile_notice` says so on stderr while a first compile runs.

Where the cache lives, in order of precedence:

1. the ``cache_dir`` argument (``False`` or ``"off"`` turns the cache off);
2. the environment variable ``DYNAMIC_SPARSITY_CACHE_DIR`` (``off``, ``0``,
   ``false`` or ``none`` turn it off);
3. ``$XDG_CACHE_HOME/dynamic-sparsity/jax`` (default ``~/.cache/...``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jax

__all__ = [
    "CACHE_ENV_VAR",
    "QUIET_ENV_VAR",
    "active_cache_dir",
    "compile_notice",
    "default_cache_dir",
    "enable_compilation_cache",
]

CACHE_ENV_VAR = "DYNAMIC_SPARSITY_CACHE_DIR"
#: Set to 1 to silence the one-line notices printed while a program compiles.
QUIET_ENV_VAR = "DYNAMIC_SPARSITY_QUIET"
_OFF = {"off", "0", "false", "none", "no", ""}
_active: Path | None = None
_configured = False


def default_cache_dir() -> Path:
    """The cache directory used when neither argument nor variable names one."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dynamic-sparsity" / "jax"


def _resolve(cache_dir: str | os.PathLike | bool | None) -> Path | None:
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        env = os.environ.get(CACHE_ENV_VAR)
        if env is not None:
            return None if env.strip().lower() in _OFF else Path(env).expanduser()
        return default_cache_dir()
    if isinstance(cache_dir, str) and cache_dir.strip().lower() in _OFF:
        return None
    return Path(cache_dir).expanduser()


def enable_compilation_cache(cache_dir: str | os.PathLike | bool | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache for this process.

    Environments call this in their constructor with their own
    ``compilation_cache`` argument; calling it again with ``None`` keeps the
    directory that is already in use.

    Args:
        cache_dir: Directory for the cache; ``None`` for the default (see the
            module docstring); ``False`` or ``"off"`` to turn it off.

    Returns:
        The directory in use, or ``None`` when the cache is off.
    """
    global _active, _configured
    if cache_dir is None and _configured:
        return _active
    path = _resolve(cache_dir)
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
    else:
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        # Cache every program worth a disk read; MJX steps take seconds to compile.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _active, _configured = path, True
    return path


def active_cache_dir() -> Path | None:
    """The cache directory in use, or ``None`` when the cache is off or not set up."""
    return _active


_announced: set[str] = set()


@contextlib.contextmanager
def compile_notice(what: str) -> Iterator[None]:
    """Print one line to stderr before the first call that compiles ``what``, one after.

    An MJX step with Jacobians compiles for 30 s to 9 min on a CPU the first
    time (docs/performance.md); without a word a first run looks hung. Each
    ``what`` is announced once per process; ``DYNAMIC_SPARSITY_QUIET=1`` hides it.
    """
    if what in _announced or os.environ.get(QUIET_ENV_VAR, "").strip() not in _OFF:
        yield
        return
    _announced.add(what)
    cache = active_cache_dir()
    where = f"cached in {cache}" if cache is not None else "persistent cache off"
    print(
        f"[dynamic-sparsity] compiling {what}: 30 s to 9 min on a CPU the first time, "
        f"seconds to a minute once cached ({where})",
        file=sys.stderr,
        flush=True,
    )
    start = time.perf_counter()
    yield
    print(
        f"[dynamic-sparsity] {what} ready in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
        flush=True,
    )
