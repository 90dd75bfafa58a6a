"""Synthetic EHR (`gvlab.data.ehr`), VGNN and the bag-of-codes baselines (`gvlab.ehr`), AUPRC and spectra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.data import ehr as ehr_data
from gvlab.data.padded import Padded, pad
from gvlab.ehr import bag, metrics, vgnn

RNG = np.random.default_rng(0)


def numpy_average_precision(scores, labels):
    """scikit-learn's `average_precision_score` formula, re-implemented: thresholds at the distinct scores
    (descending), AP = sum_k (R_k - R_{k-1}) P_k."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(labels)[ends]
    precision, recall = tp / (ends + 1), tp / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def test_average_precision_against_hand_cases_and_the_sklearn_formula():
    ap = jax.jit(metrics.average_precision)
    # hand: positives at ranks 1 and 3 -> (1/2)(1/1) + (1/2)(2/3) = 5/6
    assert np.isclose(ap(jnp.array([0.9, 0.8, 0.7, 0.6]), jnp.array([1, 0, 1, 0])), 5 / 6)
    # a tie is one threshold: {0.9: P 1, R 1/2}, {0.8, 0.8: P 2/3, R 1} -> 1/2 + 1/3
    assert np.isclose(ap(jnp.array([0.9, 0.8, 0.8, 0.1]), jnp.array([1, 0, 1, 0])), 5 / 6)
    assert np.isclose(ap(jnp.array([0.9, 0.8, 0.8, 0.1]), jnp.array([0, 1, 1, 0])), 2 / 3)
    for _ in range(3):
        scores = np.round(RNG.random(60), 1).astype(np.float32)  # many ties
        labels = (RNG.random(60) < 0.3).astype(np.int32)
        np.testing.assert_allclose(ap(jnp.asarray(scores), jnp.asarray(labels)),
                                   numpy_average_precision(scores, labels), rtol=1e-5)
    # negative controls: constant scores give the prevalence, a reversed ranking less, no positive NaN
    labels = jnp.array([1, 0, 0, 1, 0, 0, 0, 0])
    assert np.isclose(ap(jnp.zeros(8), labels), 0.25)
    perfect, reversed_ = ap(labels.astype(jnp.float32), labels), ap(-labels.astype(jnp.float32), labels)
    assert perfect == 1.0 and reversed_ < 0.3
    assert np.isnan(ap(jnp.arange(4.0), jnp.zeros(4, jnp.int32)))


