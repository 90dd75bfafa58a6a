"""PV-RNN: the predictive-coding-inspired variational RNN (Ahmadi & Tani, Neural Computation 2019).

A multiple-timescale RNN (leaky integrators) with a stochastic latent z per layer and *no encoder*: the
posterior of training sequence n at step t is a free "adaptive vector" A_{n,t}, learned with the weights.
For layer l (0 = bottom, the output layer reads it; layer l + 1 feeds layer l top-down), step t = 1..T:

    prior      mu^p_t = tanh(W_mu d_{t-1} + b_mu),  log sigma^p_t = W_sigma d_{t-1} + b_sigma   (N(0, I) at t = 1)
    posterior  mu^q_t = tanh(A^mu_t),               log sigma^q_t = A^sigma_t
    z_t = mu + sigma * eps   (posterior in training and error regression, prior in generation)
    h_t = (1 - 1/tau) h_{t-1} + (1/tau) (W_dd d_{t-1} + W_zd z_t + W_td d^{l+1}_t + b),   d_t = tanh(h_t)
    x^_t = tanh(W_out d^0_t + b_out)

with h_0 = 0. The loss of one sequence is the negative lower bound weighted by the meta-prior w, every term
normalised per dimension as in the lab's code (Ahmadi & Tani 2019; Idei's `pvrnn_sa`):

    L = sum_t ||x^_t - x_t||^2 / D_x  +  sum_l sum_t w_t KL(q_t^l || p_t^l) / D_z^l,   w_1 = w^(1), w_t = w (t > 1),
    KL = sum_j [log(sigma^p_j / sigma^q_j) + ((sigma^q_j)^2 + (mu^q_j - mu^p_j)^2) / (2 (sigma^p_j)^2) - 1/2].

Batches are `{"x": [B, T, D_x], "index": int [B]}` (the index selects the sequences' adaptive vectors). The loss
takes the meta-prior from `args={"meta_prior": w, "meta_prior_first": w1}` when a fit supplies it (`Spec.args`
with a leading member axis: a meta-prior sweep is one fit, one compiled program), else from the config. It is
the mean over the batch of the per-sequence L.

Error regression (ER) predicts a test sequence with the weights frozen: for every window
of the last H observations it optimises only that window's adaptive vectors by Adam on L restricted to the
window (warm-started from the previous window, a fresh Adam state per position, one posterior sample per
iteration; the newest step starts at the prior's pre-activations), then rolls the prior means forward from the
window's end. The state entering the window is carried from the
previous windows, so the whole observed past informs the prediction.

`make(cfg, num_sequences, length)` returns the `Method`; `make_model` also exposes the per-sequence passes,
free generation and `error_regression`. All per-sequence functions take unbatched arrays; vmap them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from gvlab.data.batching import epoch_batches
from gvlab.types import Batch, DataSource, Method, Params, PRNGKey
from gvlab.config import check_sizes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """PV-RNN architecture and objective.

    Attributes:
        hidden: deterministic units d per layer, bottom to top.
        latent: latent units z per layer.
        tau: time constant of each layer (the top layer slower in a hierarchy).
        meta_prior: w, the weight of the normalised KL at t > 1 (the loss's `args["meta_prior"]` overrides it).
        meta_prior_first: w^(1), the weight at t = 1; None uses `meta_prior`.
        generate_length: steps of free generation returned by `Method.sample`.
    """

    hidden: tuple[int, ...] = (24,)
    latent: tuple[int, ...] = (2,)
    tau: tuple[float, ...] = (2.0,)
    meta_prior: float = 0.005
    meta_prior_first: float | None = None
    generate_length: int = 500

    def __post_init__(self):
        check_sizes(self, 'hidden', 'latent', 'generate_length')
        if not len(self.hidden) == len(self.latent) == len(self.tau) >= 1:
            raise ValueError(f"hidden, latent and tau need one entry per layer, got {self.hidden}, {self.latent}, "
                             f"{self.tau}")
        if min(self.tau) < 1.0:
            raise ValueError(f"every tau must be >= 1 (a leaky integrator), got {self.tau}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ERConfig:
    """Error regression at test time.

    The defaults are the budget of the Tani lab's ER example (`h-idei/pvrnn_sa` @1777772,
    `test/example/example_of_error_regression.py` lines 17-20: `iteration_list = [50]`, `window_list = [10]`,
    `lr_list = [0.09]`, Adam with a fresh state per step as in `test/example/error_regression.py`); the horizon is
    the PFSM mini-experiment's.

    Attributes:
        window: H, observations in the sliding window.
        iterations: Adam steps on the window's adaptive vectors per window position.
        lr: Adam learning rate of those steps.
        horizon: steps predicted ahead of each window's end by rolling the prior means.
    """

    window: int = 10
    iterations: int = 50
    lr: float = 0.09
    horizon: int = 8


class Trace(NamedTuple):
    """What one pass records per step (leading axis T; per-layer tuples bottom to top)."""

    x_hat: Array  # [T, D_x]
    prior_mean: tuple[Array, ...]  # [T, z_l] each
    prior_log_scale: tuple[Array, ...]
    prior_pre: tuple[Array, ...]  # W_mu d_{t-1} + b_mu (0 at t = 1): what A^mu starts from in ER
    posterior_mean: tuple[Array, ...]
    posterior_log_scale: tuple[Array, ...]


class ERResult(NamedTuple):
    """Output of `error_regression` for one test sequence.

    Attributes:
        predictions: `[P, horizon, D_x]`, the prediction of `x[e : e + horizon]` for each window end
            `e = H, H + 1, ..., T - horizon` (P = T - horizon - H + 1 positions).
        adaptive: the sequence's adaptive vectors after the last window, `{"layer<l>": {"mean", "log_scale"}}`
            of shape `[T, z_l]`; steps that were never in a window keep their initial value (zero).
        weights: the weights used, returned unchanged (ER never updates them).
        window_loss: the window's loss after the last iteration, per position `[P]`.
    """

    predictions: Array
    adaptive: dict
    weights: dict
    window_loss: Array


def kl_normalised(mean_q: Array, log_scale_q: Array, mean_p: Array, log_scale_p: Array) -> Array:
    """KL(N(mu_q, sigma_q) || N(mu_p, sigma_p)) summed over the last axis and divided by its size D_z.

    The closed form written out as in the paper, `sum_j log(sigma^p_j / sigma^q_j) + (sigma_q^2 + (mu_q -
    mu_p)^2) / (2 sigma_p^2) - 1/2`; equal to `gvlab.dists.kl_divergence` (tested).
    """
    ratio = jnp.exp(2.0 * (log_scale_q - log_scale_p)) + jnp.square((mean_q - mean_p) * jnp.exp(-log_scale_p))
    kl = log_scale_p - log_scale_q + 0.5 * ratio - 0.5
    return jnp.sum(kl, axis=-1) / mean_q.shape[-1]


def _affine(x: Array, w: Array, b: Array) -> Array:
    """x @ w + b, the bias broadcast explicitly (rank promotion is an error in gvlab's tests)."""
    y = x @ w
    return y + jnp.broadcast_to(b, y.shape)


def _dense(key: PRNGKey, fan_in: int, fan_out: int, scale: float = 1.0) -> Array:
    return scale * jax.random.normal(key, (fan_in, fan_out)) / jnp.sqrt(float(fan_in))


class PVRNNModel(NamedTuple):
    """PV-RNN as pure per-sequence functions of `params = {"weights": ..., "adaptive": ...}` (see `make_model`)."""

    init: Callable[[PRNGKey, Batch], Params]
    posterior_pass: Callable[..., tuple[Array, Trace]]
    sequence_terms: Callable[..., dict]
    generate: Callable[..., tuple[Array, Array]]
    error_regression: Callable[..., ERResult]
    zero_adaptive: Callable[[int], dict]
    kl_per_step: Callable[..., Array]
    regenerate: Callable[..., Array]


def make_model(cfg: Config, num_sequences: int, length: int, x_dim: int = 1,
               er: ERConfig = ERConfig()) -> PVRNNModel:
    """The PV-RNN's pure functions for `num_sequences` training sequences of `length` steps.

    Functions (unbatched; vmap over sequences, seeds or window positions):

    * `init(key, batch) -> params`: weights ~ N(0, 1/fan_in), biases 0, adaptive vectors 0 (posterior
      N(0, I) everywhere, the t = 1 prior) with shape `[num_sequences, length, z_l]`.
    * `posterior_pass(weights, h0, adaptive, eps, start) -> (h_end, Trace)`: run steps `start .. start + S - 1`
      from the layer states `h0` with z from the posterior (`eps = 0`: the posterior means).
    * `sequence_terms(weights, adaptive, x, key, meta_prior, meta_prior_first) -> terms`: the per-sequence
      loss and its parts for one sequence from t = 1 (`key=None`: z at the posterior means).
    * `generate(weights, key, length, stochastic=True) -> (x_hat [length, D_x], prior_scale [length, sum z])`:
      free generation from the prior (`stochastic=False`: roll the prior means, the ER-free prediction).
    * `error_regression(weights, x [T, D_x], key, meta_prior, meta_prior_first) -> ERResult`.
    * `zero_adaptive(T) -> adaptive`: zero adaptive vectors for one sequence of T steps.
    * `kl_per_step(weights, adaptive) -> [T]`: KL(q_t || p_t) in nats at every step (summed over the units and
      layers, *not* divided by D_z), with z at the posterior means: the information the posterior injects per
      step. Unlike the prior's sigma it is invariant under z -> c z, W_zd -> W_zd / c (both Gaussians scale by c).
    * `regenerate(weights, adaptive, length) -> x_hat [length, D_x]`: the noise-off regeneration test of Ahmadi &
      Tani 2019: z_1 at the posterior mean tanh(A_1), then the prior means (no noise, no adaptive vectors) for
      t > 1. It reproduces a training sequence only when the weights carry the sequence from its initial state.
    """
    layers = len(cfg.hidden)
    names = [f"layer{i}" for i in range(layers)]

    def init(key: PRNGKey, batch: Batch) -> Params:
        del batch
        weights = {}
        keys = jax.random.split(key, layers + 1)
        for i, name in enumerate(names):
            k = jax.random.split(keys[i], 5)
            d, z = cfg.hidden[i], cfg.latent[i]
            layer = {"w_dd": _dense(k[0], d, d), "w_zd": _dense(k[1], z, d), "b": jnp.zeros((d,)),
                     "w_mu": _dense(k[2], d, z), "b_mu": jnp.zeros((z,)),
                     "w_sigma": _dense(k[3], d, z), "b_sigma": jnp.zeros((z,))}
            if i < layers - 1:
                layer["w_td"] = _dense(k[4], cfg.hidden[i + 1], d)
            weights[name] = layer
        weights["out"] = {"w": _dense(keys[-1], cfg.hidden[0], x_dim), "b": jnp.zeros((x_dim,))}
        adaptive = {name: {"mean": jnp.zeros((num_sequences, length, z)),
                           "log_scale": jnp.zeros((num_sequences, length, z))}
                    for name, z in zip(names, cfg.latent)}
        return {"weights": weights, "adaptive": adaptive}

    def zero_adaptive(steps: int) -> dict:
        return {name: {"mean": jnp.zeros((steps, z)), "log_scale": jnp.zeros((steps, z))}
                for name, z in zip(names, cfg.latent)}

    def prior(weights, d_prev, first):
        """Per layer (pre-activation, mean, log-scale) of p(z_t | d_{t-1}); N(0, I) where `first`.

        Works on one step (`d_prev[l]` of shape [d_l], `first` a scalar) or on a segment ([S, d_l] and [S]).
        """
        out = []
        for name in names:
            w = weights[name]
            pre = _affine(d_prev[name], w["w_mu"], w["b_mu"])
            first_ = jnp.expand_dims(first, -1)
            pre = jnp.where(first_, 0.0, pre)
            log_scale = jnp.where(first_, 0.0, _affine(d_prev[name], w["w_sigma"], w["b_sigma"]))
            out.append((pre, jnp.tanh(pre), log_scale))
        return out

    def z_drive(weights, z):
        """W_zd z + b per layer: the part of each layer's input that does not depend on the state."""
        return {name: _affine(z[i], weights[name]["w_zd"], weights[name]["b"]) for i, name in enumerate(names)}

    def recurrence(weights, h_prev, drive):
        """Leaky-integrator update of every layer, top layer first (layer l reads d^{l+1}_t)."""
        h, d = {}, {}
        for i in reversed(range(layers)):
            name, w = names[i], weights[names[i]]
            u = jnp.tanh(h_prev[name]) @ w["w_dd"] + drive[name]
            if i < layers - 1:
                u = u + d[names[i + 1]] @ w["w_td"]
            h[name] = (1.0 - 1.0 / cfg.tau[i]) * h_prev[name] + u / cfg.tau[i]
            d[name] = jnp.tanh(h[name])
        return h

    def output(weights, h_bottom):
        return jnp.tanh(_affine(jnp.tanh(h_bottom), weights["out"]["w"], weights["out"]["b"]))

    def zero_state():
        return {name: jnp.zeros((d,)) for name, d in zip(names, cfg.hidden)}

    def posterior_pass(weights, h0, adaptive, eps, start):
        # z_t comes from the adaptive vectors and the noise alone, so everything but the recurrence itself is
        # computed for the whole segment at once; the prior reads the stored d_{t-1} afterwards.
        q_mean = tuple(jnp.tanh(adaptive[name]["mean"]) for name in names)
        q_log_scale = tuple(adaptive[name]["log_scale"] for name in names)
        z = [m + jnp.exp(s) * eps[name] for m, s, name in zip(q_mean, q_log_scale, names)]

        def step(h_prev, drive_t):
            h = recurrence(weights, h_prev, drive_t)
            return h, h

        h_end, h_seq = jax.lax.scan(step, h0, z_drive(weights, z))
        d_prev = {name: jnp.tanh(jnp.concatenate([h0[name][None], h_seq[name][:-1]], axis=0)) for name in names}
        first = start + jnp.arange(q_mean[0].shape[0]) == 0
        p = prior(weights, d_prev, first)
        trace = Trace(output(weights, h_seq[names[0]]), tuple(v[1] for v in p), tuple(v[2] for v in p),
                      tuple(v[0] for v in p), q_mean, q_log_scale)
        return h_end, trace

    def window_terms(trace, x, start, meta_prior, meta_prior_first):
        """Recon and KL sums of a segment starting at step `start` (0-based), per the module docstring."""
        recon = jnp.sum(jnp.square(trace.x_hat - x)) / x.shape[-1]
        kl_t = sum(kl_normalised(*args) for args in zip(trace.posterior_mean, trace.posterior_log_scale,
                                                        trace.prior_mean, trace.prior_log_scale))
        t = start + jnp.arange(x.shape[0])
        weight_t = jnp.where(t == 0, meta_prior_first, meta_prior)
        weighted_kl = jnp.sum(weight_t * kl_t)
        return {"loss": recon + weighted_kl, "recon": recon, "kl": jnp.sum(kl_t), "weighted_kl": weighted_kl}

    def noise(key, steps):
        keys = jax.random.split(key, layers)
        return {name: jax.random.normal(k, (steps, z)) for name, z, k in zip(names, cfg.latent, keys)}

    def zero_noise(steps):
        return {name: jnp.zeros((steps, z)) for name, z in zip(names, cfg.latent)}

    def sequence_terms(weights, adaptive, x, key, meta_prior, meta_prior_first):
        eps = zero_noise(x.shape[0]) if key is None else noise(key, x.shape[0])
        _, trace = posterior_pass(weights, zero_state(), adaptive, eps, 0)
        terms = window_terms(trace, x, 0, meta_prior, meta_prior_first)
        scales = jnp.exp(jnp.concatenate(trace.prior_log_scale, axis=-1))[1:]  # t = 1 is the fixed N(0, I)
        terms["prior_scale"] = jnp.mean(scales)
        terms["posterior_scale"] = jnp.mean(jnp.exp(jnp.concatenate(trace.posterior_log_scale, axis=-1)))
        return terms

    def generate(weights, key, steps, stochastic=True):
        eps = noise(key, steps) if stochastic else zero_noise(steps)

        def step(h_prev, inputs):
            e, t = inputs
            p = prior(weights, {name: jnp.tanh(h_prev[name]) for name in names}, t == 0)
            z = [mean + jnp.exp(log_scale) * e[name] for (_, mean, log_scale), name in zip(p, names)]
            h = recurrence(weights, h_prev, z_drive(weights, z))
            return h, (output(weights, h[names[0]]), jnp.exp(jnp.concatenate([v[2] for v in p], axis=-1)))

        _, (x_hat, prior_scale) = jax.lax.scan(step, zero_state(), (eps, jnp.arange(steps)))
        return x_hat, prior_scale

    def rollout_prior_means(weights, h, steps):
        def step(h_prev, _):
            p = prior(weights, {name: jnp.tanh(h_prev[name]) for name in names}, False)
            h_next = recurrence(weights, h_prev, z_drive(weights, [v[1] for v in p]))
            return h_next, output(weights, h_next[names[0]])

        return jax.lax.scan(step, h, None, length=steps)[1]

    def error_regression(weights, x, key, meta_prior, meta_prior_first) -> ERResult:
        steps, window = x.shape[0], er.window
        ends = jnp.arange(window, steps - er.horizon + 1)
        optimizer = optax.adam(er.lr)
        zeros = zero_noise(window)

        def window_loss(a_win, h_start, x_win, start, eps):
            _, trace = posterior_pass(weights, h_start, a_win, eps, start)
            return window_terms(trace, x_win, start, meta_prior, meta_prior_first)["loss"]

        def slide(carry, inputs):
            h_start, adaptive = carry
            end, slide_key = inputs
            start = end - window
            a_win = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, window), adaptive)
            x_win = jax.lax.dynamic_slice_in_dim(x, start, window)
            # Warm start: the steps seen before keep their values; the newest starts at the prior's
            # pre-activations given the window so far (Idei's initialisation of A).
            _, trace = posterior_pass(weights, h_start, a_win, zeros, start)
            a_win = {name: {"mean": a_win[name]["mean"].at[-1].set(trace.prior_pre[i][-1]),
                            "log_scale": a_win[name]["log_scale"].at[-1].set(trace.prior_log_scale[i][-1])}
                     for i, name in enumerate(names)}

            def iterate(i, state):
                a, opt_state = state
                eps = noise(jax.random.fold_in(slide_key, i), window)
                grads = jax.grad(window_loss)(a, h_start, x_win, start, eps)
                updates, opt_state = optimizer.update(grads, opt_state, a)
                return optax.apply_updates(a, updates), opt_state

            a_win, _ = jax.lax.fori_loop(0, er.iterations, iterate, (a_win, optimizer.init(a_win)))
            adaptive = jax.tree.map(lambda a, w: jax.lax.dynamic_update_slice_in_dim(a, w, start, 0), adaptive, a_win)
            h_end, trace = posterior_pass(weights, h_start, a_win, zeros, start)
            prediction = rollout_prior_means(weights, h_end, er.horizon)
            loss = window_terms(trace, x_win, start, meta_prior, meta_prior_first)["loss"]
            # The window's first step leaves the window now: its posterior mean fixes the state entering the next.
            first = jax.tree.map(lambda a: a[:1], a_win)
            h_next, _ = posterior_pass(weights, h_start, first, jax.tree.map(lambda e: e[:1], zeros), start)
            return (h_next, adaptive), (prediction, loss)

        carry = (zero_state(), zero_adaptive(steps))
        (_, adaptive), (predictions, losses) = jax.lax.scan(
            slide, carry, (ends, jax.random.split(key, ends.shape[0])))
        return ERResult(predictions=predictions, adaptive=adaptive, weights=weights, window_loss=losses)

    def kl_per_step(weights, adaptive):
        steps = adaptive[names[0]]["mean"].shape[0]
        _, trace = posterior_pass(weights, zero_state(), adaptive, zero_noise(steps), 0)
        return sum(kl_normalised(*args) * args[0].shape[-1] for args in zip(
            trace.posterior_mean, trace.posterior_log_scale, trace.prior_mean, trace.prior_log_scale))

    def regenerate(weights, adaptive, steps):
        first = jax.tree.map(lambda a: a[:1], adaptive)
        h1, trace = posterior_pass(weights, zero_state(), first, zero_noise(1), 0)
        return jnp.concatenate([trace.x_hat, rollout_prior_means(weights, h1, steps - 1)], axis=0)

    return PVRNNModel(init=init, posterior_pass=posterior_pass, sequence_terms=sequence_terms, generate=generate,
                      error_regression=error_regression, zero_adaptive=zero_adaptive, kl_per_step=kl_per_step,
                      regenerate=regenerate)


