"""SDE solving: diffrax equals the scan reference on the same increments; OU moments; Girsanov KL."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.sde.solve import brownian_increments, solve_sde, solve_sde_reference

THETA, SIGMA, DT, STEPS = 1.5, 0.7, 0.01, 200
ARGS = {"theta": jnp.float32(THETA), "sigma": jnp.float32(SIGMA)}


def ou_drift(t, y, args):
    return -args["theta"] * y


def ou_diffusion(t, y, args):
    return args["sigma"] * jnp.ones_like(y)


def shift_control(t, y, args):
    return jnp.full(y.shape[:1], 0.3, y.dtype)


def test_diffrax_equals_scan_reference_including_gradients(key):
    """Same increments, same Euler-Maruyama scheme: same path, same KL and same gradients (to float32 rounding)."""
    increments = brownian_increments(key, STEPS, DT, (3,))

    def both(args):
        kw = dict(t0=0.0, dt=DT, args=args, control=shift_control, save_every=10)
        return (solve_sde(ou_drift, ou_diffusion, jnp.ones(3), increments, **kw),
                solve_sde_reference(ou_drift, ou_diffusion, jnp.ones(3), increments, **kw))

    fast, ref = jax.jit(both)(ARGS)
    assert fast.ys.shape == ref.ys.shape == (21, 3) and not bool(fast.failed)
    np.testing.assert_allclose(fast.ys, ref.ys, atol=2e-5)
    np.testing.assert_allclose(fast.kl, ref.kl, rtol=1e-5)
    np.testing.assert_allclose(fast.ts, np.linspace(0, 2, 21), atol=1e-5)
    grads = jax.grad(lambda a: both(a)[0].ys[-1].sum())(ARGS), jax.grad(lambda a: both(a)[1].ys[-1].sum())(ARGS)
    for name in ARGS:
        np.testing.assert_allclose(grads[0][name], grads[1][name], rtol=1e-4)
    # Negative control: other increments give another path.
    other = solve_sde(ou_drift, ou_diffusion, jnp.ones(3), brownian_increments(jax.random.fold_in(key, 1), STEPS, DT,
                                                                                (3,)), t0=0.0, dt=DT, args=ARGS)
    assert not np.allclose(other.ys[-1], fast.ys[-1], atol=1e-2)


def test_ou_moments_match_closed_form(key):
    """dX = -theta X dt + sigma dW, X_0 = 1: E X_T = e^{-theta T}, Var X_T = sigma^2 (1 - e^{-2 theta T}) / (2 theta).

    Euler's own moments, (1 - theta dt)^N and sigma^2 dt sum_k (1 - theta dt)^{2k}, are the tight check (Monte-Carlo
    error only); the continuous ones differ by the O(dt) discretisation error.
    """
    num = 8000
    final = jax.jit(jax.vmap(lambda k: solve_sde(ou_drift, ou_diffusion, jnp.ones(1), brownian_increments(
        k, STEPS, DT, (1,)), t0=0.0, dt=DT, args=ARGS, save_every=STEPS).ys[-1, 0]))(jax.random.split(key, num))
    final = np.asarray(final, np.float64)
    decay = 1.0 - THETA * DT
    euler_mean, euler_var = decay**STEPS, SIGMA**2 * DT * (1 - decay ** (2 * STEPS)) / (1 - decay**2)
    T = STEPS * DT
    exact_mean, exact_var = np.exp(-THETA * T), SIGMA**2 * (1 - np.exp(-2 * THETA * T)) / (2 * THETA)
    mean_se, var_se = np.sqrt(euler_var / num), euler_var * np.sqrt(2 / (num - 1))
    assert abs(final.mean() - euler_mean) < 4 * mean_se
    assert abs(final.var() - euler_var) < 4 * var_se
    assert abs(euler_mean - exact_mean) < 0.01 and abs(euler_var - exact_var) / exact_var < 0.02
    # Negative control: the moments of an OU process with another theta are rejected at the same tolerance.
    other_var = SIGMA**2 * (1 - np.exp(-2 * 1.2 * T)) / (2 * 1.2)
    assert abs(final.var() - other_var) > 4 * var_se


def test_girsanov_kl_of_a_constant_shift(key):
    """A constant control u shifts the drift by sigma u; the path KL is 1/2 |u|^2 T exactly (Girsanov)."""
    increments = brownian_increments(key, STEPS, DT, (2,))
    u = jnp.array([0.3, -1.2])
    solution = solve_sde(lambda t, y, a: jnp.zeros_like(y), ou_diffusion, jnp.zeros(2), increments, t0=0.0, dt=DT,
                         args=ARGS, control=lambda t, y, a: u)
    T = STEPS * DT
    np.testing.assert_allclose(float(solution.kl[-1]), 0.5 * float(jnp.sum(u**2)) * T, rtol=1e-5)
    np.testing.assert_allclose(solution.kl, 0.5 * float(jnp.sum(u**2)) * np.asarray(solution.ts), rtol=1e-4,
                               atol=1e-6)
    # The shift itself: posterior minus prior path is sigma u t.
    prior = solve_sde(lambda t, y, a: jnp.zeros_like(y), ou_diffusion, jnp.zeros(2), increments, t0=0.0, dt=DT,
                      args=ARGS)
    np.testing.assert_allclose(solution.ys[-1] - prior.ys[-1], SIGMA * u * T, rtol=1e-4)
    assert float(prior.kl[-1]) == 0.0  # no control, no KL


def test_shared_noise_counts_each_brownian_motion_once(key):
    """One W drives a state variable and K copies (noise_to_state broadcasts); the KL uses the noise's u only."""
    num_copies = 4
    increments = brownian_increments(key, STEPS, DT, (2,))
    to_state = lambda dw: jnp.broadcast_to(dw[:, None], (2, num_copies))  # noqa: E731
    u = jnp.array([0.5, 0.1])
    shared = solve_sde(lambda t, y, a: jnp.zeros_like(y), lambda t, y, a: jnp.ones_like(y), jnp.zeros((2, num_copies)),
                       increments, t0=0.0, dt=DT, control=lambda t, y, a: u, noise_to_state=to_state)
    final = np.asarray(shared.ys[-1])
    np.testing.assert_allclose(final, np.broadcast_to(final[:, :1], final.shape), atol=1e-6)  # copies move together
    np.testing.assert_allclose(float(shared.kl[-1]), 0.5 * float(jnp.sum(u**2)) * STEPS * DT, rtol=1e-5)


