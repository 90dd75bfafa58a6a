"""Dang et al.'s linear-HVAE collapse theory (gvlab.collapse) against Monte Carlo and a numerical minimum.

The oracle is an independent numpy copy of the objective minimised by BFGS from several starts; the closed-form
objective itself is checked against Monte Carlo log-densities. The official formulas (`utils.py`, transcribed
below) are kept as references: the learnable-Sigma2 one agrees everywhere, the fixed-Sigma2 one only for beta1 = 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm
from scipy.optimize import minimize

from gvlab import collapse

_NAMES = ("w1", "u1", "w2", "u2", "log_sigma2")


def _unpack(vec, dims, learnable):
    d0, d1, d2 = dims
    shapes = {"w1": (d1, d0), "u1": (d0, d1), "w2": (d2, d1), "u2": (d1, d2), "log_sigma2": (d2,)}
    params, start = {}, 0
    for name in _NAMES[:5 if learnable else 4]:
        size = int(np.prod(shapes[name]))
        params[name] = vec[start:start + size].reshape(shapes[name])
        start += size
    return params


def _objective(vec, second_moment, dims, sigma1, beta1, beta2, eta_enc, eta_dec, sigma2):
    """numpy, written from the model and independent of gvlab: recon / eta_dec^2 + beta1 kl1 + beta2 kl2 - const."""
    d0, d1, d2 = dims
    p = _unpack(vec, dims, sigma2 is None)
    var2 = np.exp(2 * p["log_sigma2"]) if sigma2 is None else np.full(d2, sigma2**2)
    r, m = p["u1"] @ p["w1"] - np.eye(d0), np.eye(d1) - p["u2"] @ p["w2"]
    s = p["w1"] @ second_moment @ p["w1"].T
    recon = np.trace(r @ second_moment @ r.T) + sigma1**2 * np.sum(p["u1"] ** 2)
    z1_term = (np.trace(m @ s @ m.T) + sigma1**2 * np.sum(m**2) + np.sum(var2 * p["u2"] ** 2)) / eta_dec**2
    z2_term = (np.trace(p["w2"] @ s @ p["w2"].T) + sigma1**2 * np.sum(p["w2"] ** 2) + np.sum(var2)) / eta_enc**2
    return recon / eta_dec**2 + beta1 * z1_term + beta2 * (z2_term - np.sum(np.log(var2)))


def _constant(dims, sigma1, beta1, beta2, eta_enc, eta_dec):
    """What `hvae_expected_loss` adds to `_objective`: the kl terms' constants."""
    _, d1, d2 = dims
    return beta1 * (d1 * np.log(eta_dec**2 / sigma1**2) - d1) + beta2 * (d2 * np.log(eta_enc**2) - d2)


def _numerical_optimum(second_moment, sigma1, beta1, beta2, eta_enc=1.0, eta_dec=1.0, sigma2=None, starts=4):
    """BFGS from several random starts; singular values (decreasing) of W1 A^(1/2), U1, W2, U2 at the best one."""
    d = second_moment.shape[0]
    dims, size = (d, d, d), 4 * d * d + (d if sigma2 is None else 0)
    rng = np.random.default_rng(0)
    args = (second_moment, dims, sigma1, beta1, beta2, eta_enc, eta_dec, sigma2)
    runs = [minimize(_objective, rng.normal(0.0, scale, size), args=args, method="BFGS", options={"gtol": 1e-9})
            for scale in (0.1, 0.5, 1.0, 2.0)[:starts]]
    best = min(runs, key=lambda r: r.fun)
    p = _unpack(best.x, dims, sigma2 is None)
    eigvals, eigvecs = np.linalg.eigh(second_moment)
    root = eigvecs @ np.diag(np.sqrt(eigvals)) @ eigvecs.T

    def sv(a):
        return np.linalg.svd(a, compute_uv=False)

    return {"encoder1": sv(p["w1"] @ root), "decoder1": sv(p["u1"]), "encoder2": sv(p["w2"]),
            "decoder2": sv(p["u2"]), "value": best.fun,
            "std2": np.sort(np.exp(p["log_sigma2"])) if sigma2 is None else None}


