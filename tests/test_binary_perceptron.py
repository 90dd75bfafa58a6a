"""Oracles of `gvlab.models.binary_perceptron`, each with a negative control that the same check rejects."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gvlab.errors import ConfigError
from gvlab.models import binary_perceptron as bp

OVERLAPS = (-0.5, 0.0, 0.3, 0.8)


def test_generalization_error_matches_monte_carlo(key):
    """arccos(R)/pi equals the test error of sign-perceptrons with overlap R; (1 - R)/2 is rejected."""
    teacher_key, student_key, input_key = jax.random.split(key, 3)
    n, num_test = 501, 20_000  # odd N: no ties in w.x
    teacher = bp.random_teacher(teacher_key, n)
    students = jax.vmap(bp.overlapping_teacher, (None, None, 0))(student_key, teacher, jnp.asarray(OVERLAPS))
    overlap = bp.teacher_overlap(students, teacher[None])
    measured = np.asarray(bp.test_error(students, teacher[None], bp.examples(input_key, num_test, n)))
    tolerance = 0.015  # ~4 binomial standard deviations at eps = 1/3, plus the O(1/N) finite-size effect

    def agrees(formula):
        return bool(np.all(np.abs(measured - np.asarray(formula(overlap))) < tolerance))

    assert agrees(bp.generalization_error), (measured, bp.generalization_error(overlap))
    assert not agrees(lambda r: (1.0 - r) / 2.0)  # negative control: the wrong formula


def test_requested_teacher_overlap_is_exact(key):
    """Generated teachers have the requested overlap to within 1/N; an independent teacher does not."""
    first_key, second_key, other_key = jax.random.split(key, 3)
    n = 500
    teacher = bp.random_teacher(first_key, n)
    requested = jnp.asarray((-1.0, -0.5, 0.0, 0.3, 0.5, 1.0))
    second = jax.vmap(bp.overlapping_teacher, (None, None, 0))(second_key, teacher, requested)
    assert set(np.unique(np.asarray(second))) == {-1.0, 1.0}
    measured = jnp.mean(second * teacher[None], axis=-1)
    np.testing.assert_allclose(measured, requested, atol=1.0 / n)
    independent = bp.random_teacher(other_key, n)  # negative control: overlap ~ N(0, 1/N), not 0.5
    assert abs(float(jnp.mean(independent * teacher)) - 0.5) > 1.0 / n
    with pytest.raises(ConfigError, match="overlap"):
        bp.overlapping_teacher(second_key, teacher, 1.5)


def enumerated_kl(field, prior_field, beta):
    """KL(q_h || q_h') by summing over all 2^N binary weight vectors."""
    configs = jnp.asarray(list(itertools.product((-1.0, 1.0), repeat=field.shape[-1])))

    def log_q(h):
        return jnp.sum(beta * h[None] * configs - jnp.log(2.0 * jnp.cosh(beta * h))[None], axis=-1)

    return jnp.sum(jnp.exp(log_q(field)) * (log_q(field) - log_q(prior_field)))


def test_binary_kl_matches_enumeration(key):
    """Closed-form KL between factorised Ising distributions = enumeration (N = 5); the reversed KL is rejected."""
    field_key, prior_key = jax.random.split(key)
    beta = 1.3
    field = 1.5 * jax.random.normal(field_key, (5,))
    prior = 1.5 * jax.random.normal(prior_key, (5,))
    exact = enumerated_kl(field, prior, beta)
    np.testing.assert_allclose(bp.binary_kl(field, prior, beta), exact, rtol=1e-5)
    assert not np.isclose(bp.binary_kl(prior, field, beta), exact, rtol=1e-2)  # negative control: wrong direction
    # Its field gradient is beta^2 (h - h') v (Li & Huang), the EWC-like form.
    _, v = bp.moments(field, beta)
    np.testing.assert_allclose(jax.grad(bp.binary_kl)(field, prior, beta), beta**2 * (field - prior) * v, rtol=1e-4)


def test_kl_term_vanishes_at_the_prior(key):
    """The method's KL term is zero when the posterior equals the prior, positive once it moves."""
    x_key, field_key, noise_key = jax.random.split(key, 3)
    p, n = 8, 16
    prior = jax.random.normal(field_key, (n,))
    batch = bp.task_data(bp.examples(x_key, p, n), jnp.ones((p,)), prior)
    loss = jax.jit(bp.make(bp.Config()).loss)  # one program for both checks
    step = jnp.zeros((), jnp.int32)
    assert float(loss({"field": prior}, batch, noise_key, step)[1]["vcl/kl"]) == 0.0
    moved = {"field": prior + 0.1 * jax.random.normal(noise_key, (n,))}
    assert float(loss(moved, batch, noise_key, step)[1]["vcl/kl"]) > 1e-3


def test_args_weight_the_kl_and_select_the_first_examples(key):
    """`args`: kl_weight scales the KL term (0: plain continuation) and num_examples = k equals training on the
    first k examples alone; masking the last k instead is rejected."""
    x_key, y_key, field_key, prior_key = jax.random.split(key, 4)
    p, n, k = 12, 10, 5
    x = bp.examples(x_key, p, n)
    y = jnp.where(jax.random.bernoulli(y_key, 0.5, (p,)), 1.0, -1.0)
    prior = jax.random.normal(prior_key, (n,))
    params = {"field": prior + jax.random.normal(field_key, (n,))}
    loss = bp.make(bp.Config()).loss
    step = jnp.zeros((), jnp.int32)
    full, terms = loss(params, bp.task_data(x, y, prior), key, step)
    assert float(full) == pytest.approx(float(terms["vcl/nll"] + terms["vcl/kl"]), rel=1e-6)
    without_kl, terms0 = loss(params, bp.task_data(x, y, prior), key, step, args={"kl_weight": jnp.float32(0.0)})
    assert float(terms0["vcl/kl"]) == 0.0 and float(without_kl) == pytest.approx(float(terms["vcl/nll"]), rel=1e-6)
    args = {"kl_weight": jnp.float32(1.0), "num_examples": jnp.int32(k)}
    first = jax.grad(lambda q: loss(q, bp.task_data(x, y, prior), key, step, args=args)[0])(params)["field"]
    alone = jax.grad(lambda q: loss(q, bp.task_data(x[:k], y[:k], prior), key, step)[0])(params)["field"]
    np.testing.assert_allclose(first, alone, rtol=1e-5, atol=1e-6)
    last = jax.grad(lambda q: loss(q, bp.task_data(x[-k:], y[-k:], prior), key, step)[0])(params)["field"]
    assert not np.allclose(first, last, rtol=1e-3)  # negative control


def test_loss_reports_the_generalisation_error_of_monitored_teachers(key):
    """`error/<name>` is arccos(R)/pi of the clipped student against each teacher in the batch."""
    teacher_key, x_key = jax.random.split(key)
    n = 200
    teacher = bp.random_teacher(teacher_key, n)
    student = bp.overlapping_teacher(teacher_key, teacher, 0.5)
    batch = bp.task_data(bp.examples(x_key, 4, n), jnp.ones((4,)), jnp.zeros((n,)),
                         {"same": teacher, "half": student})
    terms = bp.make(bp.Config()).loss({"field": student}, batch, key, jnp.zeros((), jnp.int32))[1]
    assert float(terms["error/half"]) == 0.0
    assert float(terms["error/same"]) == pytest.approx(1.0 / 3.0, abs=1e-6)  # R = 0.5 exactly


def test_gaussian_field_likelihood_matches_sampled_weights(key):
    """P(y = sign(w.x)) under q_h equals Phi(m.x / sqrt(sum v)) (central limit, N = 400); using sum m^2 as the
    variance (a plausible slip) is rejected."""
    field_key, x_key, w_key = jax.random.split(key, 3)
    n, beta = 400, 1.0
    field = 0.8 * jax.random.normal(field_key, (n,)) + 0.05  # a mean m.x of order sqrt(sum v)
    x = bp.examples(x_key, 1, n)
    m, v = bp.moments(field, beta)
    w = jnp.where(jax.random.uniform(w_key, (20_000, n)) < ((1.0 + m) / 2.0)[None], 1.0, -1.0)  # samples of q_h
    sampled = float(jnp.mean(w @ x[0] > 0))
    predicted = float(jnp.exp(bp.log_likelihood(field, x, jnp.ones((1,)), beta))[0])
    assert abs(sampled - predicted) < 0.02, (sampled, predicted)
    wrong = float(jax.scipy.stats.norm.cdf(m @ x[0] / jnp.sqrt(jnp.sum(m**2))))
    assert abs(sampled - wrong) > 0.02, (sampled, wrong)


def test_metaplasticity_damps_only_updates_towards_a_sign_flip():
    """Updates that shrink |W| are scaled by 1 - tanh^2(m W); others pass; strength 0 is the identity."""
    weights = jnp.asarray([1.0, 1.0, -2.0, -2.0])
    updates = jnp.asarray([-0.1, 0.1, 0.1, -0.1])  # towards zero, away, towards zero, away
    damped, _ = bp.metaplasticity(1.3).update(updates, optax.EmptyState(), weights)
    factor = 1.0 - np.tanh(1.3 * np.asarray(weights)) ** 2
    np.testing.assert_allclose(damped, [-0.1 * factor[0], 0.1, 0.1 * factor[2], -0.1], rtol=1e-4)
    same, _ = bp.metaplasticity(0.0).update(updates, optax.EmptyState(), weights)
    np.testing.assert_array_equal(same, updates)


def test_binary_ste_passes_the_gradient_of_the_binary_weights_straight_through(key):
    """The metaplastic baseline's gradient w.r.t. hidden weights W is the probit loss's gradient w.r.t. the binary
    weights b at b = sign(W) (straight-through); differentiating through sign itself (zero) is rejected."""
    x_key, y_key, w_key = jax.random.split(key, 3)
    k, p, n = 2, 6, 8
    x = bp.examples(x_key, p, n)
    y = jnp.where(jax.random.bernoulli(y_key, 0.5, (k, p)), 1.0, -1.0)
    hidden = jax.random.normal(w_key, (k, n))
    cfg = bp.Config(objective="binary_ste")

    def nll(w):  # k independent runs, each on its own labels
        one = lambda w1, y1: bp.objective(cfg, w1, bp.task_data(x, y1, jnp.zeros((n,))), jnp.ones((p,)))[0]  # noqa: E731
        return jnp.sum(jax.vmap(one)(w, y))

    ste = jax.jit(jax.grad(nll))(hidden)

    def probit(binary):
        margin = y * (binary @ x.T) / jnp.sqrt(n)
        return -jnp.sum(jax.scipy.special.log_ndtr(margin))

    np.testing.assert_allclose(ste, jax.jit(jax.grad(probit))(bp.sign(hidden)), rtol=1e-5)
    through_sign = jax.jit(jax.grad(lambda w: probit(jnp.sign(w))))(hidden)  # negative control
    assert not np.allclose(through_sign, ste, atol=1e-3)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="objective"):
        bp.Config(objective="sgd")
    with pytest.raises(ConfigError, match="prior"):
        bp.task_data(jnp.ones((2, 4, 3)), jnp.ones((2, 4)), jnp.ones((2, 5)))
    with pytest.raises(ConfigError, match="teachers/old"):
        bp.task_data(jnp.ones((4, 3)), jnp.ones((4,)), jnp.ones((3,)), {"old": jnp.ones((4,))})


