"""Cauchy-Schwarz (CS) divergence and CS quadratic mutual information from samples (Yu et al. 2024, CS-IB).

The CS divergence of two densities is D_CS(p || q) = -log[(int p q)^2 / (int p^2 int q^2)] >= 0, with equality
iff p = q. CS-IB ("Cauchy-Schwarz Divergence Information Bottleneck for Regression", Yu, Yu, Lokse, Jenssen and
Principe, ICLR 2024) minimises

    D_CS(p(y|x) || q(y_hat|x)) + beta * I_CS(x; t),

estimating both terms with kernel density estimates over a batch. Everything here uses the Gaussian kernel
kappa(a, b) = exp(-||a - b||^2 / (2 sigma^2)) and the Gram matrices K = kappa(x_i, x_j), L = kappa(., .).

Official code: github.com/SJYuCNEL/Cauchy-Schwarz-Information-Bottleneck at 252f86b, file `loss_cs.py`
(cited below as loss_cs.py:LINE; the training script is CS_IB_Housing.py). This module was written from the
propositions and checked against a numpy transcription of that code in tests/test_losses_cs.py; nothing is copied.

Conventions: samples are rows, `[N, d]`; a vector `[N]` is read as `[N, 1]`. Results are scalars in nats unless
`base` says otherwise. Kernels are handled in the log domain (logsumexp), so a small `sigma` or a far-off
prediction gives a large finite value instead of log(0). All functions are pure and work under jit, vmap (e.g.
over a batch of `sigma`) and grad.

>>> import jax.numpy as jnp
>>> from gvlab.losses import cs_conditional_divergence, cs_quadratic_mutual_information
>>> x = jnp.linspace(-1.0, 1.0, 8)
>>> float(cs_conditional_divergence(x, jnp.sin(x), jnp.sin(x), sigma=1.0))
0.0
>>> bool(cs_quadratic_mutual_information(x, 2.0 * x, sigma=1.0) > 0)
True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from jaxtyping import Array, ArrayLike, Float

ESTIMATORS = ("paper", "code")


def _rows(z: jax.Array) -> jax.Array:
    """`[N] -> [N, 1]`; `[N, d]` unchanged (a scalar target per example is the common regression case)."""
    z = jnp.asarray(z)
    if z.ndim == 1:
        return z[:, None]
    if z.ndim != 2:
        raise ValueError(f"expected samples of shape [N] or [N, d], got {z.shape}")
    return z


def _squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """`[N, M]` matrix of ||a_i - b_j||^2 by the Gram expansion (O(N M) memory, as loss_cs.py:30-39), clamped at 0
    because rounding can make the expansion slightly negative, which would give a kernel value above 1."""
    sq_a = jnp.sum(a * a, axis=-1)
    sq_b = jnp.sum(b * b, axis=-1)
    return jnp.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * (a @ b.T), 0.0)


def _log_gram(a: jax.Array, b: jax.Array, sigma: ArrayLike) -> jax.Array:
    """log kappa(a_i, b_j) = -||a_i - b_j||^2 / (2 sigma^2), `[N, M]`."""
    return -_squared_distances(a, b) / (2.0 * jnp.square(sigma))


def cs_conditional_divergence(x: Float[ArrayLike, "N *dx"], y: Float[ArrayLike, "N *dy"],
                              y_hat: Float[ArrayLike, "N *dy"], sigma: Float[ArrayLike, ""],
                              estimator: str = "paper", base: float | None = None) -> Float[Array, ""]:
    """Conditional CS divergence D_CS(p(y|x) || q(y_hat|x)) from paired samples (x_i, y_i, y_hat_i).

    With K_ji = kappa(x_j, x_i), L1_ji = kappa(y_j, y_i), L2_ji = kappa(y_hat_j, y_hat_i) and
    L21_ji = kappa(y_hat_j, y_i), and a row weight w_j,

        D = log sum_j w_j sum_i K_ji L1_ji + log sum_j w_j sum_i K_ji L2_ji - 2 log sum_j w_j sum_i K_ji L21_ji.

    * `estimator="paper"`: w_j = 1 / (sum_i K_ji)^2, Proposition 1 of Yu et al. 2024 (the conditional CS
      divergence estimator of Yu et al. 2023, "The Conditional Cauchy-Schwarz Divergence...").
    * `estimator="code"`: w_j = 1 / sum_i K_ji^2, the official `CS_Div` (loss_cs.py:46-61; the weights are the
      `(K**2).sum(-1)` denominators of lines 53, 56 and 59, the logs are `torch.log2` on line 61). The training
      script calls it with sigma = 1 on standardised x (CS_IB_Housing.py:228).

    Why the two agree in places: multiplying every w_j by one constant c adds log c to each log-sum, and the
    combination (1 + 1 - 2) cancels it. So they give the same number (after converting the base) whenever
    (sum_i K_ji)^2 / sum_i K_ji^2 is the same for every row j: K = I (points further apart than a few sigma),
    K = all ones (identical x), or any K whose rows are permutations of each other (x equally spaced on a
    circle). Both give exactly 0 when y_hat = y (the three Gram matrices coincide).

    Args:
        x: conditioning samples `[N, dx]` or `[N]`.
        y: targets `[N, dy]` or `[N]`.
        y_hat: predictions, same shape as `y`.
        sigma: kernel width, a scalar (an array scalar under vmap), shared by all three kernels as in the
            official code.
        estimator: `"paper"` or `"code"` (static).
        base: logarithm base (static). `None` means e for `"paper"` and 2 for `"code"`, the official unit.

    Returns:
        The scalar estimate. It is 0 for y_hat = y; it is not guaranteed non-negative for finite N.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    x, y, y_hat = _rows(x), _rows(y), _rows(y_hat)
    if y.shape != y_hat.shape or x.shape[0] != y.shape[0]:
        raise ValueError(f"need x [N, dx] and y, y_hat [N, dy]; got {x.shape}, {y.shape}, {y_hat.shape}")
    if base is None:
        base = math.e if estimator == "paper" else 2.0
    log_k = _log_gram(x, x, sigma)
    if estimator == "paper":
        log_w = -2.0 * logsumexp(log_k, axis=-1)  # 1 / (row sum of K)^2
    else:
        log_w = -logsumexp(2.0 * log_k, axis=-1)  # 1 / (row sum of K**2), loss_cs.py:53
    # Row j of L21 compares the prediction y_hat_j with every target y_i (loss_cs.py:50: GaussianMatrix(y2, y1)).
    log_terms = [logsumexp(log_w + logsumexp(log_k + _log_gram(a, b, sigma), axis=-1))
                 for a, b in ((y, y), (y_hat, y_hat), (y_hat, y))]
    return (log_terms[0] + log_terms[1] - 2.0 * log_terms[2]) / math.log(base)


