"""Stochastic differential equations: diffrax solvers with pre-sampled Brownian increments, a `lax.scan`
Euler-Maruyama reference, Girsanov path KL, and fractional noise (Markov-approximate fBM).

Modules: `solve` (`solve_sde` and its scan reference), `fractional` (the MA-fBM approximation's closed forms and
exact fBM draws), `mafbm` (SDEs driven by MA-fBM: X plus K Ornstein-Uhlenbeck processes on one Brownian motion).

The public surface, importable from `gvlab.sde` itself (loaded on first use, PEP 562, so `gvlab.sde.fractional`
does not import diffrax):

* solve: `solve_sde`, `solve_sde_reference`, `brownian_increments`, `SDESolution`;
* fractional: `gamma_grid`, `optimal_coefficients`, `riemann_coefficients`, `unit_variance_scale`,
  `fbm_covariance`, `mafbm_covariance`, `approximation_error`, `sample_fbm`;
* mafbm: `solve_fractional`, `solve_fractional_segments`, `solve_fractional_observed`, `SegmentedSolution`,
  `sample_paths`, `brownian_coefficients`, `fractional_fields`, `rescaled_step`, `linear_system`,
  `smoothing_control`, `SmoothingControl`, `solve_fractional_smoothed`.

    >>> from gvlab.sde import brownian_increments, gamma_grid, solve_fractional, solve_sde
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gvlab.lazy import lazy_exports

_EXPORTS = {
    "SDESolution": "gvlab.sde.solve",
    "brownian_increments": "gvlab.sde.solve",
    "solve_sde": "gvlab.sde.solve",
    "solve_sde_reference": "gvlab.sde.solve",
    "approximation_error": "gvlab.sde.fractional",
    "fbm_covariance": "gvlab.sde.fractional",
    "gamma_grid": "gvlab.sde.fractional",
    "mafbm_covariance": "gvlab.sde.fractional",
    "optimal_coefficients": "gvlab.sde.fractional",
    "riemann_coefficients": "gvlab.sde.fractional",
    "sample_fbm": "gvlab.sde.fractional",
    "unit_variance_scale": "gvlab.sde.fractional",
    "SegmentedSolution": "gvlab.sde.mafbm",
    "SmoothingControl": "gvlab.sde.mafbm",
    "linear_system": "gvlab.sde.mafbm",
    "smoothing_control": "gvlab.sde.mafbm",
    "solve_fractional_smoothed": "gvlab.sde.mafbm",
    "brownian_coefficients": "gvlab.sde.mafbm",
    "fractional_fields": "gvlab.sde.mafbm",
    "rescaled_step": "gvlab.sde.mafbm",
    "sample_paths": "gvlab.sde.mafbm",
    "solve_fractional": "gvlab.sde.mafbm",
    "solve_fractional_observed": "gvlab.sde.mafbm",
    "solve_fractional_segments": "gvlab.sde.mafbm",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from gvlab.sde.solve import SDESolution as SDESolution
    from gvlab.sde.solve import brownian_increments as brownian_increments
    from gvlab.sde.solve import solve_sde as solve_sde
    from gvlab.sde.solve import solve_sde_reference as solve_sde_reference
    from gvlab.sde.fractional import approximation_error as approximation_error
    from gvlab.sde.fractional import fbm_covariance as fbm_covariance
    from gvlab.sde.fractional import gamma_grid as gamma_grid
    from gvlab.sde.fractional import mafbm_covariance as mafbm_covariance
    from gvlab.sde.fractional import optimal_coefficients as optimal_coefficients
    from gvlab.sde.fractional import riemann_coefficients as riemann_coefficients
    from gvlab.sde.fractional import sample_fbm as sample_fbm
    from gvlab.sde.fractional import unit_variance_scale as unit_variance_scale
    from gvlab.sde.mafbm import SegmentedSolution as SegmentedSolution
    from gvlab.sde.mafbm import SmoothingControl as SmoothingControl
    from gvlab.sde.mafbm import linear_system as linear_system
    from gvlab.sde.mafbm import smoothing_control as smoothing_control
    from gvlab.sde.mafbm import solve_fractional_smoothed as solve_fractional_smoothed
    from gvlab.sde.mafbm import brownian_coefficients as brownian_coefficients
    from gvlab.sde.mafbm import fractional_fields as fractional_fields
    from gvlab.sde.mafbm import rescaled_step as rescaled_step
    from gvlab.sde.mafbm import sample_paths as sample_paths
    from gvlab.sde.mafbm import solve_fractional as solve_fractional
    from gvlab.sde.mafbm import solve_fractional_observed as solve_fractional_observed
    from gvlab.sde.mafbm import solve_fractional_segments as solve_fractional_segments
