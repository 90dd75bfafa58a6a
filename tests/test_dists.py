"""Oracles for gvlab.dists: scipy densities and entropies, closed-form KLs vs Monte Carlo and vs quadrature,
sample moments, extreme-logit stability, and jit/vmap/pytree behaviour.

Every oracle comes with a negative control (a slightly wrong parameter or formula that the same tolerance
rejects), so none of these tests can pass vacuously. Monte-Carlo tolerances are 5 standard errors estimated
from the samples themselves. Randomness comes from the `key` fixture; reference values from numpy/scipy in
float64.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from gvlab.dists import Bernoulli, Categorical, DiagNormal, GaussianMixture, kl_divergence, kl_monte_carlo

# gvlab's own numerics must not rely on implicit int->float or float32->float64 promotion (conftest fixture).
pytestmark = pytest.mark.usefixtures("strict_dtypes")

RTOL = ATOL = 1e-5  # float32 log-densities of size O(1-10): a few ulp of accumulated rounding
NUM_SAMPLES = 20_000
Z = 5.0  # Monte-Carlo tolerance in standard errors: a false failure has probability ~6e-7


def f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def assert_matches(actual, expected, wrong, rtol=RTOL, atol=ATOL):
    """`actual` matches `expected`, and the same tolerance rejects `wrong` (the negative control)."""
    np.testing.assert_allclose(f64(actual), expected, rtol=rtol, atol=atol)
    assert not np.allclose(f64(wrong), expected, rtol=rtol, atol=atol), "tolerance cannot catch an error"


def uniform(key, shape, low, high):
    return jax.random.uniform(key, shape, jnp.float32, low, high)


# ---------------------------------------------------------------- log-densities vs scipy


def test_diag_normal_log_prob_matches_scipy(key):
    k1, k2, k3 = jax.random.split(key, 3)
    loc, scale = jax.random.normal(k1, (4, 3)), uniform(k2, (4, 3), 0.3, 2.0)
    x = jax.random.normal(k3, (5, 4, 3)) * 2.0  # leading sample axis
    ref = stats.norm.logpdf(f64(x), f64(loc), f64(scale))
    for event_ndims in (0, 1, 2):
        axes = tuple(range(-event_ndims, 0))
        p, wrong = DiagNormal(loc, scale, event_ndims), DiagNormal(loc, scale * 1.01, event_ndims)
        assert_matches(p.log_prob(x), ref.sum(axis=axes), wrong.log_prob(x))
    # The VAE parameterisation gives the same density.
    p = DiagNormal.from_log_variance(loc, 2.0 * jnp.log(scale))
    assert_matches(p.log_prob(x), ref.sum(-1), DiagNormal.from_log_variance(loc, jnp.log(scale)).log_prob(x))


def test_bernoulli_log_prob_matches_scipy(key):
    k1, k2, k3 = jax.random.split(key, 3)
    logits = 3.0 * jax.random.normal(k1, (4, 3))
    probs = special.expit(f64(logits))
    x = jax.random.bernoulli(k2, 0.5, (5, 4, 3))  # bool, with a leading sample axis
    ref = stats.bernoulli.logpmf(f64(x), probs).sum(-1)
    assert_matches(Bernoulli(logits).log_prob(x), ref, Bernoulli(-logits).log_prob(x))
    # Fractional x: the (unnormalised) negative binary cross-entropy.
    u = uniform(k3, (4, 3), 0.0, 1.0)
    bce = (f64(u) * np.log(probs) + (1 - f64(u)) * np.log1p(-probs)).sum(-1)
    assert_matches(Bernoulli(logits).log_prob(u), bce, Bernoulli(logits).log_prob(jnp.round(u)))


def test_categorical_log_prob_matches_softmax(key):
    k1, k2 = jax.random.split(key)
    logits = 2.0 * jax.random.normal(k1, (4, 6))
    x = jax.random.randint(k2, (5, 4), 0, 6)  # sample_shape (5,) + batch_shape (4,)
    log_probs = np.log(special.softmax(f64(logits), axis=-1))
    ref = np.take_along_axis(np.broadcast_to(log_probs, (5, 4, 6)), np.asarray(x)[..., None], -1)[..., 0]
    p = Categorical(logits)
    assert_matches(p.log_prob(x), ref, p.log_prob((x + 1) % 6))
    assert_matches(Categorical(logits, event_ndims=1).log_prob(x), ref.sum(-1), p.log_prob(x)[:, 0])


def test_gaussian_mixture_log_prob_matches_scipy(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    logits, loc = jax.random.normal(k1, (4, 3)), 2.0 * jax.random.normal(k2, (4, 3, 2))
    scale = uniform(k3, (4, 3, 2), 0.5, 1.5)
    x = 2.0 * jax.random.normal(k4, (5, 4, 2))
    weights = special.softmax(f64(logits), axis=-1)
    densities = stats.norm.pdf(f64(x)[..., None, :], f64(loc), f64(scale)).prod(-1)  # [5, 4, K]
    ref = np.log((weights * densities).sum(-1))
    # Negative control: the mixture weights exp(logits), a forgotten normalisation.
    unnormalised = np.log((np.exp(f64(logits)) * densities).sum(-1))
    assert_matches(GaussianMixture(logits, loc, scale).log_prob(x), ref, unnormalised)
    # One component is a DiagNormal.
    one = GaussianMixture(jnp.zeros((4, 1)), loc[:, :1], scale[:, :1])
    np.testing.assert_allclose(one.log_prob(x), DiagNormal(loc[:, 0], scale[:, 0]).log_prob(x), rtol=1e-6)


# ---------------------------------------------------------------- KL divergences


def _quad_kl_normal(mp, sp, mq, sq):
    """KL between 1-D normals by quadrature of p·log(p/q) over μp ± 20σp (independent of the closed form)."""
    def integrand(x):
        return stats.norm.pdf(x, mp, sp) * (stats.norm.logpdf(x, mp, sp) - stats.norm.logpdf(x, mq, sq))

    return integrate.quad(integrand, mp - 20 * sp, mp + 20 * sp, epsabs=1e-12, epsrel=1e-10, limit=200)[0]


def _kl_case(name, key):
    """(p, q, wrong_kl, scipy_kl), with p and q drawn far enough apart that the wrong formula is far off."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    if name == "normal":
        p = DiagNormal(jax.random.normal(k1, (3,)), uniform(k2, (3,), 1.5, 2.0))
        q = DiagNormal(jax.random.normal(k3, (3,)), uniform(k4, (3,), 0.8, 1.2))

        def wrong(p, q):  # σp where σp² belongs: ½Σ(log σq²/σp² + (σp + Δμ²)/σq² − 1)
            sp, sq, dm = f64(p.scale), f64(q.scale), f64(p.loc) - f64(q.loc)
            return 0.5 * np.sum(np.log(sq**2 / sp**2) + (sp + dm**2) / sq**2 - 1)

        def reference(p, q):
            params = zip(*(f64(a) for a in (p.loc, p.scale, q.loc, q.scale)))
            return sum(_quad_kl_normal(*v) for v in params)

    elif name == "bernoulli":
        p, q = Bernoulli(uniform(k1, (3,), 1.0, 3.0)), Bernoulli(uniform(k2, (3,), -3.0, -1.0))

        def wrong(p, q):  # the x = 0 term forgotten: Σ p log(p/q)
            pp, pq = special.expit(f64(p.logits)), special.expit(f64(q.logits))
            return np.sum(pp * np.log(pp / pq))

        def reference(p, q):
            pp, pq = special.expit(f64(p.logits)), special.expit(f64(q.logits))
            return sum(stats.entropy([a, 1 - a], [b, 1 - b]) for a, b in zip(pp, pq))

    else:
        ramp = jnp.arange(5, dtype=jnp.float32)
        p = Categorical(jax.random.normal(k1, (5,)) + ramp)
        q = Categorical(jax.random.normal(k2, (5,)) - ramp)

        def wrong(p, q):  # weights from q instead of p: Σ q log(p/q) = −KL(q‖p)
            pp, pq = f64(p.probs()), f64(q.probs())
            return np.sum(pq * np.log(pp / pq))

        def reference(p, q):
            return stats.entropy(f64(p.probs()), f64(q.probs()))

    return p, q, wrong, reference


