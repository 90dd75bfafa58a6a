"""A procedural multiple-latent-variable generator x = g(z_1, ..., z_5) whose latents' influence is known.

Built from scikit-learn's digits (all 1797, upsampled bilinearly from 8x8 to 16x16, values in [0, 1]); no
training. The latent z (90 numbers, TruncN(0, 1, +-2) as the official anchors, `anchor_params [0, 1, 2]` of
SerezD/mi_ml_gen's BigBiGAN configs) is cut into five chunks, from global to local as in an MLVGM:

    chunk 0  semantic  z_1 in R^10: class mixture w = softmax(z_1 / 0.2) over the 10 class-mean templates m_k
    chunk 1  style     z_2 in R^5:  w-weighted sum of each class's top-5 PCA directions, sqrt(eigenvalue) x z_2
    chunk 2  geometry  z_3 in R^3:  shift 2 tanh(z_3[:2]) px, rotation 15 deg x tanh(z_3[2]) (bilinear warp)
    chunk 3  texture   z_4 in R^64: 0.05 x a bilinear upsampling of the 8x8 noise field z_4
    chunk 4  dead      z_5 in R^8:  1e-4 x a fixed random projection of z_5: the "under-used" latent

    x = warp_{z_3}( sum_k w_k (m_k + sum_j z_2j sqrt(lambda_kj) v_kj) ) + texture(z_4) + dead(z_5)

Known influence (notes, section 7(d)): z_1 > z_2 ~ z_3 > z_4 > z_5. The class of a sample is argmax z_1.
Everything is a pure function of arrays (`render` jits and vmaps); `make()` builds the constants once.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from gvlab.data import digits

SIZE = 16
NAMES = ("semantic", "style", "geometry", "texture", "dead")
CHUNKS = (10, 5, 3, 64, 8)
LATENT_DIM = sum(CHUNKS)
OFFSETS = tuple(int(o) for o in np.cumsum((0,) + CHUNKS))
# Rank of each chunk's expected MI between anchor and chunk-resampled view, 1 = least shared information
# (most influence); the style/geometry tie of the notes is an average rank.
INFLUENCE_MI_RANK = (1.0, 2.5, 2.5, 4.0, 5.0)
TEMPERATURE, MAX_SHIFT, MAX_ANGLE, TEXTURE, DEAD = 0.2, 2.0, np.deg2rad(15.0), 0.05, 1e-4
TRUNCATION = 2.0


class Generator(NamedTuple):
    templates: Float[Array, "10 P"]  # class means, P = 16 * 16
    directions: Float[Array, "10 5 P"]  # per class top-5 PCA directions times sqrt(eigenvalue)
    dead: Float[Array, "8 P"]  # fixed random projection of the dead chunk


@functools.cache
def _interpolation() -> np.ndarray:
    """[16, 8] matrix of half-pixel-centred bilinear upsampling (`jax.image.resize(..., "bilinear")` of the
    identity): upsample(X) = U X U^T, as numpy so that building constants compiles nothing."""
    centres = (np.arange(SIZE) + 0.5) / 2.0 - 0.5  # input coordinate of each output pixel
    low = np.clip(np.floor(centres), 0, 7).astype(int)
    high = np.clip(low + 1, 0, 7)
    frac = np.clip(centres - low, 0.0, 1.0)
    matrix = np.zeros((SIZE, 8), np.float32)
    matrix[np.arange(SIZE), low] += 1.0 - frac
    matrix[np.arange(SIZE), high] += frac
    return matrix


def upsample(images):
    """Bilinear 8x8 -> 16x16 of `[..., 8, 8]` (numpy or jax; the real digits the probe reads use the same map)."""
    matrix = _interpolation()
    xp = np if isinstance(images, np.ndarray) else jnp
    return xp.einsum("ia,...ab,jb->...ij", matrix, images, matrix)


@functools.cache
def make() -> Generator:
    """The generator's constants from all 1797 digits (deterministic)."""
    counts, labels = digits.load_counts()
    images = upsample(counts.astype(np.float32) / 16.0).reshape(len(labels), -1)
    templates, directions = [], []
    for k in range(10):
        members = images[labels == k]
        mean = members.mean(0)
        _, s, vt = np.linalg.svd(members - mean, full_matrices=False)
        templates.append(mean)
        directions.append(vt[:CHUNKS[1]] * (s[:CHUNKS[1], None] / np.sqrt(len(members))))
    dead = np.random.default_rng(0).standard_normal((CHUNKS[4], SIZE * SIZE)) / np.sqrt(CHUNKS[4])
    return Generator(jnp.asarray(np.stack(templates), jnp.float32), jnp.asarray(np.stack(directions), jnp.float32),
                     jnp.asarray(dead, jnp.float32))


