"""Affine coupling flows (`gvlab.nn.flows`): log-determinant against the Jacobian, inverse, negative controls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.nn.flows import AffineCoupling, CouplingFlow


def _perturbed(params, key, scale=0.5):
    """Random parameters far from the near-identity initialisation, so the map is clearly non-linear."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def test_log_det_equals_the_jacobian_and_inverse_round_trips(key, features=3):
    flow = CouplingFlow(features, num_layers=3, hidden=(16,))
    x = jax.random.normal(key, (4, features))
    params = _perturbed(flow.init(key, x), jax.random.fold_in(key, 1))
    y, log_det = flow.apply(params, x)
    jacobians = jax.vmap(jax.jacfwd(lambda v: flow.apply(params, v)[0]))(x)  # [B, D, D], one example at a time
    sign, expected = jnp.linalg.slogdet(jacobians)
    assert np.all(np.asarray(sign) != 0.0)
    np.testing.assert_allclose(log_det, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(flow.apply(params, y, method="inverse"), x, rtol=1e-4, atol=1e-5)
    # negative controls: the map is not volume-preserving (a flow that forgot its log-det would pass as 0), and
    # the inverse of the wrong parameters does not round-trip
    assert float(jnp.max(jnp.abs(log_det))) > 0.1
    other = _perturbed(params, jax.random.fold_in(key, 2))
    assert float(jnp.max(jnp.abs(flow.apply(other, y, method="inverse") - x))) > 1e-2


def test_one_layer_keeps_its_half_and_rejects_one_dimension(key):
    layer = AffineCoupling(4, parity=1)
    x = jax.random.normal(key, (3, 4))
    params = _perturbed(layer.init(key, x), key)
    y, _ = layer.apply(params, x)
    np.testing.assert_array_equal(y[:, 2:], x[:, 2:])  # parity 1 keeps the second half
    assert float(jnp.max(jnp.abs(y[:, :2] - x[:, :2]))) > 1e-2
    with pytest.raises(ValueError, match="features >= 2"):
        AffineCoupling(1).init(key, jnp.zeros((1, 1)))
