"""`inr/ddmi`: DDMI-mini (latent -> hierarchical feature grids + scale-modulated MLP) against a Functa-style weight-
modulation INR on analytically rendered continuous images (Park et al., ICLR 2024, *DDMI: Domain-Agnostic Latent
Diffusion Models for Synthesizing High-Quality Implicit Neural Representations*; issue 18; notes section 3d).

Setting (fixed before the claims' runs): 1-3 smooth ellipses on a linear gradient (`gvlab.inr.shapes`), rendered
exactly at 16 x 16 for training and at 16 x 16 and 64 x 64 (4x) for evaluation. Equal latent size (4 x 4 x 8 = 128
floats) and encoder for both INRs (`gvlab.inr.models`): DDMI-mini decodes z into grids at 4^2, 8^2, 16^2 (8 channels)
read bilinearly by a scale-modulated MLP of 4 StyledResBlocks (width 32; decoder width 16); the baseline shifts a
4-layer ReLU MLP (width 40) on 8 log-spaced Fourier frequencies by a linear hypernetwork of z (parameter counts within
20%, in report.json). The single-scale ablation (every injection reads the finest grid) is a member of DDMI's fit.
Stage 1: the D2C-VAE (L1 + 1e-4 KL, multi-scale crops with s = 1/2 half of the time; Adam, lr 2e-3 cosine-decayed to
0 over the run, so the curves end flat). Stage 2 (cached artefacts): the VAEs' posterior means, standardised, train
one latent diffusion fit (`gvlab.diffusion`, eps + LSGM mixed prediction, MLP eps-net) with one member per VAE run;
DDIM-50 samples are decoded and rendered.

Claims (issue 18, mean over seeds): PSNR at 16^2 of DDMI-mini >= baseline + 1 dB; PSNR at 64^2 against the exact
render >= baseline. Reported: the hierarchy ablation, the Frechet distance of 16^2 sample renders in the PCA-32 space
of real renders (floor: a second real set; reference: a Gaussian fitted to the latents), bilinear upsampling of the
true 16^2 image as the 64^2 reference.

Command:  gvlab reproduce inr/ddmi --profile quick
Shows:    per-seed PSNRs at 16^2 and 64^2, the ablation, FDs, training curves, reconstructions and samples.
Runtime:  quick (2 seeds, 400 VAE steps, 3000 LDM steps) about 5 min of 2 quiet CPU cores, 35-40 min on the shared
          machine (load ~13 on 2 cores, ~0.3 VAE steps/s); full (3 seeds, 2000 VAE steps on 6000 images, 12000 LDM
          steps; the converged regime, see ddmi.md) about 42 min on 2 mostly quiet CPU cores (measured).
          Numbers: report.json / report.md; discussion: `ddmi.md` beside this file.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab.data import epoch_batches
from gvlab.diffusion.schedules import Schedule
from gvlab.inr import latent, models, shapes
from gvlab.inr.grids import resize
from gvlab.inverse.metrics import psnr
from gvlab.nn import TimeMLP
from gvlab.nn.conv import count_params
from gvlab.report.figures import image_grid

SCHEDULE = Schedule("vp_linear")
KINDS = ("ddmi", "single", "baseline")  # LDM members, in VAE-run order: DDMI fit (hierarchy 1, then 0), baseline


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`inr/ddmi` settings.

    Attributes:
        num_train, num_test: rendered training images; held-out images (reconstructions, FD's real set).
        resolution, eval_factor: training resolution; the arbitrary-resolution test renders at factor x it.
        encoder_channels, latent_channels: the shared encoder's stride-2 convs; z channels (4 x 4 spatial).
        grid_features, decoder_channels, mlp_width: DDMI-mini's grid channels, decoder width, MLP width.
        baseline_width, baseline_depth, frequencies: the weight-modulation baseline.
        kl_weight, crop_probability: the D2C-VAE loss.
        ldm_hidden, sample_steps, num_samples, pca_components: the LDM eps-MLP; DDIM steps; samples per run; FD space.
        figure_images: test images in the figures.
        train, ldm_train: stage 1 (seeds: the claims' seeds) and stage 2 optimisation.
    """

    num_train: int = 4000
    num_test: int = 500
    resolution: int = 16
    eval_factor: int = 4
    encoder_channels: tuple[int, ...] = (32, 64)
    latent_channels: int = 8
    grid_features: int = 8
    decoder_channels: int = 16
    mlp_width: int = 32
    baseline_width: int = 40
    baseline_depth: int = 4
    frequencies: int = 8
    kl_weight: float = 1e-4
    crop_probability: float = 0.5
    ldm_hidden: tuple[int, ...] = (256, 256)
    sample_steps: int = 50
    num_samples: int = 500
    pca_components: int = 32
    figure_images: int = 8
    train: TrainConfig = TrainConfig(steps=1500, batch_size=32, lr=2e-3, num_seeds=2, log_every=50,
                                members="sequential")  # vmapped conv parameters: grouped convs, slow on CPU
    ldm_train: TrainConfig = TrainConfig(steps=6000, batch_size=128, lr=1e-3, num_seeds=1, log_every=200)


