"""Regression losses of Gaussian-path models: eps prediction, denoising score matching and flow matching.

With x_t = alpha_t x0 + sigma_t eps, eps ~ N(0, I) and t ~ U[t_min, t_max] (`Schedule`), the three views of
Lai et al. (2025, *The Principles of Diffusion Models*) train one network by

    L_eps = E w(t) ||eps_hat(x_t, t) - eps||^2                  minimiser eps*(x, t) = E[eps | x_t = x]   (DDPM)
    L_s   = E w(t) ||s_hat(x_t, t) + eps / sigma_t||^2          minimiser score*(x, t) = grad log p_t(x)   (DSM)
    L_v   = E w(t) ||v_hat(x_t, t) - (alpha_dot x0 + sigma_dot eps)||^2     minimiser v* = E[x_dot_t | x_t]  (FM)
    L_x0  = E w(t) ||x0_hat(x_t, t) - x0||^2                    minimiser x0* = E[x0 | x_t = x]           (denoiser)

Each is minimised by a conditional expectation, so all four optima are one field (`convert`). Time weightings:
`"unit"` (Ho et al. 2020's "simple" loss and flow matching), `"sigma2"` (w = sigma_t^2, Song et al. 2021's
DSM weighting, which makes L_s = E||sigma_t s_hat + eps||^2), and `"elbo"`,

    w(t) = -(t_max - t_min) / 2 * d/dt log SNR(t)                               (Kingma et al. 2021, Eq. 17)

so that the eps loss is the continuous-time diffusion term of the negative ELBO over [t_min, t_max] in nats
(the interval length turns the uniform average over t into the integral; E_t w = (log SNR(t_min) -
log SNR(t_max)) / 2). d/dt log SNR comes from one `jax.jvp` of `Schedule.log_snr`.

A model enters as `predict(x_t [B, ...], t [B]) -> prediction [B, ...]`; losses are per example (`[B]`), summed
over the data axes, and not reduced over the batch. `make_method` wraps a network into a `gvlab.types.Method`
with optional class conditioning and label dropout for classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from gvlab.diffusion.parameterisation import PREDICTIONS, Prediction, convert, per_example
from gvlab.diffusion.schedules import Schedule
from gvlab.types import Batch, Method, Metrics, Params, PRNGKey

Weighting = Literal["unit", "sigma2", "elbo"]
WEIGHTINGS = ("unit", "sigma2", "elbo")
Predict = Callable[[jax.Array, jax.Array], jax.Array]
"""`predict(x_t [B, ...], t [B]) -> prediction [B, ...]`."""

DEFAULT_WEIGHTING: dict[str, Weighting] = {"eps": "unit", "score": "sigma2", "velocity": "unit", "x0": "unit"}


def sample_time(key: PRNGKeyArray, n: int, schedule: Schedule, dtype=jnp.float32) -> Float[Array, " n"]:
    """`n` times uniform in [schedule.t_min, schedule.t_max]."""
    return jax.random.uniform(key, (n,), dtype, minval=schedule.t_min, maxval=schedule.t_max)


def time_weight(weighting: Weighting, schedule: Schedule, t: Float[Array, " B"]) -> Float[Array, " B"]:
    """w(t) per example for a weighting name (see the module docstring)."""
    if weighting == "unit":
        return jnp.ones_like(t)
    if weighting == "sigma2":
        return schedule.sigma(t) ** 2
    if weighting == "elbo":
        _, d_log_snr = jax.jvp(schedule.log_snr, (t,), (jnp.ones_like(t),))
        return -0.5 * (schedule.t_max - schedule.t_min) * d_log_snr
    raise ValueError(f"unknown weighting {weighting!r}; choose from {WEIGHTINGS}")


def noised(x0: Float[Array, "B ..."], key: PRNGKeyArray, schedule: Schedule, t: ArrayLike | None = None
           ) -> tuple[Float[Array, " B"], Float[Array, "B ..."], Float[Array, "B ..."]]:
    """One draw of the path: `(t [B], eps, x_t = alpha_t x0 + sigma_t eps)`; `t` is sampled unless given
    (a scalar or `[B]`, e.g. to read a loss at fixed noise levels)."""
    time_key, noise_key = jax.random.split(key)
    if t is None:
        t_B = sample_time(time_key, x0.shape[0], schedule, x0.dtype)
    else:
        t_B = jnp.broadcast_to(jnp.asarray(t, x0.dtype), x0.shape[:1])
    eps = jax.random.normal(noise_key, x0.shape, x0.dtype)
    return t_B, eps, schedule.marginal(x0, t_B, eps)


def regression_target(prediction: Prediction, schedule: Schedule, x0: Float[Array, "B ..."],
                      eps: Float[Array, "B ..."], t: Float[Array, " B"]) -> Float[Array, "B ..."]:
    """The per-sample target whose conditional mean is the optimum: eps, -eps / sigma_t, alpha_dot x0 +
    sigma_dot eps, or x0."""
    if prediction == "eps":
        return eps
    if prediction == "score":
        return -eps / per_example(schedule.sigma(t), eps)
    if prediction == "velocity":
        return per_example(schedule.alpha_dot(t), x0) * x0 + per_example(schedule.sigma_dot(t), eps) * eps
    if prediction == "x0":
        return x0
    raise ValueError(f"unknown prediction {prediction!r}; choose from {PREDICTIONS}")


def _sum_squares(residual: Float[Array, "B ..."]) -> Float[Array, " B"]:
    return jnp.sum(jnp.square(residual).reshape(residual.shape[0], -1), axis=-1)


def matching_loss(prediction: Prediction, predict: Predict, x0: Float[Array, "B ..."], key: PRNGKeyArray,
                  schedule: Schedule, weighting: Weighting | None = None, t: ArrayLike | None = None
                  ) -> Float[Array, " B"]:
    """w(t) ||predict(x_t, t) - target||^2 per example for any prediction (the module docstring's L_*);
    `weighting=None` takes the view's default (unit, or sigma2 for the score)."""
    t_B, eps, x_t = noised(x0, key, schedule, t)
    target = regression_target(prediction, schedule, x0, eps, t_B)
    weight = time_weight(weighting or DEFAULT_WEIGHTING[prediction], schedule, t_B)
    return weight * _sum_squares(predict(x_t, t_B) - target)


def eps_matching_loss(predict: Predict, x0: Float[Array, "B ..."], key: PRNGKeyArray, schedule: Schedule,
                      weighting: Weighting = "unit", t: ArrayLike | None = None) -> Float[Array, " B"]:
    """L_eps = w(t) ||eps_hat(x_t, t) - eps||^2 per example; `weighting="elbo"` gives the diffusion term of the
    negative continuous-time ELBO (Kingma et al. 2021, Eq. 17)."""
    return matching_loss("eps", predict, x0, key, schedule, weighting, t)


def score_matching_loss(predict: Predict, x0: Float[Array, "B ..."], key: PRNGKeyArray, schedule: Schedule,
                        weighting: Weighting = "sigma2", t: ArrayLike | None = None) -> Float[Array, " B"]:
    """Denoising score matching L_s = lambda(t) ||s_hat(x_t, t) + eps / sigma_t||^2 per example, lambda = sigma^2
    by default (Vincent 2011; Song et al. 2021, Eq. 7)."""
    return matching_loss("score", predict, x0, key, schedule, weighting, t)


def flow_matching_loss(predict: Predict, x0: Float[Array, "B ..."], key: PRNGKeyArray, schedule: Schedule,
                       weighting: Weighting = "unit", t: ArrayLike | None = None) -> Float[Array, " B"]:
    """Flow matching L_v = w(t) ||v_hat(x_t, t) - (alpha_dot x0 + sigma_dot eps)||^2 per example (Lipman et al.
    2023; for rectified flow the target is eps - x0, Liu et al. 2023)."""
    return matching_loss("velocity", predict, x0, key, schedule, weighting, t)


def drop_labels(key: PRNGKeyArray, c: Int[Array, " B"], probability: float, null_class: int) -> Int[Array, " B"]:
    """Replace each label by `null_class` with the given probability (classifier-free guidance's label dropout)."""
    dropped = jax.random.bernoulli(key, probability, c.shape)
    return jnp.where(dropped, null_class, c)


def make_method(network: Any, prediction: Prediction, schedule: Schedule, *, weighting: Weighting | None = None,
                output: Prediction | None = None, num_classes: int = 0, label_dropout: float = 0.0) -> Method:
    """A diffusion / flow model trained by `matching_loss`, as a `Method` (`sample` is left to the samplers).

    Args:
        network: anything with `init(key, x, t[, c]) -> params` and `apply(params, x, t[, c]) -> output`,
            e.g. `gvlab.nn.TimeMLP(out_features=d, num_classes=K)` (flax modules have exactly this interface).
        prediction: the loss's view: "eps", "score", "velocity" or "x0" (the module docstring's L_*).
        schedule: the Gaussian path.
        weighting: the time weighting; None takes the view's default (unit, or sigma2 for the score).
        output: what the network outputs, converted to `prediction` by `convert` before the loss (None: the
            network predicts `prediction` itself). E.g. `prediction="score", output="eps"` trains an eps network
            by DSM, which with the sigma2 weighting is exactly L_eps.
        num_classes: K > 0 trains a class-conditional model on `batch["c"]` (ints in [0, K)); the null class is K.
        label_dropout: probability of replacing a label by the null class, so that the same network also learns
            the unconditional prediction that classifier-free guidance needs.

    The loss is the batch mean of the weighted per-example loss. Metrics: `diffusion/loss` (the objective),
    `diffusion/mse` (unweighted squared error of the prediction), `diffusion/eps_mse` (the network's output
    converted to eps, a scale shared by the four views) and, for a conditional model, `diffusion/label_dropped`.
    """
    output = output or prediction
    for name in (prediction, output):
        if name not in PREDICTIONS:
            raise ValueError(f"unknown prediction {name!r}; choose from {PREDICTIONS}")
    weighting = weighting or DEFAULT_WEIGHTING[prediction]
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose from {WEIGHTINGS}")
    if not 0.0 <= label_dropout <= 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1], got {label_dropout}")
    if label_dropout > 0 and num_classes == 0:
        raise ValueError("label_dropout needs a class-conditional model (num_classes > 0)")

    def labels(batch: Batch) -> jax.Array:
        if "c" not in batch:
            raise KeyError(f"a class-conditional model (num_classes={num_classes}) needs integer labels batch['c']")
        return batch["c"]

    def init(key: PRNGKey, batch: Batch) -> Params:
        x = batch["x"][:1]
        t = jnp.full((1,), schedule.t_max, x.dtype)
        if num_classes:
            return network.init(key, x, t, labels(batch)[:1])
        return network.init(key, x, t)

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array) -> tuple[jax.Array, Metrics]:
        del step
        x0 = batch["x"]
        metrics: Metrics = {}
        if num_classes:
            path_key, label_key = jax.random.split(key)
            c = labels(batch)
            if label_dropout > 0:
                c = drop_labels(label_key, c, label_dropout, num_classes)
            metrics["diffusion/label_dropped"] = jnp.mean((c == num_classes).astype(x0.dtype))
            predict = lambda x_t, t: network.apply(params, x_t, t, c)  # noqa: E731
        else:
            path_key = key
            predict = lambda x_t, t: network.apply(params, x_t, t)  # noqa: E731
        t_B, eps, x_t = noised(x0, path_key, schedule)
        out = predict(x_t, t_B)
        pred = convert(out, output, prediction, schedule, x_t, t_B)
        squared = _sum_squares(pred - regression_target(prediction, schedule, x0, eps, t_B))
        value = jnp.mean(time_weight(weighting, schedule, t_B) * squared)
        eps_hat = convert(out, output, "eps", schedule, x_t, t_B)
        metrics.update({"diffusion/loss": value, "diffusion/mse": jnp.mean(squared),
                        "diffusion/eps_mse": jnp.mean(_sum_squares(eps_hat - eps))})
        return value, metrics

    return Method(init=init, loss=loss)
