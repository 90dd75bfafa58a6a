"""`diffusion/principles`: the three views of diffusion models and their samplers on one 2-D problem (Lai, Song, Kim,
Mitsufuji & Ermon 2025, *The Principles of Diffusion Models*).

Data (fixed before any run): the 8-Gaussians mixture (means on a circle of radius 2, std 0.1, equal weights), whose
marginal p_t under any Gaussian path is again a mixture, so score, eps*, x0* and v* are analytic
(`gvlab.data.gaussian_mixture`). Runs (measurements in `gvlab.diffusion.evaluation`):
  1. conversion identities with the analytic field, for the VP-linear, VP-cosine, VE and rectified-flow schedules:
     v* = alpha_dot x0* + sigma_dot eps* against the probability-flow form f x - g^2 score / 2, on 4096 points
     x_t (t uniform in [t_min, min(t_max, 0.99)]); checked in float64, float32 reported beside it;
  2. samplers with the analytic field (VP-linear): Euler, Heun, DPM-Solver-2 and DDIM (eta = 0) at a budget of
     4 / 8 / 16 / 32 network evaluations (NFE), and diffrax Tsit5 (adaptive, rtol = atol = 1e-4); DDIM against
     DPM-Solver-1 with the same steps;
  3. three trained views, TimeMLP 3 x 128 SiLU, Adam 1e-3, batch 256: eps prediction on VP-cosine, denoising
     score matching on VE (an eps-parameterised score, sigma^2 weighting), flow matching on rectified flow;
     sampled by Heun at 32 NFE (DDIM reported beside it);
  4. classifier-free guidance: a class-conditional eps model (4 classes = pairs of adjacent modes, label dropout
     0.2), sampled by Heun at 32 NFE with w in {0, 1, 3}; accuracy of the nearest-mode class and the spread
     (mean distance of a sample to its nearest mode);
  5. exact log-likelihood through the probability-flow ODE (diffrax Tsit5, exact divergence) of a 2-D Gaussian
     N(m, C) with its analytic score, against log N(x; m, C).
Metric: sliced Wasserstein-2 distance (SWD, 128 projections) between 2000 samples and 2000 fresh data points; the
floor is the SWD between two independent data sets. Several seeds (noise draws, projections, network inits).

Command:  gvlab reproduce diffusion/principles --profile quick
Shows:    the identities and the exact likelihood hold to rounding, Tsit5 reaches the noise floor, and which
          samplers win at a small budget; the trained eps view on VP-cosine and the spread under strong guidance
          are where the claims fail (measurements and discussion: `principles.md` beside this file).
Runtime:  quick about 3 min on 2 quiet CPU cores (about 1 min with a warm compilation cache); full about 3 min.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab.data import gaussian_mixture as gm
from gvlab.data import sampled_batches
from gvlab.diffusion import evaluation, likelihood, losses
from gvlab.diffusion.schedules import Schedule
from gvlab.nn import TimeMLP

VIEWS = {"eps": ("vp_cosine", "eps", "eps"), "score": ("ve", "score", "eps"), "velocity": ("rectified_flow",
                                                                                          "velocity", "velocity")}
"""view -> (schedule kind, loss view, network output)."""
FIXED_STEP_SAMPLERS = ("euler", "heun", "dpm_solver_2", "ddim")
TRAINED_NFE = 32  # evaluations of the samplers of trained models


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`diffusion/principles` settings.

    Attributes:
        num_samples: samples per sampler run and data points per SWD.
        num_projections: SWD projections.
        seeds: independent repetitions of the analytic-field runs (noise, projections).
        nfes: evaluation budgets of the fixed-step samplers.
        identity_points: points of the conversion-identity check.
        hidden: TimeMLP widths of the trained views.
        guidance: CFG weights w.
        label_dropout: probability of the null label while training the conditional model.
        likelihood_points: test points of the probability-flow likelihood.
        train: optimisation of every trained model (its seeds are vmapped).
    """

    num_samples: int = 2000
    num_projections: int = 128
    seeds: int = 5
    nfes: tuple[int, ...] = (4, 8, 16, 32)
    identity_points: int = 4096
    hidden: tuple[int, ...] = (128, 128, 128)
    guidance: tuple[float, ...] = (0.0, 1.0, 3.0)
    label_dropout: float = 0.2
    likelihood_points: int = 64
    train: TrainConfig = TrainConfig(steps=3000, batch_size=256, lr=1e-3, num_seeds=5, log_every=200)


