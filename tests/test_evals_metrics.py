"""`gvlab.evals.metrics` against hand values and numpy/scipy, and the evaluation layer: vmap over runs equals a loop,
"sequential" equals vmap, and `Run.evaluate`'s workdir cache (a cached result neither traces nor executes)."""

from __future__ import annotations

import doctest
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import gvlab.diagnostics
import gvlab.diffusion.metrics
import gvlab.inverse.lensless
import gvlab.inverse.metrics
from gvlab.evals import evaluate_runs
from gvlab.evals import metrics as M
from gvlab.run import Run


def _logits(probs) -> jax.Array:
    return jnp.log(jnp.asarray(probs, jnp.float32))


def _reference_ece(logits: np.ndarray, labels: np.ndarray, num_bins: int) -> float:
    """Guo et al. 2017, Eq. 3, written as the paper states it: a loop over the bins ((m-1)/M, m/M]."""
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - special.logsumexp(logits, axis=-1, keepdims=True))
    conf, pred = probs.max(-1), probs.argmax(-1)
    ece = 0.0
    for m in range(1, num_bins + 1):
        in_bin = (conf > (m - 1) / num_bins) & (conf <= m / num_bins)
        if in_bin.any():
            ece += in_bin.mean() * abs(np.mean(pred[in_bin] == labels[in_bin]) - conf[in_bin].mean())
    return ece


