"""Mean-field Gaussian dense layers with local reparameterisation (Kingma, Salimans & Welling 2015).

A layer holds `{"mu": [I, O], "rho": [I, O], "bias": [O]}`: weights w_io ~ N(mu_io, sigma_io^2) independently, with
sigma = softplus(rho) (the parameterisation of Li et al. 2024, `models/utils.py::StoLinear`), and a deterministic
bias (as there: the bias enters the mean only). An optional mask M in {0, 1}^{I x O} restricts the posterior to a
support S = {M = 1}: off S the weight is exactly 0 (mean and variance both multiplied by M).

Local reparameterisation (Kingma et al. 2015, Eq. 6-7): for a fixed input row x, the pre-activation
b_o = sum_i x_i w_io is Gaussian with mean sum_i x_i mu_io and variance sum_i x_i^2 sigma_io^2, so it is sampled
directly instead of sampling the weights,

    out = x (mu * M) + bias + sqrt(x^2 (sigma^2 * M) + 1e-8) * eps,   eps ~ N(0, I) of shape [B, O],

one noise per example and unit (lower-variance gradients than one weight sample shared by the batch). The 1e-8
keeps the square root differentiable at zero variance (same constant as the official SSVI code).

    >>> import jax, jax.numpy as jnp
    >>> from gvlab.bayes.layers import dense, init_dense, kl_to_prior
    >>> params = init_dense(jax.random.key(0), 3, 2, init_std=0.1)
    >>> dense(params, jnp.ones((4, 3)), jax.random.key(1)).shape
    (4, 2)
    >>> float(kl_to_prior(params, prior_std=0.1, mask=jnp.zeros((3, 2)))) # an empty support has no KL
    0.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

VARIANCE_FLOOR = 1e-8  # inside the square root of the local reparameterisation (Li et al. 2024's constant)


def inverse_softplus(y: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """rho with softplus(rho) = y > 0: log(exp(y) - 1) = y + log(1 - exp(-y)), stable for small and large y."""
    y = jnp.asarray(y)
    return y + jnp.log(-jnp.expm1(-y))


def init_dense(key: PRNGKeyArray, in_dim: int, out_dim: int, *, init_std: float = 1e-3,
               mean_scale: float = 1.0) -> dict[str, Array]:
    """A layer's variational parameters: mu ~ N(0, mean_scale^2 / I) (LeCun-normal, so the mean network trains
    like a plain MLP; the official code draws N(0, 0.01^2) for ResNets), sigma = `init_std` everywhere, bias 0."""
    mu = mean_scale * jax.random.normal(key, (in_dim, out_dim)) / jnp.sqrt(float(in_dim))
    rho = jnp.full((in_dim, out_dim), inverse_softplus(jnp.float32(init_std)))
    return {"mu": mu, "rho": rho, "bias": jnp.zeros((out_dim,))}


def moments(params: dict[str, Array], mask: Array | None = None) -> tuple[Float[Array, "I O"], Float[Array, "I O"]]:
    """(mu * M, sigma^2 * M): the weight means and variances the forward pass uses (M = 1 without a mask)."""
    mean_IxO, var_IxO = params["mu"], jnp.square(jax.nn.softplus(params["rho"]))
    if mask is not None:
        mask = mask.astype(mean_IxO.dtype)
        mean_IxO, var_IxO = mean_IxO * mask, var_IxO * mask
    return mean_IxO, var_IxO


def dense_from_moments(x: Float[Array, "B I"], mean_IxO: Float[Array, "I O"], var_IxO: Float[Array, "I O"],
                       bias: Float[Array, " O"], key: PRNGKeyArray | None) -> Float[Array, "B O"]:
    """x mean + bias + sqrt(x^2 var + 1e-8) * eps (Kingma et al. 2015, Eq. 6); `key=None`: the mean, x mean + bias.

    Taking the moments (rather than the parameters) lets a caller differentiate with respect to the dense
    mean weight itself (SSVI's growth score is |dL/dW| at inactive entries, `gvlab.bayes.ssvi`)."""
    mean_BxO = x @ mean_IxO + bias[None, :]
    if key is None:
        return mean_BxO
    std_BxO = jnp.sqrt(jnp.square(x) @ var_IxO + VARIANCE_FLOOR)
    return mean_BxO + std_BxO * jax.random.normal(key, mean_BxO.shape, mean_BxO.dtype)


def dense(params: dict[str, Array], x: Float[Array, "B I"], key: PRNGKeyArray | None,
          mask: Array | None = None) -> Float[Array, "B O"]:
    """One sampled (or, with `key=None`, mean-weight) output of the layer; see the module docstring."""
    mean_IxO, var_IxO = moments(params, mask)
    return dense_from_moments(x, mean_IxO, var_IxO, params["bias"], key)


def kl_to_prior(params: dict[str, Array], prior_std: float | Array, mask: Array | None = None) -> Float[Array, ""]:
    """sum_{(i,o) in S} KL(N(mu, sigma^2) || N(0, sigma_p^2)), summed over the active entries (all without a mask).

        KL = log(sigma_p / sigma) + (sigma^2 + mu^2) / (2 sigma_p^2) - 1/2
           = 1/2 (expm1(2t) - 2t + (mu / sigma_p)^2),   t = log(sigma / sigma_p),

    the second form (as `gvlab.dists`) is exact at sigma = sigma_p. Inactive entries are multiplied by 0, so they
    receive no gradient (Li et al. 2024, `StoLayer.kl`: the KL is masked by the support).
    """
    t = jnp.log(jax.nn.softplus(params["rho"])) - jnp.log(prior_std)
    kl = 0.5 * (jnp.expm1(2 * t) - 2 * t + jnp.square(params["mu"] / prior_std))
    if mask is not None:
        kl = kl * mask.astype(kl.dtype)
    return jnp.sum(kl)
