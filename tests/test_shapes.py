"""dSprites-lite (gvlab.data.shapes): every factor is recoverable from the pixels, sampling is a pure function."""

from __future__ import annotations

import jax
import numpy as np

from gvlab.data import shapes


def test_shapes_dtypes_and_determinism(key):
    a, b = shapes.sample(key, 64), shapes.sample(key, 64)
    assert a["images"].shape == (64, 20, 20) and a["factors"].shape == (64, 4)
    assert a["images"].dtype == np.float32 and a["factors"].dtype == np.int32
    np.testing.assert_array_equal(a["images"], b["images"])
    c = shapes.sample(jax.random.fold_in(key, 1), 64)
    assert not np.array_equal(a["factors"], c["factors"])  # another key, other factors
    assert set(np.unique(np.asarray(a["images"]))) <= {0.0, 1.0}
    codes = np.asarray(shapes.sample(key, 4000)["factors"])
    for i, n in enumerate(shapes.FACTORS.values()):
        np.testing.assert_array_equal(np.unique(codes[:, i]), np.arange(n))  # every value is drawn


def test_every_factor_is_recoverable_and_combinations_are_distinct():
    factors = np.asarray(shapes.all_factors())
    images = np.asarray(shapes.render(shapes.all_factors()))
    assert len(factors) == 768 and len({im.tobytes() for im in images}) == 768  # all images differ
    rows, cols = np.arange(20)[None, :, None], np.arange(20)[None, None, :]
    mass = images.sum(axis=(1, 2))
    centre_x, centre_y = (images * cols).sum(axis=(1, 2)) / mass, (images * rows).sum(axis=(1, 2)) / mass
    np.testing.assert_allclose(centre_x, np.asarray(shapes.POSITIONS)[factors[:, 2]], atol=0.5)
    np.testing.assert_allclose(centre_y, np.asarray(shapes.POSITIONS)[factors[:, 3]], atol=0.5)
    assert np.all(images.max(axis=(1, 2)) == 1)
    by_shape_scale = mass.reshape(3, 4, 64)
    np.testing.assert_array_equal(by_shape_scale, by_shape_scale[:, :, :1].repeat(64, axis=2))  # never clipped
    # Areas by hand: square (2s + 1)^2, disk = lattice points with i^2 + j^2 <= s^2, plus = two bars of width
    # 2 floor(s / 3) + 1 and length 2s + 1 minus their overlap.
    area = mass.reshape(3, 4, 64)[:, :, 0]  # [shape, scale]
    np.testing.assert_array_equal(area, [[25, 49, 81, 121], [13, 29, 49, 81], [9, 33, 45, 57]])


def test_render_is_exact_for_a_hand_worked_case():
    # A square of half-size 2 at (x, y) = (5, 5): rows and columns 3..7 inclusive.
    image = np.asarray(shapes.render(np.array([0, 0, 0, 0], np.int32)))
    expected = np.zeros((20, 20), np.float32)
    expected[3:8, 3:8] = 1
    np.testing.assert_array_equal(image, expected)
