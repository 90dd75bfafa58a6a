"""`fbm/ball_video`: a latent fractional-SDE video model on moving-ball frames (Daems et al., ICLR 2024, Sec. 5).

Data (`gvlab.data.balls`): one Gaussian blob (std 1 pixel) on a 16x16 canvas, 16 frames at t = 0, 1/15, ..., 1.
Each coordinate of the ball is X_0 + 0.6 B^H_t with B^H exact standard fBM of known H in {0.3, 0.7} (Cholesky
sampler) and X_0 ~ N(0, 0.3^2), squashed into the canvas by tanh; no mean reversion, so the data process lies in
the model class (the official data adds an OU drift -0.2 X, small over t in [0, 1]). Fresh videos every step.

Model: `gvlab.models.video_sde` (per-frame MLP encoder, q(X_0) from the first frame, the fractional latent SDE of
`gvlab.models.fractional_sde` in 2 dimensions with K = 5 type-I OU terms, gamma_max = 20, H learned from 1/2 and
the noise scale learned, a control that sees the next frame's features, an MLP decoder with a Gaussian pixel
likelihood of std 0.1, and a learned variance of the Euler step into each frame). Baseline: the same model driven
by Brownian motion (`kind="brownian"`). One fit per model and H (seeds vmapped).

Held-out prediction (`video_sde.prediction_scores` through `run.evaluate`): on videos not seen in training the
posterior runs over the first 8 frames only, then the prior is rolled forward from the full inferred state
(X, Y^1..K) at frame 8. Score: per-pixel MSE between the true frames 9..16 and the predictive mean frame
(decoder means averaged over `eval_samples` samples), fractional / Brownian per seed (same videos, same keys).

Command:  gvlab reproduce fbm/ball_video --profile full   (3 seeds x 4000 steps, about 7 min on 2 CPU cores;
          quick: 600 steps, about 2 min)
Expected (full): the H = 0.3 claims hold (H leaves 1/2 only after several hundred steps, then settles) and the
          H = 0.7 ones fail (H never leaves 1/2). In quick, H has barely left 1/2 and the prediction ratios are within
          seed noise of 1. With the plain Euler step into each frame (`model.learned_frame_step=False`) the learned
          H ends near 0.7 for *both* datasets: that step's noise moves the decoded ball by about a pixel for small
          H and the pixel likelihood charges it, so an H = 0.7 "pass" there is the bias, not identification (the
          same mechanism and the same remaining H = 0.7 failure as in fbm/hurst). Measured values: report.json;
          earlier runs (quick and full, both frame steps): ball_video.md beside this file.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, DataSource, Spec, TrainConfig, experiment
from gvlab.config import to_dict
from gvlab.data import balls
from gvlab.models import video_sde
from gvlab.report.figures import image_grid


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`fbm/ball_video` settings.

    Attributes:
        hursts: true Hurst indices of the ball motion, one dataset (and one fractional and one Brownian fit) each.
        model: the video model (`gvlab.models.video_sde`; its `kind` is set per fit); its `size` and `num_frames`
            are those of the videos, its `cond_frames` those the held-out prediction conditions on.
        radius: standard deviation of the Gaussian blob, pixels.
        margin: the ball centre stays this many pixels from the border (tanh squashing).
        motion_scale: diffusion of the ball's latent path (X_0 + motion_scale B^H).
        initial_std: std of X_0.
        num_test: held-out videos for the prediction score.
        eval_samples: samples per held-out video (predictive mean frames).
        train: optimisation, shared by the fractional and the Brownian model.
    """

    hursts: tuple[float, ...] = (0.3, 0.7)
    model: video_sde.Config = video_sde.Config()
    radius: float = 1.0
    margin: float = 2.5
    motion_scale: float = 0.6
    initial_std: float = 0.3
    num_test: int = 256
    eval_samples: int = 16
    train: TrainConfig = TrainConfig(steps=4000, batch_size=32, lr=3e-3, num_seeds=3, log_every=50,
                                     ckpt_every=1000)


def sample_videos(cfg: Config, hurst, key, num: int) -> jax.Array:
    """`[num, T, size, size]` frames from `gvlab.data.balls`."""
    return balls.sample(key, num, cfg.model.num_frames, hurst, size=cfg.model.size, radius=cfg.radius,
                        margin=cfg.margin, scale=cfg.motion_scale, initial_std=cfg.initial_std)["frames"]


def make_spec(cfg: Config, kind: str, hurst: float) -> Spec:
    """Fresh videos of one H every step. H is an argument rather than a constant, so the programs of both H are the
    same and the second one loads from the persistent compilation cache. (Not members of one fit: vmapping 2 x 3
    runs instead of 3 changes the float program, and this training is chaotic enough to amplify that.)"""

    def batch(arrays, key, step):
        return {"frames": sample_videos(cfg, arrays["hurst"], jax.random.fold_in(key, step), cfg.train.batch_size)}

    data = DataSource(arrays={"hurst": jnp.asarray(hurst, jnp.float32)}, batch=batch)
    return Spec(method=video_sde.make(dataclasses.replace(cfg.model, kind=kind)), optimizer=optax.adam(cfg.train.lr),
                data=data)


_HURST_SOURCE = ("Daems et al. 2024, Sec. 5 (Hurst estimation from ball videos). Threshold fixed before any run: the "
                 "tolerance of fbm/hurst; from the start at 1/2 it requires moving more than half-way to the truth, "
                 "and it stays below the distance 0.2 between truth and start")
