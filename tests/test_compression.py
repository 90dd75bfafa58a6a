"""`gvlab.compression`: bitstreams against -log2 likelihood, quantiser gradients, the UMG density, BD-rate, MS-SSIM.

Oracles: constriction's decoder reproduces the symbols and its payload is the ideal code length plus a few words;
straight-through gradients are the identity; the commitment loss and the mixture log-density against direct
computations; BD-rate of curves whose log-rates are exact polynomials of PSNR (integrated by hand). Each has a
negative control.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.compression import coding, factorised, mixture
from gvlab.compression import quantisers as vq
from gvlab.compression.metrics import bd_rate, ms_ssim
from gvlab.errors import ConfigError


def _symbols(seed=0, n=2000, alphabet=16):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(alphabet, 0.5), size=n)
    symbols = np.array([rng.choice(alphabet, p=p) for p in probs], np.int32)
    return symbols, probs


@pytest.mark.parametrize("coder", ["range", "ans"])
def test_bitstream_decodes_exactly_and_its_length_is_the_ideal_code_length(coder):
    symbols, probs = _symbols()
    stream = coding.encode(symbols, probs, coder)
    np.testing.assert_array_equal(coding.decode(stream, probs, coder), symbols)
    ideal = coding.ideal_bits(symbols, probs)
    overhead = coding.payload_bits(stream) - ideal
    assert 0.0 <= overhead <= 96.0, (ideal, overhead)  # a few 32-bit words, whatever N is
    assert len(stream) - coding.HEADER_BYTES == coding.payload_bits(stream) // 8
    # One shared row, and a probability of exactly 0 for an observed symbol: the floor keeps it codable.
    shared = np.array([0.5, 0.5, 0.0, 0.0])
    stream = coding.encode(np.array([0, 1, 2, 3, 1]), shared, coder)
    np.testing.assert_array_equal(coding.decode(stream, shared, coder), [0, 1, 2, 3, 1])


def test_bitstream_negative_controls():
    symbols, probs = _symbols(n=500)
    stream = coding.encode(symbols, probs)
    wrong = coding.decode(stream, np.roll(probs, 1, axis=0))  # another model decodes garbage
    assert np.mean(wrong != symbols) > 0.3
    # A skewed model codes in fewer bits than a uniform one when it matches the data; not when it does not.
    assert coding.ideal_bits(symbols, probs) < coding.ideal_bits(symbols, np.full(16, 1 / 16))
    with pytest.raises(ConfigError):
        coding.encode(np.array([0, 16]), np.full(16, 1 / 16))
    with pytest.raises(ConfigError):
        coding.decode(stream, probs[:10])


def test_vector_quantiser_outputs_codewords_with_identity_gradient():
    key_y, key_c, key_w = jax.random.split(jax.random.key(0), 3)
    y = jax.random.normal(key_y, (5, 7, 2, 3))
    codebooks = jax.random.normal(key_c, (2, 4, 3))
    idx = vq.nearest(y, codebooks)
    q = vq.lookup(idx, codebooks)
    brute = np.argmin(((np.asarray(y)[..., None, :] - np.asarray(codebooks)[None, None]) ** 2).sum(-1), -1)
    np.testing.assert_array_equal(idx, brute)
    out = vq.straight_through(y, q)
    np.testing.assert_array_equal(out, q)  # exactly the codewords
    weights = jax.random.normal(key_w, y.shape)
    grad = jax.grad(lambda y: jnp.sum(weights * vq.straight_through(y, vq.lookup(vq.nearest(y, codebooks),
                                                                                  codebooks))))(y)
    np.testing.assert_allclose(grad, weights, rtol=1e-6)
    # Negative control: without the straight-through trick the gradient is zero.
    assert float(jnp.abs(jax.grad(lambda y: jnp.sum(vq.lookup(vq.nearest(y, codebooks), codebooks)))(y)).max()) == 0
    # Scalar rounding: the value is round(y), the gradient one.
    z = jnp.array([0.2, 1.7, -2.5])
    np.testing.assert_array_equal(vq.round_straight_through(z), jnp.round(z))
    np.testing.assert_array_equal(jax.grad(lambda z: jnp.sum(vq.round_straight_through(z)))(z), jnp.ones(3))
    # Entropy-constrained assignment: a large rate weight moves every vector to the cheapest code.
    bits = jnp.array([[5.0, 1.0, 5.0, 5.0], [5.0, 5.0, 5.0, 1.0]])
    np.testing.assert_array_equal(vq.nearest(y, codebooks, bits, 1e3), jnp.broadcast_to(jnp.array([1, 3]), idx.shape))


def test_commitment_loss_closed_form_and_ema():
    y = jnp.array([[[1.0, 2.0]], [[0.0, -1.0]]])  # [N=2, m=1, d=2]
    q = jnp.array([[[0.0, 0.0]], [[1.0, 1.0]]])
    assert float(vq.commitment_loss(y, q)) == pytest.approx((5.0 + 5.0) / 2)
    grad_y, grad_q = jax.grad(vq.commitment_loss, argnums=(0, 1))(y, q)
    np.testing.assert_allclose(grad_y, (y - q))  # d/dy mean ||y - q||^2 = 2 (y - q) / N, N = 2
    assert float(jnp.abs(grad_q).max()) == 0.0  # sg(q): no gradient to the codewords
    codebooks = jnp.array([[[0.0, 0.0], [1.0, 1.0]]])
    state = vq.init_ema(codebooks)
    np.testing.assert_allclose(vq.ema_codebooks(state), codebooks, atol=1e-5)
    # decay 0: each used codeword becomes the mean of its vectors; the unused one keeps nothing of the old state.
    moved = vq.ema_update(state, y, jnp.array([[1], [1]]), 0.0)
    np.testing.assert_allclose(vq.ema_codebooks(moved)[0, 1], jnp.mean(y[:, 0], 0), atol=1e-4)
    np.testing.assert_allclose(vq.ema_probabilities(moved, floor=0.0)[0], [0.0, 1.0])


def test_mixture_log_likelihood_against_direct_computation():
    key_y, key_c, key_w = jax.random.split(jax.random.key(1), 3)
    m, k, d = 2, 5, 3
    y = jax.random.normal(key_y, (4, m, d), jnp.float64) if jax.config.jax_enable_x64 else \
        jax.random.normal(key_y, (4, m, d))
    codebooks = jax.random.normal(key_c, (m, k, d))
    log_weights = jax.random.normal(key_w, (m, k))
    log_precision = jnp.array([0.3, -0.7])
    got = mixture.log_prob(y, codebooks, log_weights, log_precision)
    yn, cn = np.asarray(y, np.float64), np.asarray(codebooks, np.float64)
    pi = np.exp(np.asarray(log_weights, np.float64))
    pi /= pi.sum(-1, keepdims=True)
    var = 0.5 / np.exp(np.asarray(log_precision, np.float64))
    direct = np.zeros((4, m))
    for j in range(m):
        for c in range(k):
            sq = ((yn[:, j] - cn[j, c]) ** 2).sum(-1)
            direct[:, j] += pi[j, c] * np.exp(-sq / (2 * var[j])) / (2 * np.pi * var[j]) ** (d / 2)
    np.testing.assert_allclose(got, np.log(direct), rtol=1e-4, atol=1e-4)
    # The MAP component is the argmax of pi_k N(y; c_k): the posterior's logits differ from log(pi N) by a constant.
    post = np.stack([pi[j][None] * np.exp(-((yn[:, j, None] - cn[j][None]) ** 2).sum(-1) / (2 * var[j]))
                     for j in range(m)], 1)
    np.testing.assert_array_equal(mixture.map_indices(y, codebooks, log_weights, log_precision), post.argmax(-1))
    # Negative control: another shared variance is another density.
    other = mixture.log_prob(y, codebooks, log_weights, log_precision + 0.5)
    assert float(jnp.abs(other - got).max()) > 0.1
    # Gumbel hard sample: one-hot forward, gradients reach the logits.
    s = mixture.gumbel_hard(jnp.zeros((3, 4)), jax.random.key(0))
    np.testing.assert_array_equal(jnp.sum(s, -1), jnp.ones(3))
    assert set(np.unique(np.asarray(s))) <= {0.0, 1.0}


def test_factorised_table_is_a_distribution_matching_the_bins():
    loc, log_scale = jnp.array([0.3, -2.0]), jnp.array([0.0, 1.0])
    table = factorised.symbol_table(loc, log_scale, radius=6)
    np.testing.assert_allclose(table.sum(-1), 1.0, rtol=1e-6)
    inner = factorised.bin_probability(jnp.broadcast_to(jnp.arange(-5.0, 6.0)[:, None], (11, 2)), loc, log_scale).T
    np.testing.assert_allclose(table[:, 1:-1], inner, rtol=1e-4, atol=1e-7)
    y = jnp.array([[0.4, -7.9], [9.0, 0.0]])
    np.testing.assert_array_equal(factorised.from_symbols(factorised.to_symbols(y, 6), 6), [[0.0, -6.0], [6.0, 0.0]])


def test_bd_rate_against_hand_computed_cases():
    psnr = np.array([0.0, 2.5, 5.0, 7.5, 10.0])
    anchor = np.exp(psnr / 10)
    assert bd_rate(anchor, psnr, 0.9 * anchor, psnr) == pytest.approx(-0.1, abs=1e-9)
    # log R_test = P/5 - 1 against log R_anchor = P/10 on [0, 10]: mean difference = 10/20 - 1 = -0.5.
    assert bd_rate(anchor, psnr, np.exp(psnr / 5 - 1), psnr) == pytest.approx(np.exp(-0.5) - 1, abs=1e-9)
    assert bd_rate(anchor, psnr, anchor, psnr) == pytest.approx(0.0, abs=1e-12)  # negative control: no change
    with pytest.raises(ConfigError):
        bd_rate(anchor, psnr, anchor, psnr + 20.0)  # no overlap
    with pytest.raises(ConfigError):
        bd_rate(anchor[:3], psnr[:3], anchor[:3], psnr[:3])


def test_ms_ssim_two_scales_at_32x32():
    x = jax.random.uniform(jax.random.key(2), (2, 32, 32))
    np.testing.assert_allclose(ms_ssim(x, x), 1.0, rtol=1e-5)
    noisy = jnp.clip(x + 0.2 * jax.random.normal(jax.random.key(3), x.shape), 0, 1)
    assert float(ms_ssim(noisy, x).max()) < 0.9
    with pytest.raises(ConfigError):
        ms_ssim(x, x, scales=3)  # 8x8 at the third scale is smaller than the window
