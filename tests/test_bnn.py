"""Mean-field Bayesian layers and SSVI (`gvlab.bayes`) against mathematics.

1. The layer's KL equals the closed form KL(N(mu, s^2) || N(0, sp^2)) summed over the active entries (a wrong prior
   scale does not); local reparameterisation has the mean x mu + b and variance x^2 s^2 (+1e-8) over many draws.
2. Bayesian linear regression (known noise s2, prior N(0, sp2 I)): the mean-field Gaussian maximising the exact
   ELBO has the exact posterior mean (X^T X / s2 + I / sp2)^{-1} X^T y / s2 and variances 1 / diag(precision).
3. SSVI keeps exactly k non-zeros per layer after every support update, does update, and a fit resumed in the
   middle of its support schedule equals a straight fit bitwise.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import DataSource, Spec, TrainConfig, fit
from gvlab.bayes import layers, mlp, ssvi
from gvlab.train.parallel import data_mesh
from gvlab.train.step import init_state


def test_kl_matches_the_closed_form_over_the_active_entries():
    mu = jax.random.normal(jax.random.key(0), (4, 3))
    rho = jax.random.normal(jax.random.key(1), (4, 3)) - 2.0
    mask = jax.random.bernoulli(jax.random.key(2), 0.5, (4, 3))
    params = {"mu": mu, "rho": rho, "bias": jnp.zeros((3,))}
    s, m, keep = np.log1p(np.exp(np.asarray(rho, np.float64))), np.asarray(mu, np.float64), np.asarray(mask)
    sp = 0.3
    closed = np.log(sp / s) + (s**2 + m**2) / (2 * sp**2) - 0.5
    np.testing.assert_allclose(layers.kl_to_prior(params, sp, mask), closed[keep].sum(), rtol=1e-5)
    np.testing.assert_allclose(layers.kl_to_prior(params, sp), closed.sum(), rtol=1e-5)
    assert abs(float(layers.kl_to_prior(params, 0.5, mask)) - closed[keep].sum()) > 1.0  # wrong prior scale
    # inverse_softplus is softplus's inverse over the scales used (1e-4 ... 10).
    y = jnp.array([1e-4, 6e-4, 0.1, 1.0, 10.0])
    np.testing.assert_allclose(jax.nn.softplus(layers.inverse_softplus(y)), y, rtol=1e-5)


def test_local_reparameterisation_has_the_output_moments_of_the_weight_posterior():
    params = layers.init_dense(jax.random.key(0), 5, 3, init_std=0.5)
    params = {**params, "rho": params["rho"] + jax.random.normal(jax.random.key(1), (5, 3)),
              "bias": jnp.array([0.5, -1.0, 2.0])}
    mask = jnp.ones((5, 3)).at[0, 1].set(0.0).at[2, 2].set(0.0)
    x = jax.random.normal(jax.random.key(2), (2, 5))
    n = 20000
    draws_NxBxO = jax.vmap(lambda k: layers.dense(params, x, k, mask))(jax.random.split(jax.random.key(3), n))
    mean_IxO, var_IxO = np.asarray(params["mu"] * mask), np.asarray(jax.nn.softplus(params["rho"]) ** 2 * mask)
    mean = np.asarray(x) @ mean_IxO + np.asarray(params["bias"])
    var = np.asarray(x) ** 2 @ var_IxO + 1e-8
    # Monte Carlo tolerance: 5 standard errors, sqrt(var / n) for the mean and sqrt(2 / n) relative for the variance.
    np.testing.assert_array_less(np.abs(draws_NxBxO.mean(0) - mean), 5 * np.sqrt(var / n))
    np.testing.assert_array_less(np.abs(draws_NxBxO.var(0) / var - 1), 5 * np.sqrt(2 / n))
    # Negative control: the unmasked layer's variance is outside that band somewhere.
    unmasked = np.asarray(x) ** 2 @ np.asarray(jax.nn.softplus(params["rho"]) ** 2) + 1e-8
    assert np.max(np.abs(draws_NxBxO.var(0) / unmasked - 1)) > 5 * np.sqrt(2 / n)
    np.testing.assert_allclose(layers.dense(params, x, None, mask), mean, rtol=1e-5, atol=1e-6)  # key=None: mean


def test_mean_field_regression_finds_the_exact_posterior_mean():
    n, d, noise_var, prior_std = 40, 3, 0.25, 1.0
    x = jax.random.normal(jax.random.key(0), (n, d)) * jnp.array([[1.0, 0.5, 2.0]])
    x = x.at[:, 1].add(0.8 * x[:, 0])  # correlated features: the mean-field mean is still exact
    y = x @ jnp.array([1.0, -2.0, 0.5]) + jnp.sqrt(noise_var) * jax.random.normal(jax.random.key(1), (n,))
    gram = x.T @ x

    def negative_elbo(params):
        # E_q log N(y | X w, s2) in closed form: -(|y - X m|^2 + sum_j (X^T X)_jj s_j^2) / (2 s2) + const.
        m, s2 = params["mu"][:, 0], jax.nn.softplus(params["rho"][:, 0]) ** 2
        expected_sq = jnp.sum((y - x @ m) ** 2) + jnp.sum(jnp.diag(gram) * s2)
        return expected_sq / (2 * noise_var) + layers.kl_to_prior(params, prior_std)

    tx = optax.adam(0.05)

    def update(carry, _):
        params, opt_state = carry
        grads = jax.grad(negative_elbo)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state), None

    params = layers.init_dense(jax.random.key(2), d, 1, init_std=0.5)
    (params, _), _ = jax.lax.scan(update, (params, tx.init(params)), None, length=1500)
    precision = np.asarray(gram, np.float64) / noise_var + np.eye(d) / prior_std**2
    exact_mean = np.linalg.solve(precision, np.asarray(x.T @ y, np.float64) / noise_var)
    # Tolerance 1e-3 absolute: float32 Adam to its fixed point; the posterior sd is ~0.05, the mean O(1).
    np.testing.assert_allclose(params["mu"][:, 0], exact_mean, atol=1e-3)
    np.testing.assert_allclose(jax.nn.softplus(params["rho"][:, 0]) ** 2, 1 / np.diag(precision), rtol=1e-2)
    assert np.max(np.abs(exact_mean)) > 0.4  # negative control: the prior mean (0) is far from it


def _digits_like(num: int = 32, dim: int = 12, classes: int = 3) -> dict:
    """Linearly separable toy classes: a class-specific mean plus noise."""
    y = jnp.arange(num, dtype=jnp.int32) % classes
    centres = jax.random.normal(jax.random.key(10), (classes, dim))
    return {"x": centres[y] + 0.3 * jax.random.normal(jax.random.key(11), (num, dim)), "y": y}


SSVI = ssvi.Config(model=mlp.Config(hidden=(16,), num_classes=3, num_data=32, init_std=0.05), density=0.25,
                   update_every=2, t_end=12, drop_fraction=0.5, criterion="snr")


def test_ssvi_keeps_exactly_k_nonzeros_after_every_support_update():
    batch, tx = _digits_like(), optax.adam(1e-2)
    method = ssvi.make(SSVI)
    state = init_state(method, tx, jax.random.key(0), batch)
    step = jax.jit(method.make_step(tx))
    sizes = {name: ssvi.support_size(p["mu"].shape, SSVI.density) for name, p in state.params.items()}
    start = jax.device_get(state.extra["masks"])
    fractions, regrown = [], []
    for _ in range(12):
        state, metrics = step(state, batch, jax.random.key(1))
        fractions.append(float(metrics["ssvi/drop_fraction"]))
        regrown.append(int(metrics["ssvi/regrown"]))
        for name, mask in state.extra["masks"].items():
            assert int(mask.sum()) == sizes[name], (int(state.step), name)
            layer = state.params[name]
            assert not np.any(np.asarray(layer["mu"])[~np.asarray(mask)])  # off the support: exactly 0
            assert not np.any(np.asarray(layer["rho"])[~np.asarray(mask)])
        # The supports read back from the parameters (rho != 0) are the stored ones after every step.
        for name, mask in ssvi.support_of(state.params).items():
            np.testing.assert_array_equal(mask, state.extra["masks"][name])
    # Negative control: before the first step the parameters are dense (rho != 0 everywhere), the masks are not.
    initial = init_state(method, tx, jax.random.key(0), batch)
    assert all(bool(m.all()) for m in ssvi.support_of(initial.params).values())
    assert not all(bool(m.all()) for m in initial.extra["masks"].values())
    # Support updates after steps 2, 4, ..., 10 (t < t_end = 12), and they move the support.
    assert [f > 0 for f in fractions] == [t % 2 == 0 and t < 12 for t in range(1, 13)], fractions
    assert sum(regrown) > 0 and any(not np.array_equal(start[n], state.extra["masks"][n]) for n in start)
    # Optimiser moments are zero off the support.
    adam = state.opt_state[0]
    for name, mask in state.extra["masks"].items():
        assert not np.any(np.asarray(adam.mu[name]["mu"])[~np.asarray(mask)])
        assert not np.any(np.asarray(adam.nu[name]["rho"])[~np.asarray(mask)])


def test_support_update_ranks_by_score_and_growth_by_gradient():
    mask = jnp.array([True, True, True, True, False, False, False, False])
    keep = jnp.array([4.0, 1.0, 3.0, 2.0, 9.0, 9.0, 9.0, 9.0])  # inactive scores are ignored
    grow = jnp.array([0.0, 5.0, 0.0, 0.0, 0.1, 7.0, 0.2, 4.0])  # entry 1 (dropped now) may come back
    new = ssvi.update_support(mask, keep, grow, jnp.int32(2), size=4, max_drop=3)
    np.testing.assert_array_equal(new, [True, True, True, False, False, True, False, False])
    static = ssvi.update_support(mask, keep, grow, jnp.int32(0), size=4, max_drop=3)
    np.testing.assert_array_equal(static, mask)
    snr = ssvi.abs_theta_snr(jnp.array([0.0, 1.0, 3.0]), jnp.array([1.0, 1.0, 1.0]))
    # folded normal at mu = 0: E|theta| / sd|theta| = sqrt(2/pi) / sqrt(1 - 2/pi); increasing in |mu| / sigma.
    np.testing.assert_allclose(snr[0], np.sqrt(2 / np.pi) / np.sqrt(1 - 2 / np.pi), rtol=1e-5)
    assert snr[0] < snr[1] < snr[2]


def test_ssvi_resumed_mid_schedule_equals_a_straight_fit_bitwise(tmp_path):
    tx = optax.adam(1e-2)
    batch = _digits_like()
    method, traces = ssvi.make(SSVI), []

    def counted_make_step(optimizer):
        step = method.make_step(optimizer)

        def counted_step(state, batch, key):
            traces.append(1)
            return step(state, batch, key)

        return counted_step

    data = DataSource(batch, lambda arrays, key, step: arrays)
    spec = Spec(method=method._replace(make_step=counted_make_step), optimizer=tx, data=data)
    train = TrainConfig(steps=8, batch_size=32, log_every=1, ckpt_every=3)
    mesh = data_mesh(1)
    straight = fit(spec, train, mesh=mesh, progress=False)
    assert len(traces) == 1  # support updates included, the step compiles once (static shapes, lax.cond)
    fit(spec, TrainConfig(**{**train.__dict__, "steps": 3}), tmp_path, mesh=mesh, progress=False)
    resumed = fit(spec, train, tmp_path, mesh=mesh, progress=False)  # from step 3: updates at 4 and 6 follow
    assert resumed.timing["start_step"] == 3 and resumed.origin == "checkpoint"
    for a, b in zip(jax.tree.leaves(jax.device_get(straight.state)), jax.tree.leaves(jax.device_get(resumed.state)),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["ssvi/drop_fraction"] > 0 for r in straight.history.rows] == [t % 2 == 0 for t in range(1, 9)]
    assert sum(r["ssvi/regrown"] for r in straight.history.rows[3:]) > 0  # the resumed part moved the support
    def rows(result):
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in result.history.rows]

    assert rows(straight) == rows(resumed)


def test_predictive_metrics_flops_and_counts():
    cfg = mlp.Config(hidden=(8,), num_classes=3, num_data=32)
    batch = _digits_like()
    params = mlp.make(cfg).init(jax.random.key(0), batch)
    log_p = mlp.predictive_log_probs(params, batch["x"], jax.random.key(1), num_samples=4)
    np.testing.assert_allclose(jnp.exp(log_p).sum(-1), 1.0, rtol=1e-5)
    metrics = mlp.predictive_metrics(params, batch["x"], batch["y"], jax.random.key(1), num_samples=4)
    assert set(metrics) == {"accuracy", "nll", "ece"} and 0 <= float(metrics["ece"]) <= 1
    masks = ssvi.random_masks(jax.random.key(2), params, 0.25)
    counts = mlp.count_nonzeros(params, masks)
    assert int(counts["total"]) == ssvi.support_size((12, 8), 0.25) + ssvi.support_size((8, 3), 0.25) == 30
    assert mlp.count_nonzeros(params)["total"] == 12 * 8 + 8 * 3
    dense, sparse = (mlp.forward_flops([(12, 8), (8, 3)], nnz, batch_size=10) for nnz in ([96, 24], [24, 6]))
    assert dense["mean"] == 10 * (2 * 96 + 8 + 8) + 10 * (2 * 24 + 3)  # x mu + bias (+ ReLU on the hidden layer)
    assert sparse["sampled"] < dense["sampled"] and sparse["mean"] < dense["mean"]


def test_static_and_ssvi_members_of_one_fit_equal_their_own_fits():
    # Spec.args {"update": [0, 1], "criterion": [0, 1]}: member 0 a static mask, member 1 SSVI with |mu| removal,
    # one program; each equals its own fit (update_every=0; criterion="abs_mu") up to float rounding.
    batch = _digits_like()
    data = DataSource(batch, lambda arrays, key, step: arrays)
    train = TrainConfig(steps=6, batch_size=32, log_every=1)
    args = {"update": jnp.array([0, 1]), "criterion": jnp.array([0, ssvi.CRITERIA.index("abs_mu")])}
    joint = fit(Spec(ssvi.make(SSVI), optax.adam(1e-2), data, args=args), train, progress=False)
    alone = [fit(Spec(ssvi.make(cfg), optax.adam(1e-2), data), train, progress=False) for cfg in
             (dataclasses.replace(SSVI, update_every=0), dataclasses.replace(SSVI, criterion="abs_mu"))]
    masks = jax.device_get(joint.state.extra["masks"])
    for member, single in enumerate(alone):
        for name, mask in jax.device_get(single.state.extra["masks"]).items():
            np.testing.assert_array_equal(masks[name][member], mask[0])
        for a, b in zip(jax.tree.leaves(joint.member_params(member)), jax.tree.leaves(single.params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Negative control: the static member never moved its support, the SSVI member did.
    assert any(not np.array_equal(masks[n][1], masks[n][0]) for n in masks)
    assert sum(r["ssvi/regrown"] for r in joint.history.rows if r.get("member", 0) == 0) == 0