def _official_learnable(theta, s1, b1, b2, eta_enc, eta_dec):
    """`utils.calculate_lambda_omega_2_linear_nonlearnable_isotropic_Sigma_1_learnable_Sigma_2_beta`, transcribed."""
    c = eta_dec / eta_enc
    if s1**2 >= b2 / b1 * eta_dec**2:
        lam = s1 / (np.sqrt(b2) * eta_dec) * np.sqrt(max(0.0, theta**2 - b2 * eta_dec**2))
        omega = np.sqrt(max((s1**2 - b2 / b1 * eta_dec**2) / eta_enc**2,
                            s1**2 * theta**2 / (b2 * eta_enc**2 * eta_dec**2) - c**2 * b2 / b1))
    elif s1**2 * theta**2 / (b2 * eta_dec**2) < b2 / b1 * eta_dec**2:
        lam, omega = np.sqrt(max(0.0, s1 / np.sqrt(b1) * (theta - np.sqrt(b1) * s1))), 0.0
    else:
        lam = s1 / (np.sqrt(b2) * eta_dec) * np.sqrt(theta**2 - b2 * eta_dec**2)
        omega = np.sqrt(s1**2 * theta**2 / (b2 * eta_enc**2 * eta_dec**2) - c**2 * b2 / b1)
    return lam, omega


def _official_fixed(theta, s1, s2, b1, b2, c):
    """`utils.calculate_lambda_omega_2_linear_nonleanable_isotropic_Sigma_beta`, transcribed (NaN where it is)."""
    with np.errstate(invalid="ignore"):
        if theta >= np.sqrt(np.sqrt(b1 * b2) * c * s1 * s2) and theta >= np.sqrt(b2**2 * b1) * c**2 * s2**2 / s1:
            lam = ((s1**2 / (np.sqrt(b1 * b2) * c * s2)) ** (1 / 3)
                   * np.sqrt(theta ** (4 / 3) - (np.sqrt(b1 * b2) * c * s1 * s2) ** (2 / 3)))
            omega = ((np.sqrt(b2) * c * s1 / (b1 * s2**2)) ** (1 / 3)
                     * np.sqrt(theta ** (2 / 3) - (b2**2 * c**4 * s2**4 / (b1 * s1**2)) ** (1 / 3)))
            return lam, omega
        if np.sqrt(b1) * s1 >= np.sqrt(b2) * c * s2:
            return 0.0, np.sqrt(np.sqrt(b2) * c * s1 / (np.sqrt(b1) * s2) - b2 / b1 * c**2)
        if theta < np.sqrt(b1) * s1:
            return 0.0, 0.0
        return np.sqrt(s1 * (theta / np.sqrt(b1) - s1)), 0.0


def _random_params(seed, dims, scale=0.5):
    d0, d1, d2 = dims
    rng = np.random.default_rng(seed)
    shapes = {"w1": (d1, d0), "u1": (d0, d1), "w2": (d2, d1), "u2": (d1, d2)}
    params = {name: jnp.asarray(scale * rng.normal(size=shape), jnp.float32) for name, shape in shapes.items()}
    return {**params, "log_sigma2": jnp.asarray(0.3 * rng.normal(size=d2), jnp.float32)}


# Compiled once per shape and reused by every test (eager dispatch would compile each small op separately).
_expected_loss = jax.jit(collapse.hvae_expected_loss, static_argnames=("sigma2",))
_optimum = jax.jit(collapse.hvae_optimum)
_optimum_fixed = jax.jit(collapse.hvae_optimum_fixed_sigma2)
_optimal_params = jax.jit(collapse.hvae_optimal_params, static_argnames=("learnable_sigma2",))


