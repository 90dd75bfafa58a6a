"""Analytically rendered continuous images: smooth ellipses on a linear-gradient background.

The data of the DDMI mini-experiment (notes_diffusion_inverse.md, section 3d): a continuous image f: [-1, 1]^2 ->
[0, 1] that can be evaluated exactly at any coordinate, so a render at 4x the training resolution is an exact
ground truth for arbitrary-resolution decoding. With c = (x, y) (`gvlab.inr.grids` convention),

    background(c) = 0.5 + 0.25 (g_x x + g_y y),                     g_x, g_y ~ U[-1, 1]   (values in [0, 1])
    m_k(c)       = active_k sigmoid(-d_k(c) / edge),  d_k = (r_k(c) - 1) min(a_k, b_k),
    r_k(c)       = || diag(1/a_k, 1/b_k) R(-theta_k) (c - centre_k) ||      (the ellipse's normalised radius)
    f(c)         = painted in order k = 1..K:  f <- (1 - m_k) f + m_k grey_k,

with K = 3 slots of which 1..3 are active, centres ~ U[-0.6, 0.6]^2, semi-axes ~ U[0.15, 0.5], theta ~ U[0, pi),
grey ~ U[0, 1], and `edge` = 1/16 (half a pixel of a 16 x 16 render: the notes' "width 0.5 px"). d_k is a signed
pseudo-distance (exact for circles). Rendering is a pure jnp function of (parameters, coordinates): jit, vmap, grad.

    >>> params = sample(jax.random.key(0), 4)
    >>> render_images(params, 16).shape
    (4, 16, 16)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.inr.grids import pixel_grid

SLOTS = 3
EDGE = 1.0 / 16.0
Params = dict[str, Array]
"""`{"centre": [..., K, 2], "axes": [..., K, 2], "angle": [..., K], "grey": [..., K], "active": [..., K],
"gradient": [..., 2]}`."""


@functools.partial(jax.jit, static_argnames="num")  # one program instead of a dozen eagerly compiled ops
def sample(key: PRNGKeyArray, num: int) -> Params:
    """Parameters of `num` random images (module docstring), a pure function of the key."""
    keys = jax.random.split(key, 6)
    count = jax.random.randint(keys[0], (num, 1), 1, SLOTS + 1)
    return {
        "centre": jax.random.uniform(keys[1], (num, SLOTS, 2), minval=-0.6, maxval=0.6),
        "axes": jax.random.uniform(keys[2], (num, SLOTS, 2), minval=0.15, maxval=0.5),
        "angle": jax.random.uniform(keys[3], (num, SLOTS), maxval=jnp.pi),
        "grey": jax.random.uniform(keys[4], (num, SLOTS)),
        "active": (jnp.arange(SLOTS)[None, :] < count).astype(jnp.float32),
        "gradient": jax.random.uniform(keys[5], (num, 2), minval=-1.0, maxval=1.0),
    }


def render(params: Params, coords: Float[Array, "*points 2"], edge: float = EDGE) -> Float[Array, "*points"]:
    """The exact image value f(c) of ONE image's parameters at coordinates `[..., 2]` (module docstring)."""
    if params["centre"].ndim != 2:
        raise ValueError(f"render takes one image's parameters (centre [K, 2]), got {params['centre'].shape}; "
                         "use render_images or vmap for batches")
    value = 0.5 + 0.25 * (coords @ params["gradient"])
    lead = (1,) * (coords.ndim - 1)
    for k in range(params["centre"].shape[0]):
        offset = coords - params["centre"][k].reshape(lead + (2,))
        cos, sin = jnp.cos(params["angle"][k]), jnp.sin(params["angle"][k])
        along = (cos * offset[..., 0] + sin * offset[..., 1]) / params["axes"][k, 0]
        across = (-sin * offset[..., 0] + cos * offset[..., 1]) / params["axes"][k, 1]
        radius = jnp.sqrt(jnp.square(along) + jnp.square(across) + 1e-12)
        distance = (radius - 1.0) * jnp.min(params["axes"][k])
        mask = params["active"][k] * jax.nn.sigmoid(-distance / edge)
        value = (1.0 - mask) * value + mask * params["grey"][k]
    return value


@functools.partial(jax.jit, static_argnames=("resolution", "edge"))
def render_images(params: Params, resolution: int, edge: float = EDGE) -> Float[Array, "B R R"]:
    """Exact R x R renders (values at the pixel centres of `pixel_grid`) of a batch of parameters `[B, ...]`."""
    coords = pixel_grid(resolution)
    return jax.vmap(lambda p: render(p, coords, edge))(params)
