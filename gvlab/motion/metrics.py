"""minADE_K / minFDE_K: the best of K sampled futures, per example, then averaged over examples.

For one example with true future `y_t` (t = 1..T) and K samples `yhat_{k,t}` (Gupta et al. 2018, Social GAN, Sec. 4.1;
Salzmann et al. 2020, Trajectron++, Sec. 5 "Best-of-N"):

    ADE_k = (1/T) sum_t ||yhat_{k,t} - y_t||_2          FDE_k = ||yhat_{k,T} - y_T||_2
    minADE_K = min_k ADE_k                               minFDE_K = min_k FDE_k

The two minima are taken independently (the sample closest on average need not be the one closest at the end), as
in Social GAN's `scripts/evaluate_model.py::evaluate_helper` and Trajectron++'s `evaluation.py`. Distances are
Euclidean in metres, not squared.

Shapes follow the trajectory batch format of `gvlab.motion`: samples `[K, B, T, 2]`, truth `[B, T, 2]`.

* `step_mask` `[B, T]` (optional) marks the real future steps of each example (real steps first): ADE averages over
  them and FDE reads the last real one. The conventional ETH/UCY protocol keeps only complete windows, so it is
  all-True there; it exists for loaders that keep short futures.
* `example_mask` `[B]` (optional) marks real examples in a padded batch; the average is over real examples only.

`joint_min_ade_fde` is the scene-level ("joint") variant of Social GAN's `evaluate_helper`, which GCRL's
`utils.py::evaluate_helper` also uses: per scene, the minimum over k of the error *summed over its agents*, so one
sample index must be good for every agent at once. It is never smaller than the per-agent minimum; papers using it
report larger numbers for the same predictions, so the two are kept apart.

    >>> import jax.numpy as jnp
    >>> truth = jnp.zeros((1, 2, 2))
    >>> samples = jnp.array([[[[3.0, 4.0], [3.0, 4.0]]], [[[0.0, 1.0], [0.0, 3.0]]]])  # K=2, B=1, T=2
    >>> {k: float(v) for k, v in min_ade_fde(samples, truth).items()}
    {'min_ade': 2.0, 'min_fde': 3.0}
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from gvlab.errors import ConfigError

__all__ = ["displacement_errors", "min_over_samples", "min_ade_fde", "joint_min_ade_fde"]


def _check(samples: Array, truth: Array) -> None:
    if samples.ndim != truth.ndim + 1 or samples.shape[1:] != truth.shape or truth.shape[-1] != 2:
        raise ConfigError(f"samples must be [K, *batch, T, 2] and truth [*batch, T, 2]; got samples "
                          f"{tuple(samples.shape)} and truth {tuple(truth.shape)}")


def displacement_errors(samples: Float[Array, "k *batch t 2"], truth: Float[Array, "*batch t 2"],
                        step_mask: Bool[Array, "*batch t"] | None = None
                        ) -> tuple[Float[Array, "k *batch"], Float[Array, "k *batch"]]:
    """ADE_k and FDE_k of every sample (no minimum yet): mean distance over real steps, distance at the last real one.

    Returns `(ade, fde)`, each `[K, *batch]`.
    """
    _check(samples, truth)
    distance = jnp.linalg.norm(samples - truth[None], axis=-1)  # [K, *batch, T]
    if step_mask is None:
        return jnp.mean(distance, axis=-1), distance[..., -1]
    step_mask = jnp.broadcast_to(step_mask, truth.shape[:-1])
    count = jnp.sum(step_mask, axis=-1)
    ade = (jnp.sum(jnp.where(step_mask[None], distance, 0.0), axis=-1)
           / jnp.maximum(count, 1).astype(distance.dtype)[None])
    last = jnp.maximum(count - 1, 0)  # real steps come first, so the last real one is at count - 1
    fde = jnp.take_along_axis(distance, jnp.broadcast_to(last[None, ..., None], distance.shape[:-1] + (1,)),
                              axis=-1)[..., 0]
    return ade, fde


def min_over_samples(samples: Float[Array, "k *batch t 2"], truth: Float[Array, "*batch t 2"],
                     step_mask: Bool[Array, "*batch t"] | None = None
                     ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """Per-example minADE_K and minFDE_K, `[*batch]` each (independent minima over the K samples)."""
    ade, fde = displacement_errors(samples, truth, step_mask)
    return jnp.min(ade, axis=0), jnp.min(fde, axis=0)


def min_ade_fde(samples: Float[Array, "k b t 2"], truth: Float[Array, "b t 2"],
                step_mask: Bool[Array, "b t"] | None = None,
                example_mask: Bool[Array, " b"] | None = None) -> dict[str, Float[Array, ""]]:
    """minADE_K / minFDE_K averaged over the (real) examples: `{"min_ade": ..., "min_fde": ...}` in metres."""
    ade, fde = min_over_samples(samples, truth, step_mask)
    if example_mask is None:
        return {"min_ade": jnp.mean(ade), "min_fde": jnp.mean(fde)}
    weight = example_mask.astype(ade.dtype)
    count = jnp.maximum(jnp.sum(weight), 1.0)
    return {"min_ade": jnp.sum(jnp.where(example_mask, ade, 0.0)) / count,
            "min_fde": jnp.sum(jnp.where(example_mask, fde, 0.0)) / count}


def joint_min_ade_fde(samples: Float[Array, "k s n t 2"], truth: Float[Array, "s n t 2"],
                      agent_mask: Bool[Array, "s n"]) -> dict[str, Float[Array, ""]]:
    """Scene-level minADE_K / minFDE_K (Social GAN's and GCRL's `evaluate_helper`): one sample index per scene.

    For scene s with real agents i: `min_k sum_i ADE_{k,s,i}`, summed over scenes and divided by the number of real
    agents (likewise FDE). Padded agents (`agent_mask` False) contribute nothing.
    """
    _check(samples, truth)
    ade, fde = displacement_errors(samples, truth)  # [K, S, N]
    agents = jnp.maximum(jnp.sum(agent_mask), 1).astype(ade.dtype)

    def reduce(error):
        per_scene = jnp.sum(jnp.where(agent_mask[None], error, 0.0), axis=-1)  # [K, S]
        return jnp.sum(jnp.min(per_scene, axis=0)) / agents

    return {"min_ade": reduce(ade), "min_fde": reduce(fde)}