@jax.jit
def _monte_carlo_terms(params, x, key, sigma1, eta_enc, eta_dec):
    """The three terms as sample means of squared errors and log-densities (normalising constants included)."""
    e1_key, e2_key = jax.random.split(key)
    z1_mean = x @ params["w1"].T
    z1 = z1_mean + sigma1 * jax.random.normal(e1_key, z1_mean.shape)
    std2 = jnp.exp(params["log_sigma2"])
    z2_mean = z1 @ params["w2"].T
    z2 = z2_mean + std2[None, :] * jax.random.normal(e2_key, z2_mean.shape)
    return {
        "hvae/recon": jnp.mean(jnp.sum(jnp.square(z1 @ params["u1"].T - x), axis=1)),
        "hvae/kl1": 2 * jnp.mean(jnp.sum(norm.logpdf(z1, z1_mean, sigma1)
                                         - norm.logpdf(z1, z2 @ params["u2"].T, eta_dec), axis=1)),
        "hvae/kl2": 2 * jnp.mean(jnp.sum(norm.logpdf(z2, z2_mean, std2[None, :]) - norm.logpdf(z2, 0.0, eta_enc),
                                         axis=1)),
    }


def test_expected_loss_matches_monte_carlo(key):
    # Rectangular sizes and data with a non-zero mean: the objective must use the UNCENTRED second moment.
    dims, n = (3, 2, 2), 200_000
    sigma1, beta1, beta2, eta_enc, eta_dec = 0.6, 1.5, 0.7, 1.3, 0.8
    params = _random_params(0, dims)
    x = jnp.asarray(np.array([1.0, -0.8, 0.5]) + 0.5 * np.random.default_rng(1).normal(size=(n, 3)), jnp.float32)
    mc = _monte_carlo_terms(params, x, key, sigma1, eta_enc, eta_dec)
    settings = {"sigma1": sigma1, "beta1": beta1, "beta2": beta2, "eta_enc": eta_enc, "eta_dec": eta_dec}
    loss, terms = _expected_loss(params, collapse.uncentred_second_moment(x), **settings)
    for name, value in mc.items():
        np.testing.assert_allclose(float(terms[name]), float(value), rtol=0.02, atol=0.02, err_msg=name)
    expected = terms["hvae/recon"] / eta_dec**2 + beta1 * terms["hvae/kl1"] + beta2 * terms["hvae/kl2"]
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
    # Negative control: the centred covariance misses the mean and gets the reconstruction term clearly wrong.
    centred = jnp.cov(x.T, bias=True)
    _, wrong = _expected_loss(params, centred, **settings)
    assert abs(float(wrong["hvae/recon"]) / float(mc["hvae/recon"]) - 1) > 0.1


@pytest.mark.parametrize("sigma2", [None, 0.7])
def test_the_oracle_objective_is_the_library_objective(sigma2):
    dims = (3, 2, 2)
    settings = {"sigma1": 0.6, "beta1": 1.5, "beta2": 0.7, "eta_enc": 1.3, "eta_dec": 0.8}
    params = _random_params(2, dims)
    a = np.array([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]])
    vec = np.concatenate([np.asarray(params[k]).ravel() for k in _NAMES[:5 if sigma2 is None else 4]])
    loss, _ = _expected_loss(params, jnp.asarray(a, jnp.float32), sigma2=sigma2, **settings)
    reference = _objective(vec, a, dims, sigma2=sigma2, **settings) + _constant(dims, **settings)
    np.testing.assert_allclose(float(loss), reference, rtol=1e-5)


LEARNABLE_CASES = [  # (theta, sigma1, beta1, beta2, eta_enc, eta_dec): every branch, beta1 != 1 included
    (1.5, 0.5, 1.0, 2.0, 1.0, 0.5),   # sigma1^2 < beta' eta_dec^2, z2 active
    (0.8, 0.5, 1.0, 2.0, 1.0, 0.5),   # z2 collapsed, lambda > 0
    (0.3, 0.5, 1.0, 2.0, 1.0, 0.5),   # z2 collapsed, lambda = 0
    (0.8, 0.8, 1.0, 0.5, 1.0, 0.5),   # sigma1^2 > beta' eta_dec^2: z2 always active
    (0.3, 0.8, 1.0, 0.5, 1.0, 0.5),   # ... even with lambda = 0
    (0.8, 0.3, 2.0, 1.0, 1.5, 0.7),
    (2.0, 0.3, 0.5, 3.0, 1.0, 0.6),
    (2.5, 0.4, 3.0, 1.0, 1.2, 0.8),
]


