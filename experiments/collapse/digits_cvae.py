"""`collapse/digits_cvae`: predicted vs measured active latent dimensions of CVAEs that complete digits from one
quarter (Dang et al., ICLR 2024, Sec. 5, MNIST CVAE with x = the bottom-left quarter, y = the other three).

Data (fixed before any run): scikit-learn's digits (1497 training images), grey levels scaled to [0, 1] and
centred; the condition is the bottom-left 4x4 quarter, the output the other 48 pixels; pixels constant over the
training set are dropped (one in the quarter, two in the rest: they carry no information and would make Cov(x)
singular), leaving 15 -> 46. Theory (`gvlab.collapse`): the eigenvalues theta of the conditional covariance
Cov(rest | quarter) predict #active = #{theta_i > beta eta_dec^2} (at most d_z). Settings: d_z = 16,
eta_enc = 1, eta_dec = 0.2 (pixel noise scale), beta in {0.25, 0.5, 1, 2, 4}.
Models (each trained for every beta and seed):
  * linear CVAE on the expected loss (the dataset's moments, `gvlab.collapse.cvae_expected_loss`), Adam 1e-2;
    active = #{singular values of U1 > 1e-2};
  * ReLU CVAE (`gvlab.models.vae`, one hidden layer of 128, learnable encoder variance, Gaussian decoder with
    fixed eta_dec) trained by minibatch SGD on the one-sample ELBO, Adam 1e-3, batch 128;
    active = #{i : E KL(q(z_i|y, x) || p(z_i)) > 0.01}.

The betas are the members of each model's fit (`Spec.args`): one linear and one ReLU fit, each training every
beta and seed in one compiled program.

Command:  gvlab reproduce collapse/digits_cvae --profile full      (the issue's profile; quick is shorter)
Shows:    per beta, the predicted active dimensions (from the conditional covariance's eigenvalues, also
          reported) against the linear and the ReLU CVAE's counts for every seed, and Spearman(beta, AU) of the
          ReLU model; a figure of the three counts over beta. Measured values in report.json / report.md.
Runtime:  quick (3 seeds, ReLU 2000 steps) ~1 min, full (5 seeds, ReLU 4000 steps) ~2 min on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Method, Spec, TrainConfig, collapse, diagnostics, experiment
from gvlab.data import digits as digits_data
from gvlab.data import epoch_batches
from gvlab.models import vae
from gvlab.train import parallel
from gvlab.types import DataSource


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`collapse/digits_cvae` settings.

    Attributes:
        betas: KL weights, one member each of the linear and of the ReLU fit.
        latent_dim, eta_enc, eta_dec: the CVAE's constants (shared by theory and both models).
        relu_hidden: hidden widths of the ReLU CVAE.
        linear_lr, linear_steps: Adam on the expected loss.
        active_threshold: singular-value threshold of the linear model; kl_threshold: the ReLU model's.
        train: the ReLU CVAE's optimisation (its seeds are also the linear model's).
    """

    betas: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    latent_dim: int = 16
    eta_enc: float = 1.0
    eta_dec: float = 0.2
    relu_hidden: tuple[int, ...] = (128,)
    linear_lr: float = 1e-2
    linear_steps: int = 3000
    active_threshold: float = 1e-2
    kl_threshold: float = 0.01
    train: TrainConfig = TrainConfig(steps=4000, batch_size=128, lr=1e-3, num_seeds=5, log_every=200)


def quarter_split() -> dict[str, jax.Array]:
    """`{"quarter": [N, 15], "rest": [N, 46]}`: centred training pixels in [0, 1], constant pixels dropped."""
    counts, _ = digits_data.split_counts("train")
    images = np.asarray(counts, np.float32) / 16.0
    in_quarter = np.zeros((8, 8), bool)
    in_quarter[4:, :4] = True
    quarter, rest = images[:, in_quarter], images[:, ~in_quarter]
    quarter, rest = quarter[:, quarter.std(0) > 0], rest[:, rest.std(0) > 0]
    return {"quarter": jnp.asarray(quarter - quarter.mean(0)), "rest": jnp.asarray(rest - rest.mean(0))}


def linear_spec(cfg: Config, data: dict) -> Spec:
    """The linear CVAE on the expected loss of the whole dataset (the data enter only through their moments), one
    member per beta."""
    dx, dy, dz = data["quarter"].shape[1], data["rest"].shape[1], cfg.latent_dim

    def init(key, batch):
        k = jax.random.split(key, 4)
        return {"w1": 0.1 * jax.random.normal(k[0], (dz, dx)) / np.sqrt(dx),
                "w2": 0.1 * jax.random.normal(k[1], (dz, dy)) / np.sqrt(dy),
                "u1": 0.1 * jax.random.normal(k[2], (dy, dz)) / np.sqrt(dz),
                "u2": 0.1 * jax.random.normal(k[3], (dy, dx)) / np.sqrt(dx),
                "log_sigma": jnp.zeros((dz,))}

    def loss(params, batch, key, step, args):
        moments = collapse.second_moments(batch["quarter"], batch["rest"])
        return collapse.cvae_expected_loss(params, moments, beta=args["beta"], eta_enc=cfg.eta_enc,
                                           eta_dec=cfg.eta_dec)

    return Spec(method=Method(init=init, loss=loss), optimizer=optax.adam(cfg.linear_lr),
                data=DataSource(arrays=data, batch=lambda arrays, key, step: arrays),
                args={"beta": jnp.asarray(cfg.betas, jnp.float32)})


