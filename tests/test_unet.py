"""The U-Net denoiser (gvlab.nn.unet): shapes, conditioning paths, time dependence, size errors, jit/vmap/grad.

Parameters come from `jax.eval_shape(model.init, ...)` filled with host random numbers: the structure is the one
`init` builds, without compiling `init` (about 30 truncated-normal draws cost seconds of XLA compile on 2 cores).
One test runs the real `init` once, on a narrow network.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.nn.conv import count_params
from gvlab.nn.unet import UNet, init_unet

DEFAULT_PARAMS = 776_929  # UNet() on one channel; the module docstring quotes it
CLASS_TABLE = 11 * 128  # num_classes = 10: 10 labels + the null row, 4 x 32 features


def _shapes(model: UNet, image_shape, batch: int = 2):
    x = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
    t = jax.ShapeDtypeStruct((batch,), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), x, t, None)


def _random_params(model: UNet, image_shape, seed: int = 0):
    """Every parameter non-zero (the output conv too): kernels ~ N(0, 1/fan_in), GroupNorm scales ~ 1 + N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "scale":
            value = 1.0 + 0.1 * rng.standard_normal(leaf.shape)
        elif name in ("kernel", "embedding"):
            value = rng.standard_normal(leaf.shape) / math.sqrt(math.prod(leaf.shape[:-1]))
        else:
            value = 0.1 * rng.standard_normal(leaf.shape)
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, _shapes(model, image_shape))


def _images(seed: int, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_parameter_count_of_the_default():
    counts = {nc: sum(math.prod(s.shape) for s in jax.tree.leaves(_shapes(UNet(num_classes=nc), (32, 32, 1))))
              for nc in (None, 10)}
    print(f"UNet() parameters: {counts[None]:,} (num_classes = 10: {counts[10]:,})")
    assert counts[None] == DEFAULT_PARAMS
    assert counts[10] - counts[None] == CLASS_TABLE
    # The count does not depend on the image size (a fully convolutional network), only on the channels.
    assert sum(math.prod(s.shape) for s in jax.tree.leaves(_shapes(UNet(), (8, 8, 1)))) == DEFAULT_PARAMS


@pytest.fixture(scope="module")
def narrow():
    """A class-conditional UNet(channels=(8, 16, 16), num_classes=10) on 8x8x1 with random non-zero parameters and
    one jitted `apply` shared by the tests (each distinct call signature compiles once)."""
    model = UNet(channels=(8, 16, 16), num_classes=10)
    return model, _random_params(model, (8, 8, 1)), jax.jit(model.apply)


def test_output_has_the_input_shape(narrow):
    model = UNet()
    x = _images(0, (2, 32, 32, 3))  # the default network, on three channels
    out = jax.jit(model.apply)(_random_params(model, (32, 32, 3)), x, jnp.array([0.2, 0.7], jnp.float32))
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))
    _, params, apply = narrow
    x = _images(1, (2, 8, 8, 1))
    out = apply(params, x, jnp.array([0.2, 0.7], jnp.float32), jnp.array([1, 2], jnp.int32))
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))


def test_real_init_matches_the_shape_pass_and_starts_at_zero(narrow, key):
    model, random_params, apply = narrow
    params = init_unet(model, key, (8, 8, 1))
    assert jax.tree.structure(params) == jax.tree.structure(random_params)
    assert count_params(params) == count_params(random_params)
    # Kernels at the variance flax's default initialiser gives (1 / fan_in): the flat draw keeps the distribution.
    kernel = params["params"]["up_1"]["conv_0"]["kernel"]  # 3 x 3 x 32 x 16
    assert 0.8 < float(jnp.std(kernel)) * math.sqrt(3 * 3 * 32) < 1.2
    out = apply(params, _images(1, (2, 8, 8, 1)), jnp.array([0.1, 0.9], jnp.float32), jnp.array([1, 2], jnp.int32))
    np.testing.assert_array_equal(out, 0.0)  # zero-initialised output convolution


def test_time_embedding_changes_the_output(narrow):
    _, params, apply = narrow
    x, c = _images(2, (2, 8, 8, 1)), jnp.array([5, 5], jnp.int32)
    early = apply(params, x, jnp.full((2,), 0.1, jnp.float32), c)
    late = apply(params, x, jnp.full((2,), 0.9, jnp.float32), c)
    assert float(jnp.max(jnp.abs(early - late))) > 1e-2 * float(jnp.max(jnp.abs(early)))
    nearby = apply(params, x, jnp.full((2,), 0.1 + 1e-6, jnp.float32), c)
    np.testing.assert_allclose(nearby, early, rtol=1e-3, atol=1e-4)  # and smoothly so


def test_class_and_null_class_paths_differ(narrow):
    model, params, apply = narrow
    x, t = _images(3, (2, 8, 8, 1)), jnp.array([0.3, 0.6], jnp.float32)
    labelled = apply(params, x, t, jnp.array([3, 7], jnp.int32))
    unconditional = apply(params, x, t, None)
    assert float(jnp.max(jnp.abs(labelled - unconditional))) > 1e-3
    # c = None is the null class, row K of the table.
    null = apply(params, x, t, jnp.full((2,), model.null_class, jnp.int32))
    np.testing.assert_allclose(unconditional, null, rtol=1e-5, atol=1e-6)
    # Different labels give different outputs, example by example.
    other = apply(params, x, t, jnp.array([4, 7], jnp.int32))
    assert float(jnp.max(jnp.abs(labelled[0] - other[0]))) > 1e-3
    np.testing.assert_allclose(labelled[1], other[1], rtol=1e-5, atol=1e-6)  # example 1 kept its label


def test_clear_errors():
    model = UNet()
    with pytest.raises(ValueError, match="divisible by 4, got 30x30"):
        _shapes(model, (30, 30, 1))
    with pytest.raises(ValueError, match="divisible by 8, got 12x12"):
        _shapes(UNet(channels=(8, 8, 8, 8)), (12, 12, 1))
    with pytest.raises(ValueError, match="images"):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((32, 32), jnp.float32), 0.5)
    params = _random_params(model, (8, 8, 1))
    with pytest.raises(ValueError, match="unconditional"):
        jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32), 0.5,
                       jnp.zeros((1,), jnp.int32))
    with pytest.raises(ValueError, match="no null class"):
        _ = model.null_class


def test_jit_vmap_grad_compose(narrow):
    """One jitted gradient of a loss that vmaps the network over single examples: equal to the batched call
    (GroupNorm normalises within an example, so nothing leaks across the batch), and every parameter gets a
    gradient."""
    model, params, apply = narrow
    x, t, c = _images(4, (2, 8, 8, 1)), jnp.array([0.1, 0.9], jnp.float32), jnp.array([0, 10], jnp.int32)

    def per_example(p, x_HWC, t_, c_):
        return model.apply(p, x_HWC[None], t_[None], c_[None])[0]

    def loss(p):
        out = jax.vmap(per_example, in_axes=(None, 0, 0, 0))(p, x, t, c)
        return jnp.mean(out**2), out

    (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    batched = apply(params, x, t, c)
    np.testing.assert_allclose(out, batched, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(value, jnp.mean(batched**2), rtol=1e-4)
    norms = {jax.tree_util.keystr(path): float(jnp.linalg.norm(g)) for path, g in
             jax.tree_util.tree_leaves_with_path(grads)}
    assert all(np.isfinite(v) and v > 0 for v in norms.values()), {k: v for k, v in norms.items() if not v > 0}
