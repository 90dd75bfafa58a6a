"""The latent fractional-SDE video model: a Method with the ELBO terms, gradients everywhere, causal prediction."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gvlab.data import balls
from gvlab.models import video_sde
from gvlab.types import Method

CFG = video_sde.Config(size=6, num_frames=5, cond_frames=3, steps_per_frame=2, num_terms=3, features=3,
                       encoder_hidden=(8,), decoder_hidden=(8,), control_hidden=(8,))
STEP = jnp.zeros((), jnp.int32)


def _frames(key, num=2):
    return balls.sample(key, num, CFG.num_frames, 0.3, size=CFG.size, margin=1.5)["frames"]


def test_loss_is_the_negative_elbo_per_frame_and_gradients_reach_every_parameter(key):
    method = video_sde.make(CFG)
    assert isinstance(method, Method)
    batch = {"frames": _frames(key)}
    init = method.init(key, batch)
    np.testing.assert_allclose(jax.jit(method.loss)(init, batch, key, STEP)[1]["fbm/hurst"], 0.5, rtol=1e-6)
    # Perturbed parameters: the control's zero-initialised output layer would block its other gradients.
    leaves, treedef = jax.tree.flatten(init)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    params = jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])

    @jax.jit
    def run(params):
        (loss, terms), grads = jax.value_and_grad(method.loss, has_aux=True)(params, batch, key, STEP)
        return loss, terms, grads

    loss, terms, grads = run(params)
    model = video_sde.make_model(CFG)
    log_lik, path_kl, x0_kl = jax.vmap(lambda f, k: model.elbo(params, f, k))(batch["frames"],
                                                                               jax.random.split(key, 2))
    np.testing.assert_allclose(loss, -np.mean(log_lik - path_kl - x0_kl) / CFG.num_frames, rtol=1e-5)
    np.testing.assert_allclose(terms["elbo/elbo"], -CFG.num_frames * loss, rtol=1e-5)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(np.asarray(g) != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_prediction_reads_only_the_conditioning_frames_and_scores_the_rest(key):
    model = video_sde.make_model(CFG)
    params = model.init(key)
    frames = _frames(key)
    changed = frames.at[:, CFG.cond_frames:].set(1.0 - frames[:, CFG.cond_frames:])
    predict = jax.jit(model.predict)
    a, b = predict(params, frames[0], key), predict(params, changed[0], key)
    assert a.shape == frames[0].shape
    np.testing.assert_array_equal(a, b)  # frames after cond_frames are never read
    c = predict(params, frames[0].at[0].set(1.0), key)
    assert not np.allclose(a, c)  # the conditioning frames are
    scores = jax.jit(lambda p, f, k: video_sde.prediction_scores(p, f, k, cfg=CFG, num_samples=3))(params, frames, key)
    assert scores["first_prediction"].shape == frames[0].shape
    # The predictive mean is closer to the truth than the samples are on average (Jensen), never farther.
    assert float(scores["mean_mse"]) <= float(scores["sample_mse"]) + 1e-7
    # A changed future changes the score but not the prediction.
    other = jax.jit(lambda p, f, k: video_sde.prediction_scores(p, f, k, cfg=CFG, num_samples=3))(params, changed, key)
    np.testing.assert_array_equal(other["first_prediction"], scores["first_prediction"])
    assert float(other["mean_mse"]) != float(scores["mean_mse"])


def test_brownian_kind_has_half_and_no_ou_terms(key):
    cfg = dataclasses.replace(CFG, kind="brownian")
    method = video_sde.make(cfg)
    batch = {"frames": _frames(key)}
    params = method.init(key, batch)
    _, terms = jax.jit(method.loss)(params, batch, key, STEP)
    assert float(terms["fbm/hurst"]) == 0.5
    assert float(jax.grad(lambda p: method.loss(p, batch, key, STEP)[0])(params)["sde"]["hurst_logit"]) == 0.0
    assert video_sde.make_model(cfg).sde.coefficients(params["sde"]).gammas.shape == (1,)
