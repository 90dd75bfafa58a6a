"""The Cauchy-Schwarz estimators of gvlab.losses.cs on constructed cases and against the official code.

The oracle is a numpy transcription, written for this test, of the official PyTorch functions in
github.com/SJYuCNEL/Cauchy-Schwarz-Information-Bottleneck @ 252f86b, `loss_cs.py` (GaussianMatrix lines 30-43,
CS_Div 46-61, CS_QMI 64-97, CS_QMI_normalized 109-115, sigma_estimation/distmat 5-28), evaluated in float64 on
fixed arrays. gvlab runs in float32, so agreement is asked to rtol 1e-4 (float32 rounding of the Gram
expansion and of the logs is about 1e-6 relative; 1e-4 leaves margin without hiding a wrong formula: swapping the
paper's and the code's row weight moves these numbers by 1.6-7% relative, see the negative control there).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.losses import cs_conditional_divergence, cs_quadratic_mutual_information, median_bandwidth

RTOL = 1e-4


# ---- the official computation, transcribed to numpy (reference oracle) --------------------------------------

def _official_gaussian_matrix(a, b, sigma):
    # loss_cs.py:30-43: squared distances by the Gram expansion, exp(-H / 2 / sigma**2), clamped below at 0.
    h = (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2 * a @ b.T
    return np.clip(np.exp(-h / 2 / sigma**2), 0, None)


def _official_cs_div(x, y1, y2, sigma):
    # loss_cs.py:46-61: each term is sum_j (sum_i K_ji L_ji) / (sum_i K_ji^2), combined in log2.
    k = _official_gaussian_matrix(x, x, sigma)
    l1, l2 = _official_gaussian_matrix(y1, y1, sigma), _official_gaussian_matrix(y2, y2, sigma)
    l21 = _official_gaussian_matrix(y2, y1, sigma)
    weight = (k**2).sum(-1)
    self1 = ((k * l1).sum(-1) / weight).sum(0)
    self2 = ((k * l2).sum(-1) / weight).sum(0)
    cross = ((k * l21).sum(-1) / weight).sum(0)
    return -2 * np.log2(cross) + np.log2(self1) + np.log2(self2)


def _official_cs_qmi(x, y, sigma):
    # loss_cs.py:64-97 with a given sigma: tr(Kx Ky^T)/N^2, sum(Kx) sum(Ky)/N^4, 1' Kx^T Ky 1/N^3, log2.
    n = x.shape[0]
    kx, ky = _official_gaussian_matrix(x, x, sigma), _official_gaussian_matrix(y, y, sigma)
    self1 = np.trace(kx @ ky.T) / n**2
    self2 = kx.sum() * ky.sum() / n**4
    cross = (np.ones((1, n)) @ kx.T @ ky @ np.ones((n, 1))).item() / n**3
    return -2 * np.log2(cross) + np.log2(self1) + np.log2(self2)


def _official_cs_qmi_normalized(x, y, sigma):
    # loss_cs.py:109-115.
    return _official_cs_qmi(x, y, sigma) / (np.sqrt(_official_cs_qmi(x, x, sigma)) * np.sqrt(_official_cs_qmi(y, y, sigma)))


def _official_sigma_estimation(x):
    # loss_cs.py:5-28, called as sigma_estimation(x, x): distmat of cat([x, x]) is |squared distances|; median of
    # the strict lower triangle, mean if that is <= 0, floored at 0.01.
    z = np.concatenate([x, x])
    r = (z * z).sum(1)[:, None]
    d = np.abs(r - 2 * z @ z.T + r.T)
    tri = d[np.tril_indices(d.shape[0], -1)]
    med = np.median(tri)
    if med <= 0:
        med = np.mean(tri)
    return max(med, 1e-2)


def _paper_proposition_1(x, y, y_hat, sigma):
    """Proposition 1 of Yu et al. 2024 written directly (no log domain), natural log."""
    k = _official_gaussian_matrix(x, x, sigma)
    weight = k.sum(-1) ** 2

    def term(a, b):
        return np.log(((k * _official_gaussian_matrix(a, b, sigma)).sum(-1) / weight).sum())

    return term(y, y) + term(y_hat, y_hat) - 2 * term(y_hat, y)


def _fixed_arrays():
    """A fixed small problem: N = 10, x in R^3, scalar y, y_hat a noisy fit (float64 for the oracle)."""
    rng = np.random.default_rng(17)
    x = rng.normal(size=(10, 3))
    y = np.sin(x[:, :1]) + 0.1 * rng.normal(size=(10, 1))
    y_hat = y + 0.4 * rng.normal(size=(10, 1))
    t = np.tanh(x @ rng.normal(size=(3, 4)))
    return x, y, y_hat, t


def _f32(*arrays):
    return [jnp.asarray(a, jnp.float32) for a in arrays]


# ---- tests ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("estimator", ["paper", "code"])
def test_identical_conditionals_give_zero_and_a_mismatch_does_not(estimator, key, strict_dtypes):
    x_key, y_key = jax.random.split(key)
    x = jax.random.normal(x_key, (32, 2))
    y = jnp.sin(x[:, 0]) + 0.1 * jax.random.normal(y_key, (32,))
    same = cs_conditional_divergence(x, y, y, 1.0, estimator=estimator)
    assert abs(float(same)) < 1e-6
    shifted = cs_conditional_divergence(x, y, y + 1.5, 1.0, estimator=estimator)  # negative control
    assert float(shifted) > 0.5


def test_qmi_is_symmetric_small_for_independent_samples_and_large_for_dependent(key, strict_dtypes):
    x_key, t_key = jax.random.split(key)
    x = jax.random.normal(x_key, (200, 2))
    t = jax.random.normal(t_key, (200, 2))
    independent = cs_quadratic_mutual_information(x, t, 1.0)
    np.testing.assert_allclose(independent, cs_quadratic_mutual_information(t, x, 1.0), rtol=1e-5)
    dependent = cs_quadratic_mutual_information(x, x, 1.0)
    assert 0.0 <= float(independent) < 0.03  # finite-sample bias only (about 3e-3 at N = 200, sigma = 1)
    assert float(dependent) > 0.1 and float(dependent) > 10 * float(independent)
    noisy = x + 0.2 * t
    np.testing.assert_allclose(cs_quadratic_mutual_information(x, noisy, 1.0),
                               cs_quadratic_mutual_information(noisy, x, 1.0), rtol=1e-5)


def test_estimators_agree_exactly_where_row_weights_are_proportional(key):
    """The estimators differ only in the row weight: 1/(sum_i K_ji)^2 (paper) vs 1/sum_i K_ji^2 (code). A common
    factor c on every weight adds log c to each of the three log-sums and cancels in 1 + 1 - 2, so the two must
    agree (with the code's log2 converted to nats: code = paper / ln 2) whenever (sum_i K_ji)^2 / sum_i K_ji^2 is
    the same for all rows j. Points equally spaced on a circle make K circulant (every row a permutation of the
    first), so this holds for any y and y_hat. Random x breaks it: the negative control."""
    y_key, noise_key, x_key = jax.random.split(key, 3)
    angles = 2 * jnp.pi * jnp.arange(16) / 16
    circle = jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)
    y = jax.random.normal(y_key, (16, 2))
    y_hat = y + 0.5 * jax.random.normal(noise_key, (16, 2))
    paper = cs_conditional_divergence(circle, y, y_hat, 0.8)
    code_nats = cs_conditional_divergence(circle, y, y_hat, 0.8, estimator="code", base=math.e)
    code_bits = cs_conditional_divergence(circle, y, y_hat, 0.8, estimator="code")  # default base 2
    np.testing.assert_allclose(code_nats, paper, rtol=1e-5)
    np.testing.assert_allclose(code_bits, paper / math.log(2), rtol=1e-5)
    assert float(paper) > 0.05  # the case is not trivially 0

    x = jax.random.normal(x_key, (16, 2))
    gap = (cs_conditional_divergence(x, y, y_hat, 0.8)
           - cs_conditional_divergence(x, y, y_hat, 0.8, estimator="code", base=math.e))
    assert abs(float(gap)) > 1e-3


def test_far_apart_inputs_reduce_to_a_kernel_of_the_residuals():
    """K = I when the inputs are far apart in units of sigma: both estimators reduce to
    -2 log mean_j exp(-(y_hat_j - y_j)^2 / 2 sigma^2) (the sigma -> 0 limit of Remark 3, an MSE-like loss)."""
    x = 50.0 * jnp.arange(8.0)
    y = jnp.linspace(-1.0, 1.0, 8)
    y_hat = y + jnp.linspace(0.3, -0.2, 8)
    expected = -2.0 * np.log(np.mean(np.exp(-np.square(np.asarray(y_hat - y)) / 2.0)))
    for estimator in ("paper", "code"):
        np.testing.assert_allclose(cs_conditional_divergence(x, y, y_hat, 1.0, estimator, base=math.e), expected,
                                   rtol=1e-5)


@pytest.mark.parametrize("sigma", [0.7, 1.0])
def test_numbers_match_the_official_code_and_proposition_1(sigma):
    x, y, y_hat, t = _fixed_arrays()
    xs, ys, y_hats, ts = _f32(x, y, y_hat, t)
    np.testing.assert_allclose(cs_conditional_divergence(xs, ys, y_hats, sigma, estimator="code"),
                               _official_cs_div(x, y, y_hat, sigma), rtol=RTOL)
    np.testing.assert_allclose(cs_conditional_divergence(xs, ys, y_hats, sigma),
                               _paper_proposition_1(x, y, y_hat, sigma), rtol=RTOL)
    np.testing.assert_allclose(cs_quadratic_mutual_information(xs, ts, sigma, base=2),
                               _official_cs_qmi(x, t, sigma), rtol=RTOL)
    np.testing.assert_allclose(cs_quadratic_mutual_information(xs, ts, sigma, normalize=True),
                               _official_cs_qmi_normalized(x, t, sigma), rtol=RTOL)
    # negative control: on this generic case the two estimators differ by 1.6% (sigma = 1) and 7% (sigma = 0.7)
    # relative, >= 100 x RTOL, so each match above singles out one formula
    code_nats, paper = _official_cs_div(x, y, y_hat, sigma) * math.log(2), _paper_proposition_1(x, y, y_hat, sigma)
    assert abs(code_nats - paper) > 100 * RTOL * abs(paper)


def test_median_bandwidth_variants():
    x, *_ = _fixed_arrays()
    (xs,) = _f32(x)
    distances = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))[np.triu_indices(10, 1)]
    np.testing.assert_allclose(median_bandwidth(xs), np.median(distances), rtol=RTOL)
    np.testing.assert_allclose(median_bandwidth(xs, variant="code"), _official_sigma_estimation(x), rtol=RTOL)
    assert float(median_bandwidth(jnp.zeros((5, 2)), variant="code")) == pytest.approx(1e-2)  # the floor


def test_vectors_are_read_as_columns():
    x, y, y_hat, _ = _f32(*_fixed_arrays())
    np.testing.assert_array_equal(cs_conditional_divergence(x, y[:, 0], y_hat[:, 0], 1.0),
                                  cs_conditional_divergence(x, y, y_hat, 1.0))
    np.testing.assert_array_equal(cs_quadratic_mutual_information(y[:, 0], x, 1.0),
                                  cs_quadratic_mutual_information(y, x, 1.0))


def test_gradients_are_finite_and_sigma_vmaps(strict_dtypes):
    x, y, y_hat, t = _f32(*_fixed_arrays())
    for estimator in ("paper", "code"):
        grad_fn = jax.jit(jax.grad(lambda p, e=estimator: cs_conditional_divergence(x, y, p, 1.0, e)))
        for prediction in (y_hat, y):  # y_hat = y is the minimum, where a sqrt-based distance would give NaN
            grad = grad_fn(prediction)
            assert grad.shape == y.shape and bool(jnp.all(jnp.isfinite(grad)))
    for normalize in (False, True):
        grad = jax.jit(jax.grad(lambda r, n=normalize: cs_quadratic_mutual_information(x, r, 1.0, normalize=n)))(t)
        assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0

    def all_terms(sigma):
        return jnp.stack([cs_conditional_divergence(x, y, y_hat, sigma),
                          cs_conditional_divergence(x, y, y_hat, sigma, "code"),
                          cs_quadratic_mutual_information(x, t, sigma)])

    sigmas = jnp.array([0.5, 1.0, 2.0])
    batched = jax.jit(jax.vmap(all_terms))(sigmas)
    single = jax.jit(all_terms)
    looped = jnp.stack([single(s) for s in sigmas])
    # float32, and each result is a difference of logs (cancellation), so the batched and single programs,
    # fused differently, agree to ~1e-6 absolute rather than to the last bit
    np.testing.assert_allclose(batched, looped, rtol=1e-4, atol=1e-6)
    sigma_grad = jax.jit(jax.grad(lambda s: cs_conditional_divergence(x, y, y_hat, s)))(1.0)
    assert bool(jnp.isfinite(sigma_grad)) and float(sigma_grad) != 0.0


def test_bad_arguments_raise():
    x, y, y_hat, _ = _f32(*_fixed_arrays())
    with pytest.raises(ValueError, match="estimator"):
        cs_conditional_divergence(x, y, y_hat, 1.0, estimator="Paper")
    with pytest.raises(ValueError, match="y_hat"):
        cs_conditional_divergence(x, y, y_hat[:5], 1.0)
    with pytest.raises(ValueError, match="variant"):
        median_bandwidth(x, variant="mean")
