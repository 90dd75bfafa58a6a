"""The runnable examples in docstrings stay true (optax runs its doctests the same way)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["gvlab.dists", "gvlab.optim.compression", "gvlab.optim.variational", "gvlab.config", "gvlab.continual.kernels", "gvlab.continual.metrics", "gvlab.registry", "gvlab.data.pfsm", "gvlab.data.balls", "gvlab.data.shapes", "gvlab.diagnostics",
           "gvlab.data.attributes", "gvlab.data.correlated", "gvlab.data.text", "gvlab.probe", "gvlab.data.gaussian_mixture",
           "gvlab.diffusion.metrics", "gvlab.diffusion.parameterisation", "gvlab.diffusion.schedules",
           "gvlab.inverse.gaussian", "gvlab.inverse.metrics", "gvlab.inverse.operators", "gvlab.inverse.solvers", "gvlab.inverse.wiener", "gvlab.models.binary_perceptron",
           "gvlab.data.patches", "gvlab.inverse.lensless", "gvlab.nn.lensnet"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried > 0, f"{name} has no examples"
    assert failures == 0
