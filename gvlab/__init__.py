"""gvlab: JAX reproductions of generative and variational methods.

The public surface: the registry (`experiment`, `Claim`, `get`, `names`), the training entry points (`fit`,
`make_train_step`, `TrainState`), the core types (`Method`, `Spec`, `DataSource`) and configs (`TrainConfig`).
Distributions, losses, layers, data and models live in their subpackages (`gvlab.dists`, `gvlab.losses`, ...).
"""

__version__ = "0.1.0"

from gvlab.config import TrainConfig as TrainConfig
from gvlab.registry import Claim as Claim
from gvlab.registry import experiment as experiment
from gvlab.registry import get as get
from gvlab.registry import names as names
from gvlab.train import FitResult as FitResult
from gvlab.train import TrainState as TrainState
from gvlab.train import fit as fit
from gvlab.train import make_train_step as make_train_step
from gvlab.types import DataSource as DataSource
from gvlab.types import Method as Method
from gvlab.types import Spec as Spec
