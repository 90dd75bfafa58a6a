"""gvlab.mi: the InfoNCE ceiling log(2B - 1), its oracles (identical views, correlated Gaussians) and the
procedural multi-latent generator's dead chunk."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.mi import generator as gen_lib
from gvlab.mi import infonce, views


def _without_positive(scores):
    """Negative control: the denominator over the 2B - 2 negatives only (no positive): not a bounded estimator."""
    n = scores.shape[0]
    pos = infonce.positives(n // 2)
    drop = jnp.eye(n, dtype=bool) | (jnp.arange(n)[None] == pos[:, None])
    denominator = jax.nn.logsumexp(jnp.where(drop, -jnp.inf, scores), axis=1)
    return -jnp.mean(scores[jnp.arange(n), pos] - denominator)


@pytest.mark.parametrize("batch", [2, 64])
def test_estimate_never_exceeds_log_2b_minus_1(key, batch):
    # Property over random critics: score matrices of every scale, from near-uniform to extremely sharp.
    scales = jnp.array([1e-3, 1.0, 10.0, 1e3, 1e6])

    def estimate(k, scale):
        scores = scale * jax.random.normal(k, (2 * batch, 2 * batch))
        return infonce.mi_estimate(infonce.info_nce(scores), batch)

    keys = jax.random.split(key, 20)
    values = jax.jit(jax.vmap(jax.vmap(estimate, in_axes=(None, 0)), in_axes=(0, None)))(keys, scales)
    assert bool(jnp.all(jnp.isfinite(values)))
    assert float(values.max()) <= infonce.ceiling(batch) + 1e-5
    # A critic that puts all its mass on the positives reaches the ceiling exactly.
    sharp = 1e4 * jnp.eye(2 * batch)[infonce.positives(batch)]
    assert float(infonce.mi_estimate(infonce.info_nce(sharp), batch)) == pytest.approx(infonce.ceiling(batch), abs=1e-5)
    # Negative control: without the positive in the denominator the same sharp critic blows through the ceiling.
    assert float(infonce.ceiling(batch) - _without_positive(sharp)) > infonce.ceiling(batch) + 100.0


def test_identical_views_reach_the_ceiling_and_independent_views_zero(key):
    batch = 128
    x = jax.random.normal(key, (batch, 32))
    near = infonce.mi_estimate(infonce.nt_xent(x, x, temperature=0.02), batch)
    assert float(near) >= infonce.ceiling(batch) - 0.02
    # The ceiling is log(2B - 1), not log B: identical views exceed log B (the B - 1-negative form's bound).
    assert float(near) > math.log(batch) + 0.6
    # Negative control: an uninformative (constant) critic gives exactly zero.
    assert float(infonce.mi_estimate(infonce.info_nce(jnp.zeros((2 * batch, 2 * batch))), batch)) == pytest.approx(0.0,
                                                                                                             abs=1e-5)


def test_correlated_gaussians_match_closed_form_mi(key):
    batch, dim, rho = 256, 2, 0.8
    critic = infonce.gaussian_optimal_critic(rho)

    def estimate(k, correlation):
        x_key, noise_key = jax.random.split(k)
        x = jax.random.normal(x_key, (batch, dim))
        y = correlation * x + jnp.sqrt(1 - correlation ** 2) * jax.random.normal(noise_key, (batch, dim))
        return infonce.mi_estimate(infonce.info_nce(infonce.pairwise_scores(critic, x, y)), batch)

    keys = jax.random.split(key, 8)
    values = jax.jit(jax.vmap(jax.vmap(estimate, in_axes=(None, 0)), in_axes=(0, None)))(keys, jnp.array([rho, 0.0]))
    truth = infonce.gaussian_mi(rho, dim)  # 1.02 nats, well under log(511) = 6.24
    assert abs(float(values[:, 0].mean()) - truth) < 0.1
    # Negative control: the same critic on independent samples estimates ~0 (no shared information), far from it.
    assert float(values[:, 1].mean()) < 0.15
    # The loss composes with grad (a learned critic is trained through it): the scale of the optimal critic is a
    # stationary point of the expected loss, so the gradient there is small against the loss itself.
    x = jax.random.normal(key, (batch, dim))
    y = rho * x + math.sqrt(1 - rho ** 2) * jax.random.normal(jax.random.fold_in(key, 1), (batch, dim))
    scores = infonce.pairwise_scores(critic, x, y)
    assert math.isfinite(float(jax.grad(lambda s: infonce.info_nce(s * scores))(1.0)))


def test_dead_chunk_leaves_views_identical_and_its_estimate_at_the_ceiling(key):
    gen = gen_lib.make()
    batch = 64
    anchor_key, fresh_key = jax.random.split(key)
    data = {"z": gen_lib.sample_latents(anchor_key, batch), "fresh": gen_lib.sample_latents(fresh_key, batch)}

    @jax.jit
    def estimates(masks):
        def one(mask):
            x, x_view = views.view_pair(gen, data, mask)
            # A fixed critic: cosine of raw pixels, sharp temperature.
            return (infonce.mi_estimate(infonce.nt_xent(x, x_view, 0.01), batch),
                    jnp.max(jnp.abs(x - x_view)))

        return jax.vmap(one)(masks)

    masks = jnp.stack([gen_lib.chunk_mask([i]) for i in range(len(gen_lib.CHUNKS))] + [gen_lib.chunk_mask([])])
    mi, change = estimates(masks)
    dead, identical = gen_lib.NAMES.index("dead"), len(gen_lib.CHUNKS)
    assert float(change[dead]) < 2e-3 and float(change[identical]) < 1e-5  # dead: 1e-4 x a projection
    assert float(mi[dead]) == pytest.approx(float(mi[identical]), abs=1e-3)
    assert float(mi[dead]) >= infonce.ceiling(batch) - 0.05
    # Negative control: resampling the semantic chunk changes the class template and lowers the estimate.
    assert float(mi[gen_lib.NAMES.index("semantic")]) < float(mi[dead]) - 0.5
    assert float(change[gen_lib.NAMES.index("semantic")]) > 0.1


def test_generator_and_views_validate_their_inputs(key):
    gen = gen_lib.make()
    z = gen_lib.sample_latents(key, 4)
    fresh = gen_lib.sample_latents(jax.random.fold_in(key, 1), 4)
    mask = gen_lib.chunk_mask([1, 3])
    mixed = gen_lib.resample(z, fresh, mask)
    assert np.array_equal(np.asarray(mixed)[:, mask == 0], np.asarray(z)[:, mask == 0])
    assert np.array_equal(np.asarray(mixed)[:, mask == 1], np.asarray(fresh)[:, mask == 1])
    assert gen_lib.labels(z).shape == (4,) and float(jnp.max(jnp.abs(z))) <= gen_lib.TRUNCATION
    with pytest.raises(ValueError, match="chunk index"):
        gen_lib.chunk_mask([7])
    with pytest.raises(ValueError, match="coordinates"):
        gen_lib.render(gen, z[:, :10])
    with pytest.raises(ValueError, match=r"\[2B, 2B\]"):
        infonce.info_nce(jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        infonce.ceiling(1)
    method = views.make_critic(views.CriticConfig(hidden=(8, 4)))
    with pytest.raises(ValueError, match="mask"):
        method.loss(method.init(key, {}), {"z": z, "fresh": fresh}, key, jnp.array(0))
