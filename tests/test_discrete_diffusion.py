"""Oracles of the discrete diffusion path (`gvlab.diffusion.discrete`) and the path interface (`gvlab.diffusion.path`).

Dense matrices are the brute force: products of one-step matrices against the closed-form marginals, Bayes' rule
by enumeration against the posterior, and the whole reverse chain enumerated against the bound. Each oracle has a
negative control that the same check rejects.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.diffusion import discrete
from gvlab.diffusion.path import DiffusionPath, GaussianPath
from gvlab.diffusion.schedules import Schedule

PATH = discrete.MaskAndReplace(num_tokens=3, num_steps=6)
TINY = discrete.MaskAndReplace(num_tokens=2, num_steps=3)


def test_transition_matrices_are_stochastic_and_their_products_are_the_closed_form_marginals():
    path = PATH
    product = np.eye(path.num_states)
    for t in range(1, path.num_steps + 1):
        q = np.asarray(path.transition_matrix(t), np.float64)
        assert np.all(q >= 0.0) and np.allclose(q.sum(1), 1.0, atol=1e-6)
        product = product @ q
        closed = np.asarray(path.cumulative_matrix(t), np.float64)
        assert np.allclose(closed.sum(1), 1.0, atol=1e-6) and np.all(closed >= 0.0)
        np.testing.assert_allclose(product, closed, atol=1e-6)
        # the log-space closed form used by the library, row by row
        x0 = jnp.arange(path.num_tokens)[:, None]
        np.testing.assert_allclose(np.exp(path.log_marginal(x0, t)[:, 0]), closed[: path.num_tokens], atol=1e-6)
    # Negative controls: a product that skips a step is not the closed form; an impossible schedule is refused.
    skipped = np.linalg.multi_dot([np.asarray(path.transition_matrix(t)) for t in (1, 2, 4)])
    assert np.abs(skipped - np.asarray(path.cumulative_matrix(4))).max() > 1e-2
    with pytest.raises(ValueError, match="stochastic"):
        discrete.MaskAndReplace(num_tokens=3, num_steps=4, alpha_start=0.9, gamma_start=0.5)


def test_posterior_and_reverse_model_match_bayes_rule_by_enumeration():
    path, k, s = PATH, PATH.num_tokens, PATH.num_states
    x0 = jnp.asarray([[i] for i in range(k) for _ in range(s)])  # every (x0, x_t) pair, N = 1
    x_t = jnp.asarray([[j] for _ in range(k) for j in range(s)])
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(k * s, 1, k)), jnp.float32)
    for t in range(1, path.num_steps + 1):
        step, bar_prev, bar = (np.asarray(m, np.float64) for m in (
            path.transition_matrix(t), path.cumulative_matrix(t - 1), path.cumulative_matrix(t)))
        # q(x_{t-1} = j | x_t, x0) = Q_t[j, x_t] barQ_{t-1}[x0, j] / barQ_t[x0, x_t]
        brute = np.stack([step[:, b] * bar_prev[a] / bar[a, b] for a, b in zip(np.asarray(x0[:, 0]),
                                                                                 np.asarray(x_t[:, 0]))])
        got = np.exp(np.asarray(path.posterior(x_t, x0, jnp.full((k * s,), t)))[:, 0])
        np.testing.assert_allclose(got, brute, atol=2e-5)
        # the x0-parameterised reverse model is the mixture of posteriors weighted by p_theta(x0 | x_t)
        probs = np.asarray(jax.nn.softmax(logits[:, 0]), np.float64)
        post = np.stack([[step[:, b] * bar_prev[a] / bar[a, b] for a in range(k)] for b in np.asarray(x_t[:, 0])])
        mixture = np.einsum("na,naj->nj", probs, post)
        np.testing.assert_allclose(np.exp(path.reverse(x_t, logits, t)[:, 0]), mixture, atol=2e-5)
        # Negative control: Bayes' rule with the cumulative matrix of step t (not t - 1) is another distribution.
        wrong = np.stack([step[:, b] * bar[a] for a, b in zip(np.asarray(x0[:, 0]), np.asarray(x_t[:, 0]))])
        wrong /= wrong.sum(1, keepdims=True)
        if t > 1:
            assert np.abs(wrong - got).max() > 1e-2


def _enumerated_bound(path, logits_table, x0, log_prior):
    """Bound by enumerating x_t ~ q(x_t | x0) exactly (N = 1): L_T + sum_t E_q L_{t-1}."""
    states = jnp.arange(path.num_states)[:, None]  # every x_t, [S, 1]
    total = float(discrete.prior_term(path, x0[None], log_prior)[0])
    for t in range(1, path.num_steps + 1):
        q_t = np.exp(np.asarray(path.log_marginal(x0, t))[0])
        terms = path.loss(jnp.broadcast_to(x0, (path.num_states, 1)), states, t, logits_table[t][:, None])
        total += float(np.sum(q_t * np.asarray(terms)))
    return total


def _model_log_likelihood(path, logits_table, log_prior):
    """log p_model(x0) for every x0 by running the reverse chain's dense matrices (N = 1)."""
    states = jnp.arange(path.num_states)[:, None]
    marginal = np.exp(np.asarray(log_prior, np.float64))
    for t in range(path.num_steps, 0, -1):
        reverse = np.exp(np.asarray(path.reverse(states, logits_table[t][:, None], t), np.float64))[:, 0]
        marginal = marginal @ reverse  # [x_t] @ [x_t, x_{t-1}]
    return np.log(marginal[: path.num_tokens])