@experiment(
    "diffusion/principles",
    config=Config(),
    smoke={"num_samples": 256, "seeds": 2, "nfes": (4,), "identity_points": 256, "hidden": (16,),
           "guidance": (0.0, 3.0), "likelihood_points": 4, "train.steps": 20, "train.num_seeds": 2,
           "train.batch_size": 64, "train.log_every": 10},
    quick={"seeds": 3, "train.num_seeds": 3, "train.steps": 2000},
    claims=[
        Claim(statement="Conversion identities hold with the analytic field: max |v(x0*, eps*) - (f x - g^2 "
                        "score / 2)| < 1e-4 over VP-linear, VP-cosine, VE and rectified flow (float64)",
              metric="conversion_error", op="<", threshold=1e-4, reduce="all",
              source="Lai et al. 2025, Ch. 4 (one velocity field); notes section 4d gate"),
        Claim(statement="Analytic field + diffrax Tsit5 reaches the sampling noise floor: SWD <= 1.5 x floor "
                        "(mean over seeds)", metric="tsit5_over_floor", op="<=", threshold=1.5, reduce="mean",
              source="notes section 4d"),
        Claim(statement="At 8 evaluations Heun beats Euler: SWD(Heun) - SWD(Euler) < 0 (mean over seeds)",
              metric="heun_minus_euler_8", op="<", threshold=0.0, reduce="mean", source="notes section 4d"),
        Claim(statement="At 8 evaluations DPM-Solver-2 beats Euler: SWD(DPM-2) - SWD(Euler) < 0 (mean over seeds)",
              metric="dpm2_minus_euler_8", op="<", threshold=0.0, reduce="mean", source="notes section 4d"),
        Claim(statement="DDIM (eta = 0) equals DPM-Solver-1 with the same steps: max |difference| < 1e-5 "
                        "(float64)",
              metric="ddim_vs_dpm1", op="<", threshold=1e-5, reduce="all",
              source="Lai et al. 2025 (DDIM is the first-order exponential integrator)"),
        Claim(statement="Each trained view (eps / VP-cosine, score / VE, velocity / rectified flow) samples within "
                        "3 x floor with Heun at 32 NFE (worst view, mean over seeds)",
              metric="trained_worst_over_floor", op="<=", threshold=3.0, reduce="mean",
              source="notes section 4d (the three views give comparable quality)"),
        Claim(statement="Classifier-free guidance raises class accuracy: acc(w = 3) - acc(w = 0) > 0",
              metric="cfg_accuracy_gain", op=">", threshold=0.0, reduce="mean", source="Ho & Salimans 2022"),
        Claim(statement="... and lowers the spread: spread(w = 3) - spread(w = 0) < 0",
              metric="cfg_spread_change", op="<", threshold=0.0, reduce="mean", source="Ho & Salimans 2022"),
        Claim(statement="Probability-flow ODE log-likelihood of a 2-D Gaussian matches the analytic value: max "
                        "|error| < 1e-2 nats", metric="likelihood_error", op="<", threshold=1e-2, reduce="all",
              source="Song et al. 2021, App. D; Lai et al. 2025"),
    ],
)
def principles(cfg: Config, run) -> dict:
    """Identities, samplers with the analytic field, trained views, guidance and exact likelihood on 2-D data."""
    spec = gm.eight_gaussians()
    schedule = Schedule("vp_linear")
    shape = (cfg.num_samples, 2)
    seed_keys = [jax.random.fold_in(run.key("analytic"), s) for s in range(cfg.seeds)]
    noise_keys = [jax.random.split(key)[0] for key in seed_keys]
    steps = evaluation.steps_for("ddim", cfg.nfes[-1])
    identities = run.artifact("identities", lambda: evaluation.identity_errors(
        spec, run.key("identities"), cfg.identity_points, schedule, noise_keys, shape, steps),
        inputs=(spec, run.key("identities"), cfg.identity_points, schedule.kind, noise_keys, shape, steps))
    conversion, gap = identities["conversion"], identities["ddim_vs_dpm1"]
    out: dict[str, np.ndarray] = {
        "conversion_error": np.array([max(conversion["float64"].values())]),
        "conversion_error_float32": np.array([max(conversion["float32"].values())])}
    run.log("conversion identities, max abs error (float64 / float32): " + ", ".join(
        f"{k} {float(v):.1e} / {float(conversion['float32'][k]):.1e}" for k, v in conversion["float64"].items()))

    table = run.artifact("samplers", lambda: evaluation.compare_samplers(
        spec, schedule, seed_keys, FIXED_STEP_SAMPLERS, cfg.nfes, cfg.num_samples, cfg.num_projections),
        inputs=(spec, schedule.kind, seed_keys, FIXED_STEP_SAMPLERS, cfg.nfes, cfg.num_samples,
                cfg.num_projections))
    floors = out["floor"] = table["floor"]
    for name, values in table["swd"].items():
        out[f"swd_{name}"] = values
        run.log(f"{name}: SWD at NFE {cfg.nfes} = {np.round(values.mean(0), 4)} (floor {floors.mean():.4f})")
    run.log(f"tsit5: SWD {table['tsit5'].mean():.4f} ({int(table['tsit5_nfe'][-1])} NFE); DDIM vs DPM-Solver-1 "
            f"max diff {gap['float64'].max():.1e} (float64), {gap['float32'].max():.1e} (float32)")
    out["swd_tsit5"], out["tsit5_over_floor"] = table["tsit5"], table["tsit5"] / floors
    out["ddim_vs_dpm1"], out["ddim_vs_dpm1_float32"] = gap["float64"], gap["float32"]
    at8 = cfg.nfes.index(8) if 8 in cfg.nfes else 0
    swd = table["swd"]
    out["heun_minus_euler_8"] = swd["heun"][:, at8] - swd["euler"][:, at8]
    out["dpm2_minus_euler_8"] = swd["dpm_solver_2"][:, at8] - swd["euler"][:, at8]

    out.update(trained_views(cfg, run, spec, floors))
    out.update(guidance(cfg, run, spec))
    out["likelihood_error"] = np.array([gaussian_likelihood_error(cfg, run)])
    run.log(f"probability-flow likelihood: max error {out['likelihood_error'][0]:.1e} nats")
    _figure(cfg, run, swd, table["tsit5"], floors)
    return out


