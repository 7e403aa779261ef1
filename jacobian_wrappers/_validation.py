"""Checks of user input shared by the single and the vectorised env."""

from __future__ import annotations

import numpy as np

__all__ = [
    "BACKENDS",
    "JACOBIAN_METHODS",
    "check_array",
    "check_backend",
    "check_int",
    "check_jacobian_method",
    "check_optional_int",
    "resolve_jacobian_method",
]

#: Who computes the Jacobians: exact autodiff through MJX, or MuJoCo's C finite differences.
BACKENDS = ("mjx", "mujoco")
#: How the exact (``"mjx"``) Jacobians pass the constraint solver (``_solver_tangent``).
JACOBIAN_METHODS = ("implicit", "unrolled")


def _check_choice(name: str, value: object, choices: tuple[str, ...], meaning: str) -> str:
    """``value`` if it is one of ``choices``; else a ``ValueError`` naming them and it."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices} ({meaning}), got {value!r}")
    return value


def check_backend(backend: object) -> str:
    """``backend`` if it is one of :data:`BACKENDS`.

    Raises:
        ValueError: Any other value.
    """
    meaning = "'mjx': exact autodiff Jacobians; 'mujoco': MuJoCo's C finite differences"
    return _check_choice("backend", backend, BACKENDS, meaning)


def check_jacobian_method(method: object) -> str:
    """``method`` if it is one of :data:`JACOBIAN_METHODS`.

    Raises:
        ValueError: Any other value.
    """
    meaning = (
        "'implicit': the solver differentiated at its solution where that is verified "
        "exact, other transitions recomputed 'unrolled'; 'unrolled': through every "
        "solver iteration"
    )
    return _check_choice("jacobian_method", method, JACOBIAN_METHODS, meaning)


def resolve_jacobian_method(method: object, precision: str) -> str:
    """``method``, checked; ``None`` gives the faster exact method at ``precision``.

    ``"implicit"`` in float64. In float32 round-off keeps most capped solver
    runs from ending on a full, verifiable Newton step (CheetahRun: 69 % of
    transitions unverified, hence computed twice), so ``None`` gives
    ``"unrolled"`` there (docs/performance.md#jacobians-of-the-envs).

    Raises:
        ValueError: ``method`` neither ``None`` nor one of :data:`JACOBIAN_METHODS`.
    """
    if method is None:
        return "implicit" if precision == "float64" else "unrolled"
    return check_jacobian_method(method)


def check_int(value: object, name: str, minimum: int | None = None) -> int:
    """``value`` as an ``int``, refusing floats, strings and bools.

    Raises:
        TypeError: ``value`` is not an integer (``2.7``, ``"10"``, ``None``, ``True``).
        ValueError: ``value < minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_optional_int(value: object, name: str, minimum: int | None = None) -> int | None:
    """:func:`check_int` that lets ``None`` through."""
    return None if value is None else check_int(value, name, minimum)


def check_array(
    value: object, shape: tuple[int, ...], dtype: np.dtype, name: str = "action"
) -> np.ndarray:
    """Return ``value`` (an action or a state) as an array of ``shape`` and ``dtype``.

    Raises:
        TypeError: If it is complex (its imaginary part would be dropped).
        ValueError: If its shape differs from ``shape`` or it holds NaN or inf;
            the message names the shape or the offending values.
    """
    if np.iscomplexobj(value):
        raise TypeError(f"{name} must be real, got a complex array: {value!r}")
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
