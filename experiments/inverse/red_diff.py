"""`inverse/red_diff`: RED-Diff against DPS on 8 x 8 digits, with an exact Gaussian prior and with learned ones
(Mardani, Song, Kautz & Vahdat 2024, *A Variational Perspective on Solving Inverse Problems with Diffusion Models*).

Command:  gvlab reproduce inverse/red_diff --profile quick     (about 2 min on 2 CPU cores; full about 6 min)
Shows:    with the exact Gaussian prior N(m, Sigma + 1e-3 I) of the digits (part A), whether RED-Diff beats DPS at
          equal NFE and stays below the exact posterior mean (the MMSE bound); with learned MLP priors (part B, seeds
          the runs: the claims' x0-MLP trained with the v-loss; the eps-MLP reported as "eps_*"), whether it still
          beats DPS, next to its constant-weighting and random-order ablations, diversity and classifier accuracy;
          whether a RED-Diff solve is cheaper than a DPS solve. Tasks: 50% random inpainting, SR x2, centre 4 x 4 box
          (part B, reported); sigma_y = 0.05. DPS's zeta' is chosen per task and prior on validation digits. PSNR
          (range 2) is averaged over digits per solution, so a claim reads a mean over `samples` values. A rerun
          recomputes nothing. Numbers: report.json / report.md; `red_diff.md` beside this file: the discussion.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab import probe as probe_lib
from gvlab.data import epoch_batches
from gvlab.data.digits import IMAGE_SHAPE, digits
from gvlab.diffusion import losses
from gvlab.diffusion.schedules import Schedule
from gvlab.errors import ConfigError
from gvlab.evals import evaluate_runs
from gvlab.evals.metrics import sample_std
from gvlab.inverse import solvers
from gvlab.inverse.gaussian import fit_gaussian, gaussian_posterior
from gvlab.inverse.matrix import measure_tasks, solve_rows
from gvlab.inverse.metrics import accuracy_per_solution, fit_classifier, psnr_per_solution, wall_times
from gvlab.inverse.priors import mlp_model, v_loss_method
from gvlab.nn import TimeMLP
from gvlab.report.figures import image_grid

SCHEDULE = Schedule("vp_linear")
TASKS = ("inpainting", "sr2", "box")
GAUSSIAN_TASKS = CLAIM_TASKS = ("inpainting", "sr2")  # part A's tasks; part B's gated ones ("box" is reported)
METHODS = ("pinv", "dps", "red_diff", "red_diff_const", "red_diff_random")
GAUSSIAN_METHODS = ("pinv", "dps", "red_diff", "oracle")
LABELS = {"truth": "truth", "pinv": "A^+ y", "dps": "DPS", "red_diff": "RED-Diff", "red_diff_const": "RED-Diff const",
          "red_diff_random": "RED-Diff random", "oracle": "posterior mean"}
RED_DIFF_OPTIONS = {"red_diff": {}, "red_diff_const": {"weighting": "constant"},
                    "red_diff_random": {"time_order": "random"}}
SOLVE_METHODS = ("dps_sweep", "dps", *RED_DIFF_OPTIONS, "oracle")  # each method its own key stream
PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`inverse/red_diff` settings.

    Attributes:
        hidden: TimeMLP widths of the learned priors.
        priors: learned priors, the first the claims': "x0" (x0-MLP, v-loss) and / or "eps" (eps-MLP, unit eps loss).
        tasks: which of "inpainting", "sr2" and "box" to run (part A runs the first two of them).
        num_test, num_validation: test digits per task; training digits held out of the priors (DPS's step's).
        samples: solutions (solver keys) per measurement; the claims' seeds and the diversity's sample.
        num_steps, sigma_y: network evaluations of every solver; measurement noise std.
        keep_fraction, box: observed pixels of the random inpainting; side of the missing centre box.
        regulariser_weight, learning_rate: RED-Diff's lambda and Adam step size.
        dps_weights: DPS's zeta' candidates (RED-Diff's `algos/dps.py` `grad_term_weight`).
        prior_jitter, timing_repeats: added to the fitted Gaussian covariance's diagonal; timed solves per method.
        classifier, figure_digits: the digit classifier's accuracy (off in smoke); test digits in the figures.
        train: the learned prior's optimisation (its seeds are the runs).
    """

    hidden: tuple[int, ...] = (256, 256, 256)
    priors: tuple[str, ...] = ("x0", "eps")
    tasks: tuple[str, ...] = TASKS
    num_test: int = 200
    num_validation: int = 100
    samples: int = 4
    num_steps: int = 100
    sigma_y: float = 0.05
    keep_fraction: float = 0.5
    box: int = 4
    regulariser_weight: float = 0.25
    learning_rate: float = 0.1
    dps_weights: tuple[float, ...] = (0.05, 0.1, 0.3, 1.0)
    prior_jitter: float = 1e-3
    timing_repeats: int = 5
    classifier: bool = True
    figure_digits: int = 6
    train: TrainConfig = TrainConfig(steps=4000, batch_size=256, lr=1e-3, num_seeds=1, log_every=200)


