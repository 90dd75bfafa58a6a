"""Oracles of the VAE skeleton (gvlab.models.vae, gvlab.models.hvae): exact posteriors of linear-Gaussian models.

At the exact posterior every importance weight p(x, z) / q(z|x) equals p(x), so the log-weights are constant and
equal to the closed-form marginal; off it their mean (the ELBO) falls short by exactly KL(q || posterior).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab import diagnostics
from gvlab.losses import beta_kl, weighted_kl
from gvlab.models import hvae, vae


def _dense(kernel, bias):
    return {"params": {"dense_0": {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}}}


def _log_normal(x, cov):
    _, log_det = np.linalg.slogdet(cov)
    return -0.5 * (x @ np.linalg.solve(cov, x) + log_det + len(x) * np.log(2 * np.pi))


def _orthogonal(rng, n):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return q


# Linear-Gaussian VAE: p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I) with W = Q D (orthogonal columns, so the exact
# posterior N(S W^T (x - b) / s^2, S), S = (I + W^T W / s^2)^-1, is diagonal and the encoder can represent it).
P, D, S_DEC = 6, 3, 0.4
LINEAR = vae.Config(latent_dim=D, hidden=(), activation="identity", likelihood="gaussian", decoder_std=S_DEC)


def _linear_vae(shift=0.0):
    rng = np.random.default_rng(0)
    w = _orthogonal(rng, P)[:, :D] * np.array([2.0, 1.0, 0.5])[None]
    b = rng.normal(size=P)
    post_var = 1.0 / (1.0 + np.sum(w**2, axis=0) / S_DEC**2)
    gain = w * post_var[None] / S_DEC**2  # mu = (x - b) @ gain
    enc_kernel = np.concatenate([gain, np.zeros((P, D))], axis=1)
    enc_bias = np.concatenate([-b @ gain + shift, np.log(post_var)])
    params = {"encoder": _dense(enc_kernel, enc_bias), "decoder": _dense(w.T, b)}
    x = rng.normal(size=(4, P)) * 2.0
    log_px = np.array([_log_normal(xi - b, w @ w.T + S_DEC**2 * np.eye(P)) for xi in x])
    return params, jnp.asarray(x, jnp.float32), log_px, post_var


def test_linear_gaussian_vae_is_exact_at_the_exact_posterior(key):
    model = vae.make_model(LINEAR, (P,))
    params, x, log_px, _ = _linear_vae()
    log_w = np.asarray(model.log_weights(params, x, key, 64))
    np.testing.assert_allclose(log_w, np.broadcast_to(log_px, log_w.shape), atol=2e-4)
    # The one-sample ELBO (closed-form KL, sampled reconstruction) is unbiased for log p(x).
    elbos = np.asarray(jax.vmap(lambda k: model.elbo(params, x, k))(jax.random.split(key, 4000)))
    np.testing.assert_allclose(elbos.mean(0), log_px, atol=4 * elbos.std(0).max() / np.sqrt(4000) + 1e-4)


def test_off_the_posterior_the_elbo_falls_short_by_the_kl(key):
    # Negative control: shifting the encoder mean by delta makes the weights vary, and their mean (the ELBO)
    # drops by KL(q || posterior) = sum_i delta^2 / (2 S_ii), exactly.
    model = vae.make_model(LINEAR, (P,))
    shift = 0.3
    params, x, log_px, post_var = _linear_vae(shift)
    log_w = np.asarray(model.log_weights(params, x, key, 20000))
    assert log_w.std(0).min() > 0.1
    gap = np.sum(shift**2 / (2 * post_var))
    np.testing.assert_allclose(log_w.mean(0), log_px - gap, atol=5 * log_w.std(0).max() / np.sqrt(20000))
    # The importance-sampled likelihood recovers log p(x) from a wrong proposal (consistency), within the noise of
    # a mean of S log-normal weights: relative std sqrt((e^var - 1) / S).
    estimate = diagnostics.importance_sampled_log_likelihood(key, x, model.encode(params, x),
                                                             model.prior(params, vae.no_condition(x)),
                                                             lambda z: model.decode(params, z), 20000)
    np.testing.assert_allclose(estimate, log_px, atol=4 * np.sqrt(np.expm1(log_w.var(0).max()) / 20000))


def test_kl_per_dimension_evaluator_is_the_closed_form_at_the_exact_posterior(key):
    # q(z|x) = N(mu(x), diag S) with S the exact posterior variance; per dimension the mean over x of
    # KL(q || N(0, 1)) = (S_i + mu_i(x)^2 - 1 - log S_i) / 2.
    params, x, _, post_var = _linear_vae()
    mu = np.asarray(vae.make_model(LINEAR, (P,)).encode(params, x).loc)
    expected = np.mean(0.5 * (post_var[None] + mu**2 - 1.0 - np.log(post_var[None])), axis=0)
    out = vae.kl_per_dimension(params, {"x": x}, key, cfg=LINEAR, image_shape=(P,))
    np.testing.assert_allclose(out["kl"], expected, rtol=1e-4, atol=1e-6)
    # Negative control: a dimension whose posterior is the prior has zero KL (collapsed).
    collapsed = jax.tree.map(jnp.copy, params)
    dense = collapsed["encoder"]["params"]["dense_0"]
    dense["kernel"] = dense["kernel"].at[:, [0, D]].set(0.0)
    dense["bias"] = dense["bias"].at[jnp.array([0, D])].set(0.0)
    kl = np.asarray(vae.kl_per_dimension(collapsed, {"x": x}, key, cfg=LINEAR, image_shape=(P,))["kl"])
    assert abs(kl[0]) < 1e-6 and np.all(kl[1:] > 0.01)


def _fold_condition(net_params, c0, inputs):
    """VAE parameters equal to a CVAE's first layer with the condition c0 folded into the bias."""
    dense = net_params["params"]["dense_0"]
    folded = {"kernel": dense["kernel"][:inputs], "bias": dense["bias"] + c0 @ dense["kernel"][inputs:]}
    return {"params": {**net_params["params"], "dense_0": folded}}


