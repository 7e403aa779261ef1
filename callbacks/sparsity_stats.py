"""Moved to :mod:`sparsity.stats`; this module keeps existing imports working."""

from sparsity.stats import *  # noqa: F403
from sparsity.stats import __all__  # noqa: F401
