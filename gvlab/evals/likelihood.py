"""Importance-sampled log-likelihood estimates and their convergence in the number of samples S.

For a latent-variable model p(x, z) (a CVAE: p(x|a) = int p(x|a, z) p(z|a) dz) and a proposal q(z|x) with
log weights log w_s = log p(x, z_s) - log q(z_s|x), z_s ~ q:

    L_S = log (1/S) sum_{s<=S} w_s,     E[L_S] <= log p(x),    L_S -> log p(x) as S -> infinity

(Burda et al. 2016, Eq. 8 and Theorem 1). E[L_S] is non-decreasing in S, so the estimate at growing S on one
draw shows whether it has converged. With the recognition network q(z|x, a) as proposal this is Sohn et al.'s
(2015) conditional log-likelihood estimator (official code `kihyuks/nips2015_cvae`, `matlab/dcgm/dcgm_ll.m`
lines 301-304: `logpy + logpz - logqz`, then log-sum-exp minus log(nsample)). With the prior p(z|a) as proposal the
weights are log p(x|a, z_s) alone: the same bound, but a proposal that ignores x needs a number of samples that
grows like exp(KL(p(z|x, a) || p(z|a))), so at moderate S it sits far below log p(x|a).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.losses import iwae_bound


def sampled_log_weights(log_weights_fn: Callable[[jax.Array, int], jax.Array], key: jax.Array, num_samples: int,
                        chunk: int) -> Float[Array, "S *batch"]:
    """`num_samples` log weights from `log_weights_fn(key, n) -> [n, *batch]`, drawn `chunk` at a time.

    The chunks run one after another (`lax.map`), so memory is that of `chunk` samples, not of all S (5000 samples
    of a decoder over a test set do not fit at once). Chunk i uses `fold_in(key, i)`.
    """
    if num_samples % chunk:
        raise ValueError(f"num_samples={num_samples} must be a multiple of chunk={chunk}")
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_samples // chunk))
    weights = jax.lax.map(lambda k: log_weights_fn(k, chunk), keys)  # [num_chunks, chunk, *batch]
    return weights.reshape((num_samples,) + weights.shape[2:])


def iwae_curve(log_weights: Float[Array, "S *batch"], counts: Sequence[int]) -> Float[Array, "C *batch"]:
    """`L_s = log (1/s) sum_{k<s} exp(log w_k)` for each s in `counts`: the estimate from the first s weights.

    The estimates at the smaller counts reuse the first s of the same draw (nested prefixes), so the curve is the
    one a longer run would pass through; each point is itself an IWAE bound with s samples.
    """
    if max(counts) > log_weights.shape[0]:
        raise ValueError(f"counts {tuple(counts)} exceed the {log_weights.shape[0]} weights")
    return jnp.stack([iwae_bound(log_weights[:s]) for s in counts])
