"""A latent fractional-SDE video model (the video model of Daems et al., ICLR 2024, Sec. 5, at toy scale).

A per-frame MLP encoder gives a feature vector per frame; q(X_0) is a diagonal Gaussian read from the first frame's
features; the latent is the fractional SDE of `gvlab.models.fractional_sde` (H = sigmoid(logit) learned from 1/2,
noise scale learned, no drift) whose control sees, at each Euler step, the features of the next frame(s) and the
time left until the next one (`fractional_sde.control_context`); an MLP decoder maps X_t to pixel means in (0, 1)
with a Gaussian likelihood of fixed std. For frames f_0..f_{T-1} at t_i = i / (T - 1) (Eq. 12 of Daems et al.):

    ELBO = sum_i log N(f_i; dec(X_{t_i}), pixel_noise^2) - 1/2 int |u|^2 dt - KL(q(X_0) || N(0, I)).

With `learned_frame_step` the Euler step into each frame has a learned variance (`FractionalSDE.segments`): with a
plain controlled step its noise, of variance (s sum omega)^2 dt, lands on the decoded position unchanged, which
the pixel likelihood charges heavily and more for small H. `kind="brownian"` is the same model driven by Brownian
motion (H = 1/2, no OU terms).

Prediction: the posterior is run over the first `cond_frames` frames only (the control sees nothing later), then
the prior is rolled forward from the full inferred state (X, Y^1..K), so a fractional model can use the memory its
OU terms carry.

`make_model(cfg)` returns the pure per-video functions (`VideoModel`); `make(cfg)` the `Method` over batches
`{"frames": [B, T, size, size]}`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.dists import DiagNormal, kl_divergence
from gvlab.models import fractional_sde
from gvlab.nn import MLP
from gvlab.sde import mafbm
from gvlab.sde.solve import brownian_increments, solve_sde
from gvlab.types import Batch, Method, Params, PRNGKey
from gvlab.config import check_sizes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Video model settings.

    Attributes:
        kind: "type1" (MA-fBM, K OU terms) or "brownian" (H = 1/2).
        size: frame side in pixels.
        num_frames: frames per video T (t_i = i / (T - 1)).
        cond_frames: `predict` conditions on this many first frames and predicts the rest.
        latent_dim: D, dimensions of the latent X.
        steps_per_frame: Euler steps between frames (dt = 1 / ((T - 1) steps_per_frame); keep gamma_max dt < 0.5).
        learned_frame_step: the step into each frame has a learned variance (module docstring).
        num_terms, gamma_max: the MA-fBM approximation (type I).
        features: encoder output per frame.
        context_frames: the control sees the features of this many upcoming frames (past the last, it is repeated).
        encoder_hidden, decoder_hidden, control_hidden: MLP widths.
        pixel_noise: std of the Gaussian pixel likelihood.
    """

    kind: Literal["type1", "brownian"] = "type1"
    size: int = 16
    num_frames: int = 16
    cond_frames: int = 8
    latent_dim: int = 2
    steps_per_frame: int = 3
    learned_frame_step: bool = True
    num_terms: int = 5
    gamma_max: float = 20.0
    features: int = 8
    context_frames: int = 1
    encoder_hidden: tuple[int, ...] = (128,)
    decoder_hidden: tuple[int, ...] = (128, 128)
    control_hidden: tuple[int, ...] = (64, 64)
    pixel_noise: float = 0.1

    def __post_init__(self):
        check_sizes(self, "size", "num_frames", "cond_frames", "latent_dim", "steps_per_frame", "num_terms", "features", "context_frames", "encoder_hidden", "decoder_hidden", "control_hidden")


class VideoModel(NamedTuple):
    """Pure functions of the video model (static settings captured by `make_model`).

    Attributes:
        init: `key -> params`.
        elbo: `(params, frames [T, H, W], key) -> (log_lik, path_kl, x0_kl)`, one posterior sample.
        predict: `(params, frames [T, H, W], key) -> [T, H, W]` decoder means: the posterior given the first
            `cond_frames` frames at those frames, then the prior rolled forward from the inferred state (frames
            after `cond_frames` are never read).
        sde: the latent `FractionalSDE` (for its `coefficients`).
    """

    init: Callable[[PRNGKeyArray], Params]
    elbo: Callable[..., tuple[Array, Array, Array]]
    predict: Callable[..., Array]
    sde: fractional_sde.FractionalSDE


