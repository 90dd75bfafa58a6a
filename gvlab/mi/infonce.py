"""InfoNCE between two views with 2B - 1 candidates per anchor (SimCLR's NT-Xent / SupCon with one positive).

A batch holds B pairs (x_i, y_i) drawn from the joint p(x, y). Stack them as the 2B points
u = (x_1..x_B, y_1..y_B); each point u_a is an anchor, its positive is its partner u_{a +- B}, and the other
2B - 2 points (both views of the other pairs) are its negatives. With a critic score s_ab = f(u_a, u_b):

    L_NCE = (1 / 2B) sum_a  -log( exp(s_{a, pos(a)}) / sum_{b != a} exp(s_ab) )              (Eq. 1)

the denominator runs over 2B - 1 candidates (the positive and 2B - 2 negatives). This is the official code's
`SupConLoss(features)` with `mask = eye(B)` and `contrast_mode='all'` (SerezD/mi_ml_gen, commit 3ee180b,
`src/noise_maker/cop_gen_training/losses.py`, lines 60-98) *without* its factor temperature / base_temperature
(0.1 / 0.07 there), which rescales the loss and would void the bound below.

Mutual-information estimate (van den Oord et al. 2018, Eq. 10; Poole et al. 2019, Eq. 12, with K = 2B - 1):

    I(x; y) >= I_hat = log(2B - 1) - L_NCE,          and always  I_hat <= log(2B - 1)        (Eq. 2)

The ceiling holds for *every* critic: each term of Eq. 1 is -log of a probability (the positive's softmax weight
among the 2B - 1 candidates), so L_NCE >= 0. It is reached (L_NCE -> 0) only when the critic singles out every
positive, e.g. on identical views with a sharp critic; independent views give I_hat ~ 0 (L_NCE ~ log(2B - 1)).
Serez et al. (TMLR 2025, Sec. 3) read a chunk's share of the information from this number: resampling a chunk that
the generator ignores leaves the views identical, so its I_hat sits at the ceiling log(2B - 1).

Critics: `cosine_scores` is the separable critic s_ab = <g(u_a), g(u_b)> / (|g(u_a)| |g(u_b)| tau) of SimCLR and
the official code (L2-normalised features, temperature 0.1); `pairwise_scores` evaluates any joint ("concat")
critic f(u_a, u_b), e.g. the optimal critic log p(y | x) / p(y) in closed form.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

Critic = Callable[[jax.Array, jax.Array], jax.Array]


def ceiling(batch_size: int) -> float:
    """log(2B - 1): the largest value `mi_estimate` can take with B pairs (Eq. 2)."""
    if batch_size < 2:
        raise ValueError(f"InfoNCE needs at least 2 pairs per batch (negatives), got batch_size={batch_size}")
    return math.log(2 * batch_size - 1)


def positives(batch_size: int) -> jax.Array:
    """Index of each stacked point's positive: a -> a + B for a < B, a - B otherwise."""
    index = jnp.arange(2 * batch_size)
    return (index + batch_size) % (2 * batch_size)


def info_nce(scores: Float[Array, "2B 2B"]) -> Float[Array, ""]:
    """L_NCE of Eq. 1 from the critic scores of the 2B stacked points `(x_1..x_B, y_1..y_B)`, in nats.

    `scores[a, b] = f(u_a, u_b)`; the diagonal (an anchor against itself) is excluded, so each anchor's softmax
    runs over its 2B - 1 candidates. Mean over the 2B anchors.
    """
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] % 2:
        raise ValueError(f"scores must be [2B, 2B] (both views stacked), got shape {scores.shape}")
    n = scores.shape[0]
    masked = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, scores)
    log_prob = masked - jax.nn.logsumexp(masked, axis=1, keepdims=True)
    return -jnp.mean(jnp.take_along_axis(log_prob, positives(n // 2)[:, None], axis=1))


def mi_estimate(loss: Float[Array, "..."], batch_size: int) -> Float[Array, "..."]:
    """I_hat = log(2B - 1) - L_NCE (Eq. 2), in nats; <= log(2B - 1) for any critic."""
    return ceiling(batch_size) - loss


def cosine_scores(features_x: Float[Array, "B D"], features_y: Float[Array, "B D"],
                  temperature: float | jax.Array = 0.1) -> Float[Array, "2B 2B"]:
    """Separable critic: cosine similarity / temperature between all stacked features (SimCLR, SupCon)."""
    if features_x.shape != features_y.shape:
        raise ValueError(f"both views need features of one shape, got {features_x.shape} and {features_y.shape}")
    u = jnp.concatenate([features_x, features_y], axis=0)
    u = u / jnp.maximum(jnp.linalg.norm(u, axis=-1, keepdims=True), 1e-12)
    return u @ u.T / temperature


def pairwise_scores(critic: Critic, x: Float[Array, "B D"], y: Float[Array, "B D"]) -> Float[Array, "2B 2B"]:
    """Joint ("concat") critic: `critic(u_a, u_b)` for every ordered pair of the stacked points."""
    u = jnp.concatenate([x, y], axis=0)
    return jax.vmap(lambda a: jax.vmap(lambda b: critic(a, b))(u))(u)


def nt_xent(features_x: Float[Array, "B D"], features_y: Float[Array, "B D"],
            temperature: float | jax.Array = 0.2) -> Float[Array, ""]:
    """SimCLR's NT-Xent loss (Chen et al. 2020, Eq. 1): `info_nce` of the cosine critic."""
    return info_nce(cosine_scores(features_x, features_y, temperature))


def gaussian_optimal_critic(rho: float) -> Critic:
    """log p(y | x) / p(y) for standard normal x, y with per-dimension correlation rho (the optimal critic).

    log p(y|x) - log p(y) = sum_d [ -(y_d - rho x_d)^2 / (2 (1 - rho^2)) + y_d^2 / 2 ] - (D / 2) log(1 - rho^2);
    its expectation under the joint is the MI, -(D / 2) log(1 - rho^2).
    """
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must lie in (-1, 1), got {rho}")
    var = 1.0 - rho ** 2

    def critic(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.sum(-jnp.square(b - rho * a) / (2 * var) + 0.5 * jnp.square(b)) - 0.5 * a.shape[-1] * math.log(var)

    return critic


def gaussian_mi(rho: float, dim: int) -> float:
    """Closed-form I(x; y) = -(D / 2) log(1 - rho^2) of D independent correlated standard-normal pairs."""
    return -0.5 * dim * math.log(1.0 - rho ** 2)
