"""A mean-field Bayesian MLP classifier (local reparameterisation), its ELBO as a `Method`, and its evaluation.

Params: `{"dense_0": layer, ..., "dense_{L-1}": layer}`, each a `gvlab.bayes.layers` layer; ReLU between layers,
logits out. `masks` (same keys, [I, O] each, or None for dense) restrict each layer to a support (SSVI).

The loss is the negative ELBO per example (Blundell et al. 2015, Eq. 2; Li et al. 2024, Eq. 3, with its KL weight),

    L = E_q[-log p(y | x, w)] + lambda(t) * KL(q || p) / N,   lambda(t) = kl_weight * min(1, t / kl_warmup_steps),

the expectation over `num_samples` local-reparameterisation samples per example, averaged over the batch, the KL
over the active weights (`layers.kl_to_prior`), N = `num_data` the training-set size. Terms: `bnn/nll`, `bnn/kl`
(the whole KL, unscaled), `bnn/kl_weight` (lambda(t) / N) and `bnn/accuracy` (of the sampled logits).

    >>> import jax, jax.numpy as jnp
    >>> from gvlab.bayes import mlp
    >>> method = mlp.make(mlp.Config(hidden=(8,), num_classes=3, num_data=4))
    >>> batch = {"x": jnp.ones((4, 5)), "y": jnp.array([0, 1, 2, 0])}
    >>> params = method.init(jax.random.key(0), batch)
    >>> loss, terms = method.loss(params, batch, jax.random.key(1), jnp.int32(0))
    >>> sorted(terms)
    ['bnn/accuracy', 'bnn/kl', 'bnn/kl_weight', 'bnn/nll']
    >>> mlp.forward_flops([(64, 400), (400, 10)], [25600, 4000], batch_size=1)
    {'mean': 60010, 'sampled': 269314}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from gvlab.bayes import layers
from gvlab.evals.metrics import classification_metrics
from gvlab.types import Batch, Method

Params = dict[str, dict[str, Array]]
Masks = dict[str, Array] | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """A Bayesian MLP and its ELBO. Defaults: the digits design of the notes (64 -> 400 -> 400 -> 10, prior
    N(0, 0.1^2), KL weight 1 / N); the official SSVI code uses prior std 0.005 and sigma init ~6e-4 on ResNets.

    Attributes:
        hidden: hidden widths.
        num_classes: output logits.
        prior_std: sigma_p of the prior N(0, sigma_p^2) on every weight.
        init_std: initial posterior sigma of every weight.
        kl_weight: lambda; the loss carries lambda * KL / num_data.
        num_data: N, the training-set size (the KL is per example, like the NLL).
        kl_warmup_steps: linear warm-up of lambda from 0 over this many steps (0: none).
        num_samples: local-reparameterisation samples per example in the loss.
    """

    hidden: tuple[int, ...] = (400, 400)
    num_classes: int = 10
    prior_std: float = 0.1
    init_std: float = 1e-3
    kl_weight: float = 1.0
    num_data: int = 1
    kl_warmup_steps: int = 0
    num_samples: int = 1


def layer_names(num_layers: int) -> list[str]:
    return [f"dense_{i}" for i in range(num_layers)]


def init(cfg: Config, key: PRNGKeyArray, in_dim: int) -> Params:
    """Variational parameters of every layer (`layers.init_dense`), one key each."""
    sizes = [in_dim, *cfg.hidden, cfg.num_classes]
    keys = jax.random.split(key, len(sizes) - 1)
    return {name: layers.init_dense(keys[i], sizes[i], sizes[i + 1], init_std=cfg.init_std)
            for i, name in enumerate(layer_names(len(sizes) - 1))}


def effective(params: Params, masks: Masks = None) -> dict[str, tuple[Array, Array, Array]]:
    """Per layer (mean weight, weight variance, bias) with the masks applied (`layers.moments`)."""
    return {name: (*layers.moments(p, None if masks is None else masks[name]), p["bias"]) for name, p in params.items()}


def logits_from_moments(moments: dict[str, tuple[Array, Array, Array]], x: Float[Array, "B ..."],
                        key: PRNGKeyArray | None) -> Float[Array, "B C"]:
    """The network on per-layer moments; `key=None`: the mean-weight network (deterministic)."""
    h = x.reshape(x.shape[0], -1)
    names = layer_names(len(moments))
    keys = [None] * len(names) if key is None else list(jax.random.split(key, len(names)))
    for i, name in enumerate(names):
        h = layers.dense_from_moments(h, *moments[name], keys[i])
        if i < len(names) - 1:
            h = jax.nn.relu(h)
    return h


def logits(params: Params, x: Float[Array, "B ..."], key: PRNGKeyArray | None, masks: Masks = None
           ) -> Float[Array, "B C"]:
    """One local-reparameterisation sample of the logits (`key=None`: the mean-weight logits)."""
    return logits_from_moments(effective(params, masks), x, key)


def kl(params: Params, prior_std: float, masks: Masks = None) -> Float[Array, ""]:
    """KL(q || p) over all layers' active weights."""
    return sum(layers.kl_to_prior(p, prior_std, None if masks is None else masks[name]) for name, p in params.items())


