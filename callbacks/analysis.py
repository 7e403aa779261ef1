"""Moved to :mod:`sparsity.analysis`; this module keeps existing imports working."""

from sparsity.analysis import *  # noqa: F403
from sparsity.analysis import __all__  # noqa: F401
