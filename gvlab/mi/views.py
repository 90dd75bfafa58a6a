"""Chunk views of a multi-latent generator, the InfoNCE critic that measures a chunk's MI, and SimCLR on the views.

Views (Serez et al. 2025, Sec. 4; official `RandomWalker`, SerezD/mi_ml_gen `src/noise_maker/walkers.py`): an
anchor x = g(z) and a positive x' = g(z') where z' resamples the chunks in a 0/1 mask over latent coordinates.

* `make_critic(cfg)`: the MI estimator of Sec. 3 with the random walker: an MLP critic F (L2-normalised features,
  temperature 0.1) trained to minimise L_NCE(g(z), g(z')) on fresh anchors every step (the official
  `train_navigator.py`, "Update mutual_info_estimator" step, lines 239-249, without the adversarial walker
  update); I_hat = log(2B - 1) - L_NCE (`gvlab.mi.infonce`). The mask is the run's `args["mask"]`, so every
  chunk (and the identical-view / all-resampled controls) is one member of one compiled fit.
* `make_simclr(cfg)`: SimCLR (NT-Xent, Chen et al. 2020) on chunk views with continuous sampling (fresh anchors
  every batch, the official `BatchManager.generate_batch`) plus a pixel transform T_x (a random shift of up to
  `shift` px, crop-like, no intensity jitter: the `no_color` setting); `args["mask"]` picks the resampled chunks.
* `probe_eval`: linear-probe accuracy of the encoder's features on real data (`gvlab.probe`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from gvlab import probe
from gvlab.data import sampled_batches
from gvlab.mi import generator as gen_lib
from gvlab.mi import infonce
from gvlab.nn.mlp import MLP
from gvlab.types import Batch, DataSource, Method, Params, PRNGKey


@dataclasses.dataclass(frozen=True, kw_only=True)
class CriticConfig:
    """MI critic: MLP widths on the flattened 16x16 views (notes: 256 -> 256 -> 64), SupCon temperature 0.1."""

    hidden: tuple[int, ...] = (256, 64)
    temperature: float = 0.1


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimCLRConfig:
    """Encoder 256 -> 256 -> 128 (features the probe reads), projector 128 -> 64, NT-Xent temperature 0.2."""

    encoder: tuple[int, ...] = (256, 128)
    projector: tuple[int, ...] = (64,)
    temperature: float = 0.2
    shift: int = 1


def latent_batches(batch_size: int) -> DataSource:
    """Continuous sampling: fresh anchors z and fresh replacement draws for every step."""

    def sample(key: PRNGKey) -> Batch:
        anchor_key, fresh_key = jax.random.split(key)
        return {"z": gen_lib.sample_latents(anchor_key, batch_size),
                "fresh": gen_lib.sample_latents(fresh_key, batch_size)}

    return sampled_batches(sample)


def view_pair(gen: gen_lib.Generator, batch: Batch, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(g(z), g(z with the masked coordinates resampled)), flattened to [B, 256]."""
    z = batch["z"]
    x = gen_lib.render(gen, z)
    x_view = gen_lib.render(gen, gen_lib.resample(z, batch["fresh"], mask))
    return x.reshape(len(z), -1), x_view.reshape(len(z), -1)


def _random_shift(key: PRNGKey, images: jax.Array, shift: int) -> jax.Array:
    """T_x: each image rolled by an integer offset in [-shift, shift]^2 with zero fill (a crop-and-pad)."""
    if shift == 0:
        return images
    side = gen_lib.SIZE
    offsets = jax.random.randint(key, (len(images), 2), -shift, shift + 1)

    def one(image, offset):
        padded = jnp.pad(image.reshape(side, side), shift)
        return jax.lax.dynamic_slice(padded, (shift - offset[0], shift - offset[1]), (side, side)).reshape(-1)

    return jax.vmap(one)(images, offsets)


def make_critic(cfg: CriticConfig) -> Method:
    """InfoNCE critic on chunk views; `loss(..., args={"mask": [Z]})`; terms `nce/loss` and `nce/mi` (nats)."""
    gen = gen_lib.make()
    net = MLP(cfg.hidden)

    def init(key: PRNGKey, batch: Batch) -> Params:
        return net.init(key, jnp.zeros((1, gen_lib.SIZE * gen_lib.SIZE), jnp.float32))

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array, args: dict | None = None):
        if args is None or "mask" not in args:
            raise ValueError("the critic's loss needs args={'mask': [Z]} (which chunks the view resamples)")
        x, x_view = view_pair(gen, batch, args["mask"])
        value = infonce.info_nce(infonce.cosine_scores(net.apply(params, x), net.apply(params, x_view),
                                                       cfg.temperature))
        return value, {"nce/loss": value, "nce/mi": infonce.mi_estimate(value, len(x))}

    return Method(init=init, loss=loss)