def kl_scale(cfg: Config, step: Array) -> Float[Array, ""]:
    """lambda(t) / N: the factor of the KL in the per-example loss (linear warm-up when `kl_warmup_steps` > 0)."""
    warm = 1.0 if cfg.kl_warmup_steps <= 0 else jnp.minimum(1.0, step.astype(jnp.float32) / cfg.kl_warmup_steps)
    return jnp.asarray(cfg.kl_weight * warm / cfg.num_data, jnp.float32)


def negative_elbo(cfg: Config, moments: dict, kl_value: Array, batch: Batch, key: PRNGKeyArray, step: Array
                  ) -> tuple[Array, dict[str, Array]]:
    """(L, terms) of the module docstring from the layers' moments and the KL already computed."""
    keys = jax.random.split(key, cfg.num_samples)
    logits_SxBxC = jax.vmap(lambda k: logits_from_moments(moments, batch["x"], k))(keys)
    log_p_SxBxC = jax.nn.log_softmax(logits_SxBxC, axis=-1)
    labels_SxB = jnp.broadcast_to(batch["y"][None, :], logits_SxBxC.shape[:2])
    nll = -jnp.mean(jnp.take_along_axis(log_p_SxBxC, labels_SxB[..., None], axis=-1))
    scale = kl_scale(cfg, step)
    accuracy = jnp.mean((jnp.argmax(logits_SxBxC, -1) == labels_SxB).astype(nll.dtype))
    return nll + scale * kl_value, {"bnn/nll": nll, "bnn/kl": kl_value, "bnn/kl_weight": scale,
                                    "bnn/accuracy": accuracy}


def make(cfg: Config) -> Method:
    """The dense mean-field Bayesian MLP as a `Method` (batches `{"x": [B, ...], "y": [B] int}`; default step)."""

    def init_fn(key: PRNGKeyArray, batch: Batch) -> Params:
        return init(cfg, key, math.prod(batch["x"].shape[1:]))

    def loss(params: Params, batch: Batch, key: PRNGKeyArray, step: Array) -> tuple[Array, dict[str, Array]]:
        return negative_elbo(cfg, effective(params), kl(params, cfg.prior_std), batch, key, step)

    return Method(init=init_fn, loss=loss)


# ---------------------------------------------------------------------------------------------------- evaluation


def predictive_log_probs(params: Params, x: Float[Array, "N ..."], key: PRNGKeyArray | None, num_samples: int = 20,
                         masks: Masks = None) -> Float[Array, "N C"]:
    """log p(y | x) of the posterior predictive, log (1/S) sum_s softmax(logits_s), over S local-reparameterisation
    samples (exact per example: each example's outputs have the marginal of a fresh weight draw); `key=None`:
    log softmax of the mean-weight logits (Li et al. 2024 evaluate either)."""
    if key is None:
        return jax.nn.log_softmax(logits(params, x, None, masks), axis=-1)
    log_p_SxNxC = jax.vmap(lambda k: jax.nn.log_softmax(logits(params, x, k, masks), axis=-1))(
        jax.random.split(key, num_samples))
    return logsumexp(log_p_SxNxC, axis=0) - jnp.log(float(num_samples))


def predictive_metrics(params: Params, x: Float[Array, "N ..."], y: Int[Array, " N"], key: PRNGKeyArray | None,
                       num_samples: int = 20, masks: Masks = None, num_bins: int = 15) -> dict[str, Array]:
    """`{"accuracy", "nll", "ece"}` of the posterior predictive (`gvlab.evals.metrics.classification_metrics` on
    its log-probabilities: NLL in nats per example, ECE with `num_bins` equal-width confidence bins)."""
    return classification_metrics(predictive_log_probs(params, x, key, num_samples, masks), y, num_bins)


def count_nonzeros(params: Params, masks: Masks = None) -> dict[str, int | Array]:
    """Active weights per layer (|S_l|; all I x O without masks) and their `total`; each carries a mean and a
    sigma, so the stored non-zeros are twice these (biases are dense and not counted)."""
    counts = {name: (p["mu"].size if masks is None else jnp.sum(masks[name].astype(jnp.int32)))
              for name, p in params.items()}
    return {**counts, "total": sum(counts.values())}


def forward_flops(sizes: Sequence[tuple[int, int]], nonzeros: Sequence[int], batch_size: int = 1) -> dict[str, int]:
    """Analytic FLOPs of one forward pass of `batch_size` examples through layers of `sizes` [(I, O)] with
    `nonzeros` active weights each (a multiply-add is 2 FLOPs; exp/log/sqrt count 1; sparse matmuls cost what
    their non-zeros do, the assumption of Li et al. 2024's FLOP counts).

    * `mean` (mean weights): per layer B (2 nnz + O) [x mu, + bias], plus B O ReLU on hidden layers.
    * `sampled` (local reparameterisation): the mean pass, plus per layer 5 nnz once [softplus (exp, add, log),
      square, mask] for sigma^2, and B (I + 2 nnz + 4 O) [x^2, x^2 sigma^2, + 1e-8, sqrt, * eps, + mean].
    """
    mean = sampled = 0
    for i, ((in_dim, out_dim), nnz) in enumerate(zip(sizes, nonzeros, strict=True)):
        relu = batch_size * out_dim if i < len(sizes) - 1 else 0
        layer_mean = batch_size * (2 * nnz + out_dim) + relu
        mean += layer_mean
        sampled += layer_mean + 5 * nnz + batch_size * (in_dim + 2 * nnz + 4 * out_dim)
    return {"mean": int(mean), "sampled": int(sampled)}
