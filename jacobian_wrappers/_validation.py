"""Checks of user input shared by the single and the vectorised env."""

from __future__ import annotations

import numpy as np

__all__ = ["check_array"]


def check_array(
    value: object, shape: tuple[int, ...], dtype: np.dtype, name: str = "action"
) -> np.ndarray:
    """Return ``value`` (an action or a state) as an array of ``shape`` and ``dtype``.

    Raises:
        ValueError: If its shape differs from ``shape`` or it holds NaN or inf;
            the message names the shape or the offending values.
    """
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array of shape {shape}, got {value!r}") from err
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.argwhere(bad)[:5].tolist()
        raise ValueError(f"{name} must be finite, got {arr[bad][:5].tolist()} at index {where}")
    return arr
