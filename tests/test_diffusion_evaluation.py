"""gvlab.diffusion.evaluation: budgets, identities, the sampler table and the per-run evaluators on the mixture.

The analytic field of the 8-Gaussians mixture stands in for a trained network, so each evaluator has an exact
reference and a broken variant (a zero prediction) as negative control. Sizes are small: every test compiles a
few programs at most.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gvlab.data import gaussian_mixture as gm
from gvlab.diffusion import evaluation, samplers
from gvlab.diffusion.schedules import Schedule
from gvlab.evals import evaluate_runs

SPEC = gm.eight_gaussians()
NUM, PROJECTIONS = 256, 32


def test_steps_fit_the_evaluation_budget():
    for name in ("euler", "heun", "dpm_solver_2", "dpm_solver_pp_2s", "ddim"):
        for nfe in (4, 8, 9, 32):
            used = samplers.num_function_evals(name, evaluation.steps_for(name, nfe))
            assert nfe - 2 < used <= nfe, (name, nfe, used)
    assert evaluation.steps_for("heun", 8) == 4 and evaluation.steps_for("dpm_solver_pp_2s", 1) == 1


def test_identities_hold_in_float64_and_float32_shows_rounding(key):
    out = evaluation.identity_errors(SPEC, key, NUM, Schedule("vp_linear"), [key], (64, 2), 8)
    assert set(out["conversion"]["float64"]) == {"vp_linear", "vp_cosine", "ve", "rectified_flow"}
    assert max(out["conversion"]["float64"].values()) < 1e-10
    assert 1e-10 < max(out["conversion"]["float32"].values()) < 1e-3  # rounding, not algebra
    assert out["ddim_vs_dpm1"]["float64"].shape == (1,) and out["ddim_vs_dpm1"]["float64"].max() < 1e-10
    assert out["ddim_vs_dpm1"]["float32"].max() < 1e-3


def test_sampler_table_reaches_the_noise_floor_with_enough_steps(key):
    keys = list(jax.random.split(key, 2))
    out = evaluation.compare_samplers(SPEC, Schedule("vp_linear"), keys, {"euler": "uniform"}, (1, 32), NUM,
                                      PROJECTIONS)
    assert out["floor"].shape == (2,) and out["swd"]["euler"].shape == (2, 2) and out["tsit5"].shape == (2,)
    euler = out["swd"]["euler"]
    assert np.all(euler[:, 1] < 3 * out["floor"]) and np.all(out["tsit5"] < 3 * out["floor"])
    assert np.all(euler[:, 0] > 1.5 * euler[:, 1])  # negative control: one Euler step is far off
    assert np.all(out["tsit5_nfe"] > 32)
    # Equal mode counts remove most of the floor (the multinomial noise of the counts dominates it).
    assert np.all(out["floor_equal_counts"] < out["floor"])
    # Pathwise: against the exact solution from the same noise; 32 Euler steps are ~32x closer than one.
    path = out["pathwise"]["euler"]
    assert np.all(path[:, 1] < path[:, 0] / 8) and np.all(path[:, 1] > 0)
    order = evaluation.convergence_order(path, (1, 32))
    assert order.shape == (2,) and np.all(order > 0.5)


def test_sample_evaluator_scores_each_run_with_its_own_key(key):
    schedule = Schedule("vp_linear")

    def apply(params, x, t):  # the analytic field scaled per run: 1 is exact, 0 a broken network
        return params["scale"] * gm.eps_star(SPEC, schedule, x, t)

    evaluator = evaluation.make_sample_evaluator(apply, "eps", schedule, "euler", 16, NUM, PROJECTIONS)
    keys = jax.random.split(key, 3)
    swd = evaluate_runs(evaluator, {"params": {"scale": jnp.array([1.0, 1.0, 0.0])}, "key": keys}, SPEC)["swd"]
    model = evaluation.analytic_model(SPEC, schedule)
    direct = evaluation.swd_to_data(SPEC, samplers.sample("euler", model, schedule, keys[0], (NUM, 2), 16).x,
                                    keys[0], PROJECTIONS)
    assert swd.shape == (3,) and abs(float(swd[0]) - float(direct)) < 1e-4
    assert swd[0] != swd[1]  # the same model, another run key: other noise
    assert swd[2] > 5 * swd[0]


def test_guidance_evaluator_samples_the_conditionals(key):
    schedule, classes = Schedule("vp_cosine"), gm.num_classes(SPEC)
    apply = evaluation.analytic_conditional(SPEC, schedule, classes)
    evaluator = evaluation.make_guidance_evaluator(apply, "eps", schedule, classes, "heun", 32, NUM,
                                                   clip=evaluation.data_range(SPEC))
    runs = {"params": {}, "key": jax.random.split(key, 2)}
    plain = evaluate_runs(evaluator, runs, {"spec": SPEC, "w": jnp.float32(0.0)})
    strong = evaluate_runs(evaluator, runs, {"spec": SPEC, "w": jnp.float32(3.0)})
    assert plain["accuracy"].shape == (2,) and np.all(plain["accuracy"] > 0.95)
    assert np.all(plain["spread"] < 0.5)  # near the modes (std 0.1 in 2-D: mean distance ~0.13)
    # Exact class samples: two modes 1.53 apart, std 0.1: RMS distance to the class mean sqrt(0.765^2 + 0.02).
    np.testing.assert_allclose(plain["within_spread"], np.sqrt(0.7654**2 + 0.02), rtol=0.05)
    assert not np.allclose(plain["spread"], strong["spread"])  # the weight reaches the sampler