def _source(spec, batch_size: int, with_labels: bool):
    """Fresh mixture samples every step (with their class labels for the conditional model)."""
    if with_labels:
        return sampled_batches(lambda k: dict(zip(("x", "c"), gm.sample_labelled(spec, k, batch_size))))
    return sampled_batches(lambda k: {"x": gm.sample(spec, k, batch_size)})


def _with_keys(fit, key) -> dict:
    """A fit's parameters with one sampling key per run (`evaluation`'s run inputs): seeds draw their own noise."""
    return {"params": fit.params, "key": jax.random.split(key, fit.num_runs)}


def trained_views(cfg: Config, run, spec, floors) -> dict:
    """Train the three views (seeds vmapped) and sample each with Heun at 32 NFE (DDIM beside it)."""
    out, worst = {}, None
    for view, (kind, loss_view, output) in VIEWS.items():
        schedule = Schedule(kind)
        net = TimeMLP(out_features=2, hidden=cfg.hidden)
        method = losses.make_method(net, loss_view, schedule, output=output)
        fit = run.fit(Spec(method=method, optimizer=optax.adam(cfg.train.lr),
                           data=_source(spec, cfg.train.batch_size, False)), name=view)
        inputs, ratios = _with_keys(fit, run.key(f"sample-{view}")), {}
        for sampler in ("heun", "ddim"):  # the claim reads Heun (the design); DDIM is reported beside it
            evaluator = evaluation.make_sample_evaluator(net.apply, output, schedule, sampler, TRAINED_NFE,
                                                         cfg.num_samples, cfg.num_projections)
            swd = run.evaluate(f"{view}_{sampler}", evaluator, inputs, spec, extra=(
                repr(net), view, sampler, TRAINED_NFE, cfg.num_samples, cfg.num_projections))["swd"]
            ratios[sampler] = swd / floors.mean()
        out[f"trained_{view}_over_floor"], out[f"trained_{view}_ddim_over_floor"] = ratios["heun"], ratios["ddim"]
        worst = ratios["heun"] if worst is None else np.maximum(worst, ratios["heun"])
        run.log(f"trained {view} view ({kind}): SWD / floor = {np.round(ratios['heun'], 2)} (Heun, 32 NFE), "
                f"{np.round(ratios['ddim'], 2)} (DDIM, 32 NFE)")
    out["trained_worst_over_floor"] = worst
    return out


