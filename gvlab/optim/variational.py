"""Variational-inequality operators split over workers, and their exact solution.

A variational inequality (VI) asks for z* with <F(z*), z - z*> >= 0 for every z; unconstrained and with F
continuous this is F(z*) = 0. In the distributed setting of Beznosikov et al. (NeurIPS 2022,
arXiv 2110.03313, problem statement) worker m holds its own operator F_m and F = (1/M) sum_m F_m. A saddle problem min_x max_y f
becomes a VI with F = (grad_x f, -grad_y f).

Here every F_m is affine, F_m(z) = A_m z + b_m, so F(z) = A z + b with A = mean_m A_m, b = mean_m b_m, the solution
is the linear solve z* = -A^{-1} b, and the Lipschitz constant of F is the spectral norm ||A||_2. F is mu-strongly
monotone when the symmetric part of A has smallest eigenvalue mu > 0.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> game = make_bilinear_game(jax.random.key(0), num_workers=3, dim_x=4, dim_y=4, regularisation=0.1)
    >>> game.matrices.shape, game.offsets.shape
    ((3, 8, 8), (3, 8))
    >>> bool(jnp.allclose(mean_operator(game, solve(game)), 0.0, atol=1e-4))
    True
    >>> round(float(strong_monotonicity(game)), 4)  # the regulariser lambda: the bilinear part is skew
    0.1
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.errors import ConfigError


class AffineVI(NamedTuple):
    """M affine worker operators F_m(z) = A_m z + b_m (a pytree; leading axes may batch several problems).

    Attributes:
        matrices: A_m, `[M, d, d]`.
        offsets: b_m, `[M, d]`.
    """

    matrices: Float[Array, "M d d"]
    offsets: Float[Array, "M d"]


def make_bilinear_game(key: PRNGKeyArray, num_workers: int, dim_x: int, dim_y: int,
                       regularisation: float, spread: float | None = None) -> AffineVI:
    """The regularised bilinear game of the MASHA mini-experiment (`vi/masha`), split over `num_workers` workers.

    f_m(x, y) = x^T B_m y + a_m^T x + c_m^T y + (lambda/2)||x||^2 - (lambda/2)||y||^2, with B_m ~ N(0, 1/d) entrywise
    (d = dim_x + dim_y) and a_m, c_m ~ N(0, 1). Its operator F_m = (grad_x f_m, -grad_y f_m) is affine:

        A_m = [[lambda I, B_m], [-B_m^T, lambda I]],   b_m = [a_m; -c_m],

    so every F_m, and F, is lambda-strongly monotone (the bilinear block is skew-symmetric) and z* is unique.
    The bilinear test problem of Beznosikov et al. 2022 (experiments), with lambda > 0 for linear convergence.

    With `spread` = s the workers are similar instead of independent: B_m = B + s E_m with B, E_m ~ N(0, 1/d), so
    ||A_m - A||_2 is about s ||B||_2 and every worker's Lipschitz constant is close to L (independent draws, the
    default, give ||A_m||_2 about sqrt(M) L). MASHA1's compression variance, (q - 1)/M^2 sum_m ||A_m (z - w)||^2,
    then scales with L instead of sqrt(M) L (Beznosikov et al. 2022, the variance bound behind MASHA1's theorem).

    Raises:
        ConfigError: non-positive sizes, a negative regulariser or a negative spread.
    """
    if num_workers < 1 or dim_x < 1 or dim_y < 1:
        raise ConfigError(f"need num_workers, dim_x, dim_y >= 1, got {num_workers}, {dim_x}, {dim_y}")
    if regularisation < 0:
        raise ConfigError(f"regularisation must be >= 0 (monotone game), got {regularisation}")
    if spread is not None and spread < 0:
        raise ConfigError(f"spread must be >= 0, got {spread}")
    dim = dim_x + dim_y
    b_key, a_key, c_key = jax.random.split(key, 3)
    bilinear_MxXxY = jax.random.normal(b_key, (num_workers, dim_x, dim_y)) / jnp.sqrt(dim)
    if spread is not None:  # a common B (its own key: the default draws are unchanged) plus small worker deviations
        common_XxY = jax.random.normal(jax.random.fold_in(key, 1), (dim_x, dim_y)) / jnp.sqrt(dim)
        bilinear_MxXxY = common_XxY[None] + spread * bilinear_MxXxY
    a_MxX = jax.random.normal(a_key, (num_workers, dim_x))
    c_MxY = jax.random.normal(c_key, (num_workers, dim_y))
    eye = regularisation * jnp.eye(dim, dtype=bilinear_MxXxY.dtype)
    top = jnp.concatenate([jnp.zeros((num_workers, dim_x, dim_x)), bilinear_MxXxY], axis=2)
    bottom = jnp.concatenate([-jnp.swapaxes(bilinear_MxXxY, 1, 2), jnp.zeros((num_workers, dim_y, dim_y))], axis=2)
    matrices = jnp.concatenate([top, bottom], axis=1) + eye[None]
    return AffineVI(matrices=matrices, offsets=jnp.concatenate([a_MxX, -c_MxY], axis=1))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def bilinear_games(key: PRNGKeyArray, count: int, num_workers: int, dim_x: int, dim_y: int, regularisation: float,
                   spread: float | None = None
                   ) -> tuple[AffineVI, Float[Array, "count d"], Float[Array, " count"], Float[Array, "count M"]]:
    """`count` games of `make_bilinear_game` (keys `split(key, count)`), leading axis `count`, in one program.

    Returns:
        the games, their solutions z*, L = ||mean_m A_m||_2 of each, and every worker's ||A_m||_2.
    """
    problems = jax.vmap(lambda k: make_bilinear_game(k, num_workers, dim_x, dim_y, regularisation, spread))(
        jax.random.split(key, count))
    return (problems, jax.vmap(solve)(problems), jax.vmap(lipschitz_constant)(problems),
            jnp.linalg.norm(problems.matrices, ord=2, axis=(-2, -1)))


def worker_operators(problem: AffineVI, z: Float[Array, " d"]) -> Float[Array, "M d"]:
    """F_m(z) for every worker held in `problem` (all M, or one device's share of them)."""
    return jnp.einsum("mij,j->mi", problem.matrices, z) + problem.offsets


def mean_operator(problem: AffineVI, z: Float[Array, " d"]) -> Float[Array, " d"]:
    """F(z) = (1/M) sum_m F_m(z), the distributed operator of Beznosikov et al. 2022."""
    return jnp.mean(worker_operators(problem, z), axis=0)


def solve(problem: AffineVI) -> Float[Array, " d"]:
    """The exact solution z* of F(z) = 0 by a linear solve: z* = -(mean A_m)^{-1} (mean b_m)."""
    return jnp.linalg.solve(jnp.mean(problem.matrices, axis=0), -jnp.mean(problem.offsets, axis=0))


def lipschitz_constant(problem: AffineVI) -> Float[Array, ""]:
    """L = ||mean_m A_m||_2, the Lipschitz constant of F."""
    return jnp.linalg.norm(jnp.mean(problem.matrices, axis=0), ord=2)


def strong_monotonicity(problem: AffineVI) -> Float[Array, ""]:
    """mu = lambda_min((A + A^T)/2): <F(z) - F(z'), z - z'> >= mu ||z - z'||^2."""
    matrix = jnp.mean(problem.matrices, axis=0)
    return jnp.linalg.eigvalsh(0.5 * (matrix + matrix.T))[0]


def relative_error(z: Float[Array, "... d"], solution: Float[Array, " d"],
                   start: Float[Array, " d"]) -> Float[Array, "..."]:
    """r = ||z - z*||^2 / ||z^0 - z*||^2, the error measure of the `vi/masha` mini-experiment."""
    return jnp.sum((z - solution) ** 2, axis=-1) / jnp.sum((start - solution) ** 2)