KL_CASES = ["normal", "bernoulli", "categorical"]


@pytest.mark.parametrize("name", KL_CASES)
def test_kl_closed_form_within_monte_carlo_error(name, key):
    case_key, sample_key = jax.random.split(key)
    p, q, wrong, _ = _kl_case(name, case_key)
    x = p.sample(sample_key, (NUM_SAMPLES,))
    log_ratio = f64(p.log_prob(x)) - f64(q.log_prob(x))
    mc, stderr = log_ratio.mean(), log_ratio.std(ddof=1) / math.sqrt(NUM_SAMPLES)
    # kl_monte_carlo is exactly this sample mean (same key, same draws).
    np.testing.assert_allclose(f64(kl_monte_carlo(p, q, sample_key, NUM_SAMPLES)), mc, rtol=1e-5)
    closed = float(kl_divergence(p, q))
    assert abs(closed - mc) < Z * stderr, (closed, mc, stderr)
    assert abs(wrong(p, q) - mc) > Z * stderr, "negative control: a wrong KL formula passed the MC check"


@pytest.mark.parametrize("name", KL_CASES)
def test_kl_closed_form_matches_scipy(name, key):
    p, q, wrong, reference = _kl_case(name, key)
    expected = reference(p, q)
    assert_matches(kl_divergence(p, q), expected, wrong(p, q))
    assert float(kl_divergence(p, p)) == 0.0  # KL(p‖p) = 0 exactly


