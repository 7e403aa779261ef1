"""Moved to :mod:`sparsity.figures`; this module keeps existing imports working."""

from sparsity.figures import *  # noqa: F403
from sparsity.figures import __all__  # noqa: F401
