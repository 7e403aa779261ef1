"""SB3 callbacks that log the sparsity of the true dynamics' Jacobians while an agent trains.

The statistics themselves are pure numpy (:mod:`callbacks.sparsity_stats`) and
are reused by offline analysis.
"""

from callbacks.dataset_callback import DatasetCallback
from callbacks.sparsity_callback import SparsityCallback, check_env_has_jacobians
from callbacks.sparsity_stats import (
    DEFAULT_THRESHOLD,
    GlobalZeros,
    PatternCounter,
    RunLengths,
    SparsityMeans,
    combine,
    sample_sparsity,
    zero_mask,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "DatasetCallback",
    "GlobalZeros",
    "PatternCounter",
    "RunLengths",
    "SparsityCallback",
    "SparsityMeans",
    "check_env_has_jacobians",
    "combine",
    "sample_sparsity",
    "zero_mask",
]