def test_bound_equals_minus_log_likelihood_for_the_true_reverse_and_bounds_it_otherwise():
    path, k = TINY, TINY.num_tokens
    pi = np.asarray([0.7, 0.3])  # data law of the single token
    log_prior = jnp.log(jnp.asarray(pi @ np.asarray(path.cumulative_matrix(path.num_steps))[:k], jnp.float32))
    # True reverse: p_theta(x0 | x_t) = q(x0 | x_t) ∝ pi(x0) q(x_t | x0), for every x_t (table [T + 1, S, K]).
    true_table = np.zeros((path.num_steps + 1, path.num_states, k), np.float32)
    for t in range(1, path.num_steps + 1):
        true_table[t] = np.log(pi[:, None] * np.asarray(path.cumulative_matrix(t))[:k]).T
    for x0 in range(k):
        bound = _enumerated_bound(path, jnp.asarray(true_table), jnp.asarray([x0]), log_prior)
        assert bound == pytest.approx(-np.log(pi[x0]), abs=1e-4)
    # Any other model: the bound is >= -log p_model(x0) (enumerated chain), strictly for a random one.
    random_table = jnp.asarray(np.random.default_rng(1).normal(size=true_table.shape), jnp.float32)
    log_lik = _model_log_likelihood(path, random_table, log_prior)
    gaps = [_enumerated_bound(path, random_table, jnp.asarray([x0]), log_prior) + log_lik[x0] for x0 in range(k)]
    assert min(gaps) > 1e-3
    # Negative control: the true model's likelihood is pi itself, so the chain enumeration is not vacuous.
    np.testing.assert_allclose(np.exp(_model_log_likelihood(path, jnp.asarray(true_table), log_prior)), pi,
                               atol=1e-4)