def cs_quadratic_mutual_information(x: Float[ArrayLike, "N *dx"], t: Float[ArrayLike, "N *dt"],
                                    sigma: Float[ArrayLike, ""], base: float = math.e,
                                    normalize: bool = False) -> Float[Array, ""]:
    """CS quadratic mutual information I_CS(x; t) = D_CS(p(x, t) || p(x) p(t)) from paired samples.

    With K = Gram(x), L = Gram(t) (Proposition 2 of Yu et al. 2024; loss_cs.py:64-97, `CS_QMI`),

        I_CS = log (1/N^2) tr(K L) + log (1/N^4) (1'K1)(1'L1) - 2 log (1/N^3) 1'K L 1.

    The powers of N cancel (-2 - 4 + 6 = 0) and are dropped. tr(K L) = sum_ij K_ij L_ij and 1'KL1 = 1'LK1 for
    symmetric Gram matrices, so the estimate is symmetric in (x, t). The three sums are inner products of
    kernel density estimates (Gaussian convolutions of Gaussians), so by Cauchy-Schwarz the estimate is >= 0.

    `normalize=True` returns I_CS(x; t) / sqrt(I_CS(x; x) I_CS(t; t)), the official `CS_QMI_normalized`
    (loss_cs.py:109-115), which is what the official training loop penalises (CS_IB_Housing.py:225, sigma = 1);
    its value does not depend on `base`. The official `CS_QMI` uses log2 (line 95): pass `base=2` to match.

    Args:
        x: samples `[N, dx]` or `[N]`.
        t: paired samples (e.g. the bottleneck representation) `[N, dt]` or `[N]`.
        sigma: kernel width shared by both kernels (loss_cs.py:82-83), a scalar.
        base: logarithm base (static).
        normalize: divide by the geometric mean of the two self-informations (static).

    Returns:
        The scalar estimate.
    """
    x, t = _rows(x), _rows(t)
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"x and t need the same number of samples, got {x.shape} and {t.shape}")
    log_k, log_l = _log_gram(x, x, sigma), _log_gram(t, t, sigma)

    def qmi(log_a: jax.Array, log_b: jax.Array) -> jax.Array:
        joint = logsumexp(log_a + log_b)  # log tr(A B) = log sum_ij A_ij B_ij
        product = logsumexp(log_a) + logsumexp(log_b)  # log (1'A1)(1'B1)
        cross = logsumexp(logsumexp(log_a, axis=-1) + logsumexp(log_b, axis=-1))  # log 1'A B 1
        return joint + product - 2.0 * cross

    if normalize:
        return qmi(log_k, log_l) / jnp.sqrt(qmi(log_k, log_k) * qmi(log_l, log_l))
    return qmi(log_k, log_l) / math.log(base)


def median_bandwidth(z: Float[ArrayLike, "N *d"], variant: str = "distance") -> Float[Array, ""]:
    """Kernel width from the median pairwise distance of the samples `z` (`[N, d]` or `[N]`).

    * `variant="distance"`: sigma = median_{i<j} ||z_i - z_j||, the usual median heuristic.
    * `variant="code"`: the official `sigma_estimation(z, z)` (loss_cs.py:5-17), which is a different number:
      the median of *squared* distances (its `distmat`, lines 19-28, returns squared distances) over the lower
      triangle of the doubled sample [z; z] (so each pair counts four times and N zero self-pairs are included),
      replaced by the mean if it is <= 0 and floored at 0.01. `CS_QMI` without a sigma then uses 10 times that
      value for each variable (lines 74-76); the published training script passes sigma = 1 instead.

    The result is wrapped in `stop_gradient`: a bandwidth heuristic is a setting, not a path for gradients (the
    official code computes it on detached numpy arrays, line 9).
    """
    if variant not in ("distance", "code"):
        raise ValueError(f"variant must be 'distance' or 'code', got {variant!r}")
    z = jax.lax.stop_gradient(_rows(z))
    if variant == "distance":
        rows, cols = jnp.triu_indices(z.shape[0], k=1)
        return jnp.median(jnp.sqrt(_squared_distances(z, z)[rows, cols]))
    doubled = jnp.concatenate([z, z])
    rows, cols = jnp.tril_indices(doubled.shape[0], k=-1)
    below = _squared_distances(doubled, doubled)[rows, cols]
    med = jnp.median(below)
    med = jnp.where(med <= 0, jnp.mean(below), med)
    return jnp.maximum(med, 1e-2)
