"""Distributed VI methods (`gvlab.optim`): oracles with negative controls (issue 6, arXiv 2110.03313).

* extragradient reaches the linear-solve answer of a monotone bilinear game; gradient descent-ascent, checked the
  same way, does not (it spirals out);
* RandK is unbiased by Monte Carlo; the unscaled RandK, checked the same way, is not;
* TopK is contractive, ||TopK(x) - x||^2 <= (1 - K/d)||x||^2; the (unbiased, scaled) RandK fails that check;
* MASHA1 / MASHA2 without compression (K = d) and with the anchor refreshed every step (1 - tau = 1) are exactly
  extragradient; with K < d they are not;
* MASHA1 / MASHA2 with 8 workers on 4 devices (shard_map, psum) equal the single-device simulation with the same
  keys; other keys give other iterates;
* uplink floats: EG 2d per iteration; MASHA d + N (2K + d) with every-step refresh; K (+ d on a refresh) per
  iteration without index cost;
* through `fit` (`optim.make_spec`, the custom step, workers under shard_map on 4 devices): 2 + 2 iterations with
  a resume from the workdir equal 4 straight iterations bitwise (state, record and metrics.jsonl), the record
  equals the in-memory driver `optim.run` with the same keys, also with 3 iterations per fit step (the last
  step's surplus iterations are not taken), and metrics.jsonl carries the uplink floats.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab import TrainConfig, fit, optim
from gvlab.errors import ConfigError

WORKERS, DIM_X, DIM_Y = 8, 4, 4
DIM = DIM_X + DIM_Y


@functools.partial(jax.jit, static_argnames=("regularisation", "runs"))
def game(key, regularisation=0.1, runs=2):
    """`runs` problem draws with a leading run axis, their solutions, and gamma = 0.5 / L."""
    problems = jax.vmap(lambda k: optim.make_bilinear_game(k, WORKERS, DIM_X, DIM_Y, regularisation))(
        jax.random.split(key, runs))
    steps = 0.5 / jax.vmap(optim.lipschitz_constant)(problems)
    return problems, jax.vmap(optim.solve)(problems), steps


@functools.partial(jax.jit, static_argnames=("method", "num_steps"))
def single_machine(method, operator_problem, start, step_size, num_steps):
    return method(lambda z: optim.mean_operator(operator_problem, z), start, step_size, num_steps)


def reaches_solution(path, solution, tolerance=1e-4) -> bool:
    return bool(jnp.linalg.norm(path[-1] - solution) <= tolerance * jnp.linalg.norm(solution))


def test_extragradient_solves_monotone_game_and_gda_does_not(key):
    problems, solutions, steps = game(key, regularisation=0.0, runs=1)  # bilinear: monotone, not strongly
    problem = jax.tree.map(lambda x: x[0], problems)
    assert float(optim.strong_monotonicity(problem)) == pytest.approx(0.0, abs=1e-5)
    start = jnp.zeros(DIM)
    eg = single_machine(optim.extragradient, problem, start, steps[0], 3000)
    gda = single_machine(optim.gradient_descent_ascent, problem, start, steps[0], 3000)
    assert reaches_solution(eg, solutions[0])
    assert not reaches_solution(gda, solutions[0])  # negative control: GDA spirals away on a bilinear game
    distance = jnp.linalg.norm(gda[::100] - solutions[0][None], axis=1)
    assert bool(jnp.all(jnp.diff(distance[:5]) > 0))  # it moves away, each 100 steps (then overflows)


def unbiased_by_monte_carlo(samples, x) -> bool:
    """|mean - x| within 5 standard errors in every coordinate."""
    standard_error = samples.std(0) / np.sqrt(samples.shape[0]) + 1e-6
    return bool(np.all(np.abs(samples.mean(0) - x) <= 5 * standard_error))


def test_rand_k_is_unbiased_and_the_unscaled_one_is_not(key):
    x_key, sample_key = jax.random.split(key)
    x = jax.random.normal(x_key, (10,))
    draw = jax.jit(jax.vmap(lambda k: optim.rand_k(k, x, 3)))
    scaled = np.asarray(draw(jax.random.split(sample_key, 20000)))
    unscaled = scaled * 3 / 10  # `rand_k(..., scaled=False)` with the same keys
    assert unbiased_by_monte_carlo(scaled, np.asarray(x))
    assert not unbiased_by_monte_carlo(unscaled, np.asarray(x))  # negative control: mean is (K/d) x
    np.testing.assert_allclose(optim.rand_k(sample_key, x, 3, scaled=False) * 10 / 3,
                               optim.rand_k(sample_key, x, 3), rtol=1e-6)
    assert np.all(np.count_nonzero(scaled, axis=1) == 3)
    # E||Q(x)||^2 = (d/K)||x||^2 exactly for RandK (q = d/K)
    assert np.mean(np.sum(scaled**2, 1)) == pytest.approx(10 / 3 * float(jnp.sum(x**2)), rel=0.05)


def test_top_k_is_contractive_and_rand_k_is_not(key):
    x_key, q_key, rand_key = jax.random.split(key, 3)
    k = 3

    @jax.jit
    def compress():
        xs = jax.random.normal(x_key, (500, 10)) * jnp.exp(jax.random.normal(q_key, (500, 1)))
        rand = jax.vmap(optim.rand_k, (0, 0, None))(jax.random.split(rand_key, 500), xs, k)
        return xs, jax.vmap(optim.top_k, (0, None))(xs, k), rand

    xs, top, rand = map(np.asarray, compress())

    def contractive(compressed):
        return bool(np.all(np.sum((compressed - xs) ** 2, 1) <= (1 - k / 10) * np.sum(xs**2, 1) + 1e-6))

    assert contractive(top)
    assert not contractive(rand)  # negative control: the d/K scaling overshoots (E = (d/K - 1)||x||^2)
    assert np.all(np.count_nonzero(top, axis=1) == k)
    with pytest.raises(ConfigError):
        optim.top_k(xs[0], 11)


def run_unsharded(key, method, num_steps=20):
    """Shared by the identity and the floats tests: equal arguments reuse the compiled program."""
    problems, solutions, steps = game(key)
    return optim.run(method, problems, solutions, jnp.zeros_like(solutions), jax.random.split(key, 2), steps,
                     num_steps=num_steps)


def test_masha_without_compression_is_extragradient(key):
    eg = run_unsharded(key, optim.Extragradient()).relative_error
    for method in (optim.Masha1(DIM, 1.0), optim.Masha2(DIM, 1.0)):
        np.testing.assert_allclose(run_unsharded(key, method).relative_error, eg, rtol=1e-4, atol=1e-7)
    compressed = run_unsharded(key, optim.Masha1(2, 1.0)).relative_error  # negative control: compression
    assert not np.allclose(compressed, eg, rtol=1e-2)


@pytest.mark.parametrize("method", [optim.Masha1(2, 0.25), optim.Masha2(2, 0.25)], ids=["masha1", "masha2"])
def test_sharded_masha_equals_single_device_simulation(method, key):
    assert len(jax.devices()) >= 4
    problems, solutions, steps = game(key)
    start, keys = jnp.zeros_like(solutions), jax.random.split(jax.random.fold_in(key, 1), 2)
    mesh = optim.worker_mesh(WORKERS, 4)  # 2 workers per device
    kwargs = dict(problem=problems, solution=solutions, start=start, step_sizes=0.25 * steps, num_steps=60)
    simulated = optim.run(method, keys=keys, **kwargs)
    sharded = optim.run(method, keys=keys, mesh=mesh, **kwargs)
    np.testing.assert_allclose(sharded.relative_error, simulated.relative_error, rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(sharded.final, simulated.final, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(sharded.floats, simulated.floats)
    other = optim.run(method, keys=jax.random.split(jax.random.fold_in(key, 2), 2), mesh=mesh, **kwargs)
    assert not np.allclose(other.floats, sharded.floats)  # negative control: other keys, other coins


def test_uplink_floats(key):
    n = 20
    eg = run_unsharded(key, optim.Extragradient()).floats
    np.testing.assert_array_equal(eg, np.broadcast_to(2 * DIM * np.arange(n + 1), eg.shape))
    every_step = run_unsharded(key, optim.Masha1(2, 1.0)).floats  # refresh every step: deterministic
    np.testing.assert_array_equal(every_step, np.broadcast_to(DIM + np.arange(n + 1) * (2 * 2 + DIM), eg.shape))
    coin = np.diff(run_unsharded(key, optim.Masha1(2, 0.5, count_indices=False)).floats, axis=1)
    assert set(np.unique(coin).tolist()) == {2, 2 + DIM}  # K values, plus d on heads
    assert optim.message_floats(100, 5) == 10 and optim.message_floats(100, 5, count_indices=False) == 5


def test_worker_mesh_divides_the_workers():
    assert optim.worker_mesh(10).devices.size == 2  # 4 forced devices: the largest divisor of 10 is 2
    assert optim.worker_mesh(8).devices.size == 4
    with pytest.raises(ConfigError, match="cannot be split"):
        optim.worker_mesh(8, 3)
    with pytest.raises(ConfigError):
        optim.Masha1(2, 0.0)


def fit_masha(key, workdir, steps, total=4, method=optim.Masha2(2, 0.5), chunk=1):
    """MASHA through `fit` on 8 workers over 4 devices: 2 runs (members) with their own problem, key and gamma."""
    problems, solutions, gammas = game(key)
    mesh = optim.worker_mesh(WORKERS, 4)
    spec = optim.make_spec(method, problems, solutions, jax.random.split(jax.random.fold_in(key, 1), 2), gammas,
                           num_steps=total, mesh=mesh, iterations_per_step=chunk)
    train = TrainConfig(steps=steps, num_seeds=1, log_every=1, batch_size=WORKERS)
    return fit(spec, train, workdir, mesh=optim.fit_mesh(mesh), progress=False)


def test_fit_resumes_bitwise_and_equals_the_in_memory_driver(key, tmp_path):
    straight = fit_masha(key, tmp_path / "straight", 4)
    halfway = fit_masha(key, tmp_path / "resumed", 2)
    with pytest.raises(ConfigError, match="num_steps=4 of its spec"):  # a record read before the fit has finished
        optim.trajectory(halfway)
    resumed = fit_masha(key, tmp_path / "resumed", 4)
    assert resumed.origin == "checkpoint" and resumed.timing["start_step"] == 2
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rows = [(tmp_path / name / "metrics.jsonl").read_text().splitlines() for name in ("straight", "resumed")]
    assert rows[0] == rows[1] and len(rows[0]) == 4 * 2
    record = optim.trajectory(straight)
    assert np.isfinite(record.relative_error).all() and record.relative_error.shape == (2, 5)
    logged = np.asarray([[json.loads(r)["uplink/floats"] for r in rows[0][m::2]] for m in range(2)])
    np.testing.assert_array_equal(logged, record.floats[:, 1:])  # uplink floats reach metrics.jsonl
    problems, solutions, gammas = game(key)
    reference = optim.run(optim.Masha2(2, 0.5), problems, solutions, jnp.zeros_like(solutions),
                          jax.random.split(jax.random.fold_in(key, 1), 2), gammas, num_steps=4,
                          mesh=optim.worker_mesh(WORKERS, 4))
    np.testing.assert_array_equal(record.relative_error, reference.relative_error)
    np.testing.assert_array_equal(record.floats, reference.floats)
    np.testing.assert_array_equal(record.final, reference.final)
    chunked = optim.trajectory(fit_masha(key, tmp_path / "chunked", 2, chunk=3))  # iterations 1-3, then 4 (of 6)
    for a, b in zip(chunked, reference, strict=True):
        np.testing.assert_array_equal(a, b)
    other = fit_masha(jax.random.fold_in(key, 7), tmp_path / "other", 4)  # negative control: other problems, keys
    assert not np.allclose(optim.trajectory(other).relative_error, record.relative_error)


def test_similar_workers_have_the_mean_operators_lipschitz_constant(key):
    """`spread`: B_m = B + s E_m; s = 0 gives identical workers (every ||A_m|| = L), s = 0.1 keeps them within a
    few percent of L; independent workers (the default) are ~sqrt(M) L (negative control)."""
    def worker_over_mean(spread):
        _, _, lipschitz, workers = optim.bilinear_games(key, 2, 10, 20, 20, 0.1, spread)
        return np.asarray(workers).mean(1) / np.asarray(lipschitz)

    same = optim.make_bilinear_game(key, 3, 4, 4, 0.1, spread=0.0)
    np.testing.assert_allclose(same.matrices, jnp.broadcast_to(same.matrices[:1], same.matrices.shape), atol=1e-6)
    np.testing.assert_allclose(worker_over_mean(0.0), 1.0, rtol=1e-5)
    assert np.all(np.abs(worker_over_mean(0.1) - 1.0) < 0.05)
    assert np.all(worker_over_mean(None) > 2.0)
    with pytest.raises(ConfigError):
        optim.make_bilinear_game(key, 3, 4, 4, 0.1, spread=-1.0)
