"""`fbm/hurst`: learn the Hurst index from paths with a known one (Daems et al., ICLR 2024, Sec. 4-5).

Data: exact fBM paths (Cholesky sampler, standard normalisation) with true H, observed at 25 equally spaced
times in (0, 1] with Gaussian noise 0.05. Model: the fractional latent SDE with H = sigmoid(logit) (started at
1/2) and the noise scale learned with the control, whose context is the next observation and the time left until
it. H enters through omega(H), differentiated through the linear solve. Baseline: the same model driven by plain
Brownian motion (H = 1/2, no OU terms). Both are trained on the ELBO; the ELBOs are compared per path on held-out
paths.

Command:  gvlab reproduce fbm/hurst --profile quick
Expected: the H = 0.7 claims hold, the H = 0.3 ones fail. Measured on 2 CPU cores (jax 0.10.2):
          quick (3 seeds x 800 steps, 97 s): learned H 0.633 +- 0.002 for H = 0.7 (pass) and 0.506 for H = 0.3
            (fail: it does not leave its start); held-out ELBO gain over BM +11.3 +- 0.9 nats (H 0.7, pass),
            -0.5 +- 0.8 (H 0.3, fail).
          full (3 seeds x 3000 steps, 5 min 25 s): 0.662 +- 0.001 (pass), 0.536 (fail); gains +0.02 +- 1.1 (passes
            on the mean, within seed noise: the Brownian model catches up with longer training) and -3.2 +- 1.9.
          The exact Gaussian marginal likelihood of the H = 0.3 data peaks at the truth (-11.03 nats/path at 0.3,
          -12.50 at 1/2), so the H = 0.3 miss is a bias of the variational fit, not of the MA-fBM maths.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Method, Spec, TrainConfig, experiment
from gvlab.data import epoch_batches
from gvlab.models import fractional_sde
from gvlab.sde import fractional


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`fbm/hurst` settings.

    Attributes:
        hursts: true Hurst indices, one dataset (and fit) each.
        num_paths: training paths per dataset; `num_test` more are held out for the ELBO comparison.
        num_obs: observations per path, at k / num_obs for k = 1..num_obs.
        obs_noise: observation noise std.
        steps_per_obs: Euler steps between observations (dt = 1 / (num_obs * steps_per_obs)).
        num_terms, gamma_max: the MA-fBM approximation (type I).
        hidden: control MLP widths.
        eval_samples: posterior samples per held-out path for its ELBO.
        train: optimisation (shared by the fractional and the Brownian model).
    """

    hursts: tuple[float, ...] = (0.3, 0.7)
    num_paths: int = 256
    num_test: int = 64
    num_obs: int = 25
    obs_noise: float = 0.05
    steps_per_obs: int = 4
    num_terms: int = 5
    gamma_max: float = 20.0
    hidden: tuple[int, ...] = (128, 128)
    eval_samples: int = 16
    train: TrainConfig = TrainConfig(steps=3000, batch_size=32, lr=3e-3, num_seeds=3, log_every=100,
                                     ckpt_every=1000)


def make_data(cfg: Config, hurst: float, key) -> dict[str, jax.Array]:
    """Exact standard fBM at the observation times plus noise; the control's context on the Euler grid.

    context[n] = (next observation, time left until it) for the Euler step n.
    """
    obs_times = jnp.arange(1, cfg.num_obs + 1, dtype=jnp.float32) / cfg.num_obs
    path_key, noise_key = jax.random.split(key)
    total = cfg.num_paths + cfg.num_test
    scale = fractional.unit_variance_scale(jnp.asarray(hurst, jnp.float32), "type1")
    paths = scale * fractional.sample_fbm(path_key, obs_times, jnp.asarray(hurst, jnp.float32), "type1", total)
    obs = paths + cfg.obs_noise * jax.random.normal(noise_key, paths.shape)
    num_steps = cfg.num_obs * cfg.steps_per_obs
    step = jnp.arange(num_steps)
    next_obs = step // cfg.steps_per_obs  # the observation at the end of this step's interval
    time_left = ((next_obs + 1) * cfg.steps_per_obs - step) / num_steps
    context = jnp.stack([obs[:, next_obs], jnp.broadcast_to(time_left, (total, num_steps))], axis=-1)
    return {"obs": obs, "context": context}


def model_config(cfg: Config, kind: str) -> fractional_sde.Config:
    return fractional_sde.Config(dim=1, num_terms=cfg.num_terms, gamma_max=cfg.gamma_max, kind=kind,
                                 omega_horizon=1.0, hurst=0.5, learn_hurst=kind != "brownian", learn_scale=True,
                                 hidden=cfg.hidden, context_dim=2)


def elbo_fn(cfg: Config, model):
    num_steps = cfg.num_obs * cfg.steps_per_obs
    dt = 1.0 / num_steps
    obs_index = jnp.arange(1, cfg.num_obs + 1) * cfg.steps_per_obs

    def elbo(params, obs, context, key):
        path = model.sample(params, key, jnp.zeros((1,)), context, num_steps, dt)
        log_lik = fractional_sde.observation_log_likelihood(path.ys[:, :, 0], obs[:, None], obs_index, cfg.obs_noise)
        return log_lik, path.kl[-1]

    return elbo