def make(cfg: Config, num_sequences: int, length: int, x_dim: int = 1) -> Method:
    """PV-RNN as a `Method` over training sequences indexed by `batch["index"]`.

    The loss is the mean over the batch of the per-sequence bound L (module docstring); terms `pvrnn/recon`,
    `pvrnn/kl` (unweighted, normalised per dimension, summed over time and layers), `pvrnn/weighted_kl`,
    `pvrnn/mse` (per step and dimension), `pvrnn/prior_scale` and `pvrnn/posterior_scale` (mean sigma over
    steps t > 1 and units), each a mean over the batch. `args` (a run's `Spec.args`) may hold scalar arrays
    `"meta_prior"` and `"meta_prior_first"` that replace the config's w and w^(1) (`meta_prior_args`).
    `sample(params, key, num)` returns `num` freely generated sequences `[num, generate_length, D_x]`.
    """
    model = make_model(cfg, num_sequences, length, x_dim)
    first_default = cfg.meta_prior if cfg.meta_prior_first is None else cfg.meta_prior_first

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array, args: dict | None = None):
        del step
        args = args or {}
        x, index = batch["x"], batch["index"]
        meta_prior = args.get("meta_prior", jnp.asarray(cfg.meta_prior, jnp.float32))
        meta_prior_first = args.get("meta_prior_first", jnp.asarray(first_default, jnp.float32))
        adaptive = jax.tree.map(lambda a: jnp.take(a, index, axis=0), params["adaptive"])
        keys = jax.random.split(key, x.shape[0])
        terms = jax.vmap(model.sequence_terms, in_axes=(None, 0, 0, 0, None, None))(
            params["weights"], adaptive, x, keys, meta_prior, meta_prior_first)
        terms = {name: jnp.mean(value) for name, value in terms.items()}
        terms["mse"] = terms["recon"] / x.shape[1]
        total = terms.pop("loss")
        return total, {f"pvrnn/{name}": value for name, value in terms.items()}

    def sample(params: Params, key: PRNGKey, num: int) -> Float[Array, "num T D"]:
        return jax.vmap(lambda k: model.generate(params["weights"], k, cfg.generate_length)[0])(
            jax.random.split(key, num))

    return Method(init=model.init, loss=loss, sample=sample)