def critic_loss(cfg: CriticConfig, params: Params, batch: Batch, mask: jax.Array) -> jax.Array:
    """L_NCE of a trained critic on one batch of views (for held-out estimates)."""
    x, x_view = view_pair(gen_lib.make(), batch, mask)
    net = MLP(cfg.hidden)
    return infonce.info_nce(infonce.cosine_scores(net.apply(params, x), net.apply(params, x_view), cfg.temperature))


def encode(cfg: SimCLRConfig, params: Params, x: jax.Array) -> jax.Array:
    """The SimCLR encoder's features (before the projector) of flattened images [N, 256]."""
    return MLP(cfg.encoder).apply(params["encoder"], x)


def make_simclr(cfg: SimCLRConfig) -> Method:
    """SimCLR on chunk views (module docstring); `loss(..., args={"mask": [Z]})`; term `simclr/nt_xent`."""
    gen = gen_lib.make()
    encoder, projector = MLP(cfg.encoder), MLP(cfg.projector)

    def init(key: PRNGKey, batch: Batch) -> Params:
        encoder_key, projector_key = jax.random.split(key)
        x = jnp.zeros((1, gen_lib.SIZE * gen_lib.SIZE), jnp.float32)
        return {"encoder": encoder.init(encoder_key, x),
                "projector": projector.init(projector_key, jnp.zeros((1, cfg.encoder[-1]), jnp.float32))}

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array, args: dict | None = None):
        if args is None or "mask" not in args:
            raise ValueError("the SimCLR loss needs args={'mask': [Z]} (which chunks the positive view resamples)")
        x, x_view = view_pair(gen, batch, args["mask"])
        first_key, second_key = jax.random.split(key)
        x, x_view = _random_shift(first_key, x, cfg.shift), _random_shift(second_key, x_view, cfg.shift)
        h = jax.nn.relu(encode(cfg, params, jnp.concatenate([x, x_view])))  # SimCLR's g(.) reads relu(h)
        z = projector.apply(params["projector"], h)
        value = infonce.nt_xent(z[:len(x)], z[len(x):], cfg.temperature)
        return value, {"simclr/nt_xent": value}

    return Method(init=init, loss=loss)


def few_labels(y, per_class: int, num_classes: int = 10):
    """Indices of the first `per_class` examples of each class (a fixed few-label training subset)."""
    import numpy as np

    y = np.asarray(y)
    index = [np.flatnonzero(y == k)[:per_class] for k in range(num_classes)]
    if min(len(i) for i in index) < per_class:
        raise ValueError(f"fewer than {per_class} examples in some class")
    return np.concatenate(index)


def probe_eval(cfg: SimCLRConfig, train: dict, test: dict, num_classes: int = 10, l2: float = 1e-3,
               steps: int = 100, per_class: int = 0):
    """`Spec.evals` entry: test accuracy of a logistic probe (`gvlab.probe`) on the frozen encoder features,
    trained on every training example (`accuracy`) and, with `per_class` > 0, on that many labels per class
    (`accuracy_few`: where the representation matters more than for a probe on 1497 labels)."""
    train_x, test_x = train["x"].reshape(len(train["x"]), -1), test["x"].reshape(len(test["x"]), -1)
    few = few_labels(train["y"], per_class, num_classes) if per_class else None

    def evaluate(params: Params, key: PRNGKey) -> dict:
        del key
        features, test_features = encode(cfg, params, train_x), encode(cfg, params, test_x)
        fitted = probe.fit_logistic(features, train["y"], num_classes, l2=l2, steps=steps)
        out = {"accuracy": probe.accuracy(fitted, test_features, test["y"])}
        if few is not None:
            fitted = probe.fit_logistic(features[few], train["y"][few], num_classes, l2=l2, steps=steps)
            out["accuracy_few"] = probe.accuracy(fitted, test_features, test["y"])
        return out

    return evaluate
