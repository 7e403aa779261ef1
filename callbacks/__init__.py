"""SB3 callbacks: live sparsity of the true Jacobians, and data sets, while an agent trains.

The statistics themselves are pure numpy and live in
:mod:`dynamic_sparsity.analysis` (shared with the offline analysis).
"""

from callbacks.dataset_callback import DatasetCallback
from callbacks.sparsity_callback import SparsityCallback, check_env_has_jacobians

__all__ = ["DatasetCallback", "SparsityCallback", "check_env_has_jacobians"]