def evaluate_run(model: PVRNNModel, params: Params, data: dict, key: PRNGKey, num_generated: int,
                 generate_length: int) -> dict[str, Array]:
    """The measurements of one trained run (an evaluator body for `gvlab.run.Run.evaluate`).

    `data` holds `train_x [N, T, D]` (the training sequences, in the order of the adaptive vectors), `test_x`
    and the scalars `meta_prior`, `meta_prior_first` used by ER. Returns `generated [G, L, D]` (free generation)
    and `sigma_prior` (its mean prior sigma at t > 1: t = 1 is the fixed N(0, I)); `er_predictions [N', P, K, D]`
    and `free [T, D]` (the prior means rolled from t = 1: the prediction without ER); `kl_step` and `kl_first`,
    the KL in nats per step at t > 1 and at t = 1 (mean over the training sequences, `kl_per_step`); `regen`
    `[N, T, D]` and `regen_mse`, the noise-off regeneration of the training sequences and its MSE (`regenerate`).
    """
    weights, adaptive, train_x = params["weights"], params["adaptive"], data["train_x"]
    kl = jax.vmap(lambda a: model.kl_per_step(weights, a))(adaptive)  # [N, T]
    regen = jax.vmap(lambda a: model.regenerate(weights, a, train_x.shape[1]))(adaptive)
    gen_key, er_key = jax.random.split(key)
    generated, scales = jax.vmap(lambda k: model.generate(weights, k, generate_length))(
        jax.random.split(gen_key, num_generated))
    er = jax.vmap(lambda x, k: model.error_regression(weights, x, k, data["meta_prior"], data["meta_prior_first"]))(
        data["test_x"], jax.random.split(er_key, data["test_x"].shape[0]))
    free, _ = model.generate(weights, key, train_x.shape[1], stochastic=False)
    return {"generated": generated, "sigma_prior": jnp.mean(scales[:, 1:]), "er_predictions": er.predictions,
            "free": free, "kl_step": jnp.mean(kl[:, 1:]), "kl_first": jnp.mean(kl[:, 0]), "regen": regen,
            "regen_mse": jnp.mean(jnp.square(regen - train_x))}


