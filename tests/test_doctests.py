"""The ``Example:`` blocks of the public entry points run, and print what they show."""

from __future__ import annotations

import doctest

import pytest

from callbacks import SparsityCallback
from dynamic_sparsity.mbrl import MBPO
from jacobian_wrappers import JacobianWrapper, PlaygroundVecEnv, collect
from world_models import train

#: In this order: ``train``'s example reads the data set ``collect``'s writes.
ENTRY_POINTS = (JacobianWrapper, PlaygroundVecEnv, SparsityCallback, collect, train, MBPO)


@pytest.mark.slow
def test_examples_of_the_public_entry_points(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write their files here
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner()
    ran = []
    for obj in ENTRY_POINTS:
        (test,) = finder.find(obj, obj.__name__, globs={})
        assert test.examples, f"{obj.__name__} has no Example: block"
        result = runner.run(test)
        assert result.failed == 0, f"{obj.__name__}: {result.failed} example(s) failed"
        ran.append(result.attempted)
    assert all(n >= 3 for n in ran)