def test_cvae_under_a_constant_condition_is_a_vae(key):
    cfg = vae.Config(latent_dim=3, hidden=(16,), likelihood="bernoulli")
    cvae = vae.make_model(cfg, (4, 4), condition_dim=2)
    plain = vae.make_model(cfg, (4, 4))
    x = (jax.random.uniform(key, (5, 4, 4)) > 0.5).astype(jnp.float32)
    c0 = jnp.array([0.7, -1.2])
    params = cvae.init(jax.random.key(1), {"x": x, "c": jnp.zeros((5, 2))})
    folded = {"encoder": _fold_condition(params["encoder"], c0, 16),
              "decoder": _fold_condition(params["decoder"], c0, 3)}
    c = jnp.broadcast_to(c0, (5, 2))
    np.testing.assert_allclose(cvae.elbo(params, x, key, c), plain.elbo(folded, x, key), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cvae.log_weights(params, x, key, 8, c), plain.log_weights(folded, x, key, 8),
                               rtol=1e-5, atol=1e-5)
    # Negative control: another condition is another model.
    other = jnp.broadcast_to(jnp.array([-0.5, 2.0]), (5, 2))
    assert np.max(np.abs(cvae.elbo(params, x, key, other) - plain.elbo(folded, x, key))) > 1e-2


def test_hybrid_objective_trains_the_prior_network_and_rejects_bad_weights(key):
    x = jax.random.uniform(key, (8, 4, 4))
    batch = {"x": x, "c": jax.nn.one_hot(jnp.arange(8) % 3, 3)}
    losses = {}
    for alpha in (1.0, 0.5):
        method = vae.make(vae.Config(latent_dim=2, hidden=(8,), prior="learned", alpha=alpha), (4, 4), 3)
        params = method.init(jax.random.key(0), batch)
        (value, metrics), grads = jax.value_and_grad(method.loss, has_aux=True)(params, batch, key, jnp.array(0))
        losses[alpha] = (value, metrics, grads)
    value, metrics, _ = losses[0.5]
    # The hybrid loss is alpha * (CVAE loss) - (1 - alpha) * GSNN reconstruction, every term reported.
    cvae_loss = -metrics["elbo/recon"] + metrics["elbo/beta_kl"]
    np.testing.assert_allclose(value, 0.5 * cvae_loss - 0.5 * metrics["gsnn/recon"], rtol=1e-5)
    assert "gsnn/recon" not in losses[1.0][1]
    with pytest.raises(ValueError, match="alpha"):
        vae.make(vae.Config(alpha=1.5), (4, 4), 3)
    with pytest.raises(ValueError, match="conv"):
        vae.make(vae.Config(architecture="conv"), (4, 4), 3)