def autoencoders(cfg: Config) -> dict[str, models.INRAutoencoder]:
    encoder = models.GridEncoder(cfg.encoder_channels, cfg.latent_channels)
    grid = models.GridField(models.HierarchicalGrids(3, cfg.grid_features, cfg.decoder_channels),
                            models.ScaleModulatedMLP(cfg.mlp_width))
    fourier = models.FourierField(cfg.baseline_width, cfg.baseline_depth, cfg.frequencies)
    return {"ddmi": models.INRAutoencoder(encoder, grid), "baseline": models.INRAutoencoder(encoder, fourier)}


def reconstructions(run_params, data, key, *, model) -> dict:
    """Evaluator: posterior-mean latents of the training images; reconstructions of the test images at the
    training resolution and at the exact high-resolution render's, with the run's `hierarchy`, and their PSNRs."""
    del key
    net, hierarchy = run_params["net"], run_params["hierarchy"]
    train, test, high = data["train"], data["test"], data["high"]
    chunk = next(c for c in (500, 400, 250, 200, 100, 50, 25, 16, 10, 8, 5, 4, 2, 1) if len(train) % c == 0)
    z = jax.lax.map(lambda x: models.encode_mean(model, net, x), train.reshape(-1, chunk, *train.shape[1:]))
    z_test = models.encode_mean(model, net, test)
    low = models.render_latents(model, net, z_test, test.shape[-1], hierarchy)
    up = models.render_latents(model, net, z_test, high.shape[-1], hierarchy)
    return {"z": z.reshape(len(train), -1), "low": low, "high": up,
            "psnr_low": psnr(low, test).mean(), "psnr_high": psnr(up, high).mean()}


def decoded(run_params, data, key, *, model, eps_net, cfg: Config) -> dict:
    """Evaluator: 16^2 renders of `num_samples` latents drawn from the run's LDM (DDIM, eta = 0) and of a Gaussian
    fitted to its standardised training latents (the no-diffusion reference)."""
    del data
    net, scale, latents = run_params["net"], run_params["scale"], run_params["latents"]
    ldm_key, gauss_key = jax.random.split(key)
    draws = latent.sample_latents(eps_net, run_params["ldm"], SCHEDULE, ldm_key, cfg.num_samples,
                                  latents.shape[1], cfg.sample_steps)
    mean, cov = jnp.mean(latents, 0), jnp.cov(latents, rowvar=False) + 1e-5 * jnp.eye(latents.shape[1])
    gauss = mean[None] + jax.random.normal(gauss_key, draws.shape) @ jnp.linalg.cholesky(cov).T
    render = lambda z: models.render_latents(model, net, (z * scale).reshape(-1, *rec_shape(cfg)),  # noqa: E731
                                             cfg.resolution, run_params["hierarchy"])
    return {"ldm": render(draws), "gauss": render(gauss)}