def digit_splits(num_validation: int, num_test: int) -> dict[str, dict[str, np.ndarray]]:
    """`{"fit", "validation", "test"}` -> `{"x": [N, 8, 8] in [-1, 1], "y"}`; validation: no prior sees it."""
    train, test = ({"x": 2.0 * np.asarray(d["x"]) - 1.0, "y": np.asarray(d["y"])} for d in (
        digits("train", "unit"), digits("test", "unit")))
    split = len(train["y"]) - num_validation
    return {"fit": {k: v[:split] for k, v in train.items()}, "validation": {k: v[split:] for k, v in train.items()},
            "test": {k: v[:num_test] for k, v in test.items()}}


# ----------------------------------------------------------------------------- solves: one evaluator


def solves(prior, data, key, *, jobs: tuple[tuple[str, str, str], ...], cfg: Config, prediction: str = "x0") -> dict:
    """Evaluator: job i = (output, method, request) gives `cfg.samples` solutions `[N, S, H, W]` of the measurements
    `data[request]` = (operators, y) by `method`, with key `fold_in(key, i)` and then one stream per method.
    `prior` is the exact Gaussian {"mean", "cov"} (its "oracle" is the exact posterior mean, repeated over the S
    solutions) or an MLP {"net"} predicting `prediction` ("x0" or "eps"), with the run's DPS step "dps_weight": `[Z]`
    for "dps_sweep" (DPS with every zeta': `[Z, N, S, H, W]`), one per measurement `[N]` for "dps"."""
    model = (mlp_model(prior["net"], cfg.hidden, prediction) if "net" in prior else
             solvers.gaussian_prior_model(prior["mean"], prior["cov"], SCHEDULE, "eps"))
    out = {}
    for i, (name, method, request) in enumerate(jobs):
        ops, y = data[request]
        key_i = jax.random.fold_in(jax.random.fold_in(key, i), SOLVE_METHODS.index(method))
        run = functools.partial(solve_rows, model=model, schedule=SCHEDULE, ops=ops, y=y, sigma_y=cfg.sigma_y,
                                key=key_i, num_steps=cfg.num_steps, samples=cfg.samples)
        # RED-Diff's DPS: zeta' / ||r|| grad ||r||^2 = 2 zeta' grad ||r||, DDIM (eta = 0).
        if method == "dps_sweep":
            out[name] = jax.vmap(lambda w, run=run: run(solvers.dps, step_size=2.0 * w, eta=0.0))(prior["dps_weight"])
        elif method == "dps":
            out[name] = run(solvers.dps, step_size=2.0 * prior["dps_weight"], eta=0.0)
        elif method == "oracle":
            mean = jax.vmap(lambda a, y_i: gaussian_posterior(prior["mean"].reshape(-1), prior["cov"], a,
                                                              y_i.reshape(-1), cfg.sigma_y).mean)(ops.matrix, y)
            out[name] = jnp.broadcast_to(mean.reshape(-1, 1, *IMAGE_SHAPE), (len(y), cfg.samples, *IMAGE_SHAPE))
        else:
            out[name] = run(solvers.red_diff, regulariser_weight=cfg.regulariser_weight,
                            learning_rate=cfg.learning_rate, **RED_DIFF_OPTIONS[method])
    return out


def _bind(fn, **static):
    """`fn` with its static settings bound, named as `fn` (the evaluation cache's fingerprint reads the name)."""
    return functools.update_wrapper(functools.partial(fn, **static), fn)