def guidance(cfg: Config, run, spec) -> dict:
    """Class-conditional eps model; CFG accuracy and spread per guidance weight."""
    schedule = Schedule("vp_cosine")
    classes = gm.num_classes(spec)
    net = TimeMLP(out_features=2, hidden=cfg.hidden, num_classes=classes)
    method = losses.make_method(net, "eps", schedule, num_classes=classes, label_dropout=cfg.label_dropout)
    fit = run.fit(Spec(method=method, optimizer=optax.adam(cfg.train.lr),
                       data=_source(spec, cfg.train.batch_size, True)), name="cfg")
    evaluator = evaluation.make_guidance_evaluator(net.apply, "eps", schedule, classes, "heun", TRAINED_NFE,
                                                   cfg.num_samples)
    inputs, rows = _with_keys(fit, run.key("cfg-sample")), {}
    for w in cfg.guidance:  # one evaluator, one compiled program: w is an array
        rows[w] = run.evaluate(f"cfg_w{w:g}", evaluator, inputs, {"spec": spec, "w": jnp.float32(w)},
                               extra=(repr(net), schedule.kind, TRAINED_NFE, cfg.num_samples))
        run.log(f"guidance w = {w:g}: accuracy {np.round(rows[w]['accuracy'], 3)}, "
                f"spread {np.round(rows[w]['spread'], 3)}")
    lo, hi = min(cfg.guidance), max(cfg.guidance)
    out = {f"cfg_{metric}_w{w:g}": row[metric] for metric in ("accuracy", "spread") for w, row in rows.items()}
    out["cfg_accuracy_gain"] = rows[hi]["accuracy"] - rows[lo]["accuracy"]
    out["cfg_spread_change"] = rows[hi]["spread"] - rows[lo]["spread"]
    return out


def gaussian_likelihood_error(cfg: Config, run) -> float:
    """max |log p (probability-flow ODE, analytic Gaussian score) - log N(x; m, C)| on test points."""
    schedule = Schedule("vp_linear", t_min=1e-5)
    m = jnp.array([0.5, -1.0])
    rot = jnp.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    cov = rot @ jnp.diag(jnp.array([0.25, 0.04])) @ rot.T
    x = m[None, :] + jax.random.normal(run.key("likelihood"), (cfg.likelihood_points, 2)) @ jnp.linalg.cholesky(cov).T
    return float(run.artifact("likelihood", lambda: {"error": likelihood.gaussian_oracle_error(schedule, m, cov, x)},
                              inputs=(schedule.kind, schedule.t_min, m, cov, x))["error"])


def _figure(cfg: Config, run, table: dict, tsit5: np.ndarray, floors: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, values in table.items():
        ax.errorbar(cfg.nfes, values.mean(0), yerr=values.std(0), marker="o", capsize=2, label=name)
    ax.axhline(floors.mean(), color="k", ls="--", lw=1, label="noise floor")
    ax.axhline(tsit5.mean(), color="grey", ls=":", lw=1, label="diffrax Tsit5 (adaptive)")
    ax.set(xscale="log", yscale="log", xlabel="network evaluations", ylabel="sliced Wasserstein-2",
           title="8 Gaussians, analytic field (VP-linear)")
    ax.set_xticks(cfg.nfes, [str(n) for n in cfg.nfes])
    ax.legend(fontsize=7)
    fig.tight_layout()
    run.figure("sampler_error_vs_nfe", fig)