def test_generator_prevalence_and_bayes_posterior_calibration():
    cfg = ehr_data.Config()
    patients = ehr_data.sample(cfg, 20000, seed=1)
    assert patients.codes.values.shape == (20000, cfg.max_codes) and patients.codes.values.dtype == np.int32
    se = np.sqrt(cfg.prevalence * (1 - cfg.prevalence) / 20000)
    assert abs(patients.y.mean() - cfg.prevalence) < 4 * se
    assert abs(patients.p_bayes.mean() - cfg.prevalence) < 4 * se  # tower property: E[P(y | x)] = P(y)

    def miscalibration(p):  # largest |mean(y) - mean(p)| / SE over deciles of p
        bins = np.quantile(p, np.linspace(0, 1, 11)[1:-1])
        worst = 0.0
        for b in range(10):
            chosen = np.digitize(p, bins) == b
            err = np.sqrt(np.mean(p[chosen] * (1 - p[chosen])) / chosen.sum())
            worst = max(worst, abs(patients.y[chosen].mean() - p[chosen].mean()) / err)
        return worst

    assert miscalibration(patients.p_bayes) < 4.0
    # negative control: the posterior of a generator with another documentation rate is visibly miscalibrated
    counts = np.zeros((20000, cfg.num_systems))
    np.add.at(counts, (np.repeat(np.arange(20000), cfg.max_codes), patients.codes.values.reshape(-1)
                       // cfg.codes_per_system), patients.codes.mask.reshape(-1))
    np.testing.assert_allclose(ehr_data.bayes_probability(cfg, counts), patients.p_bayes, rtol=1e-6)
    wrong = ehr_data.bayes_probability(ehr_data.Config(keep=0.35), counts, ehr_data.solve_bias(cfg))
    assert miscalibration(wrong) > 6.0


def _one_by_one(loss_fn, examples):
    return np.mean([loss_fn(Padded(jnp.asarray(x)[None], jnp.ones((1, len(x)), bool)), jnp.asarray(y)[None])
                    for x, y in examples])


def test_padded_batch_losses_equal_the_unpadded_patients_one_by_one():
    cfg, num_codes = vgnn.Config(features=8, pos_weight=0.4), 12
    examples = [(np.array([3, 7], np.int32), 1), (np.array([0, 5, 9, 11], np.int32), 0), (np.array([4], np.int32), 1)]
    batch = pad([x for x, _ in examples], size=6, fill=num_codes - 1)  # a real code id: a leak would show
    y = jnp.array([label for _, label in examples])
    padded = Padded(jnp.asarray(batch.values), jnp.asarray(batch.mask))
    model = vgnn.make_model(cfg, num_codes)
    method = vgnn.make(cfg, num_codes)
    params = method.init(jax.random.key(0), {"codes": padded, "y": y})
    args = {"variational": jnp.float32(1.0), "kl_weight": jnp.float32(1.0)}
    graph_loss = jax.jit(lambda codes, y: vgnn.batch_loss(cfg, model, params,
                                                         {"codes": codes, "y": y}, None, args)[0])
    batched = graph_loss(padded, y)
    np.testing.assert_allclose(batched, _one_by_one(graph_loss, examples), rtol=1e-5)
    assert abs(float(graph_loss(Padded(padded.values, jnp.ones_like(padded.mask)), y)) - float(batched)) > 1e-3
    # the bag-of-codes MLP's loss: same identity and negative control
    mlp = bag.make_mlp((8,), num_codes, pos_weight=0.4)
    mlp_params = mlp.init(jax.random.key(1), {"codes": padded, "y": y})
    mlp_loss = jax.jit(lambda codes, y: mlp.loss(mlp_params, {"codes": codes, "y": y}, None, 0)[0])
    np.testing.assert_allclose(mlp_loss(padded, y), _one_by_one(mlp_loss, examples), rtol=1e-5)
    leaked = mlp_loss(Padded(padded.values, jnp.ones_like(padded.mask)), y)
    assert abs(float(leaked) - float(mlp_loss(padded, y))) > 1e-4

    # training loss: gradients reach every parameter of VGNN, and none reach the variational layer of the graph model
    @jax.jit
    def grads(variational):
        member = {"variational": variational, "kl_weight": variational}
        batch = {"codes": padded, "y": y}
        return jax.grad(lambda p: method.loss(p, batch, jax.random.key(2), 0, args=member)[0])(params)

    for path, g in jax.tree_util.tree_leaves_with_path(grads(jnp.float32(1.0))):
        assert np.all(np.isfinite(g)) and np.any(g != 0), path
    unused = grads(jnp.float32(0.0))["params"]["parameterize"]
    assert all(np.all(g == 0) for g in jax.tree.leaves(unused))


def test_node_kl_singular_values_and_effective_rank():
    mu, log_var = jnp.array([[0.0, 0.0], [1.0, -1.0]]), jnp.array([[0.0, 0.0], [np.log(2.0), 0.0]])
    expected = [0.0, 0.5 * (2.0 - np.log(2.0) - 1 + 1) + 0.5 * 1.0]  # 1/2 sum(sigma^2 - log sigma^2 - 1 + mu^2)
    np.testing.assert_allclose(vgnn.node_kl(mu, log_var), expected, rtol=1e-6)
    nodes = RNG.normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.arange(5)[None] < np.array([[2], [5], [3]])
    rows = np.concatenate([nodes[b, :n] for b, n in enumerate(mask.sum(1))])
    garbage = np.where(mask[..., None], nodes, 1e3)  # padded rows must not count
    np.testing.assert_allclose(metrics.singular_values(jnp.asarray(garbage), jnp.asarray(mask)),
                               np.linalg.svd(rows, compute_uv=False), rtol=1e-4)
    assert not np.allclose(np.linalg.svd(garbage.reshape(-1, 4), compute_uv=False),
                           np.linalg.svd(rows, compute_uv=False), rtol=1e-2)
    np.testing.assert_allclose(metrics.effective_rank(jnp.ones(4)), 4.0, rtol=1e-6)
    np.testing.assert_allclose(metrics.effective_rank(jnp.array([3.0, 0.0, 0.0])), 1.0, rtol=1e-6)


def test_generator_rejects_bad_settings():
    with pytest.raises(ValueError, match="count_system"):
        ehr_data.Config(count_system=9)
    with pytest.raises(ValueError, match="keep"):
        ehr_data.Config(keep=1.0)
