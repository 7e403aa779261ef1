"""Floating-point precision of an environment: validation and the JAX x64 scope."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import numpy as np

__all__ = ["PRECISIONS", "check_precision", "numpy_dtype", "precision_scope"]

PRECISIONS: tuple[str, ...] = ("float32", "float64")


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is supported.

    Raises:
        ValueError: If ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def numpy_dtype(precision: str) -> np.dtype:
    """The numpy dtype of observations, states and Jacobians at ``precision``.

    ``precision`` is one :func:`check_precision` has accepted (checked once, where
    the user gave it).
    """
    return np.dtype(precision)


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """Run JAX code at ``precision``, whatever the process-wide x64 flag says.

    ``float64`` needs ``jax_enable_x64``; scoping it per call lets float32 and
    float64 environments live in one process. Tracing, compiling and running a
    jitted function must all happen inside the same scope. ``precision`` is one
    :func:`check_precision` has accepted.
    """
    with jax.enable_x64(precision == "float64"):
        yield
