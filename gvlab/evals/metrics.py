"""The shared evaluation metrics, in one place: pure jnp, so they jit, vmap (over runs) and differentiate.

Image fidelity (re-exported, one implementation each):

* `psnr` (`gvlab.inverse.metrics`): 10 log10(L^2 / MSE) in dB per image.
* `ssim` (`gvlab.inverse.lensless`): Wang et al. 2004, Eq. 13, with an 11-tap Gaussian window (skimage's numbers).

Generative models:

* `sample_std`: the pixel std across the S samples of one condition, averaged over pixels and conditions: the
  "diversity" of the inverse-problem experiments (RED-Diff, FLAIR).
* `mean_pairwise_distance`: the mean L2 distance over pairs of distinct samples: the "diversity" of the CVAE
  experiment (Sohn et al. 2015). Both vanish exactly when the samples coincide; the first is the root of half the
  mean squared pairwise *per-pixel* difference (see its docstring), the second a mean of whole-sample distances.
* `sliced_wasserstein` (`gvlab.diffusion.metrics`): SWD_2 between two point clouds (Bonneel et al. 2015).
* `elbo_iwae`: held-out ELBO and IWAE bound per example from log importance weights (Burda et al. 2016).

Representations:

* `active_units` (`gvlab.diagnostics`): Burda et al. 2016's count of latent dimensions with Var_x E_q[z_i|x] > 0.01.
* `probe_accuracy`: test accuracy of a multinomial logistic probe (`gvlab.probe`) fitted on training features.

Classifiers, from logits and integer labels:

* `accuracy`, `nll` (mean negative log-likelihood, nats), `expected_calibration_error` (Guo et al. 2017, Eq. 3,
  equal-width confidence bins), and `classification_metrics` (the three as one evaluator-ready dict);
  `average_precision` (`gvlab.ehr.metrics`: AUPRC as scikit-learn defines it, from scores and binary labels).

    >>> import jax.numpy as jnp
    >>> logits = jnp.log(jnp.array([[0.75, 0.25], [0.35, 0.65]]))
    >>> labels = jnp.array([0, 0])   # right with confidence 0.75, wrong with 0.65: ECE = (0.25 + 0.65) / 2
    >>> {k: round(float(v), 4) for k, v in classification_metrics(logits, labels, num_bins=10).items()}
    {'accuracy': 0.5, 'nll': 0.6688, 'ece': 0.45}
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from gvlab import probe as probe_lib
from gvlab.diagnostics import active_units as active_units
from gvlab.diffusion.metrics import sliced_wasserstein as sliced_wasserstein
from gvlab.ehr.metrics import average_precision as average_precision
from gvlab.inverse.lensless import ssim as ssim
from gvlab.inverse.metrics import psnr as psnr
from gvlab.losses.elbo import iwae_bound

__all__ = [
    "psnr", "ssim", "sample_std", "mean_pairwise_distance", "sliced_wasserstein", "elbo_iwae", "active_units",
    "probe_accuracy", "accuracy", "nll", "expected_calibration_error", "classification_metrics",
    "average_precision",
]


# ----------------------------------------------------------------------------------------------- sample diversity


def sample_std(samples: Float[Array, "*batch N S *event"], event_ndim: int = 2) -> Float[Array, "*batch"]:
    """Diversity as the inverse-problem experiments define it: per-pixel std over S samples, averaged.

        D = (1 / (N |event|)) sum_n sum_p std_s(x_{n,s,p}),   std_s(x) = ( (1/S) sum_s (x_s - mean_s x)^2 )^(1/2)

    for N conditions (measurements) with S samples (solutions) each; the population std (ddof 0), as
    `jnp.std`. Equivalently std_s(x)^2 = (1 / (2 S^2)) sum_{s,t} (x_s - x_t)^2: the per-pixel root of half the mean
    squared difference over all ordered pairs (self-pairs included), the per-pixel relative of
    `mean_pairwise_distance`. RED-Diff (Mardani et al. 2024) and FLAIR (Erbach et al. 2025) report it to show
    that a solver's solutions differ.

    Args:
        samples: `[*batch, N, S, *event]`; `event_ndim` trailing axes are the pixels (2 for `[H, W]` images).
        event_ndim: the number of event axes.

    Returns:
        `[*batch]`: the mean over conditions and pixels (a scalar for `[N, S, H, W]`).
    """
    sample_axis = samples.ndim - event_ndim - 1
    if sample_axis < 1:
        raise ValueError(f"need [*batch, N, S, *event] with {event_ndim} event axes, got shape {samples.shape}")
    spread = jnp.std(samples, axis=sample_axis)  # [*batch, N, *event]
    return jnp.mean(spread, axis=tuple(range(sample_axis - 1, spread.ndim)))


def _safe_norm(x: Array, axis: int) -> Array:
    """|x| along `axis`, with a zero (not NaN) gradient at x = 0 (identical samples stay differentiable)."""
    squared = jnp.sum(jnp.square(x), axis=axis)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def mean_pairwise_distance(samples: Float[Array, "K *batch *event"], event_ndim: int = 2) -> Float[Array, "*batch"]:
    """Diversity as the mean Euclidean distance between distinct samples (the CVAE experiment's definition).

        D = (1 / (K (K - 1))) sum_{k != l} | x_k - x_l |_2

    over K >= 2 samples along the first axis, the norm over the `event_ndim` trailing axes; zero exactly when
    all samples coincide (with a zero gradient there). Sohn et al. 2015 (CVAE) compare it with the same quantity
    among real examples of one condition.

    Args:
        samples: `[K, *batch, *event]`.
        event_ndim: the number of trailing axes a sample spans (2 for `[H, W]` images, 1 for vectors).

    Returns:
        `[*batch]`: one value per condition.
    """
    k = samples.shape[0]
    if k < 2:
        raise ValueError(f"need at least two samples along the first axis, got shape {samples.shape}")
    batch_shape = samples.shape[1:samples.ndim - event_ndim]
    flat_KxBxE = samples.reshape(k, math.prod(batch_shape), -1)
    dist_KxKxB = _safe_norm(flat_KxBxE[:, None] - flat_KxBxE[None], axis=-1)
    # The diagonal is exactly 0, so the sum over all pairs is the sum over distinct pairs.
    return (jnp.sum(dist_KxKxB, axis=(0, 1)) / (k * (k - 1))).reshape(batch_shape)


# ------------------------------------------------------------------------------------------------- likelihoods


def elbo_iwae(log_weights: Float[Array, "N K"]) -> dict[str, Float[Array, ""]]:
    """Held-out bounds on log p(x), averaged over N examples, from K log importance weights each.

        log w_k = log p(x, z_k) - log q(z_k | x),  z_k ~ q(z | x)
        ELBO = (1/N) sum_n (1/K) sum_k log w_{n,k}
        IWAE = (1/N) sum_n log (1/K) sum_k w_{n,k}        (Burda et al. 2016, Eq. 8; `gvlab.losses.iwae_bound`)

    ELBO <= IWAE <= log p(x) in expectation; IWAE tightens with K (the ELBO's estimate does not move).

    Args:
        log_weights: `[N, K]`, e.g. the transpose of `gvlab.losses.log_importance_weights` (which is `[K, N]`).

    Returns:
        `{"elbo": scalar, "iwae": scalar}` in nats per example.
    """
    return {"elbo": jnp.mean(log_weights), "iwae": jnp.mean(iwae_bound(log_weights.T))}


# ---------------------------------------------------------------------------------------------- representations


def probe_accuracy(train_features: Float[Array, "N D"], train_labels: Int[Array, " N"],
                   test_features: Float[Array, "M D"], test_labels: Int[Array, " M"], num_classes: int,
                   l2: float = 1e-3, steps: int = 100, standardize: bool = True) -> Float[Array, ""]:
    """Linear-probe accuracy: fit multinomial logistic regression on the training features, score the test ones.

        W, b = argmin (1/N) sum_n -log softmax(x_n W + b)_{y_n} + (l2 / 2) |W|^2,
        acc = (1/M) sum_m [argmax_k (x'_m W + b)_k = y'_m]

    (`gvlab.probe.fit_logistic`, L-BFGS on standardised features; `l2 = 1/(C N)` is scikit-learn's C.) Used for
    the downstream value of a representation (Bonheme & Grzes 2023) and the fidelity of samples (a classifier
    fitted on real data, scored on generated data).
    """
    fitted = probe_lib.fit_logistic(train_features, train_labels, num_classes, l2=l2, steps=steps,
                                    standardize=standardize)
    return probe_lib.accuracy(fitted, test_features, test_labels)


# -------------------------------------------------------------------------------------------------- classifiers


def accuracy(logits: Float[Array, "N C"], labels: Int[Array, " N"]) -> Float[Array, ""]:
    """(1/N) sum_n [argmax_c logits_{n,c} = y_n]; ties go to the lowest class index (`argmax`)."""
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype))


def nll(logits: Float[Array, "N C"], labels: Int[Array, " N"]) -> Float[Array, ""]:
    """Mean negative log-likelihood in nats: -(1/N) sum_n log softmax(logits_n)_{y_n} (the cross-entropy)."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))


def expected_calibration_error(logits: Float[Array, "N C"], labels: Int[Array, " N"],
                               num_bins: int = 15) -> Float[Array, ""]:
    """Expected calibration error with equal-width confidence bins (Guo et al. 2017, Eq. 3; Naeini et al. 2015).

        ECE = sum_{m=1}^{M} (|B_m| / N) | acc(B_m) - conf(B_m) |,
        B_m = { n : p_n in ((m-1)/M, m/M] },  p_n = max_c softmax(logits_n)_c,
        acc(B_m) = (1/|B_m|) sum_{n in B_m} [yhat_n = y_n],   conf(B_m) = (1/|B_m|) sum_{n in B_m} p_n,

    with M = `num_bins` (Guo et al. use 15) and yhat_n = argmax_c logits_{n,c}. Empty bins contribute 0; as the
    sum is (1/N) sum_m |sum_{n in B_m} ([yhat_n = y_n] - p_n)|, no division by a bin count is needed. In [0, 1]:
    0 when every bin's accuracy equals its mean confidence. Differentiable almost everywhere in the logits (the
    bin assignment is piecewise constant).
    """
    probs = jax.nn.softmax(logits, axis=-1)
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(confidence.dtype)
    # Bin m (0-based) holds confidences in (m/M, (m+1)/M]: ceil(p M) - 1, clipped (p > 0 always; p = 1 -> M - 1).
    bins = jnp.clip(jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    gap_M = jax.ops.segment_sum(correct - confidence, bins, num_segments=num_bins)
    return jnp.sum(jnp.abs(gap_M)) / confidence.shape[0]


def classification_metrics(logits: Float[Array, "N C"], labels: Int[Array, " N"],
                           num_bins: int = 15) -> dict[str, Float[Array, ""]]:
    """`{"accuracy", "nll", "ece"}` of `logits` against `labels` (see `accuracy`, `nll`,
    `expected_calibration_error`): what an evaluator of a classifier returns."""
    return {"accuracy": accuracy(logits, labels), "nll": nll(logits, labels),
            "ece": expected_calibration_error(logits, labels, num_bins)}
