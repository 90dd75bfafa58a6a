"""The VAE method: shapes, gradients reach every parameter, both likelihoods and architectures train."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gvlab import Spec, TrainConfig, fit
from gvlab.data import digits, epoch_batches
from gvlab.losses import iwae_bound
from gvlab.models import vae


@pytest.mark.parametrize("cfg", [
    vae.Config(latent_dim=3, hidden=(16,), likelihood="bernoulli"),
    vae.Config(latent_dim=3, hidden=(8, 16), likelihood="gaussian", architecture="conv"),
])
def test_gradients_reach_every_parameter(cfg, key):
    method = vae.make(cfg, (8, 8))
    batch = {"x": digits.digits("test", "binary" if cfg.likelihood == "bernoulli" else "unit")["x"][:16]}
    params = method.init(key, batch)
    grads = jax.grad(lambda p: method.loss(p, batch, key, jnp.zeros((), jnp.int32))[0])(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(np.asarray(g) != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"
    samples = method.sample(params, key, 5)
    assert samples.shape == (5, 8, 8)


def test_vae_loss_decreases_and_sample_depends_only_on_the_key(key):
    cfg = vae.Config(latent_dim=4, hidden=(32,))
    x = digits.digits("train", "binary")["x"]
    spec = Spec(method=vae.make(cfg, (8, 8)), optimizer=optax.adam(3e-3), data=epoch_batches({"x": x}, 32))
    result = fit(spec, TrainConfig(steps=200, batch_size=32, log_every=20), progress=False)
    _, loss = result.history.column("loss")
    assert loss[-3:].mean() < loss[:3].mean() - 5.0  # nats per image
    params = result.params_of(0)  # results carry the run axis, here of length 1
    a = spec.method.sample(params, key, 4)
    np.testing.assert_array_equal(a, spec.method.sample(params, key, 4))
    assert not np.allclose(a, spec.method.sample(params, jax.random.fold_in(key, 1), 4))


def test_mean_log_weight_is_the_elbo(key):
    """E_q[log p(x|z) + log p(z) - log q(z|x)] = ELBO: the Monte-Carlo KL and the closed-form KL agree."""
    cfg = vae.Config(latent_dim=3, hidden=(16,))
    model = vae.make_model(cfg, (8, 8))
    x = digits.digits("test", "binary")["x"][:10]
    params = model.init(key, {"x": x})
    num = 2000
    log_w = np.asarray(model.log_weights(params, x, jax.random.fold_in(key, 1), num))
    elbo = np.asarray(jax.vmap(lambda k: model.elbo(params, x, k))(jax.random.split(key, num)))
    std_err = np.sqrt(log_w.var(0) / num + elbo.var(0) / num)
    np.testing.assert_array_less(np.abs(log_w.mean(0) - elbo.mean(0)), 5 * std_err)
    # Negative control: the IWAE bound with many samples is measurably above the ELBO.
    iwae = np.asarray(iwae_bound(model.log_weights(params, x, key, 200)))
    assert np.all(iwae > elbo.mean(0) + 5 * std_err)


def test_a_beta_sweep_as_members_equals_separate_fits(key):
    """`Spec.args={"beta": [M]}`: each member trains as the fit built with that beta (one compiled program)."""
    x = digits.digits("train", "binary")["x"]
    cfg = vae.Config(latent_dim=3, hidden=(16,))
    train = TrainConfig(steps=5, batch_size=32, log_every=5, num_seeds=2)
    data = epoch_batches({"x": x}, 32)
    betas = jnp.array([0.5, 4.0])
    swept = fit(Spec(method=vae.make(cfg, (8, 8)), optimizer=optax.adam(3e-3), data=data, args={"beta": betas}),
                train, progress=False)
    assert swept.num_runs == 4 and list(swept.members) == [0, 0, 1, 1]
    for m, beta in enumerate(betas.tolist()):
        single = fit(Spec(method=vae.make(dataclasses.replace(cfg, beta=beta), (8, 8)), optimizer=optax.adam(3e-3),
                          data=data), train, progress=False)
        for a, b in zip(jax.tree.leaves(swept.member_params(m)), jax.tree.leaves(single.params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Negative control: the two members did train differently.
    assert not np.allclose(swept.params_of(0)["encoder"]["params"]["dense_1"]["kernel"],
                           swept.params_of(2)["encoder"]["params"]["dense_1"]["kernel"])
    # The loss's beta argument is the same objective as a model built with that beta.
    batch = {"x": x[:8]}
    params = swept.params_of(0)
    value, _ = vae.make(cfg, (8, 8)).loss(params, batch, key, jnp.array(0), args={"beta": jnp.array(4.0)})
    expected, _ = vae.make(dataclasses.replace(cfg, beta=4.0), (8, 8)).loss(params, batch, key, jnp.array(0))
    np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_args_need_the_default_regulariser(key):
    from gvlab.losses import beta_kl

    x = digits.digits("test", "binary")["x"][:4]
    method = vae.make(vae.Config(latent_dim=2, hidden=(8,)), (8, 8), regulariser=beta_kl(2.0))
    params = method.init(key, {"x": x})
    with pytest.raises(ValueError, match="custom regulariser"):
        method.loss(params, {"x": x}, key, jnp.array(0), args={"beta": jnp.array(1.0)})
    with pytest.raises(ValueError, match="got keys"):
        vae.make(vae.Config(latent_dim=2, hidden=(8,)), (8, 8)).loss(params, {"x": x}, key, jnp.array(0),
                                                                      args={"lam": jnp.array(1.0)})
