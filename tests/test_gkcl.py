"""Generative kernel continual learning (`gvlab.continual`): KRR closed form, SupCon, metrics, generated supports."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gvlab import Spec, TrainConfig, fit
from gvlab.continual import gkcl, kernels, metrics, tasks
from gvlab.errors import ConfigError
from gvlab.evals import evaluate_runs
from gvlab.train.parallel import data_mesh


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


SMALL = gkcl.Config(hidden=(8,), feature_dim=4, support_per_class=3,
                    generator=gkcl.vae.Config(latent_dim=2, hidden=(8,), likelihood="bernoulli", prior="learned"))
TASK_TRAIN = TrainConfig(steps=3, batch_size=8, lr=1e-2, num_seeds=2, log_every=3)


def _task_spec(model, stream, task, args=None):
    source = gkcl.task_source(stream.train[task], task, TASK_TRAIN.batch_size, SMALL.support_per_class)
    return Spec(gkcl.make(model), optax.adam(TASK_TRAIN.lr), source, args=args)


def _fit(spec, workdir=None, init=None, members="vmap"):
    train = dataclasses.replace(TASK_TRAIN, members=members)
    return fit(spec, train, workdir, init=init, mesh=data_mesh(1), progress=False)


def test_only_the_current_task_ridge_receives_gradient(key):
    stream = tasks.split_digits(train_per_class=6)
    model = gkcl.make_model(SMALL, "kcl", 5, 2)
    params = model.init(key)
    source = gkcl.task_source(stream.train[1], 1, 8, 3)
    batch = source.batch(source.arrays, jax.random.fold_in(key, 7), jnp.asarray(0))
    grads = jax.grad(lambda p: gkcl.make(model).loss(p, batch, key, 0)[0])(params)
    assert float(jnp.abs(grads["krr"]["gamma"][0])) == 0.0
    assert float(jnp.abs(grads["krr"]["gamma"][1])) > 0.0


def test_warm_start_freezes_the_previous_generator_in_extra(tmp_path):
    """Task 1 starts from task 0's fit and replays from task 0's generator, held unchanged in `state.extra`;
    a rerun resumes the checkpoint, extra included. Negative control: the trained generator moved away from it."""
    stream = tasks.split_digits(train_per_class=6)
    model = gkcl.make_model(SMALL, "gkcl", 5, 2)
    first = _fit(_task_spec(model, stream, 0))
    second = _fit(_task_spec(model, stream, 1), tmp_path, init=first)
    assert first.origin == "scratch" and second.origin == "warm start"
    previous = first.params["generator"]
    for x, y in zip(jax.tree.leaves(previous), jax.tree.leaves(second.state.extra["previous"]), strict=True):
        np.testing.assert_array_equal(x, y)
    moved = max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(previous),
                                                             jax.tree.leaves(second.params["generator"])))
    assert moved > 0
    resumed = _fit(_task_spec(model, stream, 1), tmp_path, init=first)
    assert resumed.origin == "checkpoint"
    for x, y in zip(jax.tree.leaves(second.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)


def test_supcon_members_equal_separate_variant_fits():
    """GKCL and its ablation as members of one fit (`Spec.args` SupCon weights) give the runs of the two variants'
    own fits, up to float rounding. The KRR offset beta is left out: it shifts every logit alike, so its gradient
    is zero up to rounding, and Adam scales that rounding noise up to steps of size lr."""
    stream = tasks.split_digits(train_per_class=6)
    model = gkcl.make_model(SMALL, "gkcl", 5, 2)
    joint = _fit(_task_spec(model, stream, 0, args={"supcon_weight": np.asarray([0.1, 0.0], np.float32)}))
    assert joint.members == (0, 0, 1, 1)

    def compared(params):
        return {**params, "krr": {k: v for k, v in params["krr"].items() if k != "beta"}}

    for m, variant in enumerate(("gkcl", "gkcl_no_supcon")):
        alone = _fit(_task_spec(gkcl.make_model(SMALL, variant, 5, 2), stream, 0))
        for x, y in zip(jax.tree.leaves(compared(joint.member_params(m))), jax.tree.leaves(compared(alone.params)),
                        strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    # Negative control: the SupCon weight changed the run.
    a, b = (jax.tree.leaves(joint.member_params(m)["generator"])[0] for m in (0, 1))
    assert not np.allclose(a, b)


def test_task_accuracies_evaluator_uses_the_coreset_of_each_run(key):
    stream = tasks.split_digits(train_per_class=6)
    model = gkcl.make_model(SMALL, "kcl", 5, 2)
    params = jax.vmap(model.init)(jax.random.split(key, 2))
    coresets = gkcl.select_coresets(key, stream.train, 2, 2)
    assert coresets.shape == (2, 5, 4, 64)
    assert not np.array_equal(np.asarray(coresets[0]), np.asarray(coresets[1]))  # each run its own draw
    data = {"test_x": stream.test_x, "test_y": stream.test_y, "test_mask": stream.test_mask}
    evaluator = functools.partial(gkcl.task_accuracies, model=model)
    scores = evaluate_runs(evaluator, {"params": params, "coreset": coresets}, data, key)
    assert scores["accuracy"].shape == (2, 5)
    assert np.all((scores["accuracy"] >= 0) & (scores["accuracy"] <= 1))
    one = gkcl.task_accuracies({"params": jax.tree.map(lambda x: x[1], params), "coreset": coresets[1]}, data, key,
                               model=model)
    np.testing.assert_allclose(scores["accuracy"][1], one["accuracy"], rtol=1e-6)
