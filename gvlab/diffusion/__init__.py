"""Diffusion and flow models on one Gaussian-path core (Lai et al. 2025, *The Principles of Diffusion Models*).

Modules: `schedules` (VP linear / cosine, VE, rectified flow: alpha_t, sigma_t, derivatives, f, g^2),
`parameterisation` (eps / x0 / score / velocity conversions, probability-flow velocity), `losses` (eps, denoising
score matching, flow matching and x0 regression with time weightings; `make_method` with classifier-free-guidance
label dropout), `samplers` (Euler, Heun, DDIM, DPM-Solver-1/2, DPM-Solver++(2S), DDPM ancestral, reverse-SDE Euler-Maruyama,
adaptive diffrax Tsit5; guidance, x0 clipping), `likelihood` (exact or Hutchinson log-likelihood through the probability-flow ODE),
`metrics` (sliced Wasserstein distance), `evaluation` (samplers and trained models against an analytic target);
beside the Gaussian core, `path` (the diffusion-path interface) and `discrete` (token diffusion).

The public surface, importable from `gvlab.diffusion` itself (loaded on first use, PEP 562, so importing one
submodule does not import the others or diffrax):

* schedules: `Schedule`, `KINDS`, `Kind`;
* parameterisation: `Prediction`, `PREDICTIONS`, `convert`, `per_example`, `probability_flow_velocity`;
* losses: `make_method`, `matching_loss`, `eps_matching_loss`, `score_matching_loss`, `flow_matching_loss`,
  `noised`, `regression_target`, `sample_time`, `time_weight`, `drop_labels`, `Weighting`, `WEIGHTINGS`;
* samplers: `Model`, `Samples`, `sample`, `SAMPLERS`, `time_grid`, `initial_noise`, `num_function_evals`, `euler`,
  `heun`, `ddim`, `dpm_solver_1`, `dpm_solver_2`, `dpm_solver_pp_2s`, `ddpm`, `euler_maruyama`, `adaptive_ode`,
  `guided`, `clip_x0`;
* likelihood: `log_likelihood`, `LogLikelihood`, `bits_per_dim`, `gaussian_prior_log_prob`;
* metrics: `sliced_wasserstein`;
* path: `DiffusionPath` (the interface of a T-step diffusion path), `GaussianPath` (a `Schedule` on a grid);
* discrete (VQ-Diffusion's mask-and-replace path and CDCD's contrastive term): `MaskAndReplace`, `variational_bound`,
  `prior_term`, `auxiliary_term`, `contrastive_term`, `ancestral_sample`, `shuffle_chunks`, `other_class_negatives`.

    >>> from gvlab.diffusion import Model, Schedule, sample, sliced_wasserstein
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gvlab.lazy import lazy_exports

_EXPORTS = {
    "KINDS": "gvlab.diffusion.schedules",
    "Kind": "gvlab.diffusion.schedules",
    "Schedule": "gvlab.diffusion.schedules",
    "PREDICTIONS": "gvlab.diffusion.parameterisation",
    "Prediction": "gvlab.diffusion.parameterisation",
    "convert": "gvlab.diffusion.parameterisation",
    "per_example": "gvlab.diffusion.parameterisation",
    "probability_flow_velocity": "gvlab.diffusion.parameterisation",
    "WEIGHTINGS": "gvlab.diffusion.losses",
    "Weighting": "gvlab.diffusion.losses",
    "drop_labels": "gvlab.diffusion.losses",
    "eps_matching_loss": "gvlab.diffusion.losses",
    "flow_matching_loss": "gvlab.diffusion.losses",
    "make_method": "gvlab.diffusion.losses",
    "matching_loss": "gvlab.diffusion.losses",
    "noised": "gvlab.diffusion.losses",
    "regression_target": "gvlab.diffusion.losses",
    "sample_time": "gvlab.diffusion.losses",
    "score_matching_loss": "gvlab.diffusion.losses",
    "time_weight": "gvlab.diffusion.losses",
    "SAMPLERS": "gvlab.diffusion.samplers",
    "Model": "gvlab.diffusion.samplers",
    "Samples": "gvlab.diffusion.samplers",
    "adaptive_ode": "gvlab.diffusion.samplers",
    "clip_x0": "gvlab.diffusion.samplers",
    "ddim": "gvlab.diffusion.samplers",
    "ddpm": "gvlab.diffusion.samplers",
    "dpm_solver_1": "gvlab.diffusion.samplers",
    "dpm_solver_2": "gvlab.diffusion.samplers",
    "dpm_solver_pp_2s": "gvlab.diffusion.samplers",
    "euler": "gvlab.diffusion.samplers",
    "euler_maruyama": "gvlab.diffusion.samplers",
    "guided": "gvlab.diffusion.samplers",
    "heun": "gvlab.diffusion.samplers",
    "initial_noise": "gvlab.diffusion.samplers",
    "num_function_evals": "gvlab.diffusion.samplers",
    "sample": "gvlab.diffusion.samplers",
    "time_grid": "gvlab.diffusion.samplers",
    "LogLikelihood": "gvlab.diffusion.likelihood",
    "bits_per_dim": "gvlab.diffusion.likelihood",
    "gaussian_prior_log_prob": "gvlab.diffusion.likelihood",
    "log_likelihood": "gvlab.diffusion.likelihood",
    "sliced_wasserstein": "gvlab.diffusion.metrics",
    "DiffusionPath": "gvlab.diffusion.path",
    "GaussianPath": "gvlab.diffusion.path",
    "MaskAndReplace": "gvlab.diffusion.discrete",
    "variational_bound": "gvlab.diffusion.discrete",
    "prior_term": "gvlab.diffusion.discrete",
    "auxiliary_term": "gvlab.diffusion.discrete",
    "contrastive_term": "gvlab.diffusion.discrete",
    "ancestral_sample": "gvlab.diffusion.discrete",
    "shuffle_chunks": "gvlab.diffusion.discrete",
    "other_class_negatives": "gvlab.diffusion.discrete",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from gvlab.diffusion.schedules import KINDS as KINDS
    from gvlab.diffusion.schedules import Kind as Kind
    from gvlab.diffusion.schedules import Schedule as Schedule
    from gvlab.diffusion.parameterisation import PREDICTIONS as PREDICTIONS
    from gvlab.diffusion.parameterisation import Prediction as Prediction
    from gvlab.diffusion.parameterisation import convert as convert
    from gvlab.diffusion.parameterisation import per_example as per_example
    from gvlab.diffusion.parameterisation import probability_flow_velocity as probability_flow_velocity
    from gvlab.diffusion.losses import WEIGHTINGS as WEIGHTINGS
    from gvlab.diffusion.losses import Weighting as Weighting
    from gvlab.diffusion.losses import drop_labels as drop_labels
    from gvlab.diffusion.losses import eps_matching_loss as eps_matching_loss
    from gvlab.diffusion.losses import flow_matching_loss as flow_matching_loss
    from gvlab.diffusion.losses import make_method as make_method
    from gvlab.diffusion.losses import matching_loss as matching_loss
    from gvlab.diffusion.losses import noised as noised
    from gvlab.diffusion.losses import regression_target as regression_target
    from gvlab.diffusion.losses import sample_time as sample_time
    from gvlab.diffusion.losses import score_matching_loss as score_matching_loss
    from gvlab.diffusion.losses import time_weight as time_weight
    from gvlab.diffusion.samplers import SAMPLERS as SAMPLERS
    from gvlab.diffusion.samplers import Model as Model
    from gvlab.diffusion.samplers import Samples as Samples
    from gvlab.diffusion.samplers import adaptive_ode as adaptive_ode
    from gvlab.diffusion.samplers import clip_x0 as clip_x0
    from gvlab.diffusion.samplers import ddim as ddim
    from gvlab.diffusion.samplers import ddpm as ddpm
    from gvlab.diffusion.samplers import dpm_solver_1 as dpm_solver_1
    from gvlab.diffusion.samplers import dpm_solver_2 as dpm_solver_2
    from gvlab.diffusion.samplers import dpm_solver_pp_2s as dpm_solver_pp_2s
    from gvlab.diffusion.samplers import euler as euler
    from gvlab.diffusion.samplers import euler_maruyama as euler_maruyama
    from gvlab.diffusion.samplers import guided as guided
    from gvlab.diffusion.samplers import heun as heun
    from gvlab.diffusion.samplers import initial_noise as initial_noise
    from gvlab.diffusion.samplers import num_function_evals as num_function_evals
    from gvlab.diffusion.samplers import sample as sample
    from gvlab.diffusion.samplers import time_grid as time_grid
    from gvlab.diffusion.likelihood import LogLikelihood as LogLikelihood
    from gvlab.diffusion.likelihood import bits_per_dim as bits_per_dim
    from gvlab.diffusion.likelihood import gaussian_prior_log_prob as gaussian_prior_log_prob
    from gvlab.diffusion.likelihood import log_likelihood as log_likelihood
    from gvlab.diffusion.metrics import sliced_wasserstein as sliced_wasserstein
    from gvlab.diffusion.path import DiffusionPath as DiffusionPath
    from gvlab.diffusion.path import GaussianPath as GaussianPath
    from gvlab.diffusion.discrete import MaskAndReplace as MaskAndReplace
    from gvlab.diffusion.discrete import variational_bound as variational_bound
    from gvlab.diffusion.discrete import prior_term as prior_term
    from gvlab.diffusion.discrete import auxiliary_term as auxiliary_term
    from gvlab.diffusion.discrete import contrastive_term as contrastive_term
    from gvlab.diffusion.discrete import ancestral_sample as ancestral_sample
    from gvlab.diffusion.discrete import shuffle_chunks as shuffle_chunks
    from gvlab.diffusion.discrete import other_class_negatives as other_class_negatives