_PREDICTION_SOURCE = "Daems et al. 2024, Sec. 5 and Table 1 (the fBM video model beats its BM variant)"
_PREDICTION = ("The fractional model predicts held-out later frames better than the Brownian one, H = {} "
               "(predictive-mean MSE per pixel, fractional / Brownian, mean over seeds)")
_HURST = "The learned Hurst index of the video model approaches the truth: within 0.1 of H = {} (every seed)"


@experiment(
    "fbm/ball_video",
    config=Config(),
    smoke={"model.size": 8, "model.num_frames": 6, "model.cond_frames": 3, "margin": 2.0, "model.features": 4,
           "model.encoder_hidden": (16,), "model.decoder_hidden": (16,), "model.control_hidden": (16,),
           "num_test": 4, "eval_samples": 2, "train.steps": 4, "train.batch_size": 4, "train.num_seeds": 2,
           "train.log_every": 2, "train.ckpt_every": 2},
    quick={"train.steps": 600, "num_test": 128, "eval_samples": 8},
    claims=[
        Claim(statement=_HURST.format(0.3), metric="hurst_abs_error_H0.3", op="<=", threshold=0.1, reduce="all",
              source=_HURST_SOURCE),
        Claim(statement=_PREDICTION.format(0.3), metric="prediction_mse_ratio_H0.3", op="<", threshold=1.0,
              source=_PREDICTION_SOURCE),
        Claim(statement=_HURST.format(0.7), metric="hurst_abs_error_H0.7", op="<=", threshold=0.1, reduce="all",
              source=_HURST_SOURCE),
        Claim(statement=_PREDICTION.format(0.7), metric="prediction_mse_ratio_H0.7", op="<", threshold=1.0,
              source=_PREDICTION_SOURCE),
    ],
)
def fbm_ball_video(cfg: Config, run) -> dict:
    """Fractional vs Brownian latent SDE on fBM ball videos: learned H, and prediction of held-out frames."""
    import matplotlib.pyplot as plt

    kinds = {"type1": "fractional", "brownian": "brownian"}
    cond = cfg.model.cond_frames
    evaluators = {kind: functools.partial(video_sde.prediction_scores, cfg=dataclasses.replace(cfg.model, kind=kind),
                                          num_samples=cfg.eval_samples) for kind in kinds}  # one jit per model
    results = {}
    fig, axes = plt.subplots(1, len(cfg.hursts), figsize=(4.5 * len(cfg.hursts), 3), squeeze=False)
    for i, hurst in enumerate(cfg.hursts):
        tag = f"H{hurst:g}"
        fits = {kind: run.fit(make_spec(cfg, kind, hurst), name=f"{tag}-{label}") for kind, label in kinds.items()}
        frames = sample_videos(cfg, hurst, jax.random.fold_in(run.key("test"), i), cfg.num_test)
        scores = {kind: run.evaluate(f"prediction_{kind}_{tag}", evaluators[kind], fit, frames,
                                     key=run.key(f"eval-{tag}"), extra=(to_dict(cfg), kind))
                  for kind, fit in fits.items()}
        history = {kind: fit.history for kind, fit in fits.items()}
        learned = history["type1"].last("fbm/hurst")
        copy_last = np.mean(np.square(np.asarray(frames[:, cond:]) - np.asarray(frames[:, cond - 1: cond])))
        fractional_mse, brownian_mse = scores["type1"]["mean_mse"], scores["brownian"]["mean_mse"]
        results.update({
            f"learned_hurst_{tag}": learned,
            f"hurst_abs_error_{tag}": np.abs(learned - hurst),
            f"learned_scale_{tag}": history["type1"].last("fbm/scale"),
            f"prediction_mse_fractional_{tag}": fractional_mse,
            f"prediction_mse_brownian_{tag}": brownian_mse,
            f"prediction_mse_ratio_{tag}": fractional_mse / brownian_mse,
            f"sample_mse_ratio_{tag}": scores["type1"]["sample_mse"] / scores["brownian"]["sample_mse"],
            f"copy_last_frame_mse_{tag}": copy_last,
            f"train_elbo_fractional_{tag}": history["type1"].last("elbo/elbo"),
            f"train_elbo_brownian_{tag}": history["brownian"].last("elbo/elbo"),
        })
        run.log(f"{tag}: learned H {np.round(learned, 3)}, prediction MSE fractional {np.round(fractional_mse, 5)} "
                f"vs Brownian {np.round(brownian_mse, 5)} (copy last frame {copy_last:.5f})")
        ax = axes[0, i]
        ax.plot(*history["type1"].column("fbm/hurst"), color="C0", alpha=0.8)
        ax.axhline(hurst, color="k", ls="--", label=f"true H = {hurst:g}")
        ax.set_ylim(0, 1)
        ax.set_xlabel("step")
        ax.set_title(f"learned H (seeds), truth {hurst:g}")
        ax.legend(fontsize=7)
        rows = np.stack([np.asarray(frames[0]), scores["type1"]["first_prediction"][0],
                         scores["brownian"]["first_prediction"][0]])
        grid = image_grid(rows, row_labels=["truth", "fractional", "Brownian"],
                          title=f"held-out video, H = {hurst:g} (seed 0): frames 1-{cond} posterior "
                                f"means, then predictive means")
        grid.set_size_inches(*(2 * grid.get_size_inches()))
        run.figure(f"predictions_{tag}", grid)
    fig.tight_layout()
    run.figure("hurst_trajectories", fig)
    return results
