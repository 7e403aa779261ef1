"""SB3 callbacks: live sparsity of the true Jacobians, and data sets, while an agent trains.

The statistics themselves are pure numpy and live in :mod:`sparsity` (shared
with the offline analysis); their names are re-exported here for existing
imports.
"""

from callbacks.dataset_callback import DatasetCallback
from callbacks.sparsity_callback import SparsityCallback, check_env_has_jacobians
from sparsity.stats import (
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
