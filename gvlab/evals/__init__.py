"""Evaluation after a fit: evaluators `fn(run_params, data, key) -> {metric: array}`, vmapped over runs, jitted
once, cached in the workdir (`gvlab.run.Run.evaluate`), and the shared metrics experiments reuse."""

from gvlab.evals.core import Cache as Cache
from gvlab.evals.core import evaluate_runs as evaluate_runs
from gvlab.evals.core import fingerprint as fingerprint


def __getattr__(name: str):
    """`gvlab.evals.metrics` on first use: it imports `gvlab.inverse` (and diffrax), which `gvlab.run` should not
    pay for at every start."""
    if name == "metrics":
        import importlib

        return importlib.import_module("gvlab.evals.metrics")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
