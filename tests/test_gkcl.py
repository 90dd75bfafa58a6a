"""Generative kernel continual learning (`gvlab.continual`): KRR closed form, SupCon, metrics, generated supports."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.continual import gkcl, kernels, metrics, tasks
from gvlab.errors import ConfigError


def _problem(key, n=12, m=5, d=4, c=3):
    support_key, label_key, query_key = jax.random.split(key, 3)
    support = jax.random.normal(support_key, (n, d))
    labels = jax.nn.one_hot(jax.random.randint(label_key, (n,), 0, c), c)
    return support, labels, jax.random.normal(query_key, (m, d))


@pytest.mark.parametrize("kernel_name", ["linear", "rbf"])
def test_krr_weights_solve_the_regularised_system(key, kernel_name):
    """Oracle: alpha = (K + lambda I)^{-1} Y from a float64 linear solve; negative controls: the same check rejects
    another lambda and the solve without the ridge."""
    support, labels, _ = _problem(key)
    gram = kernels.kernel(kernel_name)(support, support)
    lam = 0.3
    alpha = np.asarray(kernels.krr_weights(gram, labels, jnp.asarray(lam)))
    gram64, labels64 = np.asarray(gram, np.float64), np.asarray(labels, np.float64)
    exact = np.linalg.solve(gram64 + lam * np.eye(len(gram64)), labels64)
    np.testing.assert_allclose(alpha, exact, rtol=1e-4, atol=1e-4)
    wrong_lambda = np.linalg.solve(gram64 + 1.0 * np.eye(len(gram64)), labels64)
    assert np.max(np.abs(alpha - wrong_lambda)) > 1e-2
    forgot_ridge = np.linalg.lstsq(gram64, labels64, rcond=None)[0]  # lambda left out of the system
    assert np.max(np.abs(alpha - forgot_ridge)) > 1e-2


def test_linear_krr_equals_primal_ridge_regression(key):
    """Oracle (push-through identity): with a linear kernel, gamma K_qs (K + lambda I)^{-1} Y + beta equals the
    primal ridge solution gamma Q (S^T S + lambda I)^{-1} S^T Y + beta; negative control: lambda = |raw| (no 0.01
    floor) on a raw value of 0 gives a different answer."""
    support, labels, query = _problem(key, n=10, d=3)
    raw, gamma, beta = jnp.asarray(0.5), jnp.asarray(2.0), jnp.asarray(-0.25)
    logits = kernels.krr_logits(kernels.linear_kernel, support, labels, query, raw, gamma, beta)
    s, y, q = (np.asarray(a, np.float64) for a in (support, labels, query))
    lam = 0.5 + kernels.MIN_REGULARISER
    primal = 2.0 * q @ np.linalg.solve(s.T @ s + lam * np.eye(3), s.T @ y) - 0.25
    np.testing.assert_allclose(np.asarray(logits), primal, rtol=1e-4, atol=1e-4)
    tiny = kernels.krr_logits(kernels.linear_kernel, support, labels, query, jnp.asarray(0.0), gamma, beta)
    no_floor = 2.0 * q @ np.linalg.solve(s.T @ s + 1e-6 * np.eye(3), s.T @ y) - 0.25
    assert np.max(np.abs(np.asarray(tiny) - no_floor)) > 1e-3


def test_krr_gradients_reach_lambda_gamma_beta(key):
    support, labels, query = _problem(key)

    def loss(theta):
        out = kernels.krr_logits(kernels.linear_kernel, support, labels, query, *theta)
        return jnp.sum(jax.nn.log_softmax(out)[:, 0])

    grads = jax.grad(loss)((jnp.asarray(0.2), jnp.asarray(1.5), jnp.asarray(0.1)))
    assert all(np.isfinite(g) for g in grads) and abs(float(grads[0])) > 0 and abs(float(grads[1])) > 0


def test_supervised_contrastive_loss_hand_example():
    """Oracle: z = (1,0), (1,0), (0,1), labels (0, 0, 1), tau = 1. Anchors 1 and 2 have one positive each with
    log-ratio 1 - log(e + 1); anchor 3 has none and is left out: L = log(1 + e) - 1. Negative control: the same
    check rejects swapped labels (0, 1, 0), whose positives are the orthogonal pair: anchor 1 gives log(1 + e), anchor 3
    log 2 (its two denominators are both e^0), so L = (log(1 + e) + log 2) / 2."""
    z = jnp.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    expected = math.log(1 + math.e) - 1
    value = float(gkcl.supervised_contrastive_loss(z, jnp.asarray([0, 0, 1]), 1.0))
    assert value == pytest.approx(expected, rel=1e-5)
    swapped = float(gkcl.supervised_contrastive_loss(z, jnp.asarray([0, 1, 0]), 1.0))
    assert swapped == pytest.approx((math.log(1 + math.e) + math.log(2)) / 2, rel=1e-5)
    assert abs(swapped - expected) > 0.5
    # scale invariance: embeddings are normalised first
    assert float(gkcl.supervised_contrastive_loss(3.0 * z, jnp.asarray([0, 0, 1]), 1.0)) == pytest.approx(expected,
                                                                                                          rel=1e-5)


def test_metrics_on_a_known_accuracy_matrix():
    """Forgetting gives negative BWT, positive backward transfer a positive one; the running average is exact."""
    forgetting = np.array([[0.9, 0.0, 0.0], [0.6, 0.8, 0.0], [0.5, 0.7, 0.9]])
    assert float(metrics.average_accuracy(forgetting)) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert float(metrics.backward_transfer(forgetting)) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    improving = np.array([[0.6, 0.0], [0.8, 0.9]])
    assert float(metrics.backward_transfer(improving)) == pytest.approx(0.2, abs=1e-6)
    np.testing.assert_allclose(metrics.accuracy_after_each_task(forgetting), [0.9, 0.7, 0.7], rtol=1e-6)
    stacked = np.stack([forgetting, forgetting[::-1, ::-1]])  # leading seed axis broadcasts
    assert metrics.average_accuracy(stacked).shape == (2,)
    assert metrics.accuracy_after_each_task(stacked).shape == (2, 3)


def test_generated_support_sets_have_the_right_shapes_and_classes(key):
    """20 images per class, class-major labels, pixel means in [0, 1]; the condition one-hot encodes (task, class)."""
    cfg = gkcl.Config(hidden=(16,), feature_dim=8, support_per_class=20)
    model = gkcl.make_model(cfg, "gkcl", num_tasks=3, num_classes=4)
    params = model.init(key)
    x, labels = model.generate_support(params["generator"], jax.random.fold_in(key, 1), jnp.asarray(2))
    assert x.shape == (80, 64) and labels.shape == (80,)
    np.testing.assert_array_equal(np.asarray(labels), np.repeat(np.arange(4), 20))
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    c = np.asarray(model.condition(jnp.asarray([2]), jnp.asarray([3])))
    np.testing.assert_array_equal(c, [[0, 0, 1, 0, 0, 0, 1]])
    # different classes decode through different conditions: the supports are not all the same image
    assert float(jnp.max(jnp.abs(x[:20].mean(0) - x[20:40].mean(0)))) > 0


def test_task_streams_and_coreset(key):
    split = tasks.split_digits(train_per_class=10)
    assert split.train.shape == (5, 2, 10, 64) and split.test_x.shape == (5, 300, 64)
    assert int(split.test_mask.sum()) == 300  # every test image belongs to exactly one split task
    perm = tasks.permuted_digits(key, num_tasks=3, train_per_class=10)
    np.testing.assert_array_equal(np.asarray(perm.train[0]), np.asarray(split.train[:, :, :, :].reshape(10, 10, 64)))
    assert not np.array_equal(np.asarray(perm.train[1]), np.asarray(perm.train[0]))
    np.testing.assert_allclose(np.sort(np.asarray(perm.train[1]), -1), np.sort(np.asarray(perm.train[0]), -1))
    core = gkcl.select_coreset(key, perm.train[0], 2)
    assert core.shape == (20, 64)
    for c in range(10):  # each stored image is an image of its class
        members = np.asarray(perm.train[0, c])
        assert all(any(np.array_equal(row, m) for m in members) for row in np.asarray(core[2 * c: 2 * c + 2]))
    with pytest.raises(ConfigError):
        tasks.split_digits(train_per_class=1000)
    with pytest.raises(ConfigError):
        gkcl.make_model(gkcl.Config(), "replay", 2, 2)


def test_joint_method_equals_separate_variants(key):
    """The summed loss over variants and seeds has the gradient of each variant on its own (disjoint params)."""
    cfg = gkcl.Config(hidden=(8,), feature_dim=4, support_per_class=3)
    stream = tasks.split_digits(train_per_class=6)
    models = {v: gkcl.make_model(cfg, v, 5, 2) for v in ("kcl", "finetune")}
    params = {v: jax.vmap(m.init)(jax.random.split(key, 2)) for v, m in models.items()}
    source = gkcl.task_source(stream.train[1], 1, params, 8, 3)
    batch = source.batch(source.arrays, jax.random.fold_in(key, 7), jnp.asarray(0))
    joint = jax.grad(lambda p: gkcl.make(models).loss(p, batch, key, 0)[0])(params)
    alone = jax.grad(lambda p: gkcl.make({"kcl": models["kcl"]}).loss(
        {"kcl": p}, {**batch, "previous": {"kcl": batch["previous"]["kcl"]}}, key, 0)[0])(params["kcl"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), joint["kcl"], alone)
    # only the current task's head and ridge receive gradient
    assert float(jnp.abs(joint["kcl"]["krr"]["gamma"][:, 0]).max()) == 0.0
    assert float(jnp.abs(joint["kcl"]["krr"]["gamma"][:, 1]).max()) > 0.0