def chunk(z: Float[Array, "... Z"], index: int) -> Float[Array, "... C"]:
    return z[..., OFFSETS[index]:OFFSETS[index + 1]]


def sample_latents(key: jax.Array, num: int) -> Float[Array, "N Z"]:
    """Anchors z ~ TruncN(0, 1, +-2)^90."""
    return jax.random.truncated_normal(key, -TRUNCATION, TRUNCATION, (num, LATENT_DIM), jnp.float32)


def chunk_mask(chunks) -> Float[Array, " Z"]:
    """1 on the latent coordinates of the listed chunks, 0 elsewhere (an array, so it can be a member's arg)."""
    mask = np.zeros((LATENT_DIM,), np.float32)
    for i in chunks:
        if not 0 <= i < len(CHUNKS):
            raise ValueError(f"chunk index {i} out of range 0..{len(CHUNKS) - 1}")
        mask[OFFSETS[i]:OFFSETS[i + 1]] = 1.0
    return jnp.asarray(mask)


def resample(z: Float[Array, "N Z"], fresh: Float[Array, "N Z"], mask: Float[Array, " Z"]) -> Float[Array, "N Z"]:
    """The official `RandomWalker` view: the masked coordinates of z replaced by fresh draws, the rest kept."""
    return jnp.where(mask > 0, fresh, z)


def labels(z: Float[Array, "N Z"]) -> Int[Array, " N"]:
    """The semantic class of each latent: argmax of chunk 0."""
    return jnp.argmax(chunk(z, 0), axis=-1)


def _warp(image: Float[Array, "16 16"], z3: Float[Array, " 3"]) -> Float[Array, "16 16"]:
    shift = MAX_SHIFT * jnp.tanh(z3[:2])
    angle = MAX_ANGLE * jnp.tanh(z3[2])
    centre = (SIZE - 1) / 2.0
    rows, cols = jnp.meshgrid(jnp.arange(SIZE, dtype=jnp.float32), jnp.arange(SIZE, dtype=jnp.float32),
                              indexing="ij")
    # Output pixel p reads the input at R(-angle) (p - c - shift) + c: rotate about the centre, then shift.
    r, c = rows - centre - shift[0], cols - centre - shift[1]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    source = jnp.stack([cos * r + sin * c + centre, -sin * r + cos * c + centre])
    return jax.scipy.ndimage.map_coordinates(image, list(source), order=1, mode="constant", cval=0.0)


def render_one(gen: Generator, z: Float[Array, " Z"]) -> Float[Array, "16 16"]:
    weights = jax.nn.softmax(chunk(z, 0) / TEMPERATURE)
    flat = weights @ gen.templates + jnp.einsum("k,j,kjp->p", weights, chunk(z, 1), gen.directions)
    image = _warp(flat.reshape(SIZE, SIZE), chunk(z, 2))
    noise = upsample(chunk(z, 3).reshape(8, 8))
    return image + TEXTURE * noise + DEAD * (chunk(z, 4) @ gen.dead).reshape(SIZE, SIZE)


def render(gen: Generator, z: Float[Array, "N Z"]) -> Float[Array, "N 16 16"]:
    """x = g(z) for a batch of latents (formula in the module docstring)."""
    if z.shape[-1] != LATENT_DIM:
        raise ValueError(f"latents must have {LATENT_DIM} coordinates (chunks {CHUNKS}), got shape {z.shape}")
    return jax.vmap(lambda one: render_one(gen, one))(z)


def real_digits(split: str) -> dict[str, jax.Array]:
    """Real digits through the same upsampling: `{"x": [N, 16, 16] in [0, 1], "y": [N]}` (the probe's data)."""
    counts, y = digits.split_counts(split)
    return {"x": jnp.asarray(upsample(counts.astype(np.float32) / 16.0)), "y": jnp.asarray(y)}
