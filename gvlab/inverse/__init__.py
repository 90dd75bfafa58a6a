"""Linear inverse problems y = A x + n: measurement operators, the exact Gaussian-prior posterior, Wiener filtering.

Modules: `operators` (identity, random / box inpainting, average-pool super-resolution, FFT circular convolution;
`dense_matrix`, `gaussian_noise`, `noisy_measurement`), `matrix` (per-measurement operators as explicit matrices:
many kinds of problem in one solver batch), `gaussian` (the exact posterior of a Gaussian prior and its sampler: the
oracle of RED-Diff, DPS and FLAIR), `wiener` (pixel- and feature-space Wiener deconvolution, LensNet), `lensless` (a
simulated lensless camera, SSIM, the tuned Wiener baseline), `metrics` (PSNR, RMS residual, the jitted classifier
fit), `priors` (an x0-network trained with the v-loss, a solver prior), `solvers` (DPS, RED-Diff and FLAIR on
one regularised step, and the exact model of a Gaussian prior for oracle checks).

The public surface, importable from `gvlab.inverse` itself:

* operators: `Operator` (the union of `Identity`, `Inpainting`, `AveragePool`, `Convolution`),
  `make_random_inpainting`, `make_box_inpainting`, `box_stripe_masks`, `make_convolution`, `psf_to_origin`,
  `dense_matrix`, `gaussian_noise`, `noisy_measurement`;
* matrix: `MatrixOperators`, `matrix_form`, `measure_tasks`;
* gaussian: `gaussian_posterior`, `GaussianPosterior`, `sample_posterior`, `fit_gaussian`, `sample_gaussian`;
* wiener: `wiener_deconvolve`, `feature_wiener`;
* lensless: `coded_mask_psf`, `miscalibrate`, `measure`, `wiener_reconstruct`, `best_wiener_regulariser`,
  `reconstruction_loss`, `ssim`;
* metrics: `psnr`, `rms_residual`, `fit_classifier`;
* priors: `v_loss_method`, `mlp_model`;
* solvers: `dps`, `red_diff`, `flair`, `Solution`, `regularised_step`, `red_reading`, `red_diff_times`,
  `flair_times`, `calibrated_weights`, `model_error_curve`, `gaussian_prior_model`, and `Model` (the denoiser the
  solvers take, `Model(predict, prediction)`; defined in `gvlab.diffusion.samplers`).

    >>> from gvlab.inverse import Inpainting, Model, dps, psnr
"""

from gvlab.diffusion.samplers import Model as Model

from gvlab.inverse.gaussian import GaussianPosterior as GaussianPosterior
from gvlab.inverse.gaussian import fit_gaussian as fit_gaussian
from gvlab.inverse.gaussian import gaussian_posterior as gaussian_posterior
from gvlab.inverse.gaussian import sample_gaussian as sample_gaussian
from gvlab.inverse.gaussian import sample_posterior as sample_posterior
from gvlab.inverse.lensless import best_wiener_regulariser as best_wiener_regulariser
from gvlab.inverse.lensless import coded_mask_psf as coded_mask_psf
from gvlab.inverse.lensless import measure as measure
from gvlab.inverse.lensless import miscalibrate as miscalibrate
from gvlab.inverse.lensless import reconstruction_loss as reconstruction_loss
from gvlab.inverse.lensless import ssim as ssim
from gvlab.inverse.lensless import wiener_reconstruct as wiener_reconstruct
from gvlab.inverse.matrix import MatrixOperators as MatrixOperators
from gvlab.inverse.matrix import matrix_form as matrix_form
from gvlab.inverse.matrix import measure_tasks as measure_tasks
from gvlab.inverse.metrics import fit_classifier as fit_classifier
from gvlab.inverse.metrics import psnr as psnr
from gvlab.inverse.metrics import rms_residual as rms_residual
from gvlab.inverse.operators import AveragePool as AveragePool
from gvlab.inverse.operators import box_stripe_masks as box_stripe_masks
from gvlab.inverse.operators import Convolution as Convolution
from gvlab.inverse.operators import Identity as Identity
from gvlab.inverse.operators import Inpainting as Inpainting
from gvlab.inverse.operators import Operator as Operator
from gvlab.inverse.operators import dense_matrix as dense_matrix
from gvlab.inverse.operators import gaussian_noise as gaussian_noise
from gvlab.inverse.operators import make_box_inpainting as make_box_inpainting
from gvlab.inverse.operators import make_convolution as make_convolution
from gvlab.inverse.operators import make_random_inpainting as make_random_inpainting
from gvlab.inverse.operators import noisy_measurement as noisy_measurement
from gvlab.inverse.operators import psf_to_origin as psf_to_origin
from gvlab.inverse.wiener import feature_wiener as feature_wiener
from gvlab.inverse.wiener import wiener_deconvolve as wiener_deconvolve
from gvlab.inverse.priors import mlp_model as mlp_model
from gvlab.inverse.priors import v_loss_method as v_loss_method
from gvlab.inverse.solvers import Solution as Solution
from gvlab.inverse.solvers import calibrated_weights as calibrated_weights
from gvlab.inverse.solvers import dps as dps
from gvlab.inverse.solvers import flair as flair
from gvlab.inverse.solvers import flair_times as flair_times
from gvlab.inverse.solvers import gaussian_prior_model as gaussian_prior_model
from gvlab.inverse.solvers import model_error_curve as model_error_curve
from gvlab.inverse.solvers import red_diff as red_diff
from gvlab.inverse.solvers import red_diff_times as red_diff_times
from gvlab.inverse.solvers import red_reading as red_reading
from gvlab.inverse.solvers import regularised_step as regularised_step
