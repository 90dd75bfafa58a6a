"""`inverse/red_diff`: RED-Diff against DPS on 8 x 8 digits, with an exact Gaussian prior and with a learned one
(Mardani, Song, Kautz & Vahdat 2024, *A Variational Perspective on Solving Inverse Problems with Diffusion Models*;
notes section 5d).

Data (fixed before any run): scikit-learn's digits scaled to [-1, 1]; the 1497 training digits split into a fit set
(all but the last `num_validation`) and a validation set, on which DPS's step is chosen; `num_test` test digits.
Measurements (sigma_y = 0.05, one draw of mask and noise per digit, shared by both parts): (i) 50% random-pixel
inpainting (a fresh mask per digit; noise on the observed pixels, zero-filled y); (ii) SR x2, 8 x 8 -> 4 x 4 average
pooling; (iii) centre 4 x 4 box inpainting (part B, reported). VP-linear path (beta 0.1 -> 20).
Part A, exact prior: N(m, Sigma + 1e-3 I) fitted to the fit set, its exact eps model (`gaussian_prior_model`) and
  the exact posterior mean (`gaussian_posterior`, the MMSE bound) as the oracle.
Part B, learned prior: an eps TimeMLP (64 -> 256 x 3 -> 64, SiLU, sinusoidal time) trained with the eps loss on the
  fit set (Adam 1e-3, batch 256) through `run.fit` (checkpointed).
Methods at equal NFE (`num_steps` network evaluations, `gvlab.inverse.solvers`):
  - RED-Diff: lambda 0.25, Adam lr 0.1 (betas 0.9, 0.99), SNR weighting, descending grid, one fresh eps per step,
    mu_0 = A^+ y, data term ||y - A mu||^2 / (2 sigma_y^2) (the paper's likelihood; the library default);
  - ablations (part B): constant weighting ("const" of the official code) and a random time order;
  - DPS as RED-Diff's baseline (`algos/dps.py`: DDIM eta = 0, step zeta' / ||y - A x0_hat|| on the squared
    residual, i.e. `step_size` 2 zeta'), zeta' in {0.05, 0.1, 0.3, 1} chosen per task and prior by the fixed rule
    "highest mean PSNR on the validation digits" (part A runs every zeta' on the test measurements in the same
    program, the exact model being cheap, and reports the one the validation digits chose);
  - A^+ y (zero filling / nearest upsampling); part A also the exact posterior mean.
`samples` solutions (solver keys) per measurement; PSNR (range 2) is averaged over digits per solution index, so the
claims read a mean over `samples` values, with their spread. Diversity: pixel std over the solutions of a
measurement. Classifier accuracy: a logistic regression (`gvlab.probe`) fitted on the fit set, applied to the
reconstructions. Time per solve: the compiled RED-Diff and DPS programs that produce the test reconstructions (all
tasks x digits x solutions in one batch), run again `timing_repeats` times each, interleaved, with
`block_until_ready`; the times are stored in the workdir (`solve_times.json`) and restored with the checkpoints on a
rerun, as wall time is not reproducible.
Every task's operator is put in matrix form (`MatrixOperators`: A and A^+ per measurement, y zero-padded to 64), so
all tasks of a part are one solver batch and each solver compiles once.

Command:  gvlab reproduce inverse/red_diff --profile quick
Expected: 5 of 7 claims hold: part A and the time claim; with the learned prior RED-Diff loses to DPS. Measured on
          2 CPU cores shared with other jobs (load 9-15, so times are inflated several-fold; jax 0.10.2); PSNR in
          dB, mean over 4 solution seeds (spread <= 0.25 dB). Full (200 test digits, 100 NFE, 4000 steps), quick
          (100 digits, 50 NFE, 1500 steps) in brackets:
          - exact Gaussian prior, inpainting / SR x2: A^+ y 10.5 / 13.2, DPS 15.5 / 13.7 (zeta' 0.3 / 1 chosen),
            RED-Diff 16.9 / 14.4, posterior mean 18.4 / 16.6: RED-Diff - DPS +1.34 / +0.68 [+1.17 / +0.32] (hold),
            RED-Diff - oracle -1.50 / -2.19 [-1.72 / -2.28] (hold; at 100 steps RED-Diff is still short of the
            MMSE estimate, which the library's test reaches within 0.5 dB at 300).
          - learned eps-MLP, inpainting / SR x2 / box: A^+ y 10.5 / 13.2 / 14.3, DPS 14.7 / 12.3 / 14.3 (zeta' 0.1),
            RED-Diff 13.0 / 11.3 / 13.4: RED-Diff - DPS -1.71 / -0.92 [-3.86 / -1.68] (both fail); RED-Diff const
            16.9 / 14.5 / 16.6, RED-Diff random 7.5 / 7.6 / 9.0. Reported: descending >= random holds (+5.5 /
            +3.7 / +4.4; quick +1.0 / -1.0 / +1.4: one random permutation per solve, shared by the whole batch);
            SNR >= const does not (-3.9 / -3.1 / -3.1); diversity RED-Diff 0.054 / 0.104 / 0.033 < DPS 0.153 /
            0.257 / 0.148 (holds: mode seeking); classifier accuracy (truth 0.98) A^+ y 0.15 / 0.44 / 0.66, DPS
            0.69 / 0.51 / 0.64, RED-Diff 0.61 / 0.37 / 0.72, RED-Diff const 0.82 / 0.57 / 0.80.
          - time per solve (2400 problems at once): RED-Diff 2.5 s, DPS 4.8 s (medians), ratio 0.58 +- 0.13 [0.71
            +- 0.23] (holds).
          Diagnosis of the failure: the (quick) eps-MLP's x0_hat = (x_t - sigma eps_hat) / alpha has an RMS error
          of 19 / 8.8 / 1.8 on test digits at t = 0.98 / 0.9 / 0.7 (alpha = 0.008 / 0.017 / 0.084 magnifies an eps
          error of 0.15), while the exact Gaussian model's x0_hat there is about the prior mean (RMS error 0.54).
          RED-Diff's SNR-weighted gradient lambda (mu - x0_hat) carries that error into the first third of the
          descending steps; our reading (not isolated by a run): Adam turns it into steps of ~lr and its second
          moment (beta2 0.99) then shrinks the informative low-noise steps, so mu ends speckled (figure). The constant
          weighting's gradient lambda (eps_hat - eps) stays O(1) and does best of all; DPS only uses x0_hat through
          a normalised gradient and alpha_s x0_hat, which cancel the magnification. The paper's ADM prior is
          accurate where this small MLP is not.
          Runtime under that load: full 2.3 min wall (66 s CPU), quick 1.4 min (32 s CPU), smoke 40-65 s (~20 s CPU)
          with a cold compilation cache (6 programs of any size) and ~3 s for the restore run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab import probe as probe_lib
from gvlab.data import epoch_batches
from gvlab.data.digits import IMAGE_SHAPE, digits
from gvlab.diffusion import losses
from gvlab.diffusion.samplers import Model
from gvlab.diffusion.schedules import Schedule
from gvlab.errors import ConfigError
from gvlab.inverse import solvers
from gvlab.inverse.gaussian import gaussian_posterior
from gvlab.inverse.operators import AveragePool, dense_matrix, make_box_inpainting, make_random_inpainting
from gvlab.nn import TimeMLP

SCHEDULE = Schedule("vp_linear")
TASKS = ("inpainting", "sr2", "box")
GAUSSIAN_TASKS = ("inpainting", "sr2")  # part A
CLAIM_TASKS = ("inpainting", "sr2")  # part B's gated tasks; "box" is reported
METHODS = ("pinv", "dps", "red_diff", "red_diff_const", "red_diff_random")
GAUSSIAN_METHODS = ("pinv", "dps", "red_diff", "oracle")
LABELS = {"truth": "truth", "pinv": "A^+ y", "dps": "DPS", "red_diff": "RED-Diff", "red_diff_const": "RED-Diff const",
          "red_diff_random": "RED-Diff random", "oracle": "posterior mean"}
SR_FACTOR = 2
PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`inverse/red_diff` settings.

    Attributes:
        hidden: TimeMLP widths of the learned eps prior.
        tasks: which of "inpainting", "sr2" and "box" to run (part A runs the first two of them).
        num_test: test digits (measurements) per task.
        num_validation: training digits held out of both priors, on which DPS's step is chosen.
        samples: solutions (solver keys) per measurement; the claims' seeds and the diversity's sample.
        num_steps: network evaluations of every solver.
        sigma_y: measurement noise std.
        keep_fraction: observed pixels of the random inpainting.
        box: side of the missing centre box.
        regulariser_weight, learning_rate: RED-Diff's lambda and Adam step size.
        dps_weights: DPS's zeta' candidates (RED-Diff's `algos/dps.py` `grad_term_weight`).
        prior_jitter: added to the diagonal of the fitted Gaussian's covariance.
        timing_repeats: timed solves per method.
        classifier: measure the digit classifier's accuracy on the reconstructions (off in smoke: it is one more
            compiled program).
        figure_digits: test digits shown in the reconstruction figures.
        train: the learned prior's optimisation (its seeds are vmapped; every solver runs on every prior).
    """

    hidden: tuple[int, ...] = (256, 256, 256)
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


