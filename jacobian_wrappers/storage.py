"""Moved to :mod:`sparsity.storage`; this module keeps existing imports working."""

from sparsity.storage import *  # noqa: F403
from sparsity.storage import __all__  # noqa: F401
