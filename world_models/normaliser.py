"""Z-score normalisation of transitions, and of their Jacobians to match.

With ``x = x_n * (sigma_in + e) + mu_in`` and ``y_n = (y - mu_out) / (sigma_out + e)``
the Jacobian of the normalised map ``x_n -> y_n`` is

    J_n[i, j] = J[i, j] * (sigma_in[j] + e) / (sigma_out[i] + e)

(docs/method.md#world-models; the chain rule ``dy_n/dy * dy/dx * dx/dx_n``). A zero stays
a zero. The inputs are ``(s, a)`` and the output is ``s'``; the statistics of
``delta = s' - s`` are kept for models that predict it.

Statistics are merged chunk by chunk (Chan et al.'s parallel form of
Welford's update, in float64), so fitting never holds a data set in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Normaliser", "RunningMoments", "scale_jacobian"]

_KEYS = ("state", "action", "next_state", "delta")


def scale_jacobian(jac, in_scale, out_scale, to: str):
    """Map a Jacobian ``(..., d_out, d_in)`` between raw and normalised coordinates.

    The one place where ``J_n[i, j] = J[i, j] * in_scale[j] / out_scale[i]`` is
    written (``in_scale``, ``out_scale``: ``std + e`` of the inputs and of the
    output); numpy arrays and torch tensors alike.

    Args:
        jac: The Jacobian to map.
        in_scale: ``(d_in,)`` scales of the inputs ``(s, a)``.
        out_scale: ``(d_out,)`` scales of the output.
        to: ``"normalised"`` (from raw) or ``"raw"`` (from normalised).
    """
    ratio = in_scale[None, :] / out_scale[:, None]
    if to == "normalised":
        return jac * ratio
    if to == "raw":
        return jac / ratio
    raise ValueError(f"to must be 'normalised' or 'raw', got {to!r}")


class RunningMoments:
    """Streaming mean and variance per feature (parallel Welford, float64).

    Args:
        dim: Number of features.
    """

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.mean = np.zeros(dim)
        self._m2 = np.zeros(dim)

    def update(self, x: np.ndarray) -> None:
        """Merge a batch ``(n, dim)`` into the statistics."""
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        if n == 0:
            return
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n / total)
        self._m2 = self._m2 + m2_b + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (0 before any data)."""
        return np.sqrt(self._m2 / max(self.count, 1))


