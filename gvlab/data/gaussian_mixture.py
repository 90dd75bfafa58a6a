"""Isotropic Gaussian mixtures whose noised marginals, scores and optimal predictions are analytic.

For data x0 ~ sum_k pi_k N(m_k, s^2 I) in d dimensions and any Gaussian path x_t = alpha_t x0 + sigma_t eps
(`gvlab.diffusion.schedules.Schedule`), every marginal is again a mixture (Lai et al. 2025, *The Principles of
Diffusion Models*; the 2-D example of `diffusion/principles`):

    p_t(x) = sum_k pi_k N(x; alpha_t m_k, v_t I),            v_t = alpha_t^2 s^2 + sigma_t^2,
    score*(x, t) = grad log p_t(x) = sum_k r_k(x) (alpha_t m_k - x) / v_t,
    x0*(x, t) = E[x0 | x_t = x] = sum_k r_k(x) (m_k + alpha_t s^2 (x - alpha_t m_k) / v_t),
    eps*(x, t) = -sigma_t score*,     v*(x, t) = alpha_dot_t x0* + sigma_dot_t eps*,

with responsibilities r_k(x) = softmax_k(log pi_k + log N(x; alpha_t m_k, v_t I)) computed by logsumexp. x0* is the
closed-form posterior mean (equal to Tweedie's (x + sigma_t^2 score*) / alpha_t, which the tests check) because it
stays finite where alpha_t = 0 (rectified flow at t = 1, where samplers start). Each mode carries a class label
(`labels`); passing labels `c` conditions on the class: the same formulas over the modes of class c, weights
renormalised (the conditional fields classifier-free guidance combines).

A `Mixture` is a NamedTuple of arrays, so it passes through `jit` as an argument. Shapes: `x [B, d]`, `t` a scalar
or `[B]`, `c` `[B]` ints; per-example results are `[B]`, fields `[B, d]`.

    >>> from gvlab.diffusion.schedules import Schedule
    >>> spec = eight_gaussians()
    >>> spec.means.shape, [int(k) for k in spec.labels]
    ((8, 2), [0, 0, 1, 1, 2, 2, 3, 3])
    >>> x = jnp.zeros((1, 2))   # the centre, by symmetry a stationary point of every p_t
    >>> float(jnp.max(jnp.abs(score(spec, Schedule("rectified_flow"), x, 0.5)))) < 1e-6
    True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from gvlab.diffusion.parameterisation import convert, per_example
from gvlab.diffusion.schedules import Schedule


class Mixture(NamedTuple):
    """An isotropic Gaussian mixture sum_k weights_k N(means_k, std^2 I).

    Attributes:
        means: `[K, d]` mode centres.
        std: scalar array, the common standard deviation s.
        weights: `[K]` mixing probabilities (summing to 1).
        labels: `[K]` int class of each mode (several modes may share a class).
    """

    means: Float[Array, "K d"]
    std: Float[Array, ""]
    weights: Float[Array, " K"]
    labels: Int[Array, " K"]


def eight_gaussians(radius: float = 2.0, std: float = 0.1, num_modes: int = 8, modes_per_class: int = 2) -> Mixture:
    """`num_modes` equal-weight modes evenly spaced on a circle; adjacent modes share a class (8 modes, 4 classes)."""
    if num_modes % modes_per_class:
        raise ValueError(f"num_modes={num_modes} must be a multiple of modes_per_class={modes_per_class}")
    angles = 2 * math.pi * np.arange(num_modes) / num_modes  # numpy: building a spec compiles nothing
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return Mixture(means=jnp.asarray(means, jnp.float32), std=jnp.asarray(std, jnp.float32),
                   weights=jnp.full((num_modes,), 1.0 / num_modes, jnp.float32),
                   labels=jnp.asarray(np.arange(num_modes) // modes_per_class, jnp.int32))


def astype(spec: Mixture, dtype) -> Mixture:
    """The mixture with its floating arrays (means, std, weights) in `dtype`; labels stay integers. For float64,
    call inside `jax.enable_x64(True)`."""
    return spec._replace(means=jnp.asarray(spec.means, dtype), std=jnp.asarray(spec.std, dtype),
                         weights=jnp.asarray(spec.weights, dtype))


def num_classes(spec: Mixture) -> int:
    """The number of classes, `max(labels) + 1` (concrete arrays only: call outside `jit`)."""
    return int(jnp.max(spec.labels)) + 1


def _sample_modes(spec: Mixture, key: PRNGKeyArray, modes: Int[Array, " B"]) -> Float[Array, "B d"]:
    noise = jax.random.normal(key, (modes.shape[0], spec.means.shape[1]), spec.means.dtype)
    return spec.means[modes] + spec.std * noise


def sample_labelled(spec: Mixture, key: PRNGKeyArray, n: int) -> tuple[Float[Array, "n d"], Int[Array, " n"]]:
    """`n` draws of x0 with the class label of the mode each came from: `(x [n, d], c [n])`."""
    mode_key, noise_key = jax.random.split(key)
    modes = jax.random.categorical(mode_key, jnp.log(spec.weights), shape=(n,))
    return _sample_modes(spec, noise_key, modes), spec.labels[modes]


def sample(spec: Mixture, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
    """`n` draws of x0 ~ p_0: `[n, d]`."""
    return sample_labelled(spec, key, n)[0]


def sample_stratified(spec: Mixture, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
    """`n` draws with mode i mod K for draw i: equal counts per mode (for equal weights), no multinomial noise."""
    return _sample_modes(spec, key, jnp.arange(n) % spec.means.shape[0])


def sample_conditional(spec: Mixture, key: PRNGKeyArray, c: Int[Array, " B"]) -> Float[Array, "B d"]:
    """One draw of x0 ~ p_0(x | class c_i) per label: `[B, d]`."""
    mode_key, noise_key = jax.random.split(key)
    logits = _log_weights(spec, c)
    modes = jax.random.categorical(mode_key, logits, axis=-1)
    return _sample_modes(spec, noise_key, modes)


def _log_weights(spec: Mixture, c: Int[Array, " B"] | None) -> Float[Array, "B K"] | Float[Array, "1 K"]:
    """log pi_k, or log pi(k | c) (renormalised over the modes of class c) per example."""
    log_pi = jnp.log(spec.weights)[None, :]
    if c is None:
        return log_pi
    in_class = spec.labels[None, :] == jnp.asarray(c)[:, None]
    masked = jnp.where(in_class, log_pi, -jnp.inf)
    return masked - jax.scipy.special.logsumexp(masked, axis=-1, keepdims=True)


def _components(spec: Mixture, schedule: Schedule, x: Float[Array, "B d"], t: ArrayLike, c):
    """Per-example alpha_t `[B, 1]`, v_t `[B, 1]` and the joint log-densities log pi_k N(x; alpha m_k, v I) `[B, K]`."""
    t_B = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
    alpha, sigma = per_example(schedule.alpha(t_B), x), per_example(schedule.sigma(t_B), x)
    variance = alpha**2 * spec.std**2 + sigma**2
    centres_BxKxD = alpha[:, :, None] * spec.means[None, :, :]
    sq_dist_BxK = jnp.sum((x[:, None, :] - centres_BxKxD) ** 2, axis=-1)
    d = x.shape[-1]
    log_normal_BxK = -0.5 * sq_dist_BxK / variance - 0.5 * d * jnp.log(2 * math.pi * variance)
    return alpha, variance, _log_weights(spec, c) + log_normal_BxK


def log_prob(spec: Mixture, schedule: Schedule, x: Float[Array, "B d"], t: ArrayLike,
             c: Int[Array, " B"] | None = None) -> Float[Array, " B"]:
    """log p_t(x) (or log p_t(x | c)) per example: logsumexp over modes of log pi_k N(x; alpha_t m_k, v_t I)."""
    _, _, joint = _components(spec, schedule, x, t, c)
    return jax.scipy.special.logsumexp(joint, axis=-1)


def responsibilities(spec: Mixture, schedule: Schedule, x: Float[Array, "B d"], t: ArrayLike,
                     c: Int[Array, " B"] | None = None) -> Float[Array, "B K"]:
    """Posterior mode probabilities r_k(x) = p(mode k | x_t = x (, c)): softmax of the joint log-densities."""
    _, _, joint = _components(spec, schedule, x, t, c)
    return jax.nn.softmax(joint, axis=-1)


def score(spec: Mixture, schedule: Schedule, x: Float[Array, "B d"], t: ArrayLike,
          c: Int[Array, " B"] | None = None) -> Float[Array, "B d"]:
    """grad_x log p_t(x (| c)) = (alpha_t sum_k r_k m_k - x) / v_t (the module docstring's score*)."""
    alpha, variance, joint = _components(spec, schedule, x, t, c)
    mean_of_modes = jax.nn.softmax(joint, axis=-1) @ spec.means
    return (alpha * mean_of_modes - x) / variance


def x0_star(spec: Mixture, schedule: Schedule, x: Float[Array, "B d"], t: ArrayLike,
            c: Int[Array, " B"] | None = None) -> Float[Array, "B d"]:
    """E[x0 | x_t = x (, c)] = sum_k r_k (m_k + alpha s^2 (x - alpha m_k) / v): Tweedie's denoiser, finite at alpha = 0."""
    alpha, variance, joint = _components(spec, schedule, x, t, c)
    mean_of_modes = jax.nn.softmax(joint, axis=-1) @ spec.means
    gain = alpha * spec.std**2 / variance
    return mean_of_modes + gain * (x - alpha * mean_of_modes)


def eps_star(spec: Mixture, schedule: Schedule, x: Float[Array, "B d"], t: ArrayLike,
             c: Int[Array, " B"] | None = None) -> Float[Array, "B d"]:
    """E[eps | x_t = x (, c)] = -sigma_t score* (`convert` from the score)."""
    t_B = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
    return convert(score(spec, schedule, x, t_B, c), "score", "eps", schedule, x, t_B)


def velocity_star(spec: Mixture, schedule: Schedule, x: Float[Array, "B d"], t: ArrayLike,
                  c: Int[Array, " B"] | None = None) -> Float[Array, "B d"]:
    """E[alpha_dot x0 + sigma_dot eps | x_t = x (, c)] = alpha_dot x0* + sigma_dot eps*: the probability-flow velocity.

    Built from x0* and eps* rather than `convert(eps*, "eps", "velocity")`, which divides by alpha_t (infinite for
    rectified flow at t = 1).
    """
    t_B = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
    alpha_dot, sigma_dot = per_example(schedule.alpha_dot(t_B), x), per_example(schedule.sigma_dot(t_B), x)
    return alpha_dot * x0_star(spec, schedule, x, t_B, c) + sigma_dot * eps_star(spec, schedule, x, t_B, c)


def nearest_mode(spec: Mixture, x: Float[Array, "B d"]) -> Int[Array, " B"]:
    """Index of the closest mode centre per example (a nearest-mode classifier is `spec.labels[nearest_mode]`)."""
    sq_dist_BxK = jnp.sum((x[:, None, :] - spec.means[None, :, :]) ** 2, axis=-1)
    return jnp.argmin(sq_dist_BxK, axis=-1)


def classify(spec: Mixture, x: Float[Array, "B d"]) -> Int[Array, " B"]:
    """The class of the nearest mode: the CFG experiment's label accuracy reads `mean(classify(x) == c)`."""
    return spec.labels[nearest_mode(spec, x)]