def test_kl_diag_normal_against_standard_normal(key):
    standard = DiagNormal(jnp.zeros(3), jnp.ones(3))
    assert float(kl_divergence(standard, standard)) == 0.0
    # Hand-worked: μ = 0.5, σ = 2: ½(0.25 + 4 − log 4 − 1) = ½(3.25 − 1.3862944) = 0.9318528.
    p = DiagNormal(jnp.array(0.5), jnp.array(2.0), event_ndims=0)
    q = DiagNormal(jnp.array(0.0), jnp.array(1.0), event_ndims=0)
    np.testing.assert_allclose(float(kl_divergence(p, q)), 0.9318528, rtol=1e-6)
    # ½Σ(μ² + σ² − log σ² − 1) over the event axis, at random points with a batch axis; q broadcasts.
    k1, k2 = jax.random.split(key)
    loc, scale = jax.random.normal(k1, (4, 3)), uniform(k2, (4, 3), 0.2, 3.0)
    mu, var = f64(loc), f64(scale) ** 2
    expected = 0.5 * np.sum(mu**2 + var - np.log(var) - 1, axis=-1)
    wrong = 0.5 * np.sum(mu**2 + var - np.log(var), axis=-1)
    assert_matches(kl_divergence(DiagNormal(loc, scale), standard), expected, wrong)


def test_kl_without_closed_form_or_mismatched_events_raises(key):
    p = DiagNormal(jnp.zeros(2), jnp.ones(2))
    mixture = GaussianMixture(jnp.zeros(1), jnp.full((1, 2), 0.5), jnp.full((1, 2), 1.5))
    with pytest.raises(NotImplementedError, match=r"\(DiagNormal, GaussianMixture\).*kl_monte_carlo"):
        kl_divergence(p, mixture)
    with pytest.raises(NotImplementedError, match="kl_monte_carlo"):
        kl_divergence(Bernoulli(jnp.zeros(2)), Categorical(jnp.zeros(2)))
    with pytest.raises(ValueError, match="event_ndims"):
        kl_divergence(p, DiagNormal(jnp.zeros(2), jnp.ones(2), event_ndims=0))
    with pytest.raises(ValueError, match="event_ndims"):
        kl_monte_carlo(Bernoulli(jnp.zeros(2)), Bernoulli(jnp.zeros(2), event_ndims=0), key, 10)
    # The advertised fallback works: a one-component mixture is a DiagNormal, so MC matches the closed form.
    x = p.sample(key, (NUM_SAMPLES,))
    stderr = float(jnp.std(p.log_prob(x) - mixture.log_prob(x))) / math.sqrt(NUM_SAMPLES)
    closed = float(kl_divergence(p, DiagNormal(mixture.loc[0], mixture.scale[0])))
    assert abs(float(kl_monte_carlo(p, mixture, key, NUM_SAMPLES)) - closed) < Z * stderr


# ---------------------------------------------------------------- entropies and moments


def test_entropies_match_scipy(key):
    k1, k2, k3 = jax.random.split(key, 3)
    loc, scale = jax.random.normal(k1, (4, 3)), uniform(k2, (4, 3), 0.2, 3.0)
    expected = stats.norm(f64(loc), f64(scale)).entropy().sum(-1)
    assert_matches(DiagNormal(loc, scale).entropy(), expected, DiagNormal(loc, scale * 1.01).entropy())
    logits = 3.0 * jax.random.normal(k3, (4, 3))
    expected = stats.bernoulli(special.expit(f64(logits))).entropy().sum(-1)
    assert_matches(Bernoulli(logits).entropy(), expected, Bernoulli(logits * 1.01).entropy())
    expected = stats.entropy(special.softmax(f64(logits), axis=-1), axis=-1)
    assert_matches(Categorical(logits).entropy(), expected, Categorical(logits * 1.01).entropy())
    assert_matches(Categorical(logits, event_ndims=1).entropy(), expected.sum(), expected[0])


