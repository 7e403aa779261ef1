"""Moved to :mod:`sparsity.report`; this module keeps existing imports working."""

from sparsity.report import *  # noqa: F403
from sparsity.report import __all__  # noqa: F401