@dataclass
class Normaliser:
    """Z-scores of ``s``, ``a``, ``s'`` and ``s' - s``; Jacobians scaled to match.

    Attributes:
        mean: ``{"state", "action", "next_state", "delta"}`` -> mean vector.
        std: Same keys -> standard deviation vector.
        eps: The ``e`` added to every standard deviation.
        count: Rows the statistics were fitted on.
    """

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    eps: float = 1e-8
    count: int = 0
    _scale: dict[str, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        missing = [k for k in _KEYS if k not in self.mean or k not in self.std]
        if missing:
            raise ValueError(f"normaliser statistics lack {missing}; need {list(_KEYS)}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        self.mean = {k: np.asarray(self.mean[k], dtype=np.float64) for k in _KEYS}
        self.std = {k: np.asarray(self.std[k], dtype=np.float64) for k in _KEYS}
        self._scale = {k: self.std[k] + self.eps for k in _KEYS}

    # -- construction ----------------------------------------------------------

    @classmethod
    def identity(cls, d_s: int, d_a: int) -> Normaliser:
        """Zero mean, unit scale: normalised coordinates are the raw ones."""
        zeros = {"state": d_s, "action": d_a, "next_state": d_s, "delta": d_s}
        return cls(
            mean={k: np.zeros(n) for k, n in zeros.items()},
            std={k: np.ones(n) for k, n in zeros.items()},
            eps=0.0,
        )

    @classmethod
    def from_moments(cls, moments: Mapping[str, RunningMoments], eps: float = 1e-8) -> Normaliser:
        """From streamed :class:`RunningMoments` of the four keys."""
        if not moments["state"].count:
            raise ValueError("cannot fit a normaliser on zero rows")
        return cls(
            mean={k: moments[k].mean for k in _KEYS},
            std={k: moments[k].std for k in _KEYS},
            eps=eps,
            count=int(moments["state"].count),
        )

    @classmethod
    def fit(cls, chunks, eps: float = 1e-8) -> Normaliser:
        """Fit on an iterable of ``{"state", "action", "next_state"}`` array chunks."""
        moments: dict[str, RunningMoments] | None = None
        for chunk in chunks:
            s, a, s2 = chunk["state"], chunk["action"], chunk["next_state"]
            if moments is None:
                moments = {
                    "state": RunningMoments(s.shape[1]),
                    "action": RunningMoments(a.shape[1]),
                    "next_state": RunningMoments(s.shape[1]),
                    "delta": RunningMoments(s.shape[1]),
                }
            moments["state"].update(s)
            moments["action"].update(a)
            moments["next_state"].update(s2)
            moments["delta"].update(np.asarray(s2, np.float64) - s)
        if moments is None:
            raise ValueError("cannot fit a normaliser on zero rows")
        return cls.from_moments(moments, eps)

    @property
    def d_s(self) -> int:
        """State dimension."""
        return len(self.mean["state"])

    @property
    def d_a(self) -> int:
        """Action dimension."""
        return len(self.mean["action"])

    def scale(self, key: str) -> np.ndarray:
        """``std + eps`` of one of ``state``, ``action``, ``next_state``, ``delta``."""
        return self._scale[key]

    # -- vectors ---------------------------------------------------------------

    def normalise(self, key: str, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / (std + eps)`` of the variable ``key``."""
        return (np.asarray(x, np.float64) - self.mean[key]) / self._scale[key]

    def denormalise(self, key: str, x_n: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalise`."""
        return np.asarray(x_n, np.float64) * self._scale[key] + self.mean[key]

    # -- Jacobians -------------------------------------------------------------

    def _scales(self, output: str) -> tuple[np.ndarray, np.ndarray]:
        """``(sigma_in + e, sigma_out + e)``: scales of ``(s, a)`` and of ``output``."""
        return np.concatenate([self._scale["state"], self._scale["action"]]), self._scale[output]

    def jacobian_to_normalised(self, jac: np.ndarray, output: str = "next_state") -> np.ndarray:
        """Raw ``d y / d(s, a)`` -> ``d y_n / d(s_n, a_n)`` (batched on leading axes).

        Args:
            jac: ``(..., d_s, d_s + d_a)`` Jacobian ``[J_s | J_a]``.
            output: Which variable ``y`` is: ``"next_state"`` or ``"delta"``.
        """
        self._check_jac(jac)
        return scale_jacobian(np.asarray(jac, np.float64), *self._scales(output), "normalised")

    def jacobian_to_raw(self, jac_n: np.ndarray, output: str = "next_state") -> np.ndarray:
        """Inverse of :meth:`jacobian_to_normalised`."""
        self._check_jac(jac_n)
        return scale_jacobian(np.asarray(jac_n, np.float64), *self._scales(output), "raw")

    def _check_jac(self, jac: np.ndarray) -> None:
        want = (self.d_s, self.d_s + self.d_a)
        if np.shape(jac)[-2:] != want:
            raise ValueError(f"Jacobian must end in shape {want}, got {np.shape(jac)}")

    # -- torch and persistence -------------------------------------------------

    def tensors(
        self, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> dict[str, torch.Tensor]:
        """``{key}_mean`` and ``{key}_scale`` tensors of the four variables."""
        out = {}
        for k in _KEYS:
            out[f"{k}_mean"] = torch.as_tensor(self.mean[k], dtype=dtype, device=device)
            out[f"{k}_scale"] = torch.as_tensor(self._scale[k], dtype=dtype, device=device)
        return out

    def state_dict(self) -> dict:
        """Plain lists and numbers (safe for ``torch.load(weights_only=True)``)."""
        return {
            "mean": {k: self.mean[k].tolist() for k in _KEYS},
            "std": {k: self.std[k].tolist() for k in _KEYS},
            "eps": float(self.eps),
            "count": int(self.count),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> Normaliser:
        """Inverse of :meth:`state_dict`."""
        return cls(
            mean=dict(state["mean"]),
            std=dict(state["std"]),
            eps=float(state["eps"]),
            count=int(state["count"]),
        )
