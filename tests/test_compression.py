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
from gvlab.compression.metrics import bd_rate, bd_rate_with_reason, ms_ssim
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
    assert 0.0 <= overhead <= coding.FLUSH_BITS, (ideal, overhead)  # the flush constant, whatever N is
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


def test_mixture_em_update_and_ml_precision():
    # Oracle: samples of N(c_k, sigma^2 I) assigned to their true component; with decay 0 one EM step gives the
    # component means, frequencies, and kappa = 1 / (2 sigma^2) (the closed-form ML precision).
    rng = np.random.default_rng(0)
    m, k, d, n, sigma = 1, 3, 4, 8000, 0.3
    centres = rng.normal(size=(m, k, d)) * 3
    labels = rng.choice(k, size=(n, m), p=[0.5, 0.3, 0.2])
    y = jnp.asarray(centres[0][labels[:, 0]][:, None] + sigma * rng.normal(size=(n, m, d)), jnp.float32)
    state = vq.init_ema(jnp.asarray(centres, jnp.float32))
    state["sq_residual"] = jnp.ones(m)
    new = mixture.em_update(state, y, jnp.asarray(labels), 0.0)
    np.testing.assert_allclose(vq.ema_probabilities(new, floor=0.0)[0], np.bincount(labels[:, 0]) / n, atol=1e-6)
    np.testing.assert_allclose(vq.ema_codebooks(new)[0], centres[0], atol=0.02)
    kappa = mixture.ml_precision(new["sq_residual"], d)
    np.testing.assert_allclose(kappa, 1 / (2 * sigma ** 2), rtol=0.03)
    # kappa maximises the UMG likelihood of the assigned sub-vectors (one component each) over the precision.
    residual = y - jnp.asarray(centres[0][labels[:, 0]][:, None], jnp.float32)  # N(y; c, s^2) = N(y - c; 0, s^2)

    def loglik(scale):
        return float(jnp.sum(mixture.log_prob(residual, jnp.zeros((m, 1, d)), jnp.zeros((m, 1)),
                                              jnp.log(kappa * scale))))

    assert loglik(1.0) > max(loglik(0.8), loglik(1.25))
    # Negative control: other noise, other precision.
    wider = mixture.em_update(state, y * 2.0, jnp.asarray(labels), 0.0)
    assert float(mixture.ml_precision(wider["sq_residual"], d)[0]) < 0.5 * float(kappa[0])


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
    for r in (0.9, 0.5, 1.7):  # rates a constant factor r apart at every PSNR: BD-rate = r - 1 exactly
        assert bd_rate(anchor, psnr, r * anchor, psnr) == pytest.approx(r - 1, abs=1e-9)
    # The test curve sampled at other PSNRs of the same log-linear law: still exactly r - 1 on the overlap.
    shifted = psnr[::-1] * 0.8 + 1.0
    assert bd_rate(anchor, psnr, 0.9 * np.exp(shifted / 10), shifted) == pytest.approx(-0.1, abs=1e-9)
    # log R_test = P/5 - 1 against log R_anchor = P/10 on [0, 10]: mean difference = 10/20 - 1 = -0.5.
    assert bd_rate(anchor, psnr, np.exp(psnr / 5 - 1), psnr) == pytest.approx(np.exp(-0.5) - 1, abs=1e-9)
    assert bd_rate(anchor, psnr, anchor, psnr) == pytest.approx(0.0, abs=1e-12)  # negative control: no change
    # Undefined cases are NaN with a reason, never an extrapolated number.
    value, reason = bd_rate_with_reason(anchor, psnr, anchor, psnr + 9.8)  # 0.2 dB overlap
    assert np.isnan(value) and "overlap" in reason
    assert np.isnan(bd_rate(anchor, psnr, anchor, psnr + 20.0))  # no overlap
    wiggly = np.array([20.9, 18.1, 20.1, 20.2, 19.0])  # the early run's non-monotone mixture curve (shape only)
    value, reason = bd_rate_with_reason(anchor, psnr, anchor[::-1] * 0.3, wiggly)
    assert np.isnan(value) and "not monotone" in reason
    with pytest.raises(ConfigError):
        bd_rate(anchor[:3], psnr[:3], anchor[:3], psnr[:3])


