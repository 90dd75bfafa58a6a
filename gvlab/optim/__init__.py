"""Distributed variational-inequality methods with compressed communication (issue 6; MASHA, arXiv 2110.03313).

* `variational`: affine VI operators split over M workers, the regularised bilinear game, exact solution.
* `compression`: RandK (unbiased), TopK (contractive), the floats a message costs.
* `extragradient`: extragradient and gradient descent-ascent on one machine; distributed extragradient and its
  naive compressed variant.
* `masha`: MASHA1 (RandK + control variates + probabilistic anchor refresh) and MASHA2 (TopK + error feedback).
* `distributed`: the driver: workers on a `("workers",)` device mesh under `shard_map` (or simulated on one
  device), one `lax.scan` in one `jit`, relative error and uplink floats per iteration.
"""

from gvlab.optim.compression import message_floats, rand_k, top_k
from gvlab.optim.distributed import Collective, Simulated, Trajectory, WorkerState, run, worker_mesh
from gvlab.optim.extragradient import (Extragradient, NaiveCompressedExtragradient, extragradient,
                                       gradient_descent_ascent)
from gvlab.optim.masha import Masha1, Masha2
from gvlab.optim.variational import (AffineVI, lipschitz_constant, make_bilinear_game, mean_operator,
                                     relative_error, solve, strong_monotonicity, worker_operators)

__all__ = [
    "AffineVI", "Collective", "Extragradient", "Masha1", "Masha2", "NaiveCompressedExtragradient", "Simulated",
    "Trajectory", "WorkerState", "extragradient", "gradient_descent_ascent", "lipschitz_constant",
    "make_bilinear_game", "mean_operator", "message_floats", "rand_k", "relative_error", "run", "solve",
    "strong_monotonicity", "top_k", "worker_mesh", "worker_operators",
]