def sde_config(cfg: Config) -> fractional_sde.Config:
    """The latent fractional SDE of the video model."""
    return fractional_sde.Config(dim=cfg.latent_dim, num_terms=cfg.num_terms, gamma_max=cfg.gamma_max, kind=cfg.kind,
                                 omega_horizon=1.0, hurst=0.5, learn_hurst=cfg.kind != "brownian", learn_scale=True,
                                 hidden=cfg.control_hidden, learn_step_scale=cfg.learned_frame_step,
                                 context_dim=cfg.context_frames * cfg.features + 1)


def make_model(cfg: Config) -> VideoModel:
    """The encoder, latent fractional SDE and decoder (see the module docstring)."""
    sde = fractional_sde.make_model(sde_config(cfg))
    latent = cfg.latent_dim
    num_pixels = cfg.size * cfg.size
    encoder = MLP(tuple(cfg.encoder_hidden) + (cfg.features,), "relu")
    initial_head = MLP((2 * latent,))
    decoder = MLP(tuple(cfg.decoder_hidden) + (num_pixels,), "relu")
    spf = cfg.steps_per_frame
    dt = 1.0 / ((cfg.num_frames - 1) * spf)
    num_terms = 1 if cfg.kind == "brownian" else cfg.num_terms

    def init(key: PRNGKeyArray) -> Params:
        sde_key, enc_key, head_key, dec_key = jax.random.split(key, 4)
        return {"sde": sde.init(sde_key),
                "encoder": encoder.init(enc_key, jnp.zeros((1, num_pixels))),
                "initial": initial_head.init(head_key, jnp.zeros((1, cfg.features))),
                "decoder": decoder.init(dec_key, jnp.zeros((1, latent)))}

    def encode(params, frames):
        """Features `[T, C]` and q(X_0)."""
        feats_TxC = encoder.apply(params["encoder"], frames.reshape(frames.shape[0], num_pixels))
        head = initial_head.apply(params["initial"], feats_TxC[:1])[0]
        return feats_TxC, DiagNormal(head[:latent], jax.nn.softplus(head[latent:]) + 1e-3)

    def decode(params, xs):
        """Pixel means in (0, 1): `[..., D] -> [..., H, W]`."""
        logits = decoder.apply(params["decoder"], xs.reshape(-1, latent))
        return jax.nn.sigmoid(logits).reshape(xs.shape[:-1] + (cfg.size, cfg.size))

    def posterior(params, frames, key):
        """(X at the frames `[T, D]`, the full state at the last frame `[D, 1 + K]`, path KL, KL of q(X_0))."""
        feats_TxC, q0 = encode(params, frames)
        x0_key, path_key = jax.random.split(key)
        x0 = q0.sample(x0_key)
        num_intervals = frames.shape[0] - 1
        num_steps = num_intervals * spf
        x0_kl = kl_divergence(q0, DiagNormal(jnp.zeros(latent), jnp.ones(latent)))
        # Frame i + 1 ends interval i: the control looks ahead to the features of the frames still to come.
        context = fractional_sde.control_context(feats_TxC[1:], spf, cfg.context_frames)
        if cfg.learned_frame_step:
            sol = sde.segments(params["sde"], path_key, x0, context, num_intervals, num_steps, dt)
            return jnp.concatenate([x0[None], sol.zs[:, :, 0]]), sol.zs[-1], sol.kl, x0_kl
        path = sde.sample(params["sde"], path_key, x0, context, num_steps, dt, save_every=spf)
        return path.ys[:, :, 0], path.ys[-1], path.kl[-1], x0_kl

    def elbo(params, frames: Float[Array, "T H W"], key: PRNGKeyArray):
        xs, _, path_kl, x0_kl = posterior(params, frames, key)
        means = decode(params, xs)
        noise = jnp.full(means.shape, cfg.pixel_noise, means.dtype)
        log_lik = jnp.sum(DiagNormal(means, noise, event_ndims=3).log_prob(frames))
        return log_lik, path_kl, x0_kl

    def predict(params, frames: Float[Array, "T H W"], key: PRNGKeyArray) -> Float[Array, "T H W"]:
        post_key, prior_key = jax.random.split(key)
        xs_seen, last_state, _, _ = posterior(params, frames[: cfg.cond_frames], post_key)
        coef = sde.coefficients(params["sde"])
        drift, diffusion, _ = mafbm.fractional_fields(lambda t, x, p: jnp.zeros_like(x),
                                                      lambda t, x, p: jnp.broadcast_to(p, x.shape))
        num_steps = (cfg.num_frames - cfg.cond_frames) * spf
        increments = brownian_increments(prior_key, num_steps, dt, (latent,))
        ahead = solve_sde(drift, diffusion, last_state, increments, t0=(cfg.cond_frames - 1) * spf * dt, dt=dt,
                          args=(coef.scale, coef.gammas, coef.omegas),
                          noise_to_state=lambda dw: mafbm.noise_to_state(dw, num_terms), save_every=spf)
        xs = jnp.concatenate([xs_seen, ahead.ys[1:, :, 0]])
        return decode(params, xs)

    return VideoModel(init=init, elbo=elbo, predict=predict, sde=sde)