@pytest.mark.parametrize("theta,sigma1,beta1,beta2,eta_enc,eta_dec", LEARNABLE_CASES)
def test_learnable_sigma2_closed_form_is_the_numerical_optimum(theta, sigma1, beta1, beta2, eta_enc, eta_dec):
    optimum = _optimum(jnp.array([theta]), sigma1, beta1, beta2, eta_enc, eta_dec)
    found = _numerical_optimum(np.array([[theta**2]]), sigma1, beta1, beta2, eta_enc, eta_dec)
    for name, field in (("encoder1", "encoder1_singular_values"), ("decoder1", "decoder1_singular_values"),
                        ("encoder2", "encoder2_singular_values"), ("decoder2", "decoder2_singular_values"),
                        ("std2", "encoder2_std")):
        np.testing.assert_allclose(np.asarray(getattr(optimum, field)), found[name], atol=2e-3, err_msg=name)
    assert bool(optimum.collapsed[0]) == (found["decoder2"][0] < 1e-3)
    # The official transcription gives the same (lambda, omega) (atol: the square root of float32 rounding at 0).
    np.testing.assert_allclose(_official_learnable(theta, sigma1, beta1, beta2, eta_enc, eta_dec),
                               [float(optimum.encoder1_singular_values[0]),
                                float(optimum.decoder2_singular_values[0])], rtol=1e-5, atol=1e-3)


def test_lambda_is_the_singular_value_of_w1_a_half_not_u1():
    # lambda is not U1's singular values: the numerical optimum says W1 A^(1/2) (the official V_1).
    theta, sigma1, beta1, beta2, eta_dec = 1.5, 0.5, 1.0, 2.0, 0.5
    lam = float(_optimum(jnp.array([theta]), sigma1, beta1, beta2, 1.0, eta_dec)
                .encoder1_singular_values[0])
    found = _numerical_optimum(np.array([[theta**2]]), sigma1, beta1, beta2, 1.0, eta_dec)
    np.testing.assert_allclose(found["encoder1"][0], lam, atol=2e-3)
    assert abs(found["decoder1"][0] - lam) > 0.2  # negative control: U1's is theta lambda / (lambda^2 + sigma1^2)


FIXED_CASES = [  # (theta, sigma1, sigma2, beta1, beta2, eta_enc, eta_dec)
    (1.0, 0.5, 0.8, 1.0, 1.0, 1.0, 0.5),  # z2 active
    (0.3, 0.5, 1.0, 1.0, 2.0, 1.0, 0.5),  # both collapsed
    (1.5, 0.5, 1.0, 1.0, 2.0, 1.0, 0.5),  # z2 active
    (0.2, 0.5, 1.0, 1.0, 0.5, 1.0, 0.5),  # lambda = 0 but z2 active (sqrt(beta1) sigma1 > sqrt(beta2) c sigma2)
    (0.6, 0.3, 1.0, 1.0, 1.0, 1.0, 0.5),  # z2 collapsed, lambda > 0
    (1.0, 0.5, 0.5, 0.5, 2.0, 1.0, 0.8),
    (0.5, 0.7, 1.2, 2.0, 0.5, 1.3, 0.6),
    (1.0, 0.4, 1.0, 4.0, 1.0, 1.0, 1.0),  # z2 collapsed at beta1 = 4
    (2.0, 0.4, 1.0, 4.0, 1.0, 1.0, 1.0),  # z2 active at beta1 = 4: the official rule says collapsed
    (2.0, 0.4, 1.0, 0.25, 1.0, 1.0, 1.0),  # z2 collapsed at beta1 = 1/4: the official formula gives NaN
]


