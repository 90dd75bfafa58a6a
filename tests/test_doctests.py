"""The runnable examples in docstrings stay true (optax runs its doctests the same way).

Modules are discovered: every module of the `gvlab` package whose docstrings hold examples is tested, so a new
example is checked without touching this file.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import gvlab

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    found = []
    for info in pkgutil.walk_packages(gvlab.__path__, prefix="gvlab."):
        if info.name.endswith("__main__"):  # importing it runs the command line
            continue
        module = importlib.import_module(info.name)
        if any(test.examples for test in doctest.DocTestFinder().find(module)):
            found.append(info.name)
    return sorted(found)


MODULES = _modules_with_examples()


def test_discovery_finds_the_documented_modules():
    assert {"gvlab.dists", "gvlab.registry", "gvlab.inverse.metrics"} <= set(MODULES)  # negative control on discovery


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=OPTIONS)
    assert tried > 0, f"{name} has no examples"
    assert failures == 0