def test_contrastive_terms_sampling_and_negatives(key):
    path = discrete.MaskAndReplace(num_tokens=4, num_steps=5)
    x0 = jnp.asarray(np.random.default_rng(2).integers(0, 4, size=(3, 16)))
    logits = jnp.asarray(np.random.default_rng(3).normal(size=(3, 16, 4)), jnp.float32)
    t = jnp.asarray([1, 3, 5])

    @jax.jit
    def run(x0, logits, key):
        x_t = path.marginal(key, x0, t)
        own = discrete.contrastive_term(path, x_t, t, logits, x0[None], "step")
        vb = path.loss(x0, x_t, t, logits)
        sample = discrete.contrastive_term(path, x_t, t, logits, x0[None], "sample")
        nll = discrete.auxiliary_term(path, x0, t, logits) / (2.0 - (t - 1.0) / 5)
        shuffled = discrete.shuffle_chunks(key, x0, num_chunks=4)
        grad = jax.grad(lambda l: jnp.sum(discrete.contrastive_term(path, x_t, t, l, shuffled[None])))(logits)
        draws = discrete.ancestral_sample(path, lambda x, s: jnp.broadcast_to(logits[:1], x.shape + (4,)), key,
                                          (2, 16))
        return own, vb, sample, nll, shuffled, grad, draws

    own, vb, sample, nll, shuffled, grad, draws = run(x0, logits, key)
    weight = 1.0 + (t - 1.0) / 5
    np.testing.assert_allclose(own, weight * vb, rtol=1e-5)  # step-wise with the positive as negative = its bound
    np.testing.assert_allclose(sample, weight * nll, rtol=1e-5)  # sample-wise = -log p_theta(x0 | x_t)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    chunks = lambda x: [sorted(map(tuple, seq)) for seq in np.asarray(x).reshape(3, 4, 4).tolist()]  # noqa: E731
    assert chunks(shuffled) == chunks(x0) and not (np.asarray(shuffled) == np.asarray(x0)).all()
    assert draws.shape == (2, 16) and draws.dtype == jnp.int32 and int(draws.max()) < 4  # no [MASK] left
    again = run(x0, logits, key)[-1]
    other = run(x0, logits, jax.random.fold_in(key, 1))[-1]
    assert (np.asarray(again) == np.asarray(draws)).all() and not (np.asarray(other) == np.asarray(draws)).all()
    # A model sure of x0* samples x0* (oracle); inter negatives never share the label (negative control below).
    target = x0[0]
    sure = discrete.ancestral_sample(path, lambda x, s: 30.0 * jax.nn.one_hot(jnp.broadcast_to(target, x.shape), 4),
                                     key, (2, 16))
    assert (np.asarray(sure) == np.asarray(target)[None]).all()
    labels, pool = jnp.asarray([0, 1, 2, 3]), jnp.asarray([0, 1, 2, 0, 1, 2, 3])
    idx = np.asarray(discrete.other_class_negatives(key, labels, pool, num=200, num_classes=4))
    drawn = np.asarray(pool)[idx]
    assert (drawn != np.asarray(labels)[None]).all() and len(np.unique(idx)) == 7  # other classes, every item
    with pytest.raises(ValueError, match="mode"):
        discrete.contrastive_term(path, x0, t, logits, x0[None], "pixel")


def test_gaussian_schedule_satisfies_the_path_interface_through_its_adapter(key):
    path = GaussianPath(Schedule("vp_linear"), num_steps=8)
    assert isinstance(path, DiffusionPath) and isinstance(PATH, DiffusionPath)
    # The posterior integrates back to the marginal: E_{x_t}[mean] = alpha_s x0 and var + coef^2 sigma_t^2 = sigma_s^2.
    x0 = jnp.ones((1, 2))
    for t in (1, 4, 8):
        alpha_t, sigma_t = path._coefficients(t)
        alpha_s, sigma_s = path._coefficients(t - 1)
        mean_xt, mean_x0, var = (float(c.ravel()[0]) for c in path._posterior_coefficients(t, x0))
        assert mean_xt * float(alpha_t) + mean_x0 == pytest.approx(float(alpha_s), rel=1e-5)
        assert var + mean_xt**2 * float(sigma_t) ** 2 == pytest.approx(float(sigma_s) ** 2, rel=1e-4)
        assert float(path.loss(x0, x0, t, x0)[0]) == 0.0 and float(path.loss(x0, x0, t, 0.0 * x0)[0]) > 0.0
    assert path.marginal(key, x0, jnp.asarray([3])).shape == (1, 2)
    assert not isinstance(object(), DiffusionPath)  # negative control