def relu_spec(cfg: Config, data: dict) -> Spec:
    """The ReLU CVAE (`gvlab.models.vae`) on minibatches (output: the rest, condition: the quarter), one member
    per beta (the loss's `args`)."""
    dx, dy = data["quarter"].shape[1], data["rest"].shape[1]
    return Spec(method=vae.make(relu_config(cfg), (dy,), condition_dim=dx), optimizer=optax.adam(cfg.train.lr),
                data=epoch_batches({"x": data["rest"], "c": data["quarter"]}, cfg.train.batch_size),
                args={"beta": jnp.asarray(cfg.betas, jnp.float32)})


def relu_config(cfg: Config) -> vae.Config:
    return vae.Config(latent_dim=cfg.latent_dim, hidden=cfg.relu_hidden, likelihood="gaussian",
                      prior_std=cfg.eta_enc, decoder_std=cfg.eta_dec)


def theory(cfg: Config, data: dict) -> dict[str, jax.Array]:
    """The predicted active count per beta, and the top `latent_dim` eigenvalues theta of Cov(rest | quarter)."""
    cov = collapse.conditional_covariance(data["quarter"], data["rest"])
    counts = [collapse.cvae_optimum(cov, cfg.latent_dim, beta, cfg.eta_enc, cfg.eta_dec).num_active
              for beta in cfg.betas]
    return {"predicted": jnp.stack(counts), "theta": jnp.linalg.eigvalsh(cov)[::-1][: cfg.latent_dim]}


@experiment(
    "collapse/digits_cvae",
    config=Config(),
    smoke={"betas": (0.5, 4.0), "latent_dim": 4, "relu_hidden": (8,), "linear_steps": 20, "train.steps": 20,
           "train.num_seeds": 2, "train.log_every": 10},
    quick={"linear_steps": 2000, "train.steps": 2000, "train.num_seeds": 3},
    claims=[
        Claim(statement="Linear CVAE: measured active dimensions equal the prediction from the conditional "
                        "covariance within +-1, for every beta (every seed)",
              metric="linear_count_error", op="<=", threshold=1.0, reduce="all",
              source="Dang et al. 2024, Thm. 2 applied to digit completion (Sec. 5, MNIST CVAE)"),
        Claim(statement="ReLU CVAE: active units fall as beta grows, Spearman(beta, AU) <= -0.8 (mean over seeds)",
              metric="relu_spearman", op="<=", threshold=-0.8, reduce="mean",
              source="Dang et al. 2024, Sec. 5 (the linear predictions carry over to ReLU CVAEs on MNIST)"),
    ],
)
def digits_cvae(cfg: Config, run) -> dict:
    """Theory vs linear and ReLU CVAEs on digit completion, over beta."""
    import matplotlib.pyplot as plt

    data = quarter_split()
    dx, dy = data["quarter"].shape[1], data["rest"].shape[1]
    optimum = run.artifact("theory", lambda: theory(cfg, data),
                           inputs=(data, cfg.betas, cfg.latent_dim, cfg.eta_enc, cfg.eta_dec))
    prediction = optimum["predicted"].astype(int)
    # The expected loss reads all 1497 rows at once (a full-batch objective): one device, no data split.
    linear_train = dataclasses.replace(cfg.train, steps=cfg.linear_steps, lr=cfg.linear_lr,
                                       batch_size=data["quarter"].shape[0])
    linear = run.fit(linear_spec(cfg, data), linear_train, name="linear", mesh=parallel.data_mesh(1))
    relu = run.fit(relu_spec(cfg, data), name="relu")
    singular = run.evaluate("singular-values", collapse.decoder_singular_values, linear)["singular_values"]
    evaluator = functools.partial(vae.kl_per_dimension, cfg=relu_config(cfg), image_shape=(dy,), condition_dim=dx)
    kl = run.evaluate("kl", evaluator, relu, {"x": data["rest"], "c": data["quarter"]})["kl"]

    def per_beta(fit, counts):  # [R] -> [seeds, betas]
        return np.stack([counts[fit.runs_of(m)] for m in range(len(cfg.betas))], axis=1)

    linear_counts = per_beta(linear, np.sum(singular > cfg.active_threshold, axis=1))
    relu_counts = per_beta(relu, np.sum(kl > cfg.kl_threshold, axis=1))
    for i, beta in enumerate(cfg.betas):
        run.log(f"beta {beta:g}: predicted {prediction[i]}, linear {linear_counts[:, i]}, ReLU {relu_counts[:, i]}")

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(cfg.betas, prediction, "k--o", label="theory (conditional covariance)")
    for j in range(linear_counts.shape[0]):
        ax.plot(cfg.betas, linear_counts[j], "s", color="C0", alpha=0.6, label="linear CVAE" if j == 0 else None)
        ax.plot(cfg.betas, relu_counts[j], "^", color="C1", alpha=0.6, label="ReLU CVAE" if j == 0 else None)
    ax.set(xscale="log", xlabel="beta", ylabel="active latent dimensions", title="digit completion from a quarter")
    ax.legend(fontsize=7)
    fig.tight_layout()
    run.figure("active_dimensions", fig)
    spearman = np.asarray(jax.vmap(diagnostics.spearman_correlation, (None, 0))(
        jnp.asarray(cfg.betas), jnp.asarray(relu_counts, jnp.float32)))
    return {"predicted_active": prediction, "linear_active": linear_counts, "relu_active": relu_counts,
            "linear_count_error": np.max(np.abs(linear_counts - prediction[None]), axis=1),
            "relu_count_error": np.max(np.abs(relu_counts - prediction[None]), axis=1),
            "relu_spearman": spearman, "theta": optimum["theta"]}
