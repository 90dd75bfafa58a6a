"""Linear measurement operators y = A x + n, n ~ N(0, sigma_y^2 I), for image inverse problems.

The degradations of RED-Diff (Mardani et al. 2024, `utils/degredations.py`), FLAIR (Erbach et al. 2025,
`degradations.py`) and LensNet (Bai et al. 2025, the lensless model y = h (*) x + n): random-pixel and box
inpainting, average-pool super-resolution, circular convolution with a PSF, and the identity (denoising).

Each operator is a frozen dataclass registered as a pytree (as `gvlab.dists`): arrays (the mask, the PSF) are
data leaves and integers (the pooling factor) static metadata, so an operator is an ordinary argument of a jitted
function, can be vmapped over (a stack of PSFs) and differentiated (`jax.grad` w.r.t. the PSF). Methods:

    forward(x) = A x,   adjoint(y) = A^T y,   gram(x) = A^T A x,   pinv(y) = A^+ y (Moore-Penrose).

Images are `[..., H, W]` (one image or any leading batch axes); A acts on the last two axes, so a multi-channel
image is channels-first, `[..., C, H, W]`. An operator built for a known image size (`Inpainting`'s mask,
`Convolution`'s PSF, `AveragePool(factor, image_shape)`) raises ValueError on an input whose last two axes are not
that size (a channels-last `[..., H, W, C]` image would otherwise be acted on over the wrong axes); the check reads
static shapes only, so it holds under `jit`, `vmap` and `grad`. Leading axes are
broadcast and real spectra cast to complex explicitly, so everything runs under `jax_numpy_rank_promotion="raise"`
and strict dtype promotion. Inpainting keeps y image-shaped
(y = m * x, zeros where m is False) rather than selecting the kept pixels, so masks from keys jit with static
shapes and batches stay `[B, H, W]`; A = diag(m) is then an orthogonal projection (A^T = A^+ = A). Noise that
`gaussian_noise` adds on the discarded pixels is independent of x and removed by A^T, so posteriors are unchanged;
but a data term averaged over all of y (RED-Diff's `mean`) counts those pixels.

    >>> op = AveragePool(2)
    >>> x = jnp.arange(16.0).reshape(4, 4)
    >>> op.forward(x)
    Array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    >>> dense_matrix(op, (4, 4)).shape
    (4, 16)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray


def _pytree(*data_fields: str, meta_fields: Sequence[str] = ()):
    """A frozen dataclass registered as a pytree (eq=False: `==` on array fields has no truth value)."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
        return jax.tree_util.register_dataclass(cls, data_fields=data_fields, meta_fields=meta_fields)

    return wrap


def _lift(a: ArrayLike, ndim: int) -> Array:
    """Adds leading unit axes up to `ndim`: the explicit broadcast that strict rank promotion asks for."""
    a = jnp.asarray(a)
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def _power(k: Array) -> Array:
    """|k|^2 of a complex array as re^2 + im^2 (real dtype; no square root to undo)."""
    return jnp.square(k.real) + jnp.square(k.imag)


def _check_image(op: str, x: Array, expected: tuple[int, ...], what: str = "images") -> None:
    """Raises ValueError unless the last two axes of `x` are `expected` (a static shape check: jit/vmap/grad-safe)."""
    expected = tuple(int(n) for n in expected)
    if tuple(x.shape[-2:]) != expected:
        raise ValueError(
            f"{op} expects {what} of layout [..., H, W] (channels first, e.g. [B, C, H, W]) with (H, W) = {expected}, "
            f"got shape {tuple(x.shape)}; move a channels-last [..., H, W, C] image with jnp.moveaxis(x, -1, -3)")