def test_weighted_kl_is_beta_kl_with_equal_weights(key):
    kl = jax.random.uniform(key, (5, 4))
    a, _ = weighted_kl(jnp.full((4,), 2.5))(kl, kl, jnp.array(0))
    b, _ = beta_kl(2.5)(kl, kl, jnp.array(0))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    c, _ = weighted_kl(jnp.array([2.5, 2.5, 0.0, 0.0]))(kl, kl, jnp.array(0))
    assert float(c) < float(a)  # negative control: weights do select dimensions


# Linear two-level MHVAE: p(z2) = N(0, I), p(z1|z2) = N(diag(u2) z2, s1^2 I), p(x|z1) = N(Q diag(u1) z1, s0^2 I).
# z1 ~ N(0, V), V = diag(u2^2 + s1^2); x ~ N(0, Q diag(u1^2 V) Q^T + s0^2 I). Exact posteriors (all diagonal):
# p(z1|x) = N(K x, diag(1 / (1 / V + u1^2 / s0^2))),  p(z2|z1) = N(diag(u2 / s1^2 / (1 + u2^2 / s1^2)) z1, ...).
def _linear_hvae(perturb=0.0):
    rng = np.random.default_rng(1)
    d = 3
    q = _orthogonal(rng, d)
    u1, u2, s0, s1 = np.array([1.5, 0.8, 0.3]), np.array([1.2, 0.5, 0.1]), 0.5, 0.7
    v = u2**2 + s1**2
    post1 = 1.0 / (1.0 / v + u1**2 / s0**2)
    gain1 = q * (u1 * post1 / s0**2)[None]  # mean z1 = x @ gain1
    post2 = 1.0 / (1.0 + u2**2 / s1**2)
    gain2 = np.diag(u2 * post2 / s1**2 * (1.0 + perturb))
    params = {"encoder1": _dense(np.concatenate([gain1, np.zeros((d, d))], 1), np.concatenate([np.zeros(d), np.log(post1)])),
              "encoder2": _dense(np.concatenate([gain2, np.zeros((d, d))], 1), np.concatenate([np.zeros(d), np.log(post2)])),
              "decoder2": _dense(np.diag(u2), np.zeros(d)), "decoder1": _dense((q * u1[None]).T, np.zeros(d))}
    cfg = hvae.Config(latent_dims=(d, d), hidden=(), activation="identity", decoder_std=s0, latent_decoder_std=s1)
    x = rng.normal(size=(5, d)) * 1.5
    cov = q @ np.diag(u1**2 * v) @ q.T + s0**2 * np.eye(d)
    return cfg, params, jnp.asarray(x, jnp.float32), np.array([_log_normal(xi, cov) for xi in x])


def test_linear_two_level_hierarchy_has_the_exact_marginal(key):
    cfg, params, x, log_px = _linear_hvae()
    model = hvae.make_model(cfg, (3,))
    log_w = np.asarray(model.log_weights(params, x, key, 64))
    np.testing.assert_allclose(log_w, np.broadcast_to(log_px, log_w.shape), atol=3e-4)
    # The training terms average to the same ELBO (= log p(x) here): recon - sum of per-dimension KLs.
    recon, kl, _ = jax.vmap(lambda k: model.terms(params, x, k))(jax.random.split(key, 4000))
    elbo = np.asarray(recon - jnp.sum(kl, -1))
    np.testing.assert_allclose(elbo.mean(0), log_px, atol=4 * elbo.std(0).max() / np.sqrt(4000) + 1e-3)
    # Negative control: a wrong second-level encoder loses exactness, and the ELBO drops below log p(x).
    cfg, params, x, log_px = _linear_hvae(perturb=0.8)
    log_w = np.asarray(model.log_weights(params, x, key, 4000))
    assert log_w.std(0).min() > 0.05 and np.all(log_w.mean(0) < log_px - 0.01)


def test_hvae_method_reports_every_term(key):
    cfg = hvae.Config(latent_dims=(3, 2), hidden=(8,), beta1=1.0, beta2=4.0, encoder2_variance="fixed")
    method = hvae.make(cfg, (6,))
    batch = {"x": jax.random.normal(key, (7, 6))}
    params = method.init(jax.random.key(0), batch)
    value, metrics = method.loss(params, batch, key, jnp.array(0))
    np.testing.assert_allclose(metrics["elbo/kl"], metrics["hvae/kl1"] + metrics["hvae/kl2"], rtol=1e-5)
    np.testing.assert_allclose(value, -metrics["elbo/recon"] + metrics["hvae/kl1"] + 4.0 * metrics["hvae/kl2"],
                               rtol=1e-5)
    assert method.sample(params, key, 4).shape == (4, 6)