def per_task(values, tasks: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Split reconstructions `[..., T N, S, H, W]` into `{task: [..., N, S, H, W]}`."""
    return dict(zip(tasks, np.split(np.asarray(values), len(tasks), axis=-4)))


def dps_choice(sweep, x0: np.ndarray, tasks: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The fixed rule: per task (and prior), the zeta' of highest mean validation PSNR. `sweep` is
    `[..., Z, T N, S, H, W]`; returns (the validation PSNR `[..., Z, T]`, the chosen zeta's index `[..., T]`)."""
    scores = np.stack([psnr_per_solution(x, x0).mean(-1) for x in per_task(sweep, tasks).values()], axis=-1)
    return scores, np.argmax(scores, axis=-2)


# ----------------------------------------------------------------------------- the experiment


def _gap_claims(prefix: str, tasks: tuple[str, ...], what: str) -> list[Claim]:
    return [Claim(statement=f"{what}, {task}: PSNR(RED-Diff) >= PSNR(DPS) - 0.5 dB at equal NFE (mean over "
                            "solution seeds)",
                  metric=f"{prefix}{task}_red_minus_dps", op=">=", threshold=-0.5, reduce="mean",
                  source="Mardani et al. 2024 (RED-Diff beats DPS in fidelity); issue 5 / notes section 5d gate")
            for task in tasks]


@experiment(
    "inverse/red_diff",
    config=Config(),
    smoke={"hidden": (16,), "priors": ("x0",), "num_test": 8, "num_validation": 8, "samples": 2, "num_steps": 10,
           "timing_repeats": 2, "classifier": False, "figure_digits": 4, "train.steps": 20, "train.batch_size": 32,
           "train.log_every": 10},
    quick={"num_test": 100, "num_validation": 50, "num_steps": 50, "train.steps": 1500},
    claims=[
        *_gap_claims("gaussian_", GAUSSIAN_TASKS, "Exact Gaussian prior"),
        *[Claim(statement=f"Exact Gaussian prior, {task}: PSNR(RED-Diff) <= PSNR(exact posterior mean) + 0.1 dB "
                          "(sanity: nothing beats the MMSE estimate)",
                metric=f"gaussian_{task}_red_minus_oracle", op="<=", threshold=0.1, reduce="mean",
                source="notes section 5d gate") for task in GAUSSIAN_TASKS],
        *_gap_claims("", CLAIM_TASKS, "Learned x0-MLP prior (v-loss)"),
        Claim(statement="RED-Diff is cheaper per solve than DPS at equal NFE (no backpropagation through the "
                        "network): time(RED-Diff) / time(DPS) < 1 (compiled solves, mean over repeats)",
              metric="time_red_over_dps", op="<", threshold=1.0, reduce="mean",
              source="Mardani et al. 2024 (no score Jacobian); notes section 5d gate"),
    ],
)
def red_diff(cfg: Config, run) -> dict:
    """RED-Diff vs DPS (and the exact posterior mean) on digits: exact Gaussian prior, then learned MLP priors."""
    for name, values, valid in (("tasks", cfg.tasks, TASKS), ("priors", cfg.priors, ("x0", "eps"))):
        if not values or any(v not in valid for v in values):
            raise ConfigError(f"{name} must be a non-empty subset of {valid}, got {values}")
    splits = digit_splits(cfg.num_validation, cfg.num_test)
    x0_val, x0, labels = splits["validation"]["x"], splits["test"]["x"], splits["test"]["y"]
    ops, y = measure_tasks(jnp.asarray(np.concatenate([x0_val, x0])), run.key("measure"), tasks=cfg.tasks,
                           sigma_y=cfg.sigma_y, keep_fraction=cfg.keep_fraction, box=cfg.box)
    sizes = {"validation": (0, cfg.num_validation), "test": (cfg.num_validation, cfg.num_test)}

    def request(tasks, split):  # (operators, y) of the rows of `tasks` (task-major) for one split
        offset, size = sizes[split]
        rows = np.concatenate([cfg.tasks.index(t) * (cfg.num_validation + cfg.num_test) + offset + np.arange(size)
                               for t in tasks])
        return jax.tree.map(lambda v: v[rows], ops), y[rows]

    def pinv(tasks):  # A^+ y of the test rows, repeated over the S solutions, with a run axis: [1, T N, S, H, W]
        return np.repeat(np.asarray(request(tasks, "test")[0].pinv(request(tasks, "test")[1]))[None, :, None],
                         cfg.samples, 2)

    def score(part, prefix, x, tasks, methods, diffs, probe=None):  # x: {method: [R, T N, S, H, W]}, "sweep" [R, Z,..]
        k, learned = cfg.figure_digits, part != "gaussian"
        val_psnr, index = dps_choice(x["sweep"], x0_val, tasks)  # [R, Z, T], [R, T]
        chosen = np.asarray(cfg.dps_weights)[index]
        if not learned:  # the test solutions of every zeta' (one run): report the chosen one's
            x["dps"] = np.concatenate([v[:, j] for v, j in zip(per_task(x["dps"], tasks).values(), index[0])], 1)
        recon = {m: per_task(x[m], tasks) for m in methods}
        for i, task in enumerate(tasks):
            scores = {m: psnr_per_solution(recon[m][task], x0).reshape(-1) for m in methods}  # [runs x samples]
            out.update({f"{prefix}{task}_psnr_{m}": v for m, v in scores.items()})
            out.update({f"{prefix}{task}_{name}": scores[a] - scores[b] for name, (a, b) in diffs.items()})
            for m in methods if learned else ():
                r = recon[m][task]
                out[f"{prefix}{task}_diversity_{m}"] = np.asarray(sample_std(r), np.float64).reshape(-1)
                if probe is not None:
                    out[f"{prefix}{task}_accuracy_{m}"] = accuracy_per_solution(probe, r, labels).reshape(-1)
            out[f"{prefix}{task}_dps_weight"] = chosen[:, i]
            out[f"{prefix}{task}_dps_validation_psnr"] = val_psnr[..., i] if learned else val_psnr[0, :, i]
            run.log(f"{part} prior, {task}: PSNR " + ", ".join(f"{LABELS[m]} {v.mean():.2f}"
                                                                for m, v in scores.items()))
        rows = ("truth", *methods)  # the figure: every method's first solution (first run) on the first test digits
        images = [np.concatenate([x0[:k] if m == "truth" else recon[m][t][0, :k, 0] for t in tasks]) for m in rows]
        run.figure(f"reconstructions_{part}", image_grid((np.stack(images) + 1.0) / 2.0, title=f"{part} prior: "
                                                         f"{', '.join(tasks)}", row_labels=[LABELS[m] for m in rows]))

    weights = jnp.asarray(cfg.dps_weights, jnp.float32)
    out: dict[str, np.ndarray] = {}
    # Part A, the exact Gaussian prior (one run). One program: DPS with every zeta' on the validation and the test
    # measurements, RED-Diff and the oracle; the validation rule picks which zeta's test solutions are reported.
    tasks_a = tuple(t for t in cfg.tasks if t in GAUSSIAN_TASKS)
    if tasks_a:
        mean, cov = fit_gaussian(splits["fit"]["x"], cfg.prior_jitter)
        jobs = (("sweep", "dps_sweep", "validation"), ("dps", "dps_sweep", "test"), ("red_diff", "red_diff", "test"),
                ("oracle", "oracle", "test"))
        x = run.evaluate("gaussian", _bind(solves, jobs=jobs, cfg=cfg),
                         {"mean": mean[None], "cov": cov[None], "dps_weight": weights[None]},
                         {s: request(tasks_a, s) for s in sizes}, key=run.key("gaussian"), extra=(jobs, repr(cfg)))
        score("gaussian", "gaussian_", {**x, "pinv": pinv(tasks_a)}, tasks_a, GAUSSIAN_METHODS,
              {"red_minus_dps": ("red_diff", "dps"), "red_minus_oracle": ("red_diff", "oracle")})

    # Part B, learned MLP priors (seeds: the runs); the first of `cfg.priors` is the claims', the others are reported
    # with the prefix "<kind>_". "x0": v-loss x0-MLP (`v_loss_method`); "eps": unit eps loss (old evaluation names).
    fit_x, fit_y = splits["fit"]["x"].reshape(-1, PIXELS), splits["fit"]["y"]
    probe = probe_lib.LogisticProbe(**run.artifact(
        "classifier", lambda: fit_classifier(fit_x, fit_y, num_classes=10)._asdict(), inputs=(fit_x, fit_y))
    ) if cfg.classifier else None
    if probe is not None:
        out["accuracy_truth"] = accuracy_per_solution(probe, x0[:, None], labels)
    data, test = {s: request(cfg.tasks, s) for s in sizes}, {"test": request(cfg.tasks, "test")}
    for kind in cfg.priors:
        main, name = kind == cfg.priors[0], "" if kind == "eps" else f"{kind}/"
        net = TimeMLP(out_features=PIXELS, hidden=cfg.hidden)
        method = v_loss_method(net, SCHEDULE) if kind == "x0" else losses.make_method(net, "eps", SCHEDULE)
        prior = run.fit(Spec(method=method, optimizer=optax.adam(cfg.train.lr), data=epoch_batches(
            {"x": jnp.asarray(fit_x)}, cfg.train.batch_size)), name="prior" if kind == "eps" else f"prior_{kind}")
        jobs = (("sweep", "dps_sweep", "validation"), ("red_diff_const", "red_diff_const", "test"),  # one program:
                ("red_diff_random", "red_diff_random", "test"))  # DPS's validation sweep and the ablations
        x = run.evaluate(f"{name}learned", _bind(solves, jobs=jobs, cfg=cfg, prediction=kind),
                         {"net": prior.params, "dps_weight": np.tile(weights, (prior.num_runs, 1))}, data,
                         key=run.key("learned"), extra=(jobs, kind, repr(cfg)))
        chosen = np.asarray(cfg.dps_weights)[dps_choice(x["sweep"], x0_val, cfg.tasks)[1]]  # [R, T]
        # RED-Diff and DPS (each prior with its chosen zeta') as programs of their own: the timed solves.
        params = {"net": prior.params, "dps_weight": np.repeat(chosen, cfg.num_test, axis=-1).astype(np.float32)}
        timed = {m: _bind(solves, jobs=((m, m, "test"),), cfg=cfg, prediction=kind) for m in ("red_diff", "dps")}
        x.update({m: run.evaluate(f"{name}{m}", fn, params, test, key=run.key("learned"),
                                  extra=(m, kind, repr(cfg)))[m] for m, fn in timed.items()})
        score("learned" if main else f"learned_{kind}", "" if main else f"{kind}_", {**x, "pinv": pinv(cfg.tasks)},
              cfg.tasks, METHODS, {"red_minus_dps": ("red_diff", "dps"), "descending_minus_random": (
                  "red_diff", "red_diff_random"), "snr_minus_const": ("red_diff", "red_diff_const")}, probe)
        if main:  # the claims' prior's solves, timed once (wall time is not reproducible)
            calls = {m: functools.partial(evaluate_runs, f, params, test, run.key("learned")) for m, f in timed.items()}
            times = run.artifact("solve_times", lambda calls=calls: wall_times(calls, cfg.timing_repeats),
                                 inputs=(prior.params, chosen, kind, repr(cfg)))
            out.update(time_red_diff_ms=times["red_diff"], time_dps_ms=times["dps"],
                       time_red_over_dps=times["red_diff"] / times["dps"])
            run.log(f"solve time: RED-Diff {np.median(times['red_diff']):.0f}, DPS {np.median(times['dps']):.0f} ms")
    _psnr_figure(run, cfg, out)
    return out


def _psnr_figure(run, cfg: Config, out: dict) -> None:
    """Mean PSNR per method and task (error bars: std over solution seeds and priors), part A and each prior of B."""
    import matplotlib.pyplot as plt

    panels = [("gaussian_", GAUSSIAN_METHODS, [t for t in GAUSSIAN_TASKS if t in cfg.tasks], "exact Gaussian"),
              *[("" if i == 0 else f"{k}_", METHODS, cfg.tasks, f"learned {k}-MLP") for i, k in enumerate(cfg.priors)]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.4))
    for ax, (prefix, methods, tasks, what) in zip(axes, panels):
        for j, m in enumerate(methods):
            values = [np.asarray(out[f"{prefix}{t}_psnr_{m}"]) for t in tasks]
            ax.bar(np.arange(len(tasks)) + 0.8 * (j + 0.5) / len(methods) - 0.4, [v.mean() for v in values],
                   0.8 / len(methods), yerr=[v.std() for v in values], capsize=2, label=LABELS[m])
        ax.set(xticks=np.arange(len(tasks)), xticklabels=tasks, ylabel="PSNR (dB, range 2)",
               title=f"{what} prior, {cfg.num_steps} NFE")
        ax.legend(fontsize=7)
    fig.tight_layout()
    run.figure("psnr", fig)
