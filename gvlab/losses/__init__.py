"""Method-agnostic loss pieces, each a pure function with its equation in the docstring."""

from gvlab.losses.elbo import beta_kl as beta_kl
from gvlab.losses.elbo import elbo_loss as elbo_loss
from gvlab.losses.elbo import gaussian_elbo as gaussian_elbo
from gvlab.losses.elbo import iwae_bound as iwae_bound
from gvlab.losses.elbo import log_importance_weights as log_importance_weights
from gvlab.losses.elbo import weighted_kl as weighted_kl
from gvlab.losses.cs import cs_conditional_divergence as cs_conditional_divergence
from gvlab.losses.cs import cs_quadratic_mutual_information as cs_quadratic_mutual_information
from gvlab.losses.cs import median_bandwidth as median_bandwidth
