"""GCRL and its CVAE baseline (`gvlab.motion.gcrl`), the crossing simulator (`gvlab.data.crossing`) and the frozen
optimiser (`gvlab.train.frozen`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gvlab.data import crossing
from gvlab.data.padded import Padded, pad
from gvlab.motion import gcrl
from gvlab.train import frozen

SMALL = dict(encoder_hidden=(16,), feature_dim=8, mapping_hidden=(8,), decoder_hidden=(16,), coupling_hidden=(8,),
             num_samples=3, best_k=4)


def _ragged_batch(key, counts=(2, 0, 2), fill=1e3):
    """Examples with 2, 0 and 2 neighbours (two shapes to compile one by one), padded to 4 with a large fill (a leak would show)."""
    past_key, future_key, nb_key = jax.random.split(key, 3)
    b = len(counts)
    others = [np.asarray(jax.random.normal(jax.random.fold_in(nb_key, i), (n, 8, 2))) for i, n in enumerate(counts)]
    neighbours = pad(others, size=4, fill=fill)
    return {"past": jax.random.normal(past_key, (b, 8, 2)), "future": jax.random.normal(future_key, (b, 12, 2)),
            "neighbours": Padded(jnp.asarray(neighbours.values), jnp.asarray(neighbours.mask)),
            "env": jnp.zeros((b,), jnp.int32)}, others


@pytest.mark.parametrize("variant,objective", [("gcrl", "best_of_k"), ("cvae", "self_normalised")])
def test_padded_batch_loss_equals_the_unpadded_examples_one_by_one(key, variant, objective):
    cfg = gcrl.Config(variant=variant, objective=objective, **SMALL)
    method = gcrl.make(cfg)
    batch, others = _ragged_batch(key)
    params = method.init(key, batch)
    loss_key = jax.random.fold_in(key, 7)
    batched, _ = jax.jit(method.loss)(params, batch, loss_key, 0)
    nets = gcrl._Nets(cfg, 8, 12)
    keys = jax.random.split(loss_key, len(others))
    single = jax.jit(lambda p, e, k: gcrl.example_loss(nets, p, e, k))
    one_by_one = [single(params, {"past": batch["past"][b], "future": batch["future"][b],
                                                   "neighbours": Padded(jnp.asarray(o), jnp.ones(len(o), bool))},
                                    keys[b])[0] for b, o in enumerate(others)]
    np.testing.assert_allclose(batched, np.mean(one_by_one), rtol=1e-4)
    # negative control: an all-True mask reads the fill
    leaked, _ = jax.jit(method.loss)(params, {**batch, "neighbours": Padded(batch["neighbours"].values,
                                                                   jnp.ones_like(batch["neighbours"].mask))},
                            loss_key, 0)
    assert abs(float(leaked) - float(batched)) > 1e-2 * abs(float(batched))


def test_mixture_prior_with_identity_flow_matches_the_closed_form(key):
    cfg = gcrl.Config(**SMALL)
    nets = gcrl._Nets(cfg, 8, 12)
    batch, _ = _ragged_batch(key)
    params = gcrl.make(cfg).init(key, batch)
    # zero scale-and-shift outputs make every coupling the identity (s = t = 0, log-det 0)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.zeros_like(x) if any(getattr(p, "key", None) == "st" for p in path) else x, params)
    params["variant"]["logits"] = jnp.array([0.3, -1.0, 2.0, 0.0, -0.5])
    z = jax.random.normal(key, (6, 2))
    s = 2.0 * jax.random.normal(jax.random.fold_in(key, 1), (6, 2)) + 1.0
    log_pz, log_ps = gcrl.prior_log_probs(nets, params, z, s)
    np.testing.assert_allclose(log_pz, -0.5 * np.sum(np.asarray(z) ** 2, -1) - np.log(2 * np.pi), rtol=1e-5)
    pi = np.exp(np.asarray(params["variant"]["logits"])) / np.exp(np.asarray(params["variant"]["logits"])).sum()
    s_np = np.asarray(s, np.float64)
    density = sum(pi[e] * np.exp(-0.5 * np.sum((s_np - e) ** 2, -1) / (e + 1)) / (2 * np.pi * (e + 1))
                  for e in range(5))
    np.testing.assert_allclose(log_ps, np.log(density), rtol=1e-5)
    # negative control: another mixture weighting gives another density
    params["variant"]["logits"] = jnp.zeros(5)
    assert float(jnp.max(jnp.abs(gcrl.prior_log_probs(nets, params, z, s)[1] - log_ps))) > 1e-2


def test_frozen_leaves_stay_bitwise_equal_and_the_others_move(key):
    params = {"invariant": {"w": jax.random.normal(key, (3,))}, "variant": {"w": jnp.ones(2), "b": jnp.zeros(1)}}
    grads = jax.tree.map(jnp.ones_like, params)
    tx = frozen(optax.adam(0.1), lambda path: path[0] != "invariant")
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["invariant"]["w"], params["invariant"]["w"])
    assert all(float(jnp.min(jnp.abs(new["variant"][k] - params["variant"][k]))) > 0.05 for k in ("w", "b"))
    # negative control: without freezing the invariant leaves move too
    plain = optax.apply_updates(params, optax.adam(0.1).update(grads, optax.adam(0.1).init(params), params)[0])
    assert float(jnp.min(jnp.abs(plain["invariant"]["w"] - params["invariant"]["w"]))) > 0.05


def test_training_lowers_the_loss_and_gradients_reach_every_parameter(key):
    cfg = gcrl.Config(**SMALL)
    method = gcrl.make(cfg)
    batch = crossing.crossing(key, 8, 0.3)
    params = method.init(key, batch)
    tx = optax.adam(1e-2)

    @jax.jit
    def step(p, opt, k):
        value, g = jax.value_and_grad(lambda q: method.loss(q, batch, k, 0)[0])(p)
        u, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, u), opt, value, g

    opt, first = tx.init(params), None
    for i in range(30):
        params, opt, value, grads = step(params, opt, jax.random.fold_in(key, i))
        if first is None:
            first = value
            assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads))  # every parameter
    assert float(value) < 0.7 * float(first)
    samples = gcrl.predict(cfg, params, batch, key, 5)
    assert samples.shape == (5, 16, 12, 2) and np.all(np.isfinite(samples))


def test_crossing_is_a_pure_function_of_key_and_radius(key):
    a, b = crossing.crossing(key, 64, 0.3, env=2), crossing.crossing(key, 64, 0.3, env=2)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b))
    assert a["past"].shape == (128, 8, 2) and a["future"].shape == (128, 12, 2)
    assert a["neighbours"].values.shape == (128, 1, 8, 2) and a["env"].tolist() == [2] * 128
    np.testing.assert_allclose(a["past"][:, -1], 0.0, atol=1e-6)  # the last observed position is the origin
    # the environment is the agents' radius: a larger one keeps them further apart
    gap = {r: float(jnp.mean(jnp.min(jnp.linalg.norm(p[:, 0] - p[:, 1], axis=-1), axis=-1)))
           for r in (0.1, 0.8) for p in [crossing.simulate(key, 256, r)]}
    assert gap[0.8] > gap[0.1] + 0.5
    assert not jnp.array_equal(crossing.crossing(jax.random.fold_in(key, 1), 64, 0.3)["future"], a["future"])