# ----------------------------------------------------------------------------- data and measurements


def digit_splits(num_validation: int, num_test: int) -> dict[str, dict[str, np.ndarray]]:
    """`{"fit", "validation", "test"}` -> `{"x": [N, 8, 8] in [-1, 1], "y": labels}`; validation is the tail of
    the training split, so neither prior sees it."""
    train, test = digits("train", "unit"), digits("test", "unit")
    scale = lambda d: {"x": 2.0 * np.asarray(d["x"]) - 1.0, "y": np.asarray(d["y"])}  # noqa: E731
    train, test = scale(train), scale(test)
    split = len(train["y"]) - num_validation
    return {"fit": {k: v[:split] for k, v in train.items()}, "validation": {k: v[split:] for k, v in train.items()},
            "test": {k: v[:num_test] for k, v in test.items()}}


def fit_gaussian(x: np.ndarray, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """(m `[8, 8]`, Sigma + jitter I `[64, 64]`): the sample mean and covariance of images `[N, 8, 8]` (float32)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    cov = np.cov(flat, rowvar=False) + jitter * np.eye(flat.shape[1])
    return flat.mean(0).reshape(x.shape[1:]).astype(np.float32), cov.astype(np.float32)


@functools.partial(jax.tree_util.register_dataclass, data_fields=("matrix", "pinv_matrix"), meta_fields=())
@dataclasses.dataclass(frozen=True, eq=False)
class MatrixOperators:
    """One linear operator per measurement, as explicit matrices on flattened 8 x 8 images, y zero-padded to 64
    entries (so image-shaped whatever the task).

    Every task's operator (a random or box mask, 2 x 2 pooling) takes this one form (`matrix_form`), so all the
    tasks of a part are one solver batch and each solver compiles once for all of them. The zero padding adds zero
    rows to A (and y) and zero columns to A^+: residuals, gradients and posteriors are unchanged. A solver batch
    holds S consecutive rows per measurement (`[N S, 8, 8]`); row n S + s is acted on by operator n.

    Attributes:
        matrix: A per measurement, `[N, 64, 64]`.
        pinv_matrix: A^+ per measurement, `[N, 64, 64]`.
    """

    matrix: Float[Array, "N M D"]
    pinv_matrix: Float[Array, "N D M"]

    def _apply(self, matrices: Array, x: Array) -> Array:
        x_NxSxD = x.reshape(matrices.shape[0], -1, PIXELS)
        return jnp.einsum("nij,nsj->nsi", matrices, x_NxSxD).reshape(x.shape)

    def forward(self, x: Float[Array, "NS H W"]) -> Float[Array, "NS H W"]:
        return self._apply(self.matrix, x)

    def adjoint(self, y: Float[Array, "NS H W"]) -> Float[Array, "NS H W"]:
        return self._apply(jnp.swapaxes(self.matrix, -1, -2), y)

    def pinv(self, y: Float[Array, "NS H W"]) -> Float[Array, "NS H W"]:
        return self._apply(self.pinv_matrix, y)


def matrix_form(op, y_shape: tuple[int, ...]) -> tuple[Float[Array, "64 64"], Float[Array, "64 64"]]:
    """A library operator's A (`dense_matrix`) and A^+ (its `pinv` on the basis of y), zero-padded to 64 x 64."""
    a = dense_matrix(op, IMAGE_SHAPE)  # [M, 64]
    m = a.shape[0]
    basis = jnp.eye(m, dtype=a.dtype).reshape(m, *y_shape)
    p = jax.vmap(op.pinv)(basis).reshape(m, PIXELS).T  # [64, M]
    return jnp.pad(a, ((0, PIXELS - m), (0, 0))), jnp.pad(p, ((0, 0), (0, PIXELS - m)))


def task_operator(task: str, key: PRNGKeyArray, keep_fraction: float, box: int):
    """(A, A^+) of one measurement: a fresh random mask (inpainting), the centre box, or 2 x 2 average pooling."""
    if task == "inpainting":
        return matrix_form(make_random_inpainting(key, IMAGE_SHAPE, keep_fraction), IMAGE_SHAPE)
    if task == "box":
        top = (IMAGE_SHAPE[0] - box) // 2
        return matrix_form(make_box_inpainting(IMAGE_SHAPE, top, top, box, box), IMAGE_SHAPE)
    if task == "sr2":
        return matrix_form(AveragePool(SR_FACTOR), tuple(n // SR_FACTOR for n in IMAGE_SHAPE))
    raise ConfigError(f"unknown task {task!r}; choose from {TASKS}")


@functools.partial(jax.jit, static_argnames=("tasks", "sigma_y", "keep_fraction", "box"))
def measure(x0: Float[Array, "N H W"], key: PRNGKeyArray, *, tasks: tuple[str, ...], sigma_y: float,
            keep_fraction: float, box: int) -> tuple[MatrixOperators, Float[Array, "TN H W"]]:
    """Operators and y = A x0 + sigma_y n, `[T N, 8, 8]`, for every task (task-major), one draw of mask and noise
    per digit and task. Noise falls only on real measurements (inpainting: the observed pixels, zero-filled y)."""
    ops, ys = [], []
    for i, task in enumerate(tasks):
        mask_key, noise_key = jax.random.split(jax.random.fold_in(key, i))
        a, p = jax.vmap(lambda k, t=task: task_operator(t, k, keep_fraction, box))(jax.random.split(mask_key, len(x0)))
        op = MatrixOperators(a, p)
        measured = jnp.any(a != 0, axis=-1).reshape(x0.shape)  # rows of A that measure something
        noise = jnp.where(measured, sigma_y * jax.random.normal(noise_key, x0.shape), 0.0)
        ops.append(op)
        ys.append(op.forward(x0) + noise)
    return jax.tree.map(lambda *v: jnp.concatenate(v), *ops), jnp.concatenate(ys)


# ----------------------------------------------------------------------------- solvers


def eps_model(hidden: tuple[int, ...], params) -> Model:
    """The TimeMLP eps network on images `[B, 8, 8]` (it works on flat `[B, 64]`)."""
    net = TimeMLP(out_features=PIXELS, hidden=hidden)
    return Model(lambda x, t: net.apply(params, x.reshape(x.shape[0], -1), t).reshape(x.shape), "eps")


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """The static settings of every solve (hashable: a static argument of the jitted programs)."""

    num_steps: int
    sigma_y: float
    regulariser_weight: float
    learning_rate: float
    samples: int

    @classmethod
    def of(cls, cfg: Config) -> SolverSettings:
        return cls(cfg.num_steps, cfg.sigma_y, cfg.regulariser_weight, cfg.learning_rate, cfg.samples)


RED_DIFF_OPTIONS = {"red_diff": {}, "red_diff_const": {"weighting": "constant"},
                    "red_diff_random": {"time_order": "random"}}
SOLVE_METHODS = ("dps_sweep", "dps", *RED_DIFF_OPTIONS)


class Request(NamedTuple):
    """One solve: operators `[N]`, measurements `[N, 8, 8]`, DPS's zeta' (`[Z]` for "dps_sweep", else per
    measurement `[N]`; unused by the other methods)."""

    ops: MatrixOperators
    y: Float[Array, "N H W"]
    dps_weight: Float[Array, " K"]


def solve(method: str, model: Model, request: Request, key: PRNGKeyArray, settings: SolverSettings) -> Array:
    """`settings.samples` solutions of every measurement, `[N, S, H, W]` (`[Z, N, S, H, W]` for "dps_sweep": DPS
    with every zeta'). The S solutions are rows of one solver batch, so their noise draws differ."""
    s = settings
    ops, y, weight = request
    key = jax.random.fold_in(key, SOLVE_METHODS.index(method))  # each method its own stream
    y_rows = jnp.repeat(y, s.samples, axis=0)  # [N S, H, W], row n S + s

    def dps(step_size):  # RED-Diff's DPS: zeta' / ||r|| grad ||r||^2 = 2 zeta' grad ||r||, DDIM (eta = 0)
        return solvers.dps(model, SCHEDULE, ops, y_rows, s.sigma_y, key, s.num_steps, step_size=step_size, eta=0.0).x

    if method == "dps_sweep":
        x = jax.vmap(lambda w: dps(2.0 * w))(weight)
    elif method == "dps":
        x = dps(2.0 * jnp.repeat(weight, s.samples)[:, None, None])
    elif method in RED_DIFF_OPTIONS:
        x = solvers.red_diff(model, SCHEDULE, ops, y_rows, s.sigma_y, key, s.num_steps,
                             regulariser_weight=s.regulariser_weight, learning_rate=s.learning_rate,
                             **RED_DIFF_OPTIONS[method]).x
    return x.reshape(*x.shape[:-3], y.shape[0], s.samples, *IMAGE_SHAPE)


def posterior_mean(mean: Float[Array, "H W"], cov: Float[Array, "D D"], request: Request,
                   settings: SolverSettings) -> Float[Array, "N S H W"]:
    """The exact posterior mean of N(mean, cov) per measurement (repeated over the S solutions): the MMSE bound."""
    def one(a, y_i):
        return gaussian_posterior(mean.reshape(-1), cov, a, y_i.reshape(-1), settings.sigma_y).mean.reshape(IMAGE_SHAPE)

    x = jax.vmap(one)(request.ops.matrix, request.y)
    return jnp.broadcast_to(x[:, None], (x.shape[0], settings.samples, *IMAGE_SHAPE))


@functools.partial(jax.jit, static_argnames=("methods", "settings"))
def gaussian_solves(mean, cov, requests: tuple[Request, ...], key, *, methods: tuple[str, ...],
                    settings: SolverSettings) -> tuple[Array, ...]:
    """Part A, one program: each method (or "oracle", the exact posterior mean) on its request, with the exact
    model of the prior N(mean, cov) (`gaussian_prior_model`)."""
    model = solvers.gaussian_prior_model(mean, cov, SCHEDULE, "eps")
    return tuple(posterior_mean(mean, cov, r, settings) if m == "oracle" else
                 solve(m, model, r, jax.random.fold_in(key, i), settings)  # each request its own stream
                 for i, (m, r) in enumerate(zip(methods, requests)))


@functools.partial(jax.jit, static_argnames=("methods", "hidden", "settings"))
def learned_solves(stacked_params, requests: tuple[Request, ...], key, *, methods: tuple[str, ...],
                   hidden: tuple[int, ...], settings: SolverSettings) -> tuple[Array, ...]:
    """Part B, one program: each method on its request with every eps-MLP prior (vmapped: a leading prior axis;
    the requests' `dps_weight` carry it too)."""
    def per_prior(params, requests):
        return tuple(solve(m, eps_model(hidden, params), r, jax.random.fold_in(key, i), settings)
                     for i, (m, r) in enumerate(zip(methods, requests)))  # each request its own stream

    axes = tuple(Request(None, None, 0) for _ in requests)
    return jax.vmap(per_prior, in_axes=(0, axes))(stacked_params, requests)


fit_probe = jax.jit(probe_lib.fit_logistic, static_argnames=("num_classes", "steps", "standardize"))


# ----------------------------------------------------------------------------- metrics (numpy: no extra programs)


def psnr_per_solution(x: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """PSNR (range 2, float64) of reconstructions `[..., N, S, H, W]` against `[N, H, W]`, averaged over the N
    measurements: `[..., S]`."""
    mse = np.mean(np.square(np.asarray(x, np.float64) - np.asarray(x0, np.float64)[:, None]), axis=(-2, -1))
    return np.mean(10.0 * np.log10(4.0 / mse), axis=-2)


def diversity(x: np.ndarray) -> np.ndarray:
    """Pixel std over the S solutions of each measurement, averaged over pixels and measurements: `[...]` of
    `[..., N, S, H, W]`."""
    return np.mean(np.std(np.asarray(x, np.float64), axis=-3), axis=(-3, -2, -1))


def probe_accuracy(probe: probe_lib.LogisticProbe, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy of the digit classifier on reconstructions `[..., N, S, H, W]`, per solution index `[..., S]`."""
    flat = np.asarray(x, np.float64).reshape(*x.shape[:-2], -1)
    p = jax.tree.map(np.asarray, probe)
    logits = ((flat - p.shift) / p.scale) @ p.weights + p.bias
    return np.mean(np.argmax(logits, axis=-1) == labels[:, None], axis=-2)


# ----------------------------------------------------------------------------- time per solve


def solve_times(run, red_diff_solve, dps_solve, repeats: int) -> dict[str, list[float]]:
    """Wall time (ms) of compiled solves (zero-argument callables), interleaved so both see the same load.

    Wall time is not reproducible, so with a workdir the first measurement is written to `solve_times.json` and a
    rerun (which restores the prior from its checkpoint) reads it back instead of measuring again.
    """
    path = None if run.workdir is None else run.workdir / "solve_times.json"
    if path is not None and path.exists():
        run.log(f"solve times restored from {path}")
        return json.loads(path.read_text())
    times: dict[str, list[float]] = {"red_diff": [], "dps": []}
    for _ in range(repeats):
        for name, fn in (("red_diff", red_diff_solve), ("dps", dps_solve)):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(1e3 * (time.perf_counter() - start))
    record = {"time_red_diff_ms": times["red_diff"], "time_dps_ms": times["dps"],
              "time_red_over_dps": [r / d for r, d in zip(times["red_diff"], times["dps"])]}
    if path is not None:
        path.write_text(json.dumps(record) + "\n")
    return record


# ----------------------------------------------------------------------------- the experiment


def _gap_claims(prefix: str, tasks: tuple[str, ...], what: str) -> list[Claim]:
    return [Claim(statement=f"{what}, {task}: PSNR(RED-Diff) >= PSNR(DPS) - 0.5 dB at equal NFE (mean over "
                            "solution seeds)",
                  metric=f"{prefix}{task}_red_minus_dps", op=">=", threshold=-0.5, reduce="mean",
                  source="Mardani et al. 2024 (RED-Diff beats DPS in fidelity); issue 5 / notes section 5d gate")
            for task in tasks]


class Problems:
    """The measurements of every task for the validation and test digits (one `measure` program), by rows."""

    def __init__(self, cfg: Config, splits: dict, key: PRNGKeyArray):
        self.tasks, self.sizes = cfg.tasks, {"validation": cfg.num_validation, "test": cfg.num_test}
        both = jnp.asarray(np.concatenate([splits["validation"]["x"], splits["test"]["x"]]))
        self.ops, self.y = measure(both, key, tasks=cfg.tasks, sigma_y=cfg.sigma_y,
                                   keep_fraction=cfg.keep_fraction, box=cfg.box)

    def rows(self, tasks: tuple[str, ...], split: str) -> np.ndarray:
        """Row indices of `tasks` (task-major) for one split."""
        per_task = self.sizes["validation"] + self.sizes["test"]
        offset = 0 if split == "validation" else self.sizes["validation"]
        return np.concatenate([self.tasks.index(t) * per_task + offset + np.arange(self.sizes[split]) for t in tasks])

    def request(self, tasks: tuple[str, ...], split: str, dps_weight) -> Request:
        index = self.rows(tasks, split)
        return Request(jax.tree.map(lambda v: v[index], self.ops), self.y[index], jnp.asarray(dps_weight, jnp.float32))

    def pinv(self, tasks: tuple[str, ...], samples: int) -> np.ndarray:
        """A^+ y of the test rows, repeated over the S solutions: `[T N, S, H, W]` (numpy)."""
        index = self.rows(tasks, "test")
        p, y = np.asarray(self.ops.pinv_matrix)[index], np.asarray(self.y)[index].reshape(len(index), PIXELS)
        x = np.einsum("nij,nj->ni", p, y).reshape(len(index), 1, *IMAGE_SHAPE)
        return np.repeat(x, samples, axis=1)


def per_task(values, tasks: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Split reconstructions `[..., T N, S, H, W]` into `{task: [..., N, S, H, W]}`."""
    return dict(zip(tasks, np.split(np.asarray(values), len(tasks), axis=-4)))


def dps_choice(sweep, x0: np.ndarray, tasks: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The fixed rule: per task (and prior), the zeta' of highest mean validation PSNR. `sweep` is
    `[..., Z, T N, S, H, W]`; returns (the validation PSNR `[..., Z, T]`, the chosen zeta's index `[..., T]`)."""
    scores = np.stack([psnr_per_solution(x, x0).mean(-1) for x in per_task(sweep, tasks).values()], axis=-1)
    return scores, np.argmax(scores, axis=-2)


@experiment(
    "inverse/red_diff",
    config=Config(),
    smoke={"hidden": (16,), "num_test": 8, "num_validation": 8, "samples": 2, "num_steps": 10, "timing_repeats": 2,
           "classifier": False, "figure_digits": 4, "train.steps": 20, "train.batch_size": 32, "train.log_every": 10},
    quick={"num_test": 100, "num_validation": 50, "num_steps": 50, "train.steps": 1500},
    claims=[
        *_gap_claims("gaussian_", GAUSSIAN_TASKS, "Exact Gaussian prior"),
        *[Claim(statement=f"Exact Gaussian prior, {task}: PSNR(RED-Diff) <= PSNR(exact posterior mean) + 0.1 dB "
                          "(sanity: nothing beats the MMSE estimate)",
                metric=f"gaussian_{task}_red_minus_oracle", op="<=", threshold=0.1, reduce="mean",
                source="notes section 5d gate") for task in GAUSSIAN_TASKS],
        *_gap_claims("", CLAIM_TASKS, "Learned eps-MLP prior"),
        Claim(statement="RED-Diff is cheaper per solve than DPS at equal NFE (no backpropagation through the "
                        "network): time(RED-Diff) / time(DPS) < 1 (compiled solves, mean over repeats)",
              metric="time_red_over_dps", op="<", threshold=1.0, reduce="mean",
              source="Mardani et al. 2024 (no score Jacobian); notes section 5d gate"),
    ],
)
def red_diff(cfg: Config, run) -> dict:
    """RED-Diff vs DPS (and the exact posterior mean) on digits: exact Gaussian prior, then a learned eps-MLP."""
    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown or not cfg.tasks:
        raise ConfigError(f"tasks must be a non-empty subset of {TASKS}, got {cfg.tasks}")
    splits = digit_splits(cfg.num_validation, cfg.num_test)
    settings, weights = SolverSettings.of(cfg), jnp.asarray(cfg.dps_weights, jnp.float32)
    problems = Problems(cfg, splits, run.key("measure"))
    x0_val, x0, labels = splits["validation"]["x"], splits["test"]["x"], splits["test"]["y"]
    out: dict[str, np.ndarray] = {}
    shown: dict[str, dict[str, dict[str, np.ndarray]]] = {"gaussian": {}, "learned": {}}

    # Part A: the exact Gaussian prior.
    tasks_a = tuple(t for t in cfg.tasks if t in GAUSSIAN_TASKS)
    mean, cov = fit_gaussian(splits["fit"]["x"], cfg.prior_jitter)
    gaussian = functools.partial(gaussian_solves, mean, cov, settings=settings)
    if tasks_a:
        # One program: DPS with every zeta' on the validation and the test measurements (the exact model is
        # cheap), RED-Diff and the oracle; the validation rule then picks which zeta's test solution is reported.
        methods = ("dps_sweep", "dps_sweep", "red_diff", "oracle")
        val, test = problems.request(tasks_a, "validation", weights), problems.request(tasks_a, "test", weights)
        sweep, dps_all, *rest = gaussian((val, test, test, test), run.key("gaussian"), methods=methods)
        val_psnr, index = dps_choice(sweep, x0_val, tasks_a)  # [Z, T], [T]
        chosen = np.asarray(cfg.dps_weights)[index]
        dps_test = np.concatenate([x[index[i]] for i, x in enumerate(per_task(dps_all, tasks_a).values())])
        recon = {"dps": dps_test, "red_diff": rest[0], "oracle": rest[1]}
        recon = {m: per_task(x, tasks_a) for m, x in recon.items()}
        recon["pinv"] = per_task(problems.pinv(tasks_a, cfg.samples), tasks_a)
        for i, task in enumerate(tasks_a):
            scores = {m: psnr_per_solution(recon[m][task], x0) for m in GAUSSIAN_METHODS}
            out.update({f"gaussian_{task}_psnr_{m}": v for m, v in scores.items()})
            out[f"gaussian_{task}_red_minus_dps"] = scores["red_diff"] - scores["dps"]
            out[f"gaussian_{task}_red_minus_oracle"] = scores["red_diff"] - scores["oracle"]
            out[f"gaussian_{task}_dps_weight"] = chosen[i: i + 1]
            out[f"gaussian_{task}_dps_validation_psnr"] = val_psnr[:, i]
            shown["gaussian"][task] = {m: recon[m][task][: cfg.figure_digits, 0] for m in GAUSSIAN_METHODS}
            run.log(f"Gaussian prior, {task}: PSNR " + ", ".join(f"{LABELS[m]} {v.mean():.2f}" for m, v in
                                                                 scores.items()) + f" (DPS zeta' {chosen[i]:g})")

    # Part B: a learned eps-MLP prior.
    fit_x = jnp.asarray(splits["fit"]["x"].reshape(-1, PIXELS))
    probe = fit_probe(fit_x, jnp.asarray(splits["fit"]["y"]), num_classes=10) if cfg.classifier else None
    if probe is not None:
        out["accuracy_truth"] = probe_accuracy(probe, x0[:, None], labels)
    method = losses.make_method(TimeMLP(out_features=PIXELS, hidden=cfg.hidden), "eps", SCHEDULE)
    prior = run.fit(Spec(method=method, optimizer=optax.adam(cfg.train.lr),
                         data=epoch_batches({"x": fit_x}, cfg.train.batch_size)), name="prior")
    priors, rows = len(prior.seeds), len(cfg.tasks) * cfg.num_test
    learned = functools.partial(learned_solves, prior.stacked_params, hidden=cfg.hidden, settings=settings)
    # One program: the validation sweep of DPS and the two ablations (which need no choice).
    ablation = problems.request(cfg.tasks, "test", np.zeros((priors, rows)))
    first = ("dps_sweep", "red_diff_const", "red_diff_random")
    sweep, const, random = learned((problems.request(cfg.tasks, "validation", np.tile(weights, (priors, 1))),
                                    ablation, ablation), run.key("learned"), methods=first)
    val_psnr, index = dps_choice(sweep, x0_val, cfg.tasks)  # [P, Z, T], [P, T]
    chosen = np.asarray(cfg.dps_weights)[index]
    test = problems.request(cfg.tasks, "test", np.repeat(chosen, cfg.num_test, axis=-1))
    # RED-Diff and DPS as programs of their own: the timed solves.
    solve_fns = {m: functools.partial(lambda m: learned((test,), run.key("learned"), methods=(m,))[0], m)
                 for m in ("red_diff", "dps")}
    recon = {"red_diff_const": const, "red_diff_random": random, **{m: fn() for m, fn in solve_fns.items()}}
    recon = {m: per_task(x, cfg.tasks) for m, x in recon.items()}
    recon["pinv"] = {t: v[None] for t, v in per_task(problems.pinv(cfg.tasks, cfg.samples), cfg.tasks).items()}
    for i, task in enumerate(cfg.tasks):
        scores = {m: psnr_per_solution(recon[m][task], x0).reshape(-1) for m in METHODS}  # [priors x samples]
        for m in METHODS:
            out[f"{task}_psnr_{m}"] = scores[m]
            if probe is not None:
                out[f"{task}_accuracy_{m}"] = probe_accuracy(probe, recon[m][task], labels).reshape(-1)
            out[f"{task}_diversity_{m}"] = diversity(recon[m][task]).reshape(-1)
        out[f"{task}_red_minus_dps"] = scores["red_diff"] - scores["dps"]
        out[f"{task}_descending_minus_random"] = scores["red_diff"] - scores["red_diff_random"]
        out[f"{task}_snr_minus_const"] = scores["red_diff"] - scores["red_diff_const"]
        out[f"{task}_dps_weight"] = chosen[:, i]
        out[f"{task}_dps_validation_psnr"] = val_psnr[..., i]
        shown["learned"][task] = {m: recon[m][task][0, : cfg.figure_digits, 0] for m in METHODS}
        run.log(f"learned prior, {task}: PSNR " + ", ".join(f"{LABELS[m]} {v.mean():.2f}" for m, v in scores.items())
                + f"; diversity DPS {out[f'{task}_diversity_dps'].mean():.3f}, RED-Diff "
                f"{out[f'{task}_diversity_red_diff'].mean():.3f}; DPS zeta' {chosen[:, i]}")

    times = solve_times(run, solve_fns["red_diff"], solve_fns["dps"], cfg.timing_repeats)
    out.update({k: np.asarray(v) for k, v in times.items()})
    run.log(f"time per solve of all {len(cfg.tasks) * cfg.num_test * cfg.samples * priors} test problems "
            f"({cfg.num_steps} NFE): RED-Diff {np.median(times['time_red_diff_ms']):.0f} ms, DPS "
            f"{np.median(times['time_dps_ms']):.0f} ms")
    _reconstruction_figure(run, x0[: cfg.figure_digits], shown)
    _psnr_figure(run, cfg, out)
    return out


# ----------------------------------------------------------------------------- figures


def _tile(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of images `[C, H, W]` in [-1, 1] -> one canvas in [0, 1] with NaN (blank) one-pixel gaps."""
    c, h, w = rows[0].shape
    canvas = np.full((len(rows) * (h + 1) - 1, c * (w + 1) - 1), np.nan)
    for r, images in enumerate(rows):
        for j, image in enumerate(images):
            canvas[r * (h + 1): r * (h + 1) + h, j * (w + 1): j * (w + 1) + w] = np.clip((image + 1) / 2, 0, 1)
    return canvas


def _reconstruction_figure(run, truth: np.ndarray, shown: dict) -> None:
    """Truth, A^+ y and every method's first solution on the first test digits, one panel per part and task."""
    import matplotlib.pyplot as plt

    panels = [(part, task, recon) for part in ("gaussian", "learned") for task, recon in shown[part].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels) + 1, 3.4), squeeze=False)
    for ax, (part, task, recon) in zip(axes[0], panels):
        names = ["truth", *recon]
        ax.imshow(_tile([truth, *recon.values()]), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        h = truth.shape[1]
        ax.set_yticks([(h + 1) * r + h / 2 - 0.5 for r in range(len(names))], [LABELS[n] for n in names], fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"{'Gaussian' if part == 'gaussian' else 'learned'} prior\n{task}", fontsize=8)
    fig.tight_layout()
    run.figure("reconstructions", fig)


def _psnr_figure(run, cfg: Config, out: dict) -> None:
    """Mean PSNR per method and task (error bars: std over solution seeds and priors), part A and part B."""
    import matplotlib.pyplot as plt

    parts = [("gaussian_", GAUSSIAN_METHODS, [t for t in GAUSSIAN_TASKS if t in cfg.tasks], "exact Gaussian prior"),
             ("", METHODS, list(cfg.tasks), "learned eps-MLP prior")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for ax, (prefix, methods, tasks, title) in zip(axes, parts):
        width = 0.8 / len(methods)
        for j, m in enumerate(methods):
            values = [np.asarray(out[f"{prefix}{t}_psnr_{m}"]) for t in tasks]
            ax.bar(np.arange(len(tasks)) + (j - (len(methods) - 1) / 2) * width, [v.mean() for v in values], width,
                   yerr=[v.std() for v in values], capsize=2, label=LABELS[m])
        ax.set_xticks(np.arange(len(tasks)), tasks)
        ax.set(ylabel="PSNR (dB, range 2)", title=f"{title}, {cfg.num_steps} NFE")
        lows = [np.asarray(out[f"{prefix}{t}_psnr_pinv"]).mean() for t in tasks]
        ax.set_ylim(bottom=max(min(lows) - 2.0, 0.0))
        ax.legend(fontsize=7)
    fig.tight_layout()
    run.figure("psnr", fig)
