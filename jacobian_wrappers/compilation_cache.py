"""JAX's persistent compilation cache, on by default so a second start is fast.

The first compile of an MJX step with its Jacobian takes 5-30 s per env on a CPU;
with the cache warm a new process loads the compiled program instead.

Where the cache lives, in order of precedence:

1. the ``cache_dir`` argument (``False`` or ``"off"`` turns the cache off);
2. the environment variable ``DYNAMIC_SPARSITY_CACHE_DIR`` (``off``, ``0``,
   ``false`` or ``none`` turn it off);
3. ``$XDG_CACHE_HOME/dynamic-sparsity/jax`` (default ``~/.cache/...``).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["CACHE_ENV_VAR", "active_cache_dir", "default_cache_dir", "enable_compilation_cache"]

CACHE_ENV_VAR = "DYNAMIC_SPARSITY_CACHE_DIR"
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
