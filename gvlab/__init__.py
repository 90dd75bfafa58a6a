"""gvlab: JAX reproductions of generative and variational methods.

The public surface: the registry (`experiment`, `Claim`, `get`, `names`), the training entry points (`fit`,
`make_train_step`, `TrainState`, `FitResult`), the core types (`Method`, `Spec`, `DataSource`) and configs
(`TrainConfig`). Distributions, losses, layers, data and models live in their subpackages (`gvlab.dists`,
`gvlab.losses`, ...).

Names are loaded on first use (PEP 562), so `import gvlab` and `gvlab list` do not import JAX's training stack,
and `import gvlab.dists` does not load orbax or flax.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from gvlab.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "TrainConfig": "gvlab.config",
    "Claim": "gvlab.registry",
    "experiment": "gvlab.registry",
    "get": "gvlab.registry",
    "names": "gvlab.registry",
    "FitResult": "gvlab.train.loop",
    "fit": "gvlab.train.loop",
    "TrainState": "gvlab.train.state",
    "make_train_step": "gvlab.train.step",
    "DataSource": "gvlab.types",
    "Method": "gvlab.types",
    "Spec": "gvlab.types",
}

__all__ = sorted(_EXPORTS)


def _subpackage(name: str):
    try:  # subpackages: `gvlab.dists` after a bare `import gvlab`
        return importlib.import_module(f"gvlab.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"gvlab.{name}":
            raise
        raise AttributeError(f"module 'gvlab' has no attribute {name!r}") from None


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, fallback=_subpackage)


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from gvlab.config import TrainConfig as TrainConfig
    from gvlab.registry import Claim as Claim
    from gvlab.registry import experiment as experiment
    from gvlab.registry import get as get
    from gvlab.registry import names as names
    from gvlab.train.loop import FitResult as FitResult
    from gvlab.train.loop import fit as fit
    from gvlab.train.state import TrainState as TrainState
    from gvlab.train.step import make_train_step as make_train_step
    from gvlab.types import DataSource as DataSource
    from gvlab.types import Method as Method
    from gvlab.types import Spec as Spec