def meta_prior_args(meta_priors, meta_priors_first=None) -> dict[str, Array]:
    """`Spec.args` of a meta-prior sweep: `{"meta_prior": [M], "meta_prior_first": [M]}` (w^(1) = w by default)."""
    first = meta_priors if meta_priors_first is None else meta_priors_first
    return {"meta_prior": jnp.asarray(meta_priors, jnp.float32), "meta_prior_first": jnp.asarray(first, jnp.float32)}


def sequence_source(x: Float[Array, "N T D"], batch_size: int | None = None) -> DataSource:
    """Training batches `{"x", "index"}` as a `DataSource`.

    `batch_size = None` or N: the full batch every step (in a fixed order); otherwise shuffled minibatches of
    sequences by epoch (`gvlab.data.epoch_batches`), each carrying its sequence ids.
    """
    num = x.shape[0]
    sequences = {"x": x, "index": jnp.arange(num, dtype=jnp.int32)}
    if batch_size not in (None, num):
        return epoch_batches(sequences, batch_size)
    return DataSource(arrays=sequences, batch=lambda arrays, key, step: arrays)


def make_optimizer(lr: float, adaptive_lr: float) -> optax.GradientTransformation:
    """Adam on the weights at `lr` and a separate Adam on the adaptive vectors at `adaptive_lr`.

    Each adaptive vector receives the gradient of one sequence only; a larger step lets the posteriors settle
    within a CPU-sized budget (the lab's code uses one rate, 1e-3, for 200k epochs).
    """
    return optax.multi_transform({"weights": optax.adam(lr), "adaptive": optax.adam(adaptive_lr)},
                                 {"weights": "weights", "adaptive": "adaptive"})
