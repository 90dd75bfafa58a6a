"""Information-bottleneck regression: CS-IB (Yu et al., ICLR 2024) with VIB and MSE baselines.

Modules: `regression` (the network, the objective of every variant as per-run weights, the `Method` with
validation selection in `TrainState.extra`), `data` (heavy-tailed synthetic regression with a closed-form noise
floor, diabetes splits, the data source), `evaluation` (RMSE, PGD adversarial RMSE, the CS-QMI information plane).
The CS estimators themselves are `gvlab.losses.cs`.

The public surface:

* regression: `Config`, `make`, `stack_args`, `VARIANTS`;
* evaluation: `information_plane`;
* the modules `regression`, `data`, `evaluation`.

    >>> from gvlab.ib import regression
    >>> sorted(regression.stack_args([("mse", 0.0), ("cs_ib", 1e-2)]))
    ['cs', 'cs_code', 'kl', 'mse', 'noise', 'qmi', 'sigma']
"""

from gvlab.ib import data as data
from gvlab.ib import evaluation as evaluation
from gvlab.ib import regression as regression
from gvlab.ib.evaluation import information_plane as information_plane
from gvlab.ib.regression import VARIANTS as VARIANTS
from gvlab.ib.regression import Config as Config
from gvlab.ib.regression import make as make
from gvlab.ib.regression import stack_args as stack_args

__all__ = ["Config", "VARIANTS", "data", "evaluation", "information_plane", "make", "regression", "stack_args"]
