"""ELBO and IWAE against the linear-Gaussian model, where log p(x) and the posterior are exact.

Model: z ~ N(0, I_k), x | z ~ N(W z + b, s^2 I_d), so p(x) = N(b, W W^T + s^2 I) and the posterior is
N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1. W has orthogonal columns so that S is diagonal and the
exact posterior is a `DiagNormal` encoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from gvlab.dists import DiagNormal
from gvlab.losses import elbo_loss, gaussian_elbo, iwae_bound, log_importance_weights

pytestmark = pytest.mark.usefixtures("strict_dtypes")

D, K, B, NOISE = 6, 3, 5, 0.5


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(D, K)))
    w = q * np.array([2.0, 1.0, 0.5])
    b = rng.normal(size=D)
    z = rng.normal(size=(B, K))
    x = z @ w.T + b + NOISE * rng.normal(size=(B, D))
    log_px = multivariate_normal(b, w @ w.T + NOISE**2 * np.eye(D)).logpdf(x)
    post_var = 1.0 / (1.0 + np.sum(w**2, 0) / NOISE**2)
    post_mean = ((x - b) @ w / NOISE**2) * post_var
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return {"w": f32(w), "b": f32(b), "x": f32(x), "log_px": log_px,
            "post": DiagNormal(f32(post_mean), f32(np.broadcast_to(np.sqrt(post_var), (B, K))))}


def _affine(m, z):
    mean = z @ m["w"].T
    return mean + jnp.broadcast_to(m["b"], mean.shape)


def _decode(m):
    return lambda z: DiagNormal(_affine(m, z), jnp.full(z.shape[:-1] + (D,), NOISE, jnp.float32))


PRIOR = DiagNormal(jnp.zeros((K,), jnp.float32), jnp.ones((K,), jnp.float32))


def _random_encoder(m):
    return DiagNormal(m["post"].loc + 0.7, m["post"].scale * 1.8)


def _analytic_elbo(m, q):
    """E_q[log p(x|z)] - KL(q || p) in closed form: log N(x; W mu + b, s^2) - tr(W^T W Sigma_q) / (2 s^2) - KL."""
    mean = _affine(m, q.loc)
    recon = DiagNormal(mean, jnp.full(mean.shape, NOISE, jnp.float32)).log_prob(m["x"])
    recon = recon - jnp.sum(jnp.broadcast_to(jnp.sum(m["w"] ** 2, 0), q.scale.shape) * q.scale**2, -1) / (
        2 * NOISE**2)
    kl = jnp.sum(0.5 * (q.loc**2 + q.scale**2 - 2 * jnp.log(q.scale) - 1.0), -1)
    return np.asarray(recon - kl)


def test_exact_posterior_makes_every_importance_weight_equal_log_px(model, key):
    log_w = log_importance_weights(key, model["x"], model["post"], PRIOR, _decode(model), 64)
    assert log_w.shape == (64, B)
    np.testing.assert_allclose(np.asarray(log_w), np.broadcast_to(model["log_px"], (64, B)), atol=2e-4)
    np.testing.assert_allclose(np.asarray(iwae_bound(log_w)), model["log_px"], atol=2e-4)


def test_elbo_equals_log_px_at_exact_posterior_and_is_below_it_otherwise(model, key):
    np.testing.assert_allclose(_analytic_elbo(model, model["post"]), model["log_px"], atol=2e-4)
    keys = jax.random.split(key, 4000)
    for encoder, should_be_tight in [(model["post"], True), (_random_encoder(model), False)]:
        terms = jax.vmap(lambda k: gaussian_elbo(k, model["x"], encoder, PRIOR, _decode(model)))(keys)
        elbo = np.asarray(terms[0] - jnp.sum(terms[1], -1))  # [samples, B]
        mean, err = elbo.mean(0), elbo.std(0) / np.sqrt(len(keys))
        np.testing.assert_allclose(mean, _analytic_elbo(model, encoder), atol=5 * err.max() + 1e-4)
        gap = model["log_px"] - mean
        if should_be_tight:
            assert np.all(np.abs(gap) < 5 * err + 1e-4)
        else:  # negative control: a wrong encoder gives a strictly looser bound
            assert np.all(gap > 10 * err), gap


def test_iwae_increases_with_samples_and_stays_below_log_px(model, key):
    encoder = _random_encoder(model)
    bounds = []
    for num in (1, 5, 50, 500):
        keys = jax.random.split(jax.random.fold_in(key, num), 200)
        iwae = jax.vmap(lambda k: iwae_bound(log_importance_weights(k, model["x"], encoder, PRIOR, _decode(model),
                                                                    num)))(keys)
        bounds.append(np.asarray(iwae).mean(0))
    bounds = np.stack(bounds)
    assert np.all(np.diff(bounds, axis=0) > 0), bounds
    assert np.all(bounds[-1] < model["log_px"] + 1e-3)
    assert np.all(model["log_px"] - bounds[-1] < 0.5 * (model["log_px"] - bounds[0]))


def test_elbo_loss_reports_terms_and_beta_hook(model, key):
    recon, kl_per_dim, z = gaussian_elbo(key, model["x"], model["post"], PRIOR, _decode(model))
    loss, terms = elbo_loss(recon, kl_per_dim, z, jnp.zeros((), jnp.int32))
    np.testing.assert_allclose(float(loss), -float(terms["elbo/elbo"]), rtol=1e-6)
    np.testing.assert_allclose(float(terms["elbo/elbo"]), float(terms["elbo/recon"] - terms["elbo/kl"]), rtol=1e-6)
    from gvlab.losses import beta_kl

    loss4, terms4 = elbo_loss(recon, kl_per_dim, z, jnp.zeros((), jnp.int32), beta_kl(4.0))
    np.testing.assert_allclose(float(loss4 - loss), 3.0 * float(terms["elbo/kl"]), rtol=1e-5)
    assert float(terms4["elbo/elbo"]) == float(terms["elbo/elbo"])  # the reported ELBO ignores beta