def make_spec(cfg: Config, kind: str, data: dict) -> Spec:
    model = fractional_sde.make(model_config(cfg, kind))
    elbo = elbo_fn(cfg, model)

    def loss(params, batch, key, step):
        keys = jax.random.split(key, batch["obs"].shape[0])
        log_lik, kl = jax.vmap(lambda o, c, k: elbo(params, o, c, k))(batch["obs"], batch["context"], keys)
        coef = model.coefficients(params)
        value = jnp.mean(log_lik - kl)
        return -value / cfg.num_obs, {"elbo/elbo": value, "elbo/recon": jnp.mean(log_lik), "elbo/kl": jnp.mean(kl),
                                      "fbm/hurst": coef.hurst, "fbm/scale": coef.scale}

    train = {k: v[: cfg.num_paths] for k, v in data.items()}
    return Spec(method=Method(init=lambda key, batch: model.init(key), loss=loss), optimizer=optax.adam(cfg.train.lr),
                data=epoch_batches(train, cfg.train.batch_size))


@functools.lru_cache(maxsize=None)
def _held_out_elbo_fn(cfg: Config, kind: str):
    """One compiled evaluator per (config, model kind); the data are arguments, so both datasets share it."""
    elbo = elbo_fn(cfg, fractional_sde.make(model_config(cfg, kind)))

    def one_seed(p, obs, context, key):
        keys = jax.random.split(key, (obs.shape[0], cfg.eval_samples))
        log_lik, kl = jax.vmap(lambda o, c, ks: jax.vmap(lambda k: elbo(p, o, c, k))(ks))(obs, context, keys)
        return jnp.mean(log_lik - kl)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None, None)))


def held_out_elbo(cfg: Config, kind: str, params, data: dict, key) -> np.ndarray:
    """Mean ELBO per held-out path (average of `eval_samples` one-sample estimates), per seed: `[seeds]`."""
    test = {k: v[cfg.num_paths:] for k, v in data.items()}
    return np.asarray(_held_out_elbo_fn(cfg, kind)(params, test["obs"], test["context"], key))


def _stacked(fit):
    return fit.state.params if len(fit.seeds) > 1 else jax.tree.map(lambda x: x[None], fit.params)


@experiment(
    "fbm/hurst",
    config=Config(),
    smoke={"num_paths": 16, "num_test": 8, "num_obs": 5, "hidden": (16,), "eval_samples": 2, "train.steps": 6,
           "train.batch_size": 8, "train.num_seeds": 2, "train.log_every": 3, "train.ckpt_every": 3},
    quick={"train.steps": 800, "num_paths": 128},
    claims=[
        Claim(statement="The learned Hurst index is within 0.1 of the truth, H = 0.3 (every seed)",
              metric="hurst_abs_error_H0.3", op="<=", threshold=0.1, reduce="all",
              source="Daems et al. 2024, Sec. 5 (Hurst estimation); tolerance from the mini-experiment design"),
        Claim(statement="The learned Hurst index is within 0.1 of the truth, H = 0.7 (every seed)",
              metric="hurst_abs_error_H0.7", op="<=", threshold=0.1, reduce="all",
              source="Daems et al. 2024, Sec. 5"),
        Claim(statement="The MA-fBM model's held-out ELBO beats the Brownian-motion model's, H = 0.3 (nats per path)",
              metric="elbo_gain_H0.3", op=">", threshold=0.0, source="Daems et al. 2024, Sec. 5"),
        Claim(statement="The MA-fBM model's held-out ELBO beats the Brownian-motion model's, H = 0.7 (nats per path)",
              metric="elbo_gain_H0.7", op=">", threshold=0.0, source="Daems et al. 2024, Sec. 5"),
    ],
)
def fbm_hurst(cfg: Config, run) -> dict:
    """Learn H from fBM paths with H = 0.3 and 0.7; ELBO of MA-fBM vs Brownian motion on held-out paths."""
    import matplotlib.pyplot as plt

    results = {}
    fig, axes = plt.subplots(1, len(cfg.hursts), figsize=(4.5 * len(cfg.hursts), 3), squeeze=False)
    for i, hurst in enumerate(cfg.hursts):
        tag = f"H{hurst:g}"
        data = make_data(cfg, hurst, jax.random.fold_in(run.key("data"), i))
        fractional_fit = run.fit(make_spec(cfg, "type1", data), name=f"{tag}-fractional")
        brownian_fit = run.fit(make_spec(cfg, "brownian", data), name=f"{tag}-brownian")
        learned = np.atleast_1d(fractional_fit.history.last("fbm/hurst"))
        key = run.key(f"eval-{tag}")
        gain = (held_out_elbo(cfg, "type1", _stacked(fractional_fit), data, key)
                - held_out_elbo(cfg, "brownian", _stacked(brownian_fit), data, key))
        results[f"learned_hurst_{tag}"] = learned
        results[f"hurst_abs_error_{tag}"] = np.abs(learned - hurst)
        results[f"elbo_gain_{tag}"] = gain
        run.log(f"{tag}: learned H {np.round(learned, 3)}, held-out ELBO gain over BM {np.round(gain, 2)} nats")
        steps, trajectory = fractional_fit.history.column("fbm/hurst")
        ax = axes[0, i]
        ax.plot(steps, trajectory if trajectory.ndim == 1 else trajectory, color="C0", alpha=0.8)
        ax.axhline(hurst, color="k", ls="--", label=f"true H = {hurst:g}")
        ax.set_ylim(0, 1)
        ax.set_xlabel("step")
        ax.set_title(f"learned H (seeds), truth {hurst:g}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    run.figure("hurst_trajectories", fig)
    return results
