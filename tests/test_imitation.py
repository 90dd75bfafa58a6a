"""gvlab.imitation: the tanh-Gaussian density against its closed form and a numerical integral, the sequencer's
padded histories against the unpadded examples one by one, rollouts (expert ceiling, compounding), relabelling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, stats

from gvlab.data.padded import pad
from gvlab.imitation import data, evaluation, expert, policies, tanh_gaussian
from gvlab.imitation.rollout import Horizon, open_loop_choose
from gvlab.nn.policy import GaussianPolicy, Sequencer


def test_tanh_gaussian_log_prob_is_the_change_of_variables_density():
    mu, log_std = jnp.array([[0.3, -1.2]]), jnp.array([[-0.5, 0.2]])
    a = jnp.array([[0.7, -0.95]])
    # closed form: N(atanh a; mu, sigma) / (1 - a^2), per dimension, multiplied
    x = np.arctanh(np.asarray(a))
    expected = np.sum(stats.norm.logpdf(x, np.asarray(mu), np.exp(np.asarray(log_std))) - np.log1p(-np.asarray(a) ** 2))
    np.testing.assert_allclose(tanh_gaussian.log_prob(mu, log_std, a), [expected], rtol=1e-5)
    # the density integrates to 1 over (-1, 1) (Simpson on a fine grid); negative control: without the log-det
    # (the Gaussian density of atanh a) it does not
    grid = np.linspace(-1 + 1e-6, 1 - 1e-6, 200001)
    log_p = jax.jit(lambda v: tanh_gaussian.log_prob(jnp.full((v.shape[0], 1), 0.4), jnp.full((v.shape[0], 1), -0.3),
                                                     v[:, None], clip=1 - 1e-7))(jnp.asarray(grid))
    jacobian = np.asarray(tanh_gaussian.log_det_tanh(jnp.arctanh(jnp.asarray(grid))), np.float64)
    assert abs(integrate.simpson(np.exp(np.asarray(log_p, np.float64)), x=grid) - 1.0) < 1e-3
    assert abs(integrate.simpson(np.exp(np.asarray(log_p, np.float64) + jacobian), x=grid) - 1.0) > 0.1
    # the stable log-det equals log(1 - tanh^2) where the naive form is accurate
    grid = jnp.linspace(-4.0, 4.0, 9)
    np.testing.assert_allclose(tanh_gaussian.log_det_tanh(grid), np.log(1 - np.tanh(np.asarray(grid)) ** 2),
                               rtol=1e-4)


def test_sequencer_loss_on_padded_histories_equals_the_unpadded_examples_one_by_one(key):
    sequencer = Sequencer(num_primitives=4, history=6, hidden=16)
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, 5, size=n).astype(np.int32) for n in (0, 1, 3, 6, 2)]
    obs = rng.normal(size=(5, 9)).astype(np.float32)
    labels = rng.integers(0, 4, size=5).astype(np.int32)
    params = jax.jit(sequencer.init)(key, obs[:1], np.zeros((1, 6), np.int32), np.ones((1, 6), bool))
    loss = jax.jit(lambda ids, mask, o, y: policies.sequencer_loss(  # noqa: E731
        sequencer, params, {"obs": o, "ids": ids, "mask": mask, "label": y})[0])
    one_by_one = np.mean([loss(h[None], np.ones((1, len(h)), bool), obs[i:i + 1], labels[i:i + 1])
                          for i, h in enumerate(histories)])
    for fill in (10 ** 6, 4):  # an id outside the table (NaN if it leaked) and a real id (a wrong number if it leaked)
        batch = pad(histories, size=6, fill=fill)
        np.testing.assert_allclose(loss(batch.values, batch.mask, obs, labels), one_by_one, rtol=1e-5)
    # negative control: reading the padding (an all-True mask) changes the loss
    assert abs(float(loss(batch.values, np.ones_like(batch.mask), obs, labels)) - one_by_one) > 1e-4


def _models():
    return evaluation.Models(route=GaussianPolicy(2, (8,)), sequencer=Sequencer(4, hidden=8),
                             horizon=Horizon(decisions=12, steps_per_primitive=8))


def _runs(models, variants, key):
    example = {"route": {"obs": jnp.zeros((1, 9)), "action": jnp.zeros((1, 2))},
               "decision": {"obs": jnp.zeros((1, 9)), "ids": jnp.zeros((1, 6), jnp.int32),
                            "mask": jnp.zeros((1, 6), bool), "label": jnp.zeros((1,), jnp.int32)}}
    params = jax.jit(policies.make_hierarchical(models.route, models.sequencer).init)(key, example)
    stacked = jax.tree.map(lambda x: jnp.stack([x] * len(variants)), params)
    return {**stacked, "variant": jnp.asarray([evaluation.VARIANTS.index(v) for v in variants], jnp.int32)}


def test_expert_is_the_ceiling_and_open_loop_success_compounds(key):
    models = _models()
    layouts = evaluation.layouts(key, 150, novel=False)
    runs = _runs(models, ("expert",), key)
    fn = jax.jit(jax.vmap(functools.partial(evaluation.success, models=models), in_axes=(0, None, None)))
    out = fn(runs, {"layouts": layouts}, jax.random.fold_in(key, 1))
    p = float(out["stage_success"][0].mean())
    assert 0.65 < p < 0.9, p  # single attempts fail at the designed rate (slip 0.02 vs half-width 0.025)
    assert float(out["success"][0]) > 0.85  # retries after failures: the ceiling is far above p^3
    curve = np.asarray(out["success_curve"][0])
    # with exactly the open-loop budget (route, next, route, next, route: 5 primitives) the expert has had no
    # chance to retry: its success then is p^3 within sampling error (the compounding prediction)
    assert abs(curve[4] - p ** 3) < 0.12, (curve[4], p ** 3)
    assert np.all(np.diff(curve) >= 0)


def test_open_loop_baseline_is_the_fixed_sequence():
    choose = open_loop_choose(3)
    chosen = [int(choose(None, None, None, None, jnp.int32(h), None)) for h in range(8)]
    r, n, d = expert.ROUTE, expert.NEXT, expert.DONE
    assert chosen == [r, n, r, n, r, d, d, d]


def test_relabelling_agrees_with_the_expert_on_its_own_traces_and_corrects_a_learner(key):
    models = _models()
    layouts = evaluation.layouts(key, 8, novel=True)
    runs = _runs(models, ("expert", "hierarchical"), key)
    fn = jax.jit(jax.vmap(functools.partial(evaluation.traces, models=models), in_axes=(0, None, None)))
    out = fn(runs, {"layouts": layouts}, jax.random.fold_in(key, 2))
    demo, learner = (evaluation.trace_from_dict({k: v[r] for k, v in out.items()}) for r in (0, 1))
    rows = data.route_rows(demo)
    executed = np.asarray(demo.action)[np.asarray(demo.step_valid) & (np.asarray(demo.primitive) == expert.ROUTE)[..., None]]
    np.testing.assert_allclose(rows["action"], executed, atol=1e-6)  # labels = what the expert did
    decisions = data.decision_rows(demo)
    np.testing.assert_array_equal(decisions["label"] + 1, np.asarray(demo.primitive)[np.asarray(demo.decision_valid)])
    # negative control: an untrained learner's choices are not the expert's labels at the states it visited
    learned = data.decision_rows(learner)
    assert np.mean(learned["label"] + 1 != np.asarray(learner.primitive)[np.asarray(learner.decision_valid)]) > 0.2
    both = data.stack_members([decisions, data.concatenate(decisions, learned)])  # DAgger's aggregated members
    assert both["obs"].shape[:2] == (2, len(decisions["obs"]) + len(learned["obs"]))
    np.testing.assert_array_equal(both["count"], [len(decisions["obs"]), both["obs"].shape[1]])
