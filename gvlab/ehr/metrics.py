"""Metrics of the EHR models: average precision (AUPRC) and the singular-value spectrum of node representations.

Both are pure jnp, so they jit and vmap over the runs of a fit (`gvlab.run.Run.evaluate`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


def average_precision(scores: Float[Array, " N"], labels: Float[Array, " N"]) -> Float[Array, ""]:
    """AUPRC as average precision: AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, descending.

    scikit-learn's `average_precision_score` (tied scores form one threshold; no interpolation). The official VGNN
    code reports `auc(recall, precision)` (trapezoidal), which differs slightly; AP is the notes' metric. NaN when
    there is no positive.

    Each positive contributes P at the end of its tie group: AP = (1 / #pos) sum_{i positive} tp(g_i) / (g_i + 1),
    where g_i is the last sorted index of i's tie group.
    """
    order = jnp.argsort(-scores)
    sorted_scores, hits = scores[order], labels[order].astype(jnp.float32)
    true_positives = jnp.cumsum(hits)
    index = jnp.arange(scores.shape[0])
    group_end = jnp.append(sorted_scores[1:] != sorted_scores[:-1], True)
    end_of_group = jax.lax.cummin(jnp.where(group_end, index, scores.shape[0]), reverse=True)
    precision_at_end = true_positives[end_of_group] / (end_of_group + 1.0)
    positives = jnp.sum(hits)
    return jnp.where(positives > 0, jnp.sum(hits * precision_at_end) / jnp.maximum(positives, 1.0), jnp.nan)


def singular_values(nodes: Float[Array, "B N F"], mask: Bool[Array, "B N"]) -> Float[Array, " F"]:
    """Singular values (descending) of the matrix whose rows are the real nodes of every example, [sum_b n_b, F].

    The paper's interpretive analysis (Zhu & Razavian 2019, Sec. 5): a spectrum dominated by its first values means
    node representations that collapse onto few directions. Padded rows are zeroed, which leaves the singular
    values of the real rows unchanged.

    Computed as sqrt(eigenvalues of the F x F Gram matrix X^T X): the rows number tens of
    thousands, and a vmapped `jnp.linalg.svd` of the tall matrix allocates its full U on CPU (hundreds of GB).
    Relative resolution ~ sqrt(float32 eps) ~ 3e-4 of the largest value.
    """
    rows = jnp.where(mask[..., None], nodes, 0.0).reshape(-1, nodes.shape[-1])
    gram = jnp.einsum("nf,ng->fg", rows, rows, precision=jax.lax.Precision.HIGHEST)
    return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[::-1], 0.0))


def effective_rank(values: Float[Array, "... F"]) -> Float[Array, "..."]:
    """exp(entropy of the normalised singular values) (Roy & Vetterli 2007): F for a flat spectrum, 1 for rank 1."""
    p = values / jnp.sum(values, axis=-1, keepdims=True)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1))