def test_save_every_must_divide_the_steps(key):
    with pytest.raises(ValueError, match="multiple of save_every"):
        solve_sde(ou_drift, ou_diffusion, jnp.ones(1), brownian_increments(key, 10, DT, (1,)), t0=0.0, dt=DT,
                  args=ARGS, save_every=3)


def _host_callbacks(closed_jaxpr) -> int:
    """Number of host-callback primitives anywhere in a jaxpr (sub-jaxprs of scans, conds, custom rules included)."""
    count = 0
    stack = [closed_jaxpr.jaxpr]
    while stack:
        jaxpr = stack.pop()
        for eqn in jaxpr.eqns:
            count += "callback" in eqn.primitive.name
            for value in eqn.params.values():
                for item in value if isinstance(value, (list, tuple)) else [value]:
                    inner = getattr(item, "jaxpr", item)
                    if hasattr(inner, "eqns"):
                        stack.append(inner)
    return count


def test_a_solve_from_a_traced_start_has_no_host_callback(key):
    """With a traced t0 and dt (a segment inside a scan, a learned step) the program has no host callback, so the
    persistent compilation cache can store it; diffrax called directly on those times inserts one (control)."""
    import diffrax

    increments = brownian_increments(key, 8, 0.1, (2,))
    drift = lambda t, y, args: -y  # noqa: E731
    diffusion = lambda t, y, args: jnp.ones_like(y)  # noqa: E731

    def ours(t0, dt):
        return solve_sde(drift, diffusion, jnp.ones(2), increments, t0=t0, dt=dt).ys

    def direct(t0, dt):
        term = diffrax.ODETerm(drift)
        return diffrax.diffeqsolve(term, diffrax.Euler(), t0=t0, t1=t0 + 8 * dt, dt0=dt, y0=jnp.ones(2),
                                   saveat=diffrax.SaveAt(t1=True), throw=False).ys

    assert _host_callbacks(jax.make_jaxpr(ours)(0.5, 0.1)) == 0
    assert _host_callbacks(jax.make_jaxpr(direct)(0.5, 0.1)) > 0