def test_docstring_examples():
    failures, tried = doctest.testmod(M, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def test_shared_metrics_are_the_library_functions_not_copies():
    assert M.psnr is gvlab.inverse.metrics.psnr
    assert M.ssim is gvlab.inverse.lensless.ssim
    assert M.sliced_wasserstein is gvlab.diffusion.metrics.sliced_wasserstein
    assert M.active_units is gvlab.diagnostics.active_units


# --------------------------------------------------------------------------------------------------- classifiers


def _calibrated_case():
    """Three bins, each with accuracy equal to its confidence: 0.9 (9 of 10 right), 0.75 (3 of 4), 0.5 (1 of 2)."""
    probs = [[0.9, 0.1, 0.0 + 1e-9]] * 10 + [[0.25, 0.75, 1e-9]] * 4 + [[0.5, 0.3, 0.2]] * 2
    labels = [0] * 9 + [1] + [1] * 3 + [0] + [0, 2]
    return _logits(probs), jnp.asarray(labels)


def test_ece_is_zero_for_a_calibrated_case_and_the_hand_value_for_a_miscalibrated_one():
    logits, labels = _calibrated_case()
    assert float(M.expected_calibration_error(logits, labels)) == pytest.approx(0.0, abs=1e-6)
    # Negative control: the same confidences with every label right are under-confident, by hand
    # (10/16)(1 - 0.9) + (4/16)(1 - 0.75) + (2/16)(1 - 0.5) = 0.0625 + 0.0625 + 0.0625.
    right = jnp.argmax(logits, axis=-1)
    assert float(M.expected_calibration_error(logits, right)) == pytest.approx(0.1875, abs=1e-6)
    # Over-confident: confidence 0.9 throughout, half of the predictions right -> |0.5 - 0.9|.
    logits = _logits([[0.9, 0.1]] * 4)
    assert float(M.expected_calibration_error(logits, jnp.array([0, 0, 1, 1]))) == pytest.approx(0.4, abs=1e-6)


def test_ece_matches_the_per_bin_loop_on_random_logits(key):
    logits = 2.0 * jax.random.normal(key, (200, 5))
    labels = jax.random.randint(jax.random.fold_in(key, 1), (200,), 0, 5)
    for num_bins in (1, 10, 15):
        got = float(M.expected_calibration_error(logits, labels, num_bins))
        assert got == pytest.approx(_reference_ece(np.asarray(logits), np.asarray(labels), num_bins), abs=1e-5)
    # One bin: ECE = |accuracy - mean confidence| exactly.
    one_bin = abs(float(M.accuracy(logits, labels)) - float(jnp.mean(jnp.max(jax.nn.softmax(logits), axis=-1))))
    assert float(M.expected_calibration_error(logits, labels, 1)) == pytest.approx(one_bin, abs=1e-6)


def test_nll_and_accuracy_against_numpy(key):
    logits = 3.0 * jax.random.normal(key, (64, 4))
    labels = jax.random.randint(jax.random.fold_in(key, 1), (64,), 0, 4)
    x, y = np.asarray(logits, np.float64), np.asarray(labels)
    expected_nll = np.mean(special.logsumexp(x, axis=-1) - x[np.arange(64), y])
    assert float(M.nll(logits, labels)) == pytest.approx(expected_nll, rel=1e-5)
    assert float(M.accuracy(logits, labels)) == pytest.approx(np.mean(x.argmax(-1) == y))
    # Negative control: the labels the logits predict give accuracy 1 and a smaller NLL.
    predicted = jnp.argmax(logits, axis=-1)
    assert float(M.accuracy(logits, predicted)) == 1.0
    assert float(M.nll(logits, predicted)) < expected_nll


def test_classification_metrics_jit_vmap_and_grad(key):
    logits_RxNxC = jax.random.normal(key, (3, 16, 4))
    labels = jax.random.randint(jax.random.fold_in(key, 1), (16,), 0, 4)
    batched = jax.jit(jax.vmap(M.classification_metrics, in_axes=(0, None)))(logits_RxNxC, labels)
    for r in range(3):
        single = M.classification_metrics(logits_RxNxC[r], labels)
        for name in ("accuracy", "nll", "ece"):
            np.testing.assert_allclose(batched[name][r], single[name], rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda z: M.nll(z, labels) + M.expected_calibration_error(z, labels))(logits_RxNxC[0])
    assert bool(jnp.all(jnp.isfinite(grads))) and float(jnp.max(jnp.abs(grads))) > 0


# ---------------------------------------------------------------------------------------------------- diversity


def test_diversity_of_identical_samples_is_zero_and_of_distinct_samples_the_hand_value(key):
    same = jnp.broadcast_to(jax.random.normal(key, (1, 3, 4, 4)), (5, 3, 4, 4))  # [K, N, H, W]
    assert np.all(np.asarray(M.mean_pairwise_distance(same)) == 0.0)
    # [N, S, H, W]; zero up to the rounding of the mean inside `jnp.std` (kept: it is the experiments' number).
    assert float(M.sample_std(jnp.swapaxes(same, 0, 1))) == pytest.approx(0.0, abs=1e-6)
    # Zero gradient, not NaN, where every distance vanishes.
    grad = jax.grad(lambda s: jnp.sum(M.mean_pairwise_distance(s)))(same)
    assert bool(jnp.all(grad == 0.0))
    # Negative control: two samples differing by 3 in one pixel and 4 in another are 5 apart; the per-pixel
    # std is |a - b| / 2, averaged over the 2 pixels: (1.5 + 2) / 2.
    pair = jnp.array([[0.0, 0.0], [3.0, 4.0]])  # [K=2, D=2]
    assert float(M.mean_pairwise_distance(pair, event_ndim=1)) == pytest.approx(5.0)
    assert float(M.sample_std(pair[None], event_ndim=1)) == pytest.approx(1.75)


def test_diversity_unifies_the_experiments_definitions(key):
    x = jax.random.normal(key, (2, 3, 5, 4, 4))  # [tasks, N, S, H, W]
    # The inverse experiments: FLAIR `mean(std(x, axis=1))` on [N, S, H, W]; RED-Diff's float64 numpy over [..., N,
    # S, H, W] -> [...].
    assert float(M.sample_std(x[0])) == pytest.approx(float(jnp.mean(jnp.std(x[0], axis=1))), rel=1e-6)
    red_diff = np.mean(np.std(np.asarray(x, np.float64), axis=-3), axis=(-3, -2, -1))
    np.testing.assert_allclose(M.sample_std(x), red_diff, rtol=1e-5)
    # std_s^2 = (1 / (2 S^2)) sum_{s,t} (x_s - x_t)^2 per pixel.
    pairs = jnp.mean(jnp.square(x[0][:, :, None] - x[0][:, None]), axis=(1, 2)) / 2.0
    np.testing.assert_allclose(jnp.std(x[0], axis=1), jnp.sqrt(pairs), rtol=1e-5)
    # The CVAE experiment: mean L2 over ordered pairs k != l of [K, N, ...] -> [N].
    samples = jnp.moveaxis(x[0], 1, 0)  # [K=5, N=3, 4, 4]
    flat = np.asarray(samples, np.float64).reshape(5, 3, -1)
    loop = [np.mean([np.linalg.norm(flat[k, n] - flat[m, n]) for k in range(5) for m in range(5) if k != m])
            for n in range(3)]
    np.testing.assert_allclose(M.mean_pairwise_distance(samples), loop, rtol=1e-5)


# ------------------------------------------------------------------------------------------------- ELBO and IWAE


def test_elbo_iwae_against_numpy_and_jensen(key):
    log_w = 2.0 * jax.random.normal(key, (6, 8)) - 5.0  # [N, K]
    out = M.elbo_iwae(log_w)
    w = np.asarray(log_w, np.float64)
    assert float(out["elbo"]) == pytest.approx(w.mean(), rel=1e-6)
    assert float(out["iwae"]) == pytest.approx(np.mean(special.logsumexp(w, axis=1) - np.log(8)), rel=1e-6)
    assert float(out["iwae"]) > float(out["elbo"]) + 0.1  # Jensen, strict for unequal weights
    # Negative control: weights equal across the K draws make the two bounds coincide.
    flat = M.elbo_iwae(jnp.broadcast_to(log_w[:, :1], (6, 8)))
    assert float(flat["iwae"]) == pytest.approx(float(flat["elbo"]), abs=1e-5)


# --------------------------------------------------------------------------------------------------------- probe


def test_probe_accuracy_separable_and_uninformative(key):
    x = jax.random.normal(key, (2, 40, 3))  # [train/test, N, D]
    y = (x[..., 0] > 0).astype(jnp.int32)
    fn = jax.jit(lambda a, b: M.probe_accuracy(a[0], b[0], a[1], b[1], num_classes=2, steps=30))
    assert float(fn(x, y)) == 1.0
    # Negative control: features that carry no label predict the training majority class everywhere.
    constant = jnp.ones_like(x)
    majority = int(jnp.mean(y[0]) > 0.5)
    assert float(fn(constant, y)) == pytest.approx(float(jnp.mean(y[1] == majority)))


# ------------------------------------------------------------------------------------------ the evaluation layer

TRACES: list[int] = []  # one entry per trace of `linear_classifier_eval`
EXECUTIONS: list[int] = []  # one entry per executed run (a host callback inside the program)


def _count_execution(_):
    EXECUTIONS.append(1)


def linear_classifier_eval(params, data, key):
    """A per-run evaluator as experiments write them: module level, `fn(run_params, data, key) -> {metric}`."""
    TRACES.append(1)
    logits = data["x"] @ params["w"] + params["b"][None]
    jax.debug.callback(_count_execution, params["b"])
    return {**M.classification_metrics(logits, data["y"], num_bins=5),
            "noise": jax.random.normal(key, (2,))}  # the key reaches the evaluator


def _runs(key, num_runs: int = 3):
    w_key, b_key, x_key, y_key = jax.random.split(key, 4)
    params = {"w": jax.random.normal(w_key, (num_runs, 3, 4)), "b": jax.random.normal(b_key, (num_runs, 4))}
    data = {"x": jax.random.normal(x_key, (12, 3)), "y": jax.random.randint(y_key, (12,), 0, 4)}
    return params, data


def test_evaluate_runs_vmap_equals_loop_and_sequential(key):
    params, data = _runs(key)
    eval_key = jax.random.key(7)
    vmapped = evaluate_runs(linear_classifier_eval, params, data, eval_key)
    sequential = evaluate_runs(linear_classifier_eval, params, data, eval_key, mode="sequential")
    assert set(vmapped) == {"accuracy", "nll", "ece", "noise"} and vmapped["noise"].shape == (3, 2)
    for r in range(3):
        single = linear_classifier_eval(jax.tree.map(lambda a: a[r], params), data, eval_key)
        for name, value in single.items():
            np.testing.assert_allclose(vmapped[name][r], value, rtol=1e-5, atol=1e-6)
    for name in vmapped:
        np.testing.assert_allclose(sequential[name], vmapped[name], rtol=1e-5, atol=1e-6)
    # Every run sees the same evaluation key, and the runs differ (a test that could not tell them apart fails).
    np.testing.assert_array_equal(vmapped["noise"][0], vmapped["noise"][2])
    assert not np.allclose(vmapped["nll"][0], vmapped["nll"][1])


def test_run_evaluate_cache(tmp_path, key):
    params, data = _runs(key, num_runs=2)  # a shape of its own: the first call traces here
    config = types.SimpleNamespace(train=types.SimpleNamespace(seed=0))

    def evaluate(run, p):
        traces, executions = len(TRACES), len(EXECUTIONS)
        scores = run.evaluate("probe/linear", linear_classifier_eval, p, data)
        return scores, len(TRACES) - traces, len(EXECUTIONS) - executions

    first, traced, executed = evaluate(Run("cache-test", config, "smoke", tmp_path, progress=False), params)
    assert traced == 1 and executed > 0
    assert (tmp_path / "evals" / "probe__linear.npz").exists() and first["nll"].shape == (2,)

    # A second Run on the same workdir (a rerun of a finished experiment): the evaluator neither traces nor runs.
    rerun = Run("cache-test", config, "smoke", tmp_path, progress=False)
    cached, traced, executed = evaluate(rerun, params)
    assert (traced, executed) == (0, 0) and rerun.cache.computed == []
    for name in first:
        np.testing.assert_array_equal(cached[name], first[name])

    # Negative controls: changed parameters recompute (and give other numbers), a damaged cache file recomputes.
    changed = jax.tree.map(lambda a: 2.0 * a, params)
    other, _, executed = evaluate(rerun, changed)
    assert executed > 0 and rerun.cache.computed == ["probe/linear"]
    assert not np.allclose(other["nll"], first["nll"])
    (tmp_path / "evals" / "probe__linear.npz").write_bytes(b"not an npz file")
    repaired, _, executed = evaluate(Run("cache-test", config, "smoke", tmp_path, progress=False), params)
    assert executed > 0
    for name in first:
        np.testing.assert_array_equal(repaired[name], first[name])