def test_members_of_one_fit_equal_single_fits(key):
    """Two members (own task data, own kl_weight and num_examples) in one fit, warm-started from given fields,
    give each member's single fit."""
    from gvlab import DataSource, Spec, TrainConfig
    from gvlab.train import fit

    x_key, y_key, prior_key = jax.random.split(key, 3)
    m, p, n = 2, 12, 16
    x = jax.vmap(lambda k: bp.examples(k, p, n))(jax.random.split(x_key, m))
    y = jnp.where(jax.random.bernoulli(y_key, 0.5, (m, p)), 1.0, -1.0)
    prior = jax.random.normal(prior_key, (m, n))
    args = {"kl_weight": jnp.asarray([1.0, 0.0]), "num_examples": jnp.asarray([p, p // 2])}
    train = TrainConfig(steps=5, batch_size=1, lr=0.05, log_every=5)
    method = bp.make(bp.Config())

    def spec(data, spec_args, per_member):
        return Spec(method, optax.adam(train.lr), DataSource(data, lambda a, k, s: a, per_member=per_member),
                    args=spec_args)

    both = fit(spec(bp.task_data(x, y, prior), args, True), train, progress=False, init={"field": prior})
    for i in range(m):
        one = fit(spec(bp.task_data(x[i:i + 1], y[i:i + 1], prior[i:i + 1]), jax.tree.map(lambda v: v[i:i + 1], args),
                       True), train, progress=False, init={"field": prior[i]})
        np.testing.assert_allclose(both.params_of(i)["field"], one.params_of(0)["field"], rtol=1e-6, atol=1e-7)
    assert not np.allclose(both.params_of(0)["field"], both.params_of(1)["field"])  # the members differ


def test_likelihood_beta_tempers_only_the_likelihood(key):
    """args["likelihood_beta"] = b: loss = b * nll + kl_weight * KL (the replica analysis's Gibbs measure prior x
    prod H^b), gradient included, and `vcl/nll` stays the untempered nll; tempering the KL instead is rejected."""
    x_key, y_key, field_key, prior_key = jax.random.split(key, 4)
    p, n, b = 12, 10, 20.0
    x = bp.examples(x_key, p, n)
    y = jnp.where(jax.random.bernoulli(y_key, 0.5, (p,)), 1.0, -1.0)
    prior = jax.random.normal(prior_key, (n,))
    params = {"field": prior + jax.random.normal(field_key, (n,))}
    batch, step = bp.task_data(x, y, prior), jnp.zeros((), jnp.int32)
    loss = bp.make(bp.Config()).loss
    _, plain = loss(params, batch, key, step)
    tempered, terms = loss(params, batch, key, step, args={"likelihood_beta": jnp.float32(b)})
    assert float(terms["vcl/nll"]) == pytest.approx(float(plain["vcl/nll"]), rel=1e-6)
    assert float(tempered) == pytest.approx(float(b * plain["vcl/nll"] + plain["vcl/kl"]), rel=1e-5)
    grad = jax.grad(lambda q: loss(q, batch, key, step, args={"likelihood_beta": jnp.float32(b)})[0])(params)["field"]
    nll_grad = jax.grad(lambda h: -jnp.sum(bp.log_likelihood(h, x, y, 1.0)))(params["field"])
    kl_grad = jax.grad(bp.binary_kl)(params["field"], prior, 1.0)
    np.testing.assert_allclose(grad, b * nll_grad + kl_grad, rtol=1e-4, atol=1e-4)
    assert not np.allclose(grad, nll_grad + b * kl_grad, rtol=1e-2)  # negative control: the KL tempered instead
