"""Installed versions of distributions, for provenance and cache keys."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

__all__ = ["installed_versions"]


def installed_versions(dists: Iterable[str]) -> dict[str, str]:
    """``{distribution: version}``, ``"not installed"`` for a missing one."""
    out = {}
    for dist in dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