def _moment_case(name, key):
    """(distribution, sample → float64 features, analytic mean, analytic variance, wrong variance or None)."""
    k1, k2, k3 = jax.random.split(key, 3)
    if name == "normal":
        d = DiagNormal(jax.random.normal(k1, (3,)), uniform(k2, (3,), 0.5, 2.0))
        return d, f64, d.mean(), d.variance(), None
    if name == "bernoulli":
        d = Bernoulli(2.0 * jax.random.normal(k1, (3,)))
        return d, f64, d.mean(), d.variance(), None
    if name == "categorical":  # moments of the one-hot encoding: p and p(1 − p)
        d = Categorical(jax.random.normal(k1, (4,)))
        return d, lambda x: f64(jax.nn.one_hot(x, 4)), d.probs(), d.probs() * (1 - d.probs()), None
    loc, scale = 3.0 * jax.random.normal(k2, (3, 2)), uniform(k3, (3, 2), 0.3, 1.0)
    d = GaussianMixture(jax.random.normal(k1, (3,)), loc, scale)
    within_only = jnp.sum(jax.nn.softmax(d.logits)[:, None] * jnp.square(d.scale), axis=0)  # no between-term
    return d, f64, d.mean(), d.variance(), within_only


@pytest.mark.parametrize("name", ["normal", "bernoulli", "categorical", "mixture"])
def test_sample_moments_match_analytic(name, key):
    case_key, sample_key = jax.random.split(key)
    d, features, mean, variance, wrong_variance = _moment_case(name, case_key)
    x = d.sample(sample_key, NUM_SAMPLES)
    assert x.shape == (NUM_SAMPLES,) + (() if name == "categorical" else mean.shape)
    assert x.dtype == (jnp.int32 if name == "categorical" else jnp.float32)
    x = features(x)
    sample_mean, centred_sq = x.mean(0), (x - x.mean(0)) ** 2
    sample_var = centred_sq.mean(0) * NUM_SAMPLES / (NUM_SAMPLES - 1)
    se_mean, se_var = np.sqrt(sample_var / NUM_SAMPLES), centred_sq.std(0) / math.sqrt(NUM_SAMPLES)
    assert np.all(np.abs(sample_mean - f64(mean)) < Z * se_mean), (sample_mean, mean)
    assert np.all(np.abs(sample_var - f64(variance)) < Z * se_var), (sample_var, variance)
    assert np.any(np.abs(sample_mean - f64(mean) - 0.1) > Z * se_mean)  # negative control: shifted mean fails
    if wrong_variance is not None:
        assert np.any(np.abs(sample_var - f64(wrong_variance)) > Z * se_var)


