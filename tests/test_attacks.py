"""gvlab.attacks against closed forms: on a linear binary classifier f(x) = w.x + b the worst case of any loss that
rises with the margin -s f(x) (s = +-1) is known, x - eps s sign(w) in the L-infinity ball (margin gain
eps ||w||_1) and x - eps s w / ||w||_2 in the L2 ball (gain eps ||w||_2). FGSM is checked against the step computed
by hand, PGD against the closed form, BPDA against rounding; each has a negative control."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.attacks import bpda, fgsm, per_example_loss, pgd

B, D, H, C = 6, 5, 8, 3


def _linear(key):
    """w, b, clean inputs [B, D], signs s [B] (+-1) and the matching integer labels (s + 1) / 2."""
    w_key, x_key, s_key = jax.random.split(key, 3)
    w = jax.random.normal(w_key, (D,))
    x = jax.random.normal(x_key, (B, D))
    s = jnp.where(jax.random.bernoulli(s_key, 0.5, (B,)), 1.0, -1.0)
    return w, jnp.asarray(0.3), x, s, ((s + 1) / 2).astype(jnp.int32)


def _two_class_logits(w, b):
    # Logits (0, f): softmax cross-entropy with label (s + 1) / 2 is the logistic loss log(1 + exp(-s f)).
    return lambda x: jnp.stack([jnp.zeros(x.shape[0]), x @ w + b], axis=-1)


def _margin(pred, s):
    return -s * pred  # the margin loss of a scalar score: linear in x, so its gain is exactly eps ||w||_*


def _mlp(key):
    """A random two-layer tanh classifier [B, D] -> logits [B, C] and clean data in [0, 1]."""
    k1, k2, kx, ky = jax.random.split(key, 4)
    w1, w2 = 2.0 * jax.random.normal(k1, (D, H)), jax.random.normal(k2, (H, C))
    x = jax.random.uniform(kx, (B, D))
    y = jax.random.randint(ky, (B,), 0, C)
    return (lambda x: jnp.tanh(x @ w1 - 1.0) @ w2), x, y


def _size(delta, norm):
    return jnp.max(jnp.abs(delta), axis=1) if norm == "linf" else jnp.linalg.norm(delta, axis=1)


def _worst_direction(w, s, norm):
    unit = jnp.sign(w) if norm == "linf" else w / jnp.linalg.norm(w)
    return -s[:, None] * unit[None, :]


def test_fgsm_is_the_sign_gradient_step_computed_by_hand(key, strict_dtypes):
    w, b, x, s, labels = _linear(key)
    eps = 0.1
    # d/dx log(1 + exp(-s f)) = -s sigmoid(-s f) w, whose sign is -s sign(w).
    by_hand = x - eps * s[:, None] * jnp.sign(w)[None, :]
    x_adv = fgsm(_two_class_logits(w, b), x, labels, None, eps)
    np.testing.assert_allclose(x_adv, by_hand, atol=1e-6)
    # L2 (fast gradient method): the normalised gradient, -s w / ||w||.
    x_adv2 = fgsm(_two_class_logits(w, b), x, labels, None, eps, norm="l2")
    np.testing.assert_allclose(x_adv2, x + eps * _worst_direction(w, s, "l2"), atol=1e-6)
    # Negative control: the step without the sign is a different point, so the comparison above can fail.
    g = jax.grad(lambda v: jnp.sum(per_example_loss(_two_class_logits(w, b), v, labels)))(x)
    assert not np.allclose(x + eps * g, x_adv, atol=1e-3)
    # A nonlinear model and bounds: x' = clip(x + eps sign(grad), 0, 1) with the gradient from jax.grad.
    predict, xm, ym = _mlp(key)
    gm = jax.grad(lambda v: jnp.sum(per_example_loss(predict, v, ym)))(xm)
    np.testing.assert_allclose(fgsm(predict, xm, ym, None, 0.2, bounds=(0.0, 1.0)),
                               jnp.clip(xm + 0.2 * jnp.sign(gm), 0.0, 1.0), atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_reaches_the_closed_form_worst_case_of_a_linear_classifier(key, norm, strict_dtypes):
    w, b, x, s, labels = _linear(key)
    eps, dual = 0.25, (jnp.sum(jnp.abs(w)) if norm == "linf" else jnp.linalg.norm(w))
    worst = x + eps * _worst_direction(w, s, norm)
    attack_key = jax.random.fold_in(key, 1)
    # From a random start an L2 step of eps/2 shrinks the off-target part by about 2/3 per step: 30 steps suffice.

    # The margin loss (a callable): its gain is exactly eps ||w||_* at the worst case.
    score = lambda v: v @ w + b
    x_adv = pgd(score, x, s, attack_key, eps, eps / 2, 30, norm=norm, loss=_margin)
    np.testing.assert_allclose(x_adv, worst, atol=2e-4)
    gain = per_example_loss(score, x_adv, s, _margin) - per_example_loss(score, x, s, _margin)
    np.testing.assert_allclose(gain, eps * dual * jnp.ones(B), rtol=1e-4)
    assert jnp.all(_size(x_adv - x, norm) <= eps * (1 + 1e-5))

    # The logistic loss through the built-in cross-entropy, with restarts: same point; at least as strong as FGSM.
    logits = _two_class_logits(w, b)
    x_adv = pgd(logits, x, labels, attack_key, eps, eps / 2, 30, norm=norm, restarts=2)
    np.testing.assert_allclose(x_adv, worst, atol=2e-4)
    assert jnp.all(_size(x_adv - x, norm) <= eps * (1 + 1e-5))
    fgsm_loss = per_example_loss(logits, fgsm(logits, x, labels, None, eps, norm=norm), labels)
    assert jnp.all(per_example_loss(logits, x_adv, labels) >= fgsm_loss - 1e-5)

    # Negative control: one short step from x stops well inside the ball, far from the worst case.
    short = pgd(score, x, s, attack_key, eps, eps / 8, 1, norm=norm, random_start=False, loss=_margin)
    assert jnp.min(jnp.max(jnp.abs(short - worst), axis=1)) > 0.5 * eps / (1 if norm == "linf" else np.sqrt(D))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_ball_and_range_and_beats_fgsm_on_a_nonlinear_model(key, norm, strict_dtypes):
    predict, x, y = _mlp(key)
    eps = 0.3 if norm == "linf" else 0.6
    x_adv = pgd(predict, x, y, key, eps, eps / 4, 10, norm=norm, restarts=2, bounds=(0.0, 1.0))
    assert jnp.all(_size(x_adv - x, norm) <= eps * (1 + 1e-5))
    assert jnp.all((x_adv >= 0.0) & (x_adv <= 1.0))
    pgd_loss = per_example_loss(predict, x_adv, y)
    fgsm_loss = per_example_loss(predict, fgsm(predict, x, y, None, eps, norm=norm, bounds=(0.0, 1.0)), y)
    clean_loss = per_example_loss(predict, x, y)
    assert jnp.mean(pgd_loss) >= jnp.mean(fgsm_loss) > jnp.mean(clean_loss)


def test_eps_zero_leaves_x_unchanged(key):
    predict, x, y = _mlp(key)
    for norm in ("linf", "l2"):
        np.testing.assert_array_equal(fgsm(predict, x, y, None, 0.0, norm=norm), x)
        np.testing.assert_array_equal(pgd(predict, x, y, key, 0.0, 0.1, 3, norm=norm, restarts=2), x)
    # Negative control: a positive eps does move x.
    assert not np.allclose(pgd(predict, x, y, key, 0.1, 0.05, 3), x)


def test_vmapped_epsilons_equal_a_python_loop(key):
    predict, x, y = _mlp(key)
    epsilons = jnp.array([0.0, 0.05, 0.1, 0.3])

    def attack(eps):
        return pgd(predict, x, y, key, eps, eps / 4, 5, restarts=2, bounds=(0.0, 1.0))

    vmapped = jax.jit(jax.vmap(attack))(epsilons)
    looped = jax.jit(attack)
    for i, eps in enumerate(epsilons):
        np.testing.assert_allclose(vmapped[i], looped(eps), atol=1e-6)
        assert jnp.all(jnp.max(jnp.abs(vmapped[i] - x), axis=1) <= eps + 1e-6)
    assert not np.allclose(vmapped[1], vmapped[3])  # negative control: epsilons give different attacks


def test_bpda_is_the_filter_forward_and_the_identity_backward(key):
    x = jax.random.uniform(key, (B, D), minval=-2.0, maxval=2.0)
    c = jnp.arange(1.0, 1.0 + D)[None, :] * jnp.ones((B, 1))
    straight = bpda(jnp.round)
    np.testing.assert_array_equal(straight(x), jnp.round(x))
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(c * straight(v)))(x), c)
    # Negative control: the plain gradient through rounding is zero, which is what BPDA works around.
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(c * jnp.round(v)))(x), jnp.zeros_like(x))
    # Another backward approximation: g(x) = 2x gives twice the cotangent.
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(c * bpda(jnp.round, lambda u: 2 * u)(v)))(x), 2 * c)
    with pytest.raises(ValueError, match="shape"):
        bpda(lambda v: v[:, :2])(x)


def test_pgd_through_a_rounding_filter_needs_bpda(key):
    """Gray-box PGD on classifier(round(x)) sees a zero gradient and leaves x where it is (obfuscated gradients);
    through `bpda(round)` the white-box attack raises the loss."""
    w, b, x, s, labels = _linear(key)
    logits = _two_class_logits(w, b)
    masked = lambda v: logits(jnp.round(v))
    straight = lambda v: logits(bpda(jnp.round)(v))
    masked_adv = pgd(masked, x, labels, key, 1.0, 0.25, 8, random_start=False)
    np.testing.assert_array_equal(masked_adv, x)
    bpda_adv = pgd(straight, x, labels, key, 1.0, 0.25, 8, random_start=False)
    assert jnp.all(per_example_loss(straight, bpda_adv, labels) > per_example_loss(straight, x, labels))


def test_restarts_never_decrease_the_attained_loss(key):
    predict, x, y = _mlp(key)
    one = per_example_loss(predict, pgd(predict, x, y, key, 0.3, 0.05, 2, restarts=1), y)
    many = per_example_loss(predict, pgd(predict, x, y, key, 0.3, 0.05, 2, restarts=6), y)
    assert jnp.all(many >= one - 1e-6)  # restart 0 is the same attack in both (fold_in(key, 0))
    assert jnp.any(many > one + 1e-4)  # and the other starts find something better: restarts do something


def test_bad_input_gives_clear_errors(key):
    predict, x, y = _mlp(key)
    with pytest.raises(ValueError, match="unknown norm"):
        pgd(predict, x, y, key, 0.1, 0.1, 2, norm="l1")
    with pytest.raises(ValueError, match="unknown norm"):
        fgsm(predict, x, y, None, 0.1, norm="Linf")
    with pytest.raises(ValueError, match="unknown loss"):
        pgd(predict, x, y, key, 0.1, 0.1, 2, loss="hinge")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        fgsm(predict, x, y, None, -0.1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        pgd(predict, x, y, key, jnp.asarray(-0.1), 0.1, 2)
    with pytest.raises(ValueError, match="num_steps"):
        pgd(predict, x, y, key, 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="restarts"):
        pgd(predict, x, y, key, 0.1, 0.1, 2, restarts=0)
    with pytest.raises(ValueError, match="random_start"):
        pgd(predict, x, y, key, 0.1, 0.1, 2, restarts=2, random_start=False)
    with pytest.raises(ValueError, match="one value per example"):
        fgsm(predict, x, y, None, 0.1, loss=lambda p, t: jnp.mean(p))
    with pytest.raises(ValueError, match="lo <= hi"):
        fgsm(predict, x, y, None, 0.1, bounds=(1.0, 0.0))
    with pytest.raises(TypeError, match="floating"):
        fgsm(predict, jnp.ones((B, D), jnp.int32), y, None, 0.1)