def make(cfg: Config) -> Method:
    """The video model as a `Method` over batches `{"frames": [B, T, size, size]}`.

    The loss is -(1/T) mean_b ELBO_b (one posterior sample per video); terms `elbo/elbo` (mean ELBO, not
    divided), `elbo/recon`, `elbo/kl_path`, `elbo/kl_x0`, `fbm/hurst` and `fbm/scale`.
    """
    model = make_model(cfg)

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array):
        del step
        frames = batch["frames"]
        keys = jax.random.split(key, frames.shape[0])
        log_lik, path_kl, x0_kl = jax.vmap(lambda f, k: model.elbo(params, f, k))(frames, keys)
        value = jnp.mean(log_lik - path_kl - x0_kl)
        coef = model.sde.coefficients(params["sde"])
        terms = {"elbo/elbo": value, "elbo/recon": jnp.mean(log_lik), "elbo/kl_path": jnp.mean(path_kl),
                 "elbo/kl_x0": jnp.mean(x0_kl), "fbm/hurst": coef.hurst, "fbm/scale": coef.scale}
        return -value / cfg.num_frames, terms

    return Method(init=lambda key, batch: model.init(key), loss=loss)


def prediction_scores(params, frames: Float[Array, "N T H W"], key: PRNGKeyArray, *, cfg: Config,
                      num_samples: int) -> dict[str, Array]:
    """Held-out prediction of one run on videos `frames`: per-pixel MSE of the later frames (after `cond_frames`).

    For each video, `predict` is drawn `num_samples` times (video key i of `split(key, N)`, split again per
    sample); `mean_mse` scores the predictive mean (decoder means averaged over samples), `sample_mse` the
    samples themselves, both averaged over videos; `first_prediction` is the predictive mean of video 0. Videos
    run 16 at a time (`lax.map`), so memory does not grow with N.
    """
    model = make_model(cfg)
    video_keys = jax.random.split(key, frames.shape[0])
    future = slice(cfg.cond_frames, None)

    def one_video(video, video_key):
        sample_keys = jax.random.split(video_key, num_samples)
        means = jax.vmap(lambda k: model.predict(params, video, k))(sample_keys)  # [S, T, H, W]
        predictive = jnp.mean(means, axis=0)
        mean_mse = jnp.mean(jnp.square(predictive[future] - video[future]))
        sample_mse = jnp.mean(jnp.square(means[:, future] - video[None, future]))
        return mean_mse, sample_mse, predictive

    mean_mse, sample_mse, predictive = jax.lax.map(lambda a: one_video(*a), (frames, video_keys),
                                                  batch_size=min(16, frames.shape[0]))
    return {"mean_mse": jnp.mean(mean_mse), "sample_mse": jnp.mean(sample_mse), "first_prediction": predictive[0]}