def test_ms_ssim_two_scales_at_32x32():
    x = jax.random.uniform(jax.random.key(2), (2, 32, 32))
    np.testing.assert_allclose(ms_ssim(x, x), 1.0, rtol=1e-5)
    noisy = jnp.clip(x + 0.2 * jax.random.normal(jax.random.key(3), x.shape), 0, 1)
    assert float(ms_ssim(noisy, x).max()) < 0.9
    with pytest.raises(ConfigError):
        ms_ssim(x, x, scales=3)  # 8x8 at the third scale is smaller than the window


def _find(crop, region):
    """Top-left corners where `crop` occurs exactly in `region` (corner pixels first, then the whole window)."""
    h, w = crop.shape
    rows, cols = np.nonzero((region[: region.shape[0] - h + 1, : region.shape[1] - w + 1] == crop[0, 0])
                            & (region[h - 1:, w - 1:] == crop[-1, -1]))
    return [(r, c) for r, c in zip(rows, cols) if np.array_equal(region[r:r + h, c:c + w], crop)]


def test_photo_patches_are_crops_of_their_split_only():
    from gvlab.data import patches

    train = np.asarray(patches.photo_patches(jax.random.key(0), 3, "train", size=16))
    test = np.asarray(patches.photo_patches(jax.random.key(0), 3, "test", size=16))
    regions = {split: [r[:h, :w] for r, (h, w) in zip(*patches._photo_regions(split))]
               for split in ("train", "test")}
    for crops, split, other in ((train, "train", "test"), (test, "test", "train")):
        for crop in crops:  # oracle: each crop is a window of one photograph's own region; negative: not the other's
            assert any(_find(crop, r) for r in regions[split])
            assert not any(_find(crop, r) for r in regions[other])
    np.testing.assert_array_equal(patches.photo_patches(jax.random.key(0), 3, "train", size=16), train)  # pure
    with pytest.raises(ConfigError):
        patches.photo_patches(jax.random.key(0), 3, "val")


def test_combined_codecs_match_their_separate_losses_gradients_and_state():
    from gvlab.compression import codec

    codecs = {"mixture": codec.make(codec.Config(kind="mixture", channels=4, codebook_size=4, latent=4, groups=2)),
              "vq": codec.make(codec.Config(kind="vq", channels=4, codebook_size=4, latent=4, groups=1))}
    joint = codec.combine(codecs)
    batch = {"x": jax.random.uniform(jax.random.key(0), (2, 8, 8))}
    key, lams = jax.random.key(1), {"mixture": 0.1, "vq": 0.03}

    @jax.jit  # one program: eager op-by-op differentiation would compile every op separately
    def run(lams, swapped):
        params = joint.init(key, batch)
        extra = joint.init_extra(key, batch, params)

        def joint_loss(p, args):
            value, terms, new_extra = joint.loss(p, batch, key, 0, args={"rate_weight": args}, extra=extra)
            return value, new_extra

        out = {"joint": jax.value_and_grad(joint_loss, has_aux=True)(params, lams),
               "swapped": joint_loss(params, swapped)[0], "params": params}
        for name, c in codecs.items():  # oracle: each codec alone, same key, batch and starting state
            one = lambda p, n=name, c=c: c.method.loss(p, batch, key, 0, args={"rate_weight": lams[n]},  # noqa: E731
                                                       extra=extra[n])[::2]
            out[name] = (c.method.init(key, batch), jax.value_and_grad(one, has_aux=True)(params[name]))
        return out

    out = run(lams, {"mixture": 0.03, "vq": 0.1})
    (value, new_extra), grads = out["joint"]
    total = 0.0
    for name in codecs:
        init, ((v, e), g) = out[name]
        total = total + v
        for a, b in zip(jax.tree.leaves((init, g, e)), jax.tree.leaves((out["params"][name], grads[name],
                                                                          new_extra[name])), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(value, total, rtol=1e-6)
    # negative control: the lambdas are routed by name (swapping them changes the loss)
    assert not np.isclose(out["swapped"], value, rtol=1e-6)
