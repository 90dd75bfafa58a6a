"""Distributed variational-inequality methods with compressed communication (issue 6; MASHA, arXiv 2110.03313).

* `variational`: affine VI operators split over M workers, the regularised bilinear game, exact solution.
* `compression`: RandK (unbiased), TopK (contractive), the floats a message costs.
* `extragradient`: extragradient and gradient descent-ascent on one machine; distributed extragradient and its
  naive compressed variant.
* `masha`: MASHA1 (RandK + control variates + probabilistic anchor refresh) and MASHA2 (TopK + error feedback).
* `distributed`: one iteration of one run with the workers on a `("workers",)` device mesh under `shard_map` (or
  simulated on one device), and `run`, an in-memory driver (vmapped runs, one `lax.scan`).
* `method`: a distributed method as a `gvlab.Method` with its own step, for `fit` (checkpoints, metrics, resume).
"""

from gvlab.optim.compression import message_floats, rand_k, top_k
from gvlab.optim.distributed import (Collective, Simulated, Trajectory, WorkerState, init_state, run, step_state,
                                     worker_mesh)
from gvlab.optim.extragradient import (Extragradient, NaiveCompressedExtragradient, extragradient,
                                       gradient_descent_ascent)
from gvlab.optim.masha import Masha1, Masha2
from gvlab.optim.method import fit_mesh, make_method, make_spec, trajectory
from gvlab.optim.variational import (AffineVI, bilinear_games, lipschitz_constant, make_bilinear_game, mean_operator,
                                     relative_error, solve, strong_monotonicity, worker_operators)

__all__ = [
    "AffineVI", "Collective", "Extragradient", "Masha1", "Masha2", "NaiveCompressedExtragradient", "Simulated",
    "Trajectory", "WorkerState", "bilinear_games", "extragradient", "fit_mesh", "gradient_descent_ascent",
    "init_state", "lipschitz_constant", "make_bilinear_game", "make_method", "make_spec", "mean_operator",
    "message_floats", "rand_k", "relative_error", "run", "solve", "step_state", "strong_monotonicity", "top_k",
    "trajectory", "worker_mesh", "worker_operators",
]