@pytest.mark.parametrize("theta,sigma1,sigma2,beta1,beta2,eta_enc,eta_dec", FIXED_CASES)
def test_fixed_sigma2_closed_form_is_the_numerical_optimum(theta, sigma1, sigma2, beta1, beta2, eta_enc, eta_dec):
    optimum = _optimum_fixed(jnp.array([theta]), sigma1, sigma2, beta1, beta2, eta_dec / eta_enc)
    found = _numerical_optimum(np.array([[theta**2]]), sigma1, beta1, beta2, eta_enc, eta_dec, sigma2=sigma2)
    for name, field in (("encoder1", "encoder1_singular_values"), ("decoder1", "decoder1_singular_values"),
                        ("encoder2", "encoder2_singular_values"), ("decoder2", "decoder2_singular_values")):
        np.testing.assert_allclose(np.asarray(getattr(optimum, field)), found[name], atol=2e-3, err_msg=name)
    assert bool(optimum.collapsed[0]) == (found["decoder2"][0] < 1e-3)
    official = _official_fixed(theta, sigma1, sigma2, beta1, beta2, eta_dec / eta_enc)
    if beta1 == 1.0:  # there the official formula is right
        np.testing.assert_allclose(official, [float(optimum.encoder1_singular_values[0]),
                                              float(optimum.decoder2_singular_values[0])], rtol=1e-5, atol=1e-3)


def test_the_official_fixed_sigma2_threshold_is_wrong_when_beta1_is_not_one():
    # Negative control. The official first-branch test `theta >= sqrt(beta2^2 beta1) c^2 sigma2^2 / sigma1` has
    # beta1^(+1/2) where the derivation has beta1^(-1/2). At beta1 = 4 it calls an active z2 mode collapsed; at
    # beta1 = 1/4 it enters the active branch where its own omega is the square root of a negative number.
    sigma1, sigma2, beta2, c = 0.4, 1.0, 1.0, 1.0
    found = _numerical_optimum(np.array([[4.0]]), sigma1, 4.0, beta2, 1.0, c, sigma2=sigma2)
    official_lam, official_omega = _official_fixed(2.0, sigma1, sigma2, 4.0, beta2, c)
    assert official_omega == 0.0 and found["decoder2"][0] > 0.25  # official: collapsed; optimum: omega = 0.303
    assert abs(official_lam - found["encoder1"][0]) > 0.05
    ours = _optimum_fixed(jnp.array([2.0]), sigma1, sigma2, 4.0, beta2, c)
    np.testing.assert_allclose(float(ours.decoder2_singular_values[0]), found["decoder2"][0], atol=2e-3)
    assert np.isnan(_official_fixed(2.0, sigma1, sigma2, 0.25, beta2, c)[1])
    assert not np.isnan(np.asarray(_optimum_fixed(
        jnp.array([2.0]), sigma1, sigma2, 0.25, beta2, c).decoder2_singular_values)).any()


@pytest.mark.parametrize("sigma2", [None, 1.0])
def test_two_dimensional_optimum_is_diagonal_in_the_eigenbasis(sigma2):
    # A non-diagonal A: the matrix optimum decouples into A's eigenmodes, and `hvae_optimal_params` attains the
    # numerical minimum value (one mode active, one z2 mode collapsed).
    sigma1, beta1, beta2, eta_enc, eta_dec = 0.5, 1.0, 2.0, 1.0, 0.5
    rotation = np.array([[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]])
    theta = np.array([1.5, 0.8])
    a = rotation @ np.diag(theta**2) @ rotation.T
    found = _numerical_optimum(a, sigma1, beta1, beta2, eta_enc, eta_dec, sigma2=sigma2, starts=3)
    if sigma2 is None:
        optimum = _optimum(jnp.asarray(theta), sigma1, beta1, beta2, eta_enc, eta_dec)
    else:
        optimum = _optimum_fixed(jnp.asarray(theta), sigma1, sigma2, beta1, beta2,
                                                     eta_dec / eta_enc)
    np.testing.assert_allclose(optimum.encoder1_singular_values, found["encoder1"], atol=2e-3)
    np.testing.assert_allclose(optimum.decoder2_singular_values, found["decoder2"], atol=2e-3)
    assert int(optimum.num_collapsed) == 1
    settings = {"sigma1": sigma1, "beta1": beta1, "beta2": beta2, "eta_enc": eta_enc, "eta_dec": eta_dec}
    params = _optimal_params(jnp.asarray(a), optimum, learnable_sigma2=sigma2 is None)
    theory_value, _ = _expected_loss(params, jnp.asarray(a, jnp.float32), sigma2=sigma2, **settings)
    reference = found["value"] + _constant((2, 2, 2), **settings)
    np.testing.assert_allclose(float(theory_value), reference, rtol=1e-5)


