"""Training: state, the canonical step, the fit loop, parallelism, checkpoints and metrics."""

from gvlab.train.loop import FitResult as FitResult
from gvlab.train.loop import fit as fit
from gvlab.train.metrics import History as History
from gvlab.train.state import TrainState as TrainState
from gvlab.train.step import init_state as init_state
from gvlab.train.step import make_train_step as make_train_step
from gvlab.train.optimizers import independent_adamw as independent_adamw
from gvlab.train.optimizers import set_hyperparams as set_hyperparams
from gvlab.train.optimizers import by_part as by_part
from gvlab.train.optimizers import frozen as frozen
from gvlab.train.optimizers import PartOptimizers as PartOptimizers
from gvlab.train.parallel import data_mesh as data_mesh