class _LinearOperator:
    """Defaults shared by every operator: A^T A as the composition (subclasses override when it is cheaper)."""

    def gram(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return self.adjoint(self.forward(x))


@_pytree()
class Identity(_LinearOperator):
    """A = I: denoising. y = x + n."""

    def forward(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return x

    def adjoint(self, y: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return y

    def gram(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return x

    def pinv(self, y: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return y


@_pytree("mask")
class Inpainting(_LinearOperator):
    """A = diag(m): keeps the pixels where `mask` is True and zeroes the rest (random-pixel or box inpainting).

    Attributes:
        mask: `[H, W]` boolean, True where the pixel is observed.
    """

    mask: Bool[Array, "H W"]

    def forward(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        _check_image("Inpainting", x, self.mask.shape[-2:])
        return jnp.where(jnp.broadcast_to(self.mask, x.shape), x, jnp.zeros((), x.dtype))

    def adjoint(self, y: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return self.forward(y)  # an orthogonal projection is self-adjoint

    def gram(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return self.forward(x)  # A^T A = A for a projection

    def pinv(self, y: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return self.forward(y)  # zero-filling (FLAIR's and RED-Diff's H_pinv)


def make_random_inpainting(key: PRNGKeyArray, shape: tuple[int, int], keep_fraction: float) -> Inpainting:
    """A mask observing exactly round(keep_fraction * H * W) pixels chosen uniformly at random from `key`.

    An exact count (rather than independent Bernoulli pixels) makes "50% inpainting" the same problem for every key.
    """
    return Inpainting(_random_mask(key, tuple(shape), round(keep_fraction * math.prod(shape))))


@functools.partial(jax.jit, static_argnums=(1, 2))  # one program instead of a dozen eager dispatches
def _random_mask(key: PRNGKeyArray, shape: tuple[int, int], kept: int) -> Bool[Array, "H W"]:
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, (math.prod(shape),))))  # a random permutation's ranks
    return (ranks < kept).reshape(shape)


def make_box_inpainting(shape: tuple[int, int], top: int, left: int, height: int, width: int) -> Inpainting:
    """A mask missing the rectangle `[top:top + height, left:left + width]` (the box to fill in)."""
    mask = np.ones(shape, bool)  # static ints: numpy, not a traced computation
    mask[top:top + height, left:left + width] = False
    return Inpainting(jnp.asarray(mask))


def box_stripe_masks(key: PRNGKeyArray, num: int, shape: tuple[int, int], box: int, stripe_rows: int
                     ) -> Bool[Array, "num H W"]:
    """`num` observed-pixel masks (FLAIR's digit inpainting in `inverse/flair`): the centred `box x box` square and a
    full-width stripe of `stripe_rows` rows starting at a uniformly random row (one per mask) are missing (False),
    everything else observed (True). `Inpainting(masks)` acts on a batch `[num, H, W]`, one mask per image."""
    h, w = shape
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    top, left = (h - box) // 2, (w - box) // 2
    in_box = (rows >= top) & (rows < top + box) & (cols >= left) & (cols < left + box)
    start = jax.random.randint(key, (num, 1, 1), 0, h - stripe_rows + 1)
    in_stripe = (rows[None] >= start) & (rows[None] < start + stripe_rows)
    return ~(in_box[None] | in_stripe)


@_pytree(meta_fields=("factor", "image_shape"))
class AveragePool(_LinearOperator):
    """Super-resolution: A averages non-overlapping `factor x factor` blocks, `[..., H, W] -> [..., H/f, W/f]`.

    A A^T = I / f^2, so A^T is nearest upsampling divided by f^2 and A^+ = f^2 A^T is nearest upsampling
    (RED-Diff's SR H_pinv). H and W must be multiples of `factor` (static).

    Attributes:
        factor: the pooling factor f (static).
        image_shape: the `(H, W)` of the images it acts on (static, optional). With it, `forward` rejects inputs
            whose last two axes are not `(H, W)` and `adjoint` / `pinv` those whose last two are not
            `(H / f, W / f)`, e.g. a channels-last `[..., H, W, C]` image, which would be pooled over W and C.
            Without it, only divisibility by f is checked.
    """

    factor: int
    image_shape: tuple[int, int] | None = None

    def __post_init__(self):
        if self.image_shape is not None:
            shape = tuple(int(n) for n in self.image_shape)
            if len(shape) != 2 or shape[0] % self.factor or shape[1] % self.factor:
                raise ValueError(f"image_shape must be (H, W) with H and W multiples of the pooling factor "
                                 f"{self.factor}, got {self.image_shape}")
            object.__setattr__(self, "image_shape", shape)  # hashable static metadata

    def forward(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch h w"]:
        f = self.factor
        if self.image_shape is not None:
            _check_image("AveragePool", x, self.image_shape)
        *lead, h, w = x.shape
        if h % f or w % f:
            raise ValueError(f"image shape {(h, w)} is not divisible by the pooling factor {f}")
        return jnp.mean(x.reshape(*lead, h // f, f, w // f, f), axis=(-3, -1))

    def adjoint(self, y: Float[Array, "*batch h w"]) -> Float[Array, "*batch H W"]:
        return self.pinv(y) / self.factor**2

    def pinv(self, y: Float[Array, "*batch h w"]) -> Float[Array, "*batch H W"]:
        if self.image_shape is not None:
            _check_image("AveragePool", y, tuple(n // self.factor for n in self.image_shape), "measurements")
        return jnp.repeat(jnp.repeat(y, self.factor, axis=-2), self.factor, axis=-1)


@functools.partial(jax.jit, static_argnames="shape")
def psf_to_origin(kernel: Float[Array, "*batch kh kw"], shape: tuple[int, int] | None = None
                  ) -> Float[Array, "*batch H W"]:
    """Zero-pads a centred kernel to `shape` and rolls its centre (index kh // 2, kw // 2) to index (0, 0).

    The FFT convention of `Convolution`: y[n] = sum_m psf[m] x[n - m] with indices mod (H, W). For a kernel as
    big as the image this is `ifftshift` (LensNet's full-size PSF images). `shape=None` keeps the kernel's size.
    """
    kh, kw = kernel.shape[-2:]
    h, w = (kh, kw) if shape is None else shape
    if kh > h or kw > w:
        raise ValueError(f"kernel {(kh, kw)} is larger than the image {(h, w)}")
    pad = [(0, 0)] * (kernel.ndim - 2) + [(0, h - kh), (0, w - kw)]
    return jnp.roll(jnp.pad(kernel, pad), (-(kh // 2), -(kw // 2)), axis=(-2, -1))


@_pytree("psf")
class Convolution(_LinearOperator):
    """Circular convolution by FFT: A x = irfft2(rfft2(psf) * rfft2(x)) (LensNet's y = h (*) x).

    A is circulant with eigenvalues the transfer function K = rfft2(psf); A^T is circular correlation, conj(K) in
    Fourier (the convolution with psf[-n]); A^T A multiplies by |K|^2; A^+ by 1/K where |K| > rcond * max|K|
    and 0 elsewhere (the truncated SVD, since the singular values of a circulant matrix are |K|).

    Attributes:
        psf: `[H, W]` kernel with its origin at index (0, 0) (`psf_to_origin` for a centred one), the image size.
    """

    psf: Float[Array, "H W"]

    def transfer(self) -> Array:
        """K = rfft2(psf), `[H, W // 2 + 1]` complex."""
        return jnp.fft.rfft2(self.psf)

    def _apply(self, x: Array, spectrum: Array) -> Array:
        _check_image("Convolution", x, self.psf.shape)  # the PSF is [H, W], the image size
        shape = x.shape[-2:]
        x_hat = jnp.fft.rfft2(x)
        # Real spectra are cast to complex explicitly: strict dtype promotion has no float -> complex path.
        return jnp.fft.irfft2(x_hat * _lift(spectrum.astype(x_hat.dtype), x.ndim), s=shape).astype(x.dtype)

    def forward(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return self._apply(x, self.transfer())

    def adjoint(self, y: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return self._apply(y, jnp.conj(self.transfer()))

    def gram(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        return self._apply(x, _power(self.transfer()))

    def pinv(self, y: Float[Array, "*batch H W"], rcond: float = 1e-4) -> Float[Array, "*batch H W"]:
        k = self.transfer()
        power = _power(k)
        keep = power > jnp.square(rcond) * jnp.max(power)  # |K| > rcond max|K|
        # conj(K) / |K|^2 = 1 / K; the inner `where` keeps the discarded entries' gradients finite.
        inverse = jnp.conj(k) / jnp.where(keep, power, 1.0).astype(k.dtype)
        return self._apply(y, jnp.where(keep, inverse, jnp.zeros((), k.dtype)))


def make_convolution(kernel: Float[Array, "kh kw"], shape: tuple[int, int]) -> Convolution:
    """A `Convolution` by a centred kernel (e.g. a 5x5 blur) on `shape` images: `Convolution(psf_to_origin(...))`."""
    return Convolution(psf_to_origin(jnp.asarray(kernel), tuple(shape)))


Operator = Identity | Inpainting | AveragePool | Convolution


def gaussian_noise(key: PRNGKeyArray, y: Float[Array, "..."], sigma_y: float | Array) -> Float[Array, "..."]:
    """y + sigma_y * eps, eps ~ N(0, I) of y's shape and dtype: the measurement noise n of y = A x + n."""
    return y + sigma_y * jax.random.normal(key, y.shape, y.dtype)


@jax.jit  # one program: the same numbers wherever it is called
def noisy_measurement(op, x: Float[Array, "*batch H W"], key: PRNGKeyArray, sigma_y: float | Array
                      ) -> Float[Array, "*batch ..."]:
    """y = A x + n, n ~ N(0, sigma_y^2 I) on the real measurements only: for an `Inpainting` y = A (x + n) (noise on
    the observed pixels, zero-filled elsewhere, like A x), otherwise noise on every entry of A x."""
    if isinstance(op, Inpainting):
        return op.forward(gaussian_noise(key, x, sigma_y))
    return gaussian_noise(key, op.forward(x), sigma_y)


def dense_matrix(op, shape: Sequence[int], dtype=jnp.float32) -> Float[Array, "M D"]:
    """The explicit `[M, D]` matrix of a linear operator on `shape` inputs (D = prod(shape), M = y.size).

    Column j is A e_j, computed by vmapping `op.forward` over the D basis images (row-major flattening, as
    `x.reshape(-1)`), so `dense_matrix(op, shape) @ x.reshape(-1) == op.forward(x).reshape(-1)`. O(D^2) memory:
    for oracles and small problems (an 8x8 image gives a 64 x 64 matrix).
    """
    d = math.prod(shape)
    basis = jnp.eye(d, dtype=dtype).reshape(d, *shape)
    columns = jax.vmap(op.forward)(basis)
    return columns.reshape(d, -1).T
