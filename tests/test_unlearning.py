"""`gvlab.unlearning`: forget sets, NegGrad+, the LAF losses and step, and the membership-inference attack, each
against an exact value or a constructed case, with a negative control."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.errors import ConfigError
from gvlab.models import vae as vae_lib
from gvlab.train import init_state
from gvlab.unlearning import classifier as clf
from gvlab.unlearning import evaluate as ev
from gvlab.unlearning import forget, laf

LABELS = np.repeat(np.arange(5), [7, 3, 5, 9, 6])  # 30 examples, classes of unequal size
MODEL_CFG = clf.Config(hidden=(6,), embed_dim=4, num_classes=5)
LAF_CFG = laf.Config(latent_dim=2, vae_hidden=(3,), lr_ue=0.05, lr_ra=0.05)


def test_class_and_random_forget_sets_are_exact():
    np.testing.assert_array_equal(forget.class_forget_mask(LABELS, 3), LABELS == 3)
    with pytest.raises(ConfigError):  # negative control: a class with no example
        forget.class_forget_mask(LABELS, 7)
    mask = forget.random_forget_mask(30, 0.1, seed=4)
    assert mask.sum() == 3 and mask.dtype == bool
    np.testing.assert_array_equal(mask, forget.random_forget_mask(30, 0.1, seed=4))
    assert not np.array_equal(mask, forget.random_forget_mask(30, 0.1, seed=5))
    sub = forget.subset_mask(LABELS != 3, 0.5, seed=0)
    assert sub.sum() == round(0.5 * 21) and not np.any(sub & (LABELS == 3))
    with pytest.raises(ConfigError):
        forget.random_forget_mask(30, 0.01, seed=0)  # rounds to nothing


def test_padded_indices_and_paired_batches_draw_only_their_subset():
    masks = np.stack([LABELS == 1, LABELS == 3, np.zeros(30, bool)])
    index, count = forget.padded_indices(masks, 30)
    np.testing.assert_array_equal(count, [3, 9, 0])
    for m in range(2):
        np.testing.assert_array_equal(index[m, : count[m]], np.flatnonzero(masks[m]))
    x = np.arange(30, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    arrays = forget.member_arrays(x, LABELS, masks[:2])
    source = forget.paired_batches(arrays, batch_size=64)
    one = jax.tree.map(lambda a: a[1], arrays)  # member 1 forgets class 3
    batch = source.batch(one, jax.random.key(0), jnp.asarray(5))
    assert np.all(np.asarray(batch["y_f"]) == 3) and not np.any(np.asarray(batch["y_r"]) == 3)
    np.testing.assert_array_equal(np.asarray(batch["x_f"])[:, 0], np.asarray(batch["x_f"])[:, 1])
    assert set(np.asarray(batch["x_f"])[:, 0].astype(int)) == set(np.flatnonzero(LABELS == 3))  # all 9 drawn
    remain = forget.remaining_batches(arrays, batch_size=64).batch(one, jax.random.key(1), jnp.asarray(0))
    assert set(remain) == {"x", "y"} and not np.any(np.asarray(remain["y"]) == 3)


def _toy_batch(key):
    kr, kf = jax.random.split(key)
    return {"x_r": jax.random.normal(kr, (8, 3)), "y_r": jnp.arange(8) % 5,
            "x_f": jax.random.normal(kf, (4, 3)) + 2.0, "y_f": jnp.full((4,), 3)}


def test_neggrad_plus_is_the_weighted_difference_of_cross_entropies(key):
    model = clf.make_classifier(MODEL_CFG)
    batch = _toy_batch(key)
    params = model.init(key, batch)

    @jax.jit
    def measure(params):
        def ce(x, y):
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(model.logits(params, x)), y[:, None], 1))

        value, terms = clf.neggrad_plus(model, 0.8).loss(params, batch, key, 0)
        # beta = 1 is fine-tuning: the cross-entropy method on D_r.
        plain, _ = clf.cross_entropy(model).loss(params, {"x": batch["x_r"], "y": batch["y_r"]}, key, 0)
        args = {"beta": jnp.asarray(1.0), "train_extractor": jnp.asarray(1.0)}
        tuned, _ = clf.neggrad_plus(model, 0.8).loss(params, batch, key, 0, args=args)
        # train_extractor = 0 (LAF+R's head-only repair): no gradient reaches the extractor, the head's is unchanged.
        grad = jax.grad(lambda p, t: clf.neggrad_plus(model, 1.0).loss(
            p, batch, key, 0, args={"beta": jnp.asarray(1.0), "train_extractor": t})[0])
        return (ce(batch["x_r"], batch["y_r"]), ce(batch["x_f"], batch["y_f"]), value, terms, plain, tuned,
                grad(params, jnp.asarray(0.0)), grad(params, jnp.asarray(1.0)))

    ce_r, ce_f, value, terms, plain, tuned, frozen, free = measure(params)
    np.testing.assert_allclose(value, 0.8 * ce_r - 0.2 * ce_f, rtol=1e-6)
    np.testing.assert_allclose(terms["neggrad/ce_forget"], ce_f, rtol=1e-6)
    np.testing.assert_allclose(tuned, plain, rtol=1e-6)
    assert all(np.all(g == 0) for g in jax.tree.leaves(frozen["extractor"]))
    assert any(np.any(g != 0) for g in jax.tree.leaves(free["extractor"]))  # negative control
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), frozen["head"], free["head"])


def test_ue_and_ra_losses_match_their_closed_forms():
    m_r, m_f = jnp.asarray([0.0, 0.0]), jnp.asarray([1.0])
    np.testing.assert_allclose(laf.ue_loss(m_r, m_f), 2.0 - np.exp(0.5), rtol=1e-6)
    a = jnp.asarray([[1.0, 0.0], [2.0, 2.0], [0.0, 3.0]])
    np.testing.assert_allclose(laf.cosine_distance(a, jnp.asarray([[0.0, 5.0], [1.0, 1.0], [0.0, -1.0]])),
                               [1.0, 0.0, 2.0], atol=1e-6)
    # Embeddings equal to the teacher's: d = 0 everywhere, L_RA = -B_r log B_f.
    e_r, e_f = jnp.ones((5, 3)), jnp.arange(12.0).reshape(4, 3) + 1.0
    np.testing.assert_allclose(laf.ra_loss(e_r, e_r, e_f, e_f, 20.0), -5 * np.log(4.0), rtol=1e-6)
    # Pushing the forgotten embeddings away from the teacher lowers the loss; moving the remaining ones raises it.
    assert laf.ra_loss(e_r, e_r, -e_f, e_f, 20.0) < laf.ra_loss(e_r, e_r, e_f, e_f, 20.0)
    assert laf.ra_loss(-e_r, e_r, e_f, e_f, 20.0) > laf.ra_loss(e_r, e_r, e_f, e_f, 20.0)


def test_reconstruction_error_of_a_constant_decoder_is_the_squared_distance(key):
    model = vae_lib.make_model(laf.vae_config(LAF_CFG), (4,))
    params = model.init(key, {"x": jnp.zeros((1, 4))})
    last = max(params["decoder"]["params"])  # the output layer: zero weights, bias b -> decoder mean b for any z
    bias = jnp.asarray([1.0, -2.0, 0.5, 0.0])
    params["decoder"]["params"][last] = {"kernel": jnp.zeros_like(params["decoder"]["params"][last]["kernel"]),
                                         "bias": bias}
    e = jnp.asarray([[0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 0.5, 0.0]])
    np.testing.assert_allclose(laf.reconstruction_error(model, params, e, key), [5.25, 0.0], atol=1e-6)


VAE_STEPS = 3


def _laf_state(key, use_ue=1.0, use_ra=1.0, step=VAE_STEPS):
    model = clf.make_classifier(MODEL_CFG)
    method, tx = laf.laf_method(LAF_CFG, model, MODEL_CFG.embed_dim, VAE_STEPS)
    batch = {**_toy_batch(key), "x_all": jnp.ones((8, 3))}
    params = method.init(key, batch)
    state = init_state(method, tx, key, batch, params=params,
                       args={"use_ue": jnp.asarray(use_ue), "use_ra": jnp.asarray(use_ra)})
    return method, state.replace(step=jnp.asarray(step, jnp.int32)), batch


def _changed(a, b) -> bool:
    return any(np.any(x != y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_the_laf_steps_touch_only_their_part_and_read_no_label(key):
    method, state, batch = _laf_state(key)
    step = jax.jit(method.step)  # one program for both phases: the phase is a function of state.step
    new, metrics = step(state, batch, key)
    # Unlearning phase: the extractor moves; head, VAEs and the teacher (the original extractor) do not.
    for part in ("head", "vae_s", "vae_u"):
        jax.tree.map(np.testing.assert_array_equal, new.params[part], state.params[part])
    jax.tree.map(np.testing.assert_array_equal, new.extra["teacher"], state.params["extractor"])
    assert _changed(new.params["extractor"], state.params["extractor"])
    assert int(new.step) == VAE_STEPS + 1 and np.isfinite(float(metrics["loss"])) and metrics["vae_s/kl"] == 0
    relabelled = {**batch, "y_r": batch["y_r"] * 0, "y_f": batch["y_f"] * 0}  # labels are never read
    jax.tree.map(np.testing.assert_array_equal, step(state, relabelled, key)[0].params, new.params)
    # VAE phase (step < VAE_STEPS): only the two VAEs move.
    early, early_metrics = step(state.replace(step=jnp.asarray(0, jnp.int32)), batch, key)
    for part in ("extractor", "head"):
        jax.tree.map(np.testing.assert_array_equal, early.params[part], state.params[part])
    assert _changed(early.params["vae_s"], state.params["vae_s"]) and early_metrics["laf/ue"] == 0
    # Negative control: both unlearning steps switched off leave the extractor exactly where it was.
    _, off, _ = _laf_state(key, use_ue=0.0, use_ra=0.0)
    jax.tree.map(np.testing.assert_array_equal, step(off, batch, key)[0].params, off.params)


def test_the_membership_attack_separates_separable_data_and_is_at_chance_otherwise(key):
    k = jax.random.split(key, 4)
    shape = (400, 3)
    far = ev.membership_attack(jax.random.normal(k[0], shape) + 3.0, jax.random.normal(k[1], shape) - 3.0,
                               jax.random.normal(k[2], shape) + 3.0, jax.random.normal(k[3], shape) - 3.0)
    assert far["member_rate"] > 0.99 and far["heldout_rate"] < 0.01 and far["attack_accuracy"] > 0.99
    same = ev.membership_attack(*(jax.random.normal(kk, shape) for kk in k))  # members look like non-members
    assert abs(float(same["attack_accuracy"]) - 0.5) < 0.06


def test_accuracy_by_subset():
    logits = jnp.log(jnp.asarray([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]))
    labels = jnp.asarray([0, 1, 1, 1])
    np.testing.assert_allclose(ev.class_accuracies(logits, labels, 2), [1.0, 2 / 3], rtol=1e-6)
    assert np.isnan(ev.masked_accuracy(logits, labels, jnp.zeros(4, bool)))
    np.testing.assert_allclose(ev.sorted_softmax(logits), [[0.1, 0.9], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]],
                               rtol=1e-6)


def test_unlearning_metrics_on_a_classifier_with_known_predictions():
    # logits = x: training rows 0-9 are predicted right, rows 10-14 wrong; test rows right except row 0.
    fake = clf.Classifier(init=None, embed=None, head=None, logits=lambda params, x: params["scale"] * x)
    y_train, y_test = np.arange(15) % 3, np.arange(12) % 3
    predicted = np.where(np.arange(15) < 10, y_train, (y_train + 1) % 3)
    x_train = np.eye(3, dtype=np.float32)[predicted]
    x_test = np.eye(3, dtype=np.float32)[np.where(np.arange(12) == 0, 1, y_test)]
    data = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    forget_mask = np.arange(15) >= 9  # D_f: rows 9-14, one right and five wrong
    inputs = {"params": {"scale": jnp.asarray(4.0)}, "forget_mask": forget_mask, "forget_class": jnp.asarray(0),
              "mia_members": jnp.arange(4)}
    out = jax.jit(lambda i: ev.unlearning_metrics(i, data, None, classifier=fake, mia_steps=3))(inputs)
    np.testing.assert_allclose(out["train_remain"], 1.0)
    np.testing.assert_allclose(out["train_forget"], 1 / 6, rtol=1e-6)
    np.testing.assert_allclose(out["test_forget"], 3 / 4, rtol=1e-6)  # class 0: rows 0, 3, 6, 9; row 0 wrong
    np.testing.assert_allclose(out["test_remain"], 1.0)
    np.testing.assert_allclose(out["test"], 11 / 12, rtol=1e-6)
    assert 0.0 <= float(out["mia_forget"]) <= 1.0
