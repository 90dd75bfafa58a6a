"""Every method of `gvlab.models` as one catalogue of tiny instances: a method, a toy batch and an optimiser each.

`tests/test_conformance.py` runs one set of checks over the catalogue (compiles once, learns, same seed same
numbers, gradients reach every parameter, vmapped seeds equal a loop), so a new method joins by adding one line
to `CATALOGUE`; the toy batches are shared (`images`, `sequences`, `paths`, `videos`, `perceptron_task`) and
fixed (made from constant keys). The configs are the smallest that still exercise every parameter (learned
variances, learned Hurst index...), not settings to reproduce anything with.

    >>> toy = CATALOGUE["vae"]()
    >>> sorted(toy.batch), toy.batch["x"].shape
    (['x'], (8, 4, 4))
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gvlab.bayes import mlp as bayes_mlp
from gvlab.bayes import ssvi
from gvlab.imitation import policies
from gvlab.models import binary_perceptron, fractional_sde, hvae, pvrnn, vae, video_sde, vrnn
from gvlab.nn.policy import GaussianPolicy, Sequencer
from gvlab.types import Batch, Method


class Toy(NamedTuple):
    """A tiny instance of a method: the method, one fixed training batch (its whole data set), an optimiser."""

    method: Method
    batch: Batch
    optimizer: optax.GradientTransformation


def images(binary: bool = True, num: int = 8, shape: tuple[int, int] = (4, 4)) -> Batch:
    """`{"x": [num, *shape]}`: a bright bar per image at a random row, binary or with Gaussian noise."""
    row_key, noise_key = jax.random.split(jax.random.key(0))
    rows = jax.random.randint(row_key, (num,), 0, shape[0])
    bars = (jnp.arange(shape[0])[None, :] == rows[:, None]).astype(jnp.float32)  # [num, H]
    x = jnp.broadcast_to(bars[:, :, None], (num,) + shape)
    return {"x": x if binary else x + 0.1 * jax.random.normal(noise_key, x.shape)}


def sequences(num: int = 4, length: int = 8) -> Batch:
    """`{"x": [num, length, 1], "index": [num]}`: noisy sines of random phase (the PV-RNN / VRNN batch layout)."""
    phase_key, noise_key = jax.random.split(jax.random.key(1))
    t = jnp.arange(length, dtype=jnp.float32)
    x = jnp.sin(0.8 * t[None, :] + jax.random.uniform(phase_key, (num, 1), maxval=6.28))
    x = x + 0.05 * jax.random.normal(noise_key, x.shape)
    return {"x": x[..., None], "index": jnp.arange(num, dtype=jnp.int32)}


def paths(num: int = 4, num_obs: int = 4) -> Batch:
    """`{"obs": [num, num_obs, 1]}`: observations of lines of random slope at t = 1/M, ..., 1."""
    slopes = jax.random.normal(jax.random.key(2), (num, 1, 1))
    t = jnp.arange(1, num_obs + 1, dtype=jnp.float32)[None, :, None] / num_obs
    return {"obs": slopes * t}


def videos(num: int = 2, frames: int = 4, size: int = 4) -> Batch:
    """`{"frames": [num, frames, size, size]}`: a bright bar that moves down one row per frame (wrapping)."""
    start = jax.random.randint(jax.random.key(4), (num, 1), 0, size)
    rows = (start + jnp.arange(frames)[None, :]) % size  # [num, frames]
    bars = (jnp.arange(size)[None, None, :] == rows[:, :, None]).astype(jnp.float32)  # [num, frames, size]
    return {"frames": jnp.broadcast_to(0.1 + 0.8 * bars[..., None], (num, frames, size, size))}


def perceptron_task(examples: int = 16, inputs: int = 8) -> Batch:
    """One task of the continual perceptron (`binary_perceptron.task_data`): a random teacher, a uniform prior."""
    x_key, teacher_key = jax.random.split(jax.random.key(3))
    x = binary_perceptron.examples(x_key, examples, inputs)
    y = binary_perceptron.labels(binary_perceptron.random_teacher(teacher_key, inputs), x)
    return binary_perceptron.task_data(x, y, jnp.zeros((inputs,)))


_SDE = fractional_sde.Config(num_terms=2, hidden=(8,), learn_hurst=True, learn_scale=True, hurst=0.3, solver="scan")
_OBS = fractional_sde.Observations(num_steps=8, noise=0.2)
_VIDEO = video_sde.Config(size=4, num_frames=4, cond_frames=2, latent_dim=1, steps_per_frame=2, num_terms=2,
                          features=2, encoder_hidden=(4,), decoder_hidden=(4,), control_hidden=(4,))

# name -> () -> Toy; one line per method.
_BAYES_MLP = bayes_mlp.Config(hidden=(8,), num_classes=4, num_data=8, prior_std=1.0, kl_weight=0.1, init_std=0.05)


def routing_rows(num: int = 8, history: int = 6) -> Batch:
    """Hierarchical behaviour-cloning rows (`gvlab.imitation.policies`): routing (obs, action) pairs and primitive
    decisions with `Padded`-style histories of random lengths (mask True on real entries, first)."""
    obs_key, ids_key, len_key, label_key = jax.random.split(jax.random.key(9), 4)
    obs = jax.random.normal(obs_key, (num, 9))
    mask = jnp.arange(history)[None] < jax.random.randint(len_key, (num, 1), 0, history + 1)
    return {"route": {"obs": obs, "action": jnp.tanh(obs[:, :2]) * 0.9},
            "decision": {"obs": obs, "ids": jax.random.randint(ids_key, (num, history), 1, 5), "mask": mask,
                         "label": jax.random.randint(label_key, (num,), 0, 4)}}


def _labelled_images() -> Batch:
    """`images()` with a class label per image: the row of its bar."""
    return {**images(), "y": jnp.argmax(images()["x"][:, :, 0], axis=-1)}


CATALOGUE: dict[str, Callable[[], Toy]] = {
    "vae": lambda: Toy(vae.make(vae.Config(latent_dim=2, hidden=(8,)), (4, 4)), images(), optax.adam(1e-2)),
    "hvae": lambda: Toy(hvae.make(hvae.Config(latent_dims=(2, 2), hidden=(8,)), (4, 4)), images(False),
                        optax.adam(1e-2)),
    "pvrnn": lambda: Toy(pvrnn.make(pvrnn.Config(hidden=(4,), latent=(1,), tau=(2.0,), generate_length=4), 4, 8),
                         sequences(), pvrnn.make_optimizer(1e-2, 1e-1)),
    "vrnn": lambda: Toy(vrnn.make(vrnn.Config(hidden=4, latent=1, features=4, generate_length=4)), sequences(),
                        optax.adam(1e-2)),
    "binary_perceptron": lambda: Toy(binary_perceptron.make(binary_perceptron.Config(init_scale=0.5)),
                                     perceptron_task(), optax.adam(5e-2)),
    "fractional_sde": lambda: Toy(fractional_sde.make(_SDE, _OBS), paths(), optax.adam(2e-2)),
    "video_sde": lambda: Toy(video_sde.make(_VIDEO), videos(), optax.adam(2e-2)),
    "bayes_mlp": lambda: Toy(bayes_mlp.make(_BAYES_MLP), _labelled_images(), optax.adam(1e-2)),
    # Sparse supports that move: a quarter of each layer, updated every other step (custom step via make_step).
    "ssvi": lambda: Toy(ssvi.make(ssvi.Config(model=_BAYES_MLP, density=0.25, update_every=2, t_end=12,
                                              drop_fraction=0.5)), _labelled_images(), optax.adam(1e-2)),
    # Both levels of the hierarchical imitation policy in one loss (tanh-Gaussian primitive + history sequencer).
    "hierarchical_bc": lambda: Toy(policies.make_hierarchical(GaussianPolicy(2, (8,)), Sequencer(4, hidden=8)),
                                   routing_rows(), optax.adam(1e-2)),
}