@experiment(
    "inr/ddmi",
    config=Config(),
    smoke={"num_train": 16, "num_test": 8, "resolution": 8, "eval_factor": 2, "encoder_channels": (4,),
           "latent_channels": 2, "grid_features": 2, "decoder_channels": 4, "mlp_width": 8, "baseline_width": 8,
           "baseline_depth": 2, "frequencies": 2, "ldm_hidden": (8,), "sample_steps": 2, "num_samples": 8,
           "pca_components": 4, "figure_images": 2,
           "train.steps": 2, "train.batch_size": 8, "train.num_seeds": 1, "train.log_every": 1,
           "ldm_train.steps": 2, "ldm_train.batch_size": 8, "ldm_train.log_every": 1},
    quick={"train.steps": 400, "num_train": 2000, "num_test": 300, "num_samples": 300, "ldm_train.steps": 3000},
    full={"train.steps": 2000, "train.num_seeds": 3, "num_train": 6000, "ldm_train.steps": 12000},
    claims=[
        Claim(statement="At equal latent size, DDMI-mini reconstructs at the training resolution (16^2) at least 1 dB "
                        "better than the weight-modulation (Functa-style) INR: PSNR16(DDMI) - PSNR16(baseline) >= 1",
              metric="psnr16_ddmi_minus_baseline", op=">=", threshold=1.0,
              source="Park et al. 2024 (adaptive PEs beat weight generation); issue 18 / notes section 3d gate"),
        Claim(statement="Arbitrary-resolution decoding: at 64^2 against the exact render, PSNR64(DDMI) >= "
                        "PSNR64(baseline)",
              metric="psnr64_ddmi_minus_baseline", op=">=", threshold=0.0,
              source="Park et al. 2024 (consistent arbitrary-resolution generation); issue 18 / notes section 3d"),
    ],
)
def ddmi(cfg: Config, run) -> dict:
    """Stage 1: D2C-VAEs (DDMI-mini + single-scale member; baseline); stage 2: one LDM fit over every VAE run."""
    res, high = cfg.resolution, cfg.resolution * cfg.eval_factor
    data_key, test_key = jax.random.split(run.key("shapes"))
    train_shapes, test_shapes = shapes.sample(data_key, cfg.num_train), shapes.sample(test_key, 2 * cfg.num_test)
    x_train = np.asarray(shapes.render_images(train_shapes, res))  # numpy from here: slices compile nothing
    x_all = np.asarray(shapes.render_images(test_shapes, res))
    x_test, x_real = x_all[:cfg.num_test], x_all[cfg.num_test:]  # reconstructions; FD's second real set (floor)
    x_high = np.asarray(shapes.render_images(test_shapes, high))[:cfg.num_test]
    nets = autoencoders(cfg)
    source = epoch_batches({"x": x_train, "shape": train_shapes}, cfg.train.batch_size)

    def vae_spec(model, args=None):
        method = models.make_d2c_vae(model, kl_weight=cfg.kl_weight, crop_probability=cfg.crop_probability,
                                     target=shapes.render)
        schedule = optax.cosine_decay_schedule(cfg.train.lr, cfg.train.steps)  # flat, converged end (ddmi.md)
        return Spec(method=method, optimizer=optax.adam(schedule), data=source, args=args)

    fits = {"ddmi": run.fit(vae_spec(nets["ddmi"], {"hierarchy": jnp.asarray([1.0, 0.0])}), name="vae_ddmi"),
            "baseline": run.fit(vae_spec(nets["baseline"]), name="vae_baseline")}
    hierarchy = {"ddmi": fits["ddmi"].args["hierarchy"], "baseline": np.ones(fits["baseline"].num_runs, np.float32)}
    out: dict = {f"params_{k}": float(count_params(f.params) // f.num_runs) for k, f in fits.items()}
    data = {"train": x_train, "test": x_test, "high": x_high}
    rec = {k: run.evaluate(f"reconstruct_{k}", functools.partial(reconstructions, model=nets[k]),
                           {"net": f.params, "hierarchy": hierarchy[k]}, data, mode="sequential", extra=(k, repr(cfg)))
           for k, f in fits.items()}
    for kind, (k, rows) in zip(KINDS, (("ddmi", 0), ("ddmi", 1), ("baseline", 0))):
        count = fits["baseline"].num_runs  # seeds per member
        sel = slice(rows * count, (rows + 1) * count)
        out[f"psnr16_{kind}"] = np.asarray(rec[k]["psnr_low"][sel])
        out[f"psnr64_{kind}"] = np.asarray(rec[k]["psnr_high"][sel])
    for r in (16, 64):
        out[f"psnr{r}_ddmi_minus_baseline"] = out[f"psnr{r}_ddmi"] - out[f"psnr{r}_baseline"]
        out[f"psnr{r}_ddmi_minus_single"] = out[f"psnr{r}_ddmi"] - out[f"psnr{r}_single"]
    # the reference: bilinear upsampling of the true low-resolution image
    mse = np.mean(np.square(np.asarray(resize(x_test, high)) - np.asarray(x_high)), axis=(-2, -1))
    out["psnr64_bilinear_upsampling"] = float(np.mean(-10.0 * np.log10(mse)))  # numpy: no eager jnp programs
    run.log("PSNR16 " + ", ".join(f"{k} {out[f'psnr16_{k}'].mean():.2f}" for k in KINDS) +
            "; PSNR64 " + ", ".join(f"{k} {out[f'psnr64_{k}'].mean():.2f}" for k in KINDS))

    # Stage 2: the latent diffusion model, one member per VAE run (DDMI seeds, single-scale seeds, baseline seeds).
    z = np.concatenate([rec["ddmi"]["z"], rec["baseline"]["z"]])  # [M, N, d]
    scale = z.reshape(len(z), -1).std(-1)  # one scalar per member (LDM's scale_factor)
    method, eps_net = latent.make_latent_diffusion(TimeMLP(out_features=z.shape[-1], hidden=cfg.ldm_hidden), SCHEDULE)
    ldm = run.fit(Spec(method=method, optimizer=optax.adam(cfg.ldm_train.lr), data=epoch_batches(
        {"x": jnp.asarray(z / scale[:, None, None])}, cfg.ldm_train.batch_size, per_member=True)),
        cfg.ldm_train, name="ldm")
    pca = latent.pca_features(x_real.reshape(len(x_real), -1), cfg.pca_components)
    flat_test = x_test.reshape(len(x_test), -1)
    fd = lambda images: float(latent.pca_frechet_distance(pca, images.reshape(len(images), -1), flat_test))  # noqa: E731
    out["fd_real"] = fd(x_train[:cfg.num_test])
    members = {"ddmi": slice(0, len(rec["ddmi"]["z"])), "baseline": slice(len(rec["ddmi"]["z"]), len(z))}
    samples = {}
    for k, f in fits.items():
        params = {"net": f.params, "hierarchy": hierarchy[k], "scale": scale[members[k]],
                  "ldm": jax.tree.map(lambda v, m=members[k]: np.asarray(v)[m], ldm.params),
                  "latents": z[members[k]] / scale[members[k], None, None]}
        samples[k] = run.evaluate(f"samples_{k}", functools.partial(decoded, model=nets[k], eps_net=eps_net, cfg=cfg),
                                  params, key=run.key("samples"), extra=k)
    for kind, (k, rows) in zip(KINDS, (("ddmi", 0), ("ddmi", 1), ("baseline", 0))):
        count = fits["baseline"].num_runs
        for source_name in ("ldm", "gauss"):
            out[f"fd_{source_name}_{kind}"] = np.asarray(
                [fd(samples[k][source_name][rows * count + s]) for s in range(count)])
    run.log("FD (PCA-%d) real %.2f; LDM " % (cfg.pca_components, out["fd_real"]) +
            ", ".join(f"{k} {out[f'fd_ldm_{k}'].mean():.2f}" for k in KINDS))
    _figures(run, cfg, fits, ldm, x_test, x_high, rec, samples)
    return out


def rec_shape(cfg: Config) -> tuple[int, int, int]:
    """The spatial latent's shape (h, w, channels)."""
    side = cfg.resolution // 2 ** len(cfg.encoder_channels)
    return (side, side, cfg.latent_channels)


def _figures(run, cfg: Config, fits, ldm, x_test, x_high, rec, samples) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, f in fits.items():
        steps, values = f.history.column("vae/l1")
        values = values.reshape(len(steps), -1)
        labels = ("DDMI-mini", "single-scale") if name == "ddmi" else ("baseline",)
        per = values.shape[1] // len(labels)
        for i, label in enumerate(labels):
            axes[0].plot(steps, values[:, i * per:(i + 1) * per].mean(1), label=label)
    axes[0].set(yscale="log", xlabel="step", ylabel="L1 per pixel (stage 1)", title="D2C-VAE training")
    axes[0].legend(fontsize=7)
    steps, values = ldm.history.column("diffusion/loss")
    axes[1].plot(steps, np.asarray(values).reshape(len(steps), -1).mean(1))
    axes[1].set(yscale="log", xlabel="step", ylabel="eps loss", title="LDM training (mean over members)")
    fig.tight_layout()
    run.figure("training_curves", fig)
    k = cfg.figure_images
    count = fits["baseline"].num_runs
    rows = [x_test[:k], rec["ddmi"]["low"][0, :k], rec["baseline"]["low"][0, :k]]
    run.figure("reconstructions_16", image_grid(np.stack(rows), title="16^2: truth, DDMI-mini, baseline",
                                                row_labels=["truth", "DDMI", "baseline"], cmap="gray"))
    rows = [x_high[:k], rec["ddmi"]["high"][0, :k], rec["ddmi"]["high"][count, :k], rec["baseline"]["high"][0, :k]]
    run.figure("reconstructions_64", image_grid(np.stack(rows), title="64^2: exact, DDMI-mini, single, baseline",
                                                row_labels=["exact", "DDMI", "single", "baseline"], cmap="gray"))
    rows = [samples["ddmi"]["ldm"][0, :k], samples["ddmi"]["ldm"][count, :k], samples["baseline"]["ldm"][0, :k]]
    run.figure("samples", image_grid(np.stack(rows), title="LDM samples (16^2)",
                                     row_labels=["DDMI", "single", "baseline"], cmap="gray"))