@pytest.mark.parametrize("solve", [solve_sde, solve_sde_reference])
def test_a_noise_shape_that_would_share_one_brownian_motion_is_rejected(key, solve):
    """Increments `[N, 1]` or `[N]` for a state `[3]` would broadcast one Brownian motion over the three components:
    ValueError naming the expected `[N, *y0.shape]`, at trace time (also under jit and vmap); `[N, 3]` and a
    `noise_to_state` that maps the noise to the state's shape still work (negative controls). Shapes only."""

    def run(increments, y0=jnp.ones(3), **kw):
        return solve(ou_drift, ou_diffusion, y0, increments, t0=0.0, dt=DT, args=ARGS, **kw).ys

    expected = r"expected increments of shape \[N, \*y0.shape\] = \(10, 3\) for diagonal noise"
    for noise_shape in [(1,), ()]:
        increments = brownian_increments(key, 10, DT, noise_shape)
        for apply in (run, jax.jit(run)):
            with pytest.raises(ValueError, match=expected):
                jax.eval_shape(apply, increments)
        with pytest.raises(ValueError, match=r"\[N, \*y0.shape\] = \(10, 3\)"):
            jax.eval_shape(jax.vmap(run), jnp.stack([increments, increments]), jnp.ones((2, 3)))
    assert jax.eval_shape(run, brownian_increments(key, 10, DT, (3,))).shape == (11, 3)
    # Shared noise by design: one increment per row drives both columns, through a noise_to_state of the state's
    # shape; mapping to another shape is the same error.
    shared = lambda dw: jnp.broadcast_to(dw[:, None], (3, 2))  # noqa: E731
    assert jax.eval_shape(lambda i: run(i, jnp.ones((3, 2)), noise_to_state=shared),
                          brownian_increments(key, 10, DT, (3,))).shape == (11, 3, 2)
    with pytest.raises(ValueError, match=r"mapped by noise_to_state to shape \(3, 2\), but the state y0 has shape "
                                         r"\(3, 4\)"):
        jax.eval_shape(lambda i: run(i, jnp.ones((3, 4)), noise_to_state=shared), brownian_increments(key, 10, DT, (3,)))


@pytest.mark.parametrize("solve", [solve_sde, solve_sde_reference])
def test_diffusion_and_control_of_the_wrong_shape_are_rejected(key, solve):
    """A diffusion must broadcast to the state without growing it and a control must have the noise's shape (its
    |u|^2 is the KL of each Brownian motion once); a scalar diffusion and a `[3]` control work (negative controls)."""
    increments = brownian_increments(key, 10, DT, (3,))

    def run(diffusion, control=None):
        return jax.eval_shape(lambda i: solve(ou_drift, diffusion, jnp.ones(3), i, t0=0.0, dt=DT, args=ARGS,
                                              control=control).ys, increments)

    with pytest.raises(ValueError, match=r"the diffusion returns shape \(3, 1\), expected the state's shape \(3,\)"):
        run(lambda t, y, a: jnp.ones((3, 1)))
    with pytest.raises(ValueError, match=r"the control returns shape \(\), expected the noise shape \(3,\)"):
        run(ou_diffusion, lambda t, y, a: jnp.zeros(()))
    assert run(lambda t, y, a: a["sigma"]).shape == run(ou_diffusion, shift_control).shape == (11, 3)