def test_collapse_grows_with_beta2_and_shrinks_with_beta1():
    # The experiment's design: theta^2 = s^2 log-spaced in [0.05, 2], sigma1 = 0.5, eta_enc = 1, eta_dec = 0.5.
    theta = jnp.sqrt(jnp.geomspace(0.05, 2.0, 16))

    def counts(beta1, beta2, sigma2=None):
        if sigma2 is None:
            return int(_optimum(theta, 0.5, beta1, beta2, 1.0, 0.5).num_collapsed)
        return int(_optimum_fixed(theta, 0.5, sigma2, beta1, beta2, 0.5).num_collapsed)

    betas = (0.5, 1.0, 2.0, 4.0)
    learnable = [counts(1.0, b) for b in betas]
    assert learnable == [0, 7, 13, 16]
    # With sigma2 = eta_enc the two thresholds coincide: fixed Sigma2 collapses exactly as many modes.
    assert [counts(1.0, b, sigma2=1.0) for b in betas] == learnable
    # Negative controls: the same sweep over beta1 goes the other way, and a smaller fixed sigma2 collapses less.
    by_beta1 = [counts(b, 2.0) for b in betas]
    assert by_beta1 == sorted(by_beta1, reverse=True) and by_beta1[0] > by_beta1[-1]
    assert sum(counts(1.0, b, sigma2=0.5) for b in betas) < sum(learnable)


def test_the_experiment_evaluator_reads_the_theory_optimum():
    """`collapse/linear_hvae`'s per-run evaluator, at the theory's optimal parameters of each beta2 (one run per
    beta2), counts the theory's collapsed modes and returns its omegas; the objective there is a minimum (a
    perturbation raises it), and a threshold above every omega counts all modes (negative control)."""
    import functools

    import gvlab_experiments.collapse.linear_hvae as linear_hvae

    cfg = linear_hvae.Config(dim=8, num_points=2000)
    second_moment = collapse.uncentred_second_moment(linear_hvae.make_data(cfg, jax.random.key(0)))
    theory = linear_hvae.theory_of(cfg, second_moment)
    beta2 = jnp.asarray(cfg.beta2s)
    for variant in linear_hvae.VARIANTS:
        def measure(params, threshold=cfg.collapse_threshold, variant=variant):
            fn = functools.partial(linear_hvae.measure, settings=linear_hvae.settings_of(cfg, variant),
                                   threshold=threshold)
            return jax.vmap(fn, in_axes=(0, None, None))({"params": params, "beta2": beta2}, second_moment, None)

        at_optimum = measure(theory[variant]["params"])
        np.testing.assert_array_equal(at_optimum["counts"], theory[variant]["counts"])
        np.testing.assert_allclose(at_optimum["omega"], theory[variant]["omega"], atol=1e-5)
        moved = jax.tree.map(lambda p: p + 0.01, theory[variant]["params"])
        assert np.all(measure(moved)["loss"] > at_optimum["loss"])
        assert np.all(measure(theory[variant]["params"], threshold=1e3)["counts"] == cfg.dim)