def test_diag_normal_sample_is_reparameterised(key):
    loc, scale = jnp.array([0.3, -1.0, 2.0]), jnp.array([0.5, 1.0, 2.0])

    def sample_mean(loc, log_variance):
        return jnp.sum(jnp.mean(DiagNormal.from_log_variance(loc, log_variance).sample(key, 1000), axis=0))

    d_loc, d_log_variance = jax.grad(sample_mean, argnums=(0, 1))(loc, 2.0 * jnp.log(scale))
    np.testing.assert_allclose(d_loc, np.ones(3), rtol=1e-6)  # ∂/∂μ mean(μ + σε) = 1
    eps = (DiagNormal(loc, scale).sample(key, 1000) - loc[None]) / scale[None]  # same key, same ε
    # ∂/∂ log σ² mean(μ + exp(½ log σ²)ε) = ½σ·mean(ε): nonzero, so gradients reach the scale too.
    np.testing.assert_allclose(d_log_variance, 0.5 * scale * jnp.mean(eps, axis=0), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- numerical edge cases


def test_bernoulli_extreme_logits_are_exact():
    logits = jnp.array([80.0, -80.0, 1e4, -1e4])
    d = Bernoulli(logits, event_ndims=0)
    exact_one = -np.logaddexp(0.0, -f64(logits))  # log σ(l), float64
    exact_zero = -np.logaddexp(0.0, f64(logits))  # log σ(−l)
    log_p1, log_p0 = d.log_prob(jnp.ones(4)), d.log_prob(jnp.zeros(4))
    np.testing.assert_allclose(f64(log_p1), exact_one, rtol=1e-6, atol=0)
    np.testing.assert_allclose(f64(log_p0), exact_zero, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(f64(log_p0)[[0, 2]], [-80.0, -1e4])  # the literal values
    np.testing.assert_array_equal(f64(log_p1)[[1, 3]], [-80.0, -1e4])
    assert abs(float(log_p1[0])) < 1e-30 and float(log_p1[2]) == 0.0
    np.testing.assert_array_equal(f64(d.log_prob(jnp.full(4, 0.5)))[2:], [-5e3, -5e3])  # fractional x
    grad = jax.grad(lambda logits: jnp.sum(Bernoulli(logits, 0).log_prob(jnp.ones(4))))(logits)
    np.testing.assert_allclose(grad, special.expit(-f64(logits)), atol=1e-7)  # x − σ(l), finite
    assert np.all(np.isfinite(d.entropy())) and np.all(f64(d.entropy()) >= 0)
    kl = kl_divergence(Bernoulli(logits[:1], 0), Bernoulli(logits[1:2], 0))
    np.testing.assert_allclose(f64(kl), [80.0], rtol=1e-6)  # KL(σ(80) ‖ σ(−80)) = 80 − ~1e-33
    # Negative control: the textbook log σ(l), log(1 − σ(l)) overflows to −inf at the same logits.
    naive = jnp.log(jax.nn.sigmoid(logits)) + jnp.log(1 - jax.nn.sigmoid(logits))
    assert not np.all(np.isfinite(naive))


def test_categorical_with_neg_inf_logits_has_no_nan(key):
    logits = jnp.array([[0.0, -jnp.inf, 1.0, 2.0], [-jnp.inf, 0.5, 0.5, -1.0]])
    p = Categorical(logits)
    probs = special.softmax(f64(logits), axis=-1)
    np.testing.assert_allclose(p.log_prob(jnp.array([2, 1])), np.log(probs[[0, 1], [2, 1]]), rtol=1e-6)
    np.testing.assert_array_equal(p.log_prob(jnp.array([1, 0])), [-np.inf, -np.inf])  # −inf, not NaN
    np.testing.assert_allclose(p.entropy(), stats.entropy(probs, axis=-1), rtol=1e-6)
    q = Categorical(jnp.where(jnp.isneginf(logits), -jnp.inf, jax.random.normal(key, (2, 4))))  # same support
    kl_pq = kl_divergence(p, q)
    assert np.all(np.isfinite(kl_pq))
    np.testing.assert_allclose(kl_pq, stats.entropy(probs, f64(q.probs()), axis=-1), rtol=1e-5)
    np.testing.assert_array_equal(kl_divergence(p, p), [0.0, 0.0])
    # q forbids a class that p allows: the KL is +inf, not NaN.
    np.testing.assert_array_equal(kl_divergence(Categorical(jnp.zeros(4)), p), [np.inf, np.inf])
    def objective(logits):
        return jnp.sum(Categorical(logits).entropy() + kl_divergence(Categorical(logits), q))

    assert np.all(np.isfinite(jax.grad(objective)(logits)))
    assert np.all(np.isfinite(p.log_prob(p.sample(key, 2000))))  # zero-probability classes are never drawn


# ---------------------------------------------------------------- transformations and pytrees


@jax.jit
@jax.vmap
def _batched(p, q, x, key):
    return p.log_prob(x), kl_divergence(p, q), p.sample(key, 2)


def _stacked(name, key, n):
    """Two stacks of n parameter sets (leading axis n) and a matching stack of points."""
    k1, k2, k3 = jax.random.split(key, 3)
    if name == "normal":
        p = DiagNormal(jax.random.normal(k1, (n, 3)), uniform(k2, (n, 3), 0.5, 2.0))
        return p, DiagNormal(jnp.zeros((n, 3)), jnp.ones((n, 3))), jax.random.normal(k3, (n, 3))
    if name == "bernoulli":
        p = Bernoulli(jax.random.normal(k1, (n, 3)))
        return p, Bernoulli(jax.random.normal(k2, (n, 3))), jax.random.bernoulli(k3, 0.5, (n, 3))
    p = Categorical(jax.random.normal(k1, (n, 2, 4)), event_ndims=1)
    return p, Categorical(jax.random.normal(k2, (n, 2, 4)), 1), jax.random.randint(k3, (n, 2), 0, 4)


@pytest.mark.parametrize("name", KL_CASES)
def test_jit_vmap_over_parameter_sets_matches_loop(name, key):
    n = 3
    p, q, x = _stacked(name, key, n)
    keys = jax.random.split(key, n)
    log_prob, kl, sample = _batched(p, q, x, keys)
    for i in range(n):
        p_i, q_i = jax.tree.map(lambda a: a[i], (p, q))
        assert p_i.event_ndims == p.event_ndims
        np.testing.assert_allclose(log_prob[i], p_i.log_prob(x[i]), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(kl[i], kl_divergence(p_i, q_i), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(sample[i], p_i.sample(keys[i], 2), rtol=1e-6, atol=1e-6)
    assert not np.allclose(log_prob[0], log_prob[1])  # negative control: the sets really differ


def test_gaussian_mixture_under_jit_vmap_matches_loop(key):
    k1, k2, k3 = jax.random.split(key, 3)
    d = GaussianMixture(jax.random.normal(k1, (3, 2)), jax.random.normal(k2, (3, 2, 2)), jnp.ones((3, 2, 2)))
    x = jax.random.normal(k3, (3, 2))
    batched = jax.jit(jax.vmap(lambda d, x: (d.log_prob(x), d.mean(), d.variance())))(d, x)
    for i in range(3):
        d_i = jax.tree.map(lambda a: a[i], d)
        for got, want in zip(batched, (d_i.log_prob(x[i]), d_i.mean(), d_i.variance())):
            np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-6)


def test_distributions_are_pytrees_with_static_event_ndims():
    examples = [
        (DiagNormal(jnp.zeros((2, 3)), jnp.ones((2, 3)), event_ndims=2), 2),
        (Bernoulli(jnp.zeros(3), event_ndims=0), 1),
        (Categorical(jnp.zeros((2, 4)), event_ndims=1), 1),
        (GaussianMixture(jnp.zeros(2), jnp.zeros((2, 3)), jnp.ones((2, 3))), 3),
    ]
    for d, num_leaves in examples:
        leaves, treedef = jax.tree.flatten(d)
        assert len(leaves) == num_leaves  # event_ndims is metadata, not a leaf
        rebuilt = jax.tree.unflatten(treedef, [2 * leaf for leaf in leaves])
        assert type(rebuilt) is type(d) and rebuilt.event_ndims == d.event_ndims
        np.testing.assert_array_equal(jax.tree.leaves(jax.tree.map(lambda a: 2 * a, d))[0], 2 * leaves[0])
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(d, dataclasses.fields(d)[0].name, jnp.ones(3))
    # Negative control: event_ndims is part of the tree structure, so changing it changes the treedef.
    assert jax.tree.structure(DiagNormal(0.0, 1.0, 0)) != jax.tree.structure(DiagNormal(0.0, 1.0, 1))
    with pytest.raises(ValueError, match="event_ndims"):
        DiagNormal(jnp.zeros(2), jnp.ones(2), event_ndims=-1)


def _all_outputs(loc, scale, key):
    normal, bern = DiagNormal(loc, scale), Bernoulli(loc)
    cat, mix = Categorical(loc), GaussianMixture(loc, jnp.stack([loc, scale]), jnp.stack([scale, scale]))
    return [normal.log_prob(loc), normal.sample(key, 2), normal.entropy(), kl_divergence(normal, normal),
            kl_monte_carlo(normal, normal, key, 4), bern.log_prob(jnp.array([1, 0])), bern.sample(key),
            bern.entropy(), kl_divergence(bern, bern), cat.log_prob(1), cat.entropy(),
            kl_divergence(cat, cat), mix.log_prob(loc), mix.sample(key), mix.mean(), mix.variance()]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_follows_inputs(dtype, key):
    with jax.enable_x64(dtype == jnp.float64):
        loc, scale = jnp.array([0.3, -1.0], dtype), jnp.array([0.5, 2.0], dtype)
        # Abstract evaluation gives the dtypes execution would, without compiling every function again.
        outputs = jax.eval_shape(_all_outputs, loc, scale, key)
        assert [o.dtype for o in outputs] == [dtype] * len(outputs)
        assert jax.eval_shape(lambda key: Categorical(loc).sample(key, 3), key).dtype == jnp.int32  # even in x64
        expected = stats.norm.logpdf(f64(loc), f64(loc), f64(scale)).sum()
        rtol = 1e-14 if dtype == jnp.float64 else 1e-6  # float64 really carries float64 precision
        np.testing.assert_allclose(float(DiagNormal(loc, scale).log_prob(loc)), expected, rtol=rtol)
