"""SDEs driven by Markov-approximate fractional Brownian motion (MA-fBM; Daems et al., ICLR 2024, Sec. 3-4).

fBM is approximated by K Ornstein-Uhlenbeck processes that share one Brownian motion W (Eq. 7):

    B^H_t ~ sum_k omega_k (Y^k_t - Y^k_0),     dY^k_t = -gamma_k Y^k_t dt + dW_t,

so an SDE driven by fractional noise, dX = b(X, t) dt + s(X, t) dB^H, becomes a Markov system in Z = (X, Y^1..K)
driven by W alone (Eq. 9):

    dY^k = (-gamma_k Y^k + u) dt + dW,
    dX   = b dt + s sum_k omega_k dY^k = [b + s sum_k omega_k (-gamma_k Y^k + u)] dt + s (sum_k omega_k) dW.

The prior has u = 0; the variational posterior adds a control u(t, Z) to the driving noise (the same u for every
k), and Girsanov's theorem gives the path KL 1/2 int |u|^2 dt (Eq. 11), accumulated by `gvlab.sde.solve`. The
ELBO of observations o_i at times t_i is (Eq. 12)

    log p(o) >= E_Q[ sum_i log p(o_i | X_{t_i}) ] - E_Q[ 1/2 int |u|^2 dt ] - KL(q(X_0) || p(X_0)).

State layout: one example's state is `[D, 1 + K]`, column 0 is X and columns 1..K the Y^k of each of the D
dimensions (each dimension has its own W). Type I starts Y_0 from the stationary law N(0, C), C_ij = 1/(g_i + g_j);
type II and plain Brownian motion (`brownian_coefficients`: gamma = [0], omega = [1]) start from Y_0 = 0.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from gvlab.sde.solve import SDESolution, brownian_increments, solve_sde, solve_sde_reference

Kind = Literal["type1", "type2"]


def brownian_coefficients(dtype=jnp.float32) -> tuple[Array, Array]:
    """gamma = [0], omega = [1]: B^H reduces to W itself (the Brownian-motion model, H = 1/2)."""
    return jnp.zeros((1,), dtype), jnp.ones((1,), dtype)


def noise_to_state(dw: Float[Array, "D"], num_terms: int) -> Float[Array, "D K1"]:
    """One Brownian increment per dimension drives X and all K OU processes of that dimension."""
    return jnp.broadcast_to(dw[:, None], (dw.shape[0], num_terms + 1))


def stationary_cholesky(gammas: Float[Array, "K"]) -> Float[Array, "K K"]:
    """L with L L^T = C + 1e-6 I, C_ij = 1/(gamma_i + gamma_j): the stationary covariance of the K OU processes."""
    cov = 1.0 / (gammas[:, None] + gammas[None, :])
    # A tiny jitter: C is a Cauchy matrix, positive definite but badly conditioned for wide gamma grids.
    return jnp.linalg.cholesky(cov + 1e-6 * jnp.eye(gammas.shape[0], dtype=cov.dtype))


def initial_state(key: PRNGKeyArray, x0: Float[Array, "D"], gammas: Float[Array, "K"], kind: Kind
                  ) -> Float[Array, "D K1"]:
    """Z_0 = (x0, Y_0): Y_0 ~ N(0, C) per dimension for type I (stationary OU start), Y_0 = 0 for type II."""
    dim, num_terms = x0.shape[0], gammas.shape[0]
    if kind == "type2":
        y0 = jnp.zeros((dim, num_terms), x0.dtype)
    elif kind == "type1":
        y0 = jax.random.normal(key, (dim, num_terms), x0.dtype) @ stationary_cholesky(gammas).T
    else:
        raise ValueError(f"kind must be 'type1' or 'type2', got {kind!r}")
    return jnp.concatenate([x0[:, None], y0], axis=1)


def fractional_fields(drift: Callable, diffusion: Callable, control: Callable | None = None):
    """Drift, diffusion and control of the augmented system for `gvlab.sde.solve.solve_sde`.

    Args:
        drift: b(t, x [D], params) -> [D].
        diffusion: s(t, x [D], params) -> [D] (elementwise scale of the fractional noise).
        control: u(t, z [D, 1+K], params) -> [D], or None for the prior.

    Returns:
        `(f, g, u)` taking `args = (params, gammas, omegas)`, so gradients reach omega (and through it H).
    """

    def f(t, z, args):
        params, gammas, omegas = args
        x, y = z[:, 0], z[:, 1:]
        scale = diffusion(t, x, params)
        # b - s sum_k omega_k gamma_k Y^k for X; -gamma_k Y^k for each Y^k.
        dx = drift(t, x, params) - scale * (y @ (omegas * gammas))
        return jnp.concatenate([dx[:, None], -y * gammas[None, :]], axis=1)

    def g(t, z, args):
        params, _, omegas = args
        scale = diffusion(t, z[:, 0], params)
        return jnp.concatenate([(scale * jnp.sum(omegas))[:, None], jnp.ones_like(z[:, 1:])], axis=1)

    u = None
    if control is not None:
        def u(t, z, args):
            return control(t, z, args[0])

    return f, g, u


def solve_fractional(key: PRNGKeyArray, x0: Float[Array, "D"], increments: Float[Array, "N D"], *,
                     gammas: Float[Array, "K"], omegas: Float[Array, "K"], kind: Kind, drift: Callable,
                     diffusion: Callable, params: Any = None, control: Callable | None = None, t0: float = 0.0,
                     dt: float, save_every: int = 1, solver: Literal["diffrax", "scan"] = "diffrax") -> SDESolution:
    """Sample one path of the prior (control=None) or of the controlled posterior, with its path KL.

    `key` draws Y_0 (type I); the Brownian increments are given. `solver="scan"` uses the `lax.scan`
    Euler-Maruyama reference instead of diffrax (same numbers; see `gvlab.sde.solve`). Returns an `SDESolution`
    whose `ys` are `[S, D, 1 + K]` (X is `ys[:, :, 0]`).
    """
    f, g, u = fractional_fields(drift, diffusion, control)
    num_terms = gammas.shape[0]
    z0 = initial_state(key, x0, gammas, kind)
    solve = {"diffrax": solve_sde, "scan": solve_sde_reference}[solver]
    return solve(f, g, z0, increments, t0=t0, dt=dt, args=(params, gammas, omegas), control=u,
                 noise_to_state=lambda dw: noise_to_state(dw, num_terms), save_every=save_every)


@functools.partial(jax.jit, static_argnames=("num_paths", "kind", "num_steps", "dt", "save_every", "solver"))
def sample_paths(key: PRNGKeyArray, gammas: Float[Array, "K"], omegas: Float[Array, "K"], *, num_paths: int,
                 kind: Kind, num_steps: int, dt: float, save_every: int = 1,
                 solver: Literal["diffrax", "scan"] = "diffrax") -> Float[Array, "P S"]:
    """`num_paths` simulated paths of the MA-fBM B̂^H itself (dX = dB̂^H, X_0 = 0), saved every `save_every` steps.

    Path p uses `split(key, num_paths)[p]`, split again into its Y_0 key and its Brownian increments. Returns X
    at t = k save_every dt for k = 1..num_steps / save_every (t = 0 dropped): `[num_paths, S]`.
    """

    def one(path_key):
        y0_key, noise_key = jax.random.split(path_key)
        path = solve_fractional(y0_key, jnp.zeros((1,)), brownian_increments(noise_key, num_steps, dt, (1,)),
                                gammas=gammas, omegas=omegas, kind=kind, drift=lambda t, x, p: jnp.zeros_like(x),
                                diffusion=lambda t, x, p: jnp.ones_like(x), dt=dt, save_every=save_every,
                                solver=solver)
        return path.ys[1:, 0, 0]

    return jax.vmap(one)(jax.random.split(key, num_paths))


class SegmentedSolution(NamedTuple):
    """Output of `solve_fractional_segments` (and `solve_fractional_observed`).

    Attributes:
        zs: the state at the end of each segment, `[M, D, 1 + K]` (X is `zs[:, :, 0]`).
        log_lik: what the last steps return summed (`solve_fractional_observed`: sum_i log N(o_i; a_i, v_i)).
        kl: KL of the posterior steps to the prior's: 1/2 u^2 dt per controlled step plus the last steps' KLs.
        failed: True if any diffrax segment did not finish.

    The bound is `log_lik - kl` (plus whatever likelihood the caller computes on `zs`).
    """

    zs: Float[Array, "M D K1"]
    log_lik: Float[Array, ""]
    kl: Float[Array, ""]
    failed: Bool[Array, ""]



def solve_fractional_segments(key: PRNGKeyArray, x0: Float[Array, "D"], increments: Float[Array, "N D"],
                              segment_inputs: Any, last_step: Callable, *, gammas: Float[Array, "K"],
                              omegas: Float[Array, "K"], kind: Kind, drift: Callable, diffusion: Callable,
                              params: Any = None, control: Callable | None = None, dt: float,
                              solver: Literal["diffrax", "scan"] = "diffrax") -> SegmentedSolution:
    """The controlled system of `solve_fractional` in M equal segments whose last Euler steps are special.

    The N steps form M segments of m = N / M (M = the leading size of `segment_inputs`). The first m - 1 steps of
    each are controlled Euler steps (KL 1/2 u^2 dt each); the last one, from Z at time t, is
    `last_step(t, z, a, coupling, dw, inputs, args) -> (z_next, log_lik, kl)` with a = Z + f dt the prior's mean,
    `coupling` `[D, 1 + K]` the factor of the increment in each component (s sum omega for X, 1 for each Y^k;
    the prior step is Z' = a + coupling dW), `dw` the pre-sampled N(0, dt) increment `[D]` and `inputs` the
    segment's slice of `segment_inputs`. This is where a posterior may change the step's *variance*, which no
    drift control can: the noise of the step into an observation lands on the observed state unchanged.
    """
    num_steps, dim = increments.shape
    num_segments = jax.tree.leaves(segment_inputs)[0].shape[0]
    if num_steps % num_segments:
        raise ValueError(f"{num_steps} steps cannot be split into {num_segments} equal segments")
    per_segment = num_steps // num_segments
    f, g, u = fractional_fields(drift, diffusion, control)
    num_terms = gammas.shape[0]
    args = (params, gammas, omegas)
    solve = {"diffrax": solve_sde, "scan": solve_sde_reference}[solver]

    def segment(carry, inputs):
        z, kl, failed = carry
        index, dws, extra = inputs
        t_last = (index * per_segment + per_segment - 1) * dt
        if per_segment > 1:
            sol = solve(f, g, z, dws[:-1], t0=index * per_segment * dt, dt=dt, args=args, control=u,
                        noise_to_state=lambda dw: noise_to_state(dw, num_terms), save_every=per_segment - 1)
            z, kl, failed = sol.ys[-1], kl + sol.kl[-1], failed | sol.failed
        a = z + f(t_last, z, args) * dt
        z, log_lik, step_kl = last_step(t_last, z, a, g(t_last, z, args), dws[-1], extra, args)
        return (z, kl + step_kl, failed), (z, log_lik)

    z0 = initial_state(key, x0, gammas, kind)
    zero = jnp.zeros((), increments.dtype)
    (_, kl, failed), (zs, log_liks) = jax.lax.scan(
        segment, (z0, zero, jnp.zeros((), bool)),
        (jnp.arange(num_segments), increments.reshape(num_segments, per_segment, dim), segment_inputs))
    return SegmentedSolution(zs=zs, log_lik=jnp.sum(log_liks), kl=kl, failed=failed)


def solve_fractional_observed(key: PRNGKeyArray, x0: Float[Array, "D"], increments: Float[Array, "N D"],
                              observations: Float[Array, "M D"], obs_noise: float, **kwargs) -> SegmentedSolution:
    """The posterior of `solve_fractional` with the Euler step that ends at each observation made exact.

    Observation i is o_i = X_{t_i} + N(0, sigma^2 I) at t_i = (i + 1) m dt, m = N / M steps per observation.
    The first m - 1 steps of each interval are controlled Euler steps (KL 1/2 u^2 dt each). On the last one,
    X' = a + c dW with a = X + f dt and c = s sum_k omega_k, and no drift control can remove the variance c^2 dt
    that lands on the observed X'. So that step draws its increment from the exact conditional of the prior step
    given o_i (Gaussian conjugacy):

        dW | o ~ N(c dt r / v, dt sigma^2 / v),   r = o - a,   v = sigma^2 + c^2 dt,

    (the same dW moves the Y^k, as in the prior), for which E_q[log N(o; X', sigma^2)] - KL(q(dW) || N(0, dt))
    = log N(o; a, v) exactly. The bound log p(o) >= E_q[sum_i log N(o_i; a_i, v_i) - KL] stays valid, and it no
    longer charges the posterior c^2 dt / (2 sigma^2) per observation, a cost that grows with the effective
    diffusion c (2.1 for H = 0.3, 1 for 1/2, 0.37 for 0.7 on the default grid) and so biases a learned H upwards.
    Diagonal noise only: X of each dimension is observed with its own noise, `increments` are `[N, D]`. The
    keyword arguments are those of `solve_fractional_segments`.
    """
    noise_variance = jnp.asarray(obs_noise, increments.dtype) ** 2
    dt = kwargs["dt"]

    def conditioned_step(t, z, a, coupling, dw, obs, args):
        c = coupling[:, 0]
        v = noise_variance + jnp.square(c) * dt
        r = obs - a[:, 0]
        log_lik = jnp.sum(-0.5 * (jnp.log(2 * jnp.pi * v) + jnp.square(r) / v))
        dw = c * dt * r / v + jnp.sqrt(noise_variance / v) * dw
        return a + coupling * dw[:, None], log_lik, jnp.zeros((), a.dtype)

    return solve_fractional_segments(key, x0, increments, observations, conditioned_step, **kwargs)


def rescaled_step(posterior_step: Callable, dt: float) -> Callable:
    """A learned last step for `solve_fractional_segments`: q(dW) = N(u dt, rho^2 dt) per dimension.

    `posterior_step(t, z, params) -> (u, log rho)`, each `[D]`, in one call (one network evaluation): u is the
    control as in the other steps, rho lets the posterior narrow the step into an observation that its
    likelihood pins down (for a non-Gaussian likelihood, where `solve_fractional_observed`'s exact conditional is
    not available). KL(q || N(0, dt)) = sum_d [rho^2 + u^2 dt - 1 - 2 log rho] / 2 (the Girsanov term 1/2 u^2 dt
    plus the variance change).
    """

    def step(t, z, a, coupling, dw, inputs, args):
        u, log_rho = posterior_step(t, z, args[0])
        shift = u * dt
        dw_q = shift + jnp.exp(log_rho) * dw
        kl = 0.5 * jnp.sum(jnp.exp(2 * log_rho) + jnp.square(shift) / dt - 1.0 - 2 * log_rho)
        return a + coupling * dw_q[:, None], jnp.zeros((), a.dtype), kl

    return step


class SmoothingControl(NamedTuple):
    """The exact smoothing posterior of a linear MA-fBM system given its observations (`smoothing_control`).

    The posterior increment of the Euler step from z_n is dW ~ N(u_n(z) dt, r_n dt) per dimension, with
    u_n(z) = offset[n] + sum_j gain[n, :, j] z[:, j].

    Attributes:
        offset: `[N, D]`.
        gain: `[N, D, 1 + K]`.
        variance_ratio: r_n = 1 / (1 + dt g^T P_{n+1} g), `[N, D]`.
        precision0, info0: the backward message on z_0, `[D, 1 + K, 1 + K]` and `[D, 1 + K]`.
    """

    offset: Float[Array, "N D"]
    gain: Float[Array, "N D K1"]
    variance_ratio: Float[Array, "N D"]
    precision0: Float[Array, "D K1 K1"]
    info0: Float[Array, "D K1"]


def linear_system(gammas: Float[Array, "K"], omegas: Float[Array, "K"], scale: Float[Array, ""], theta: float,
                  dt: float, dtype=jnp.float32) -> tuple[Array, Array]:
    """F = I + A dt and g of one dimension's Euler step z' = F z + g dW (`fractional_fields` with b = -theta X and
    a constant scale s): row X of A is (-theta, -s omega_k gamma_k), rows Y^k are -gamma_k; g = (s sum omega, 1..1)."""
    num_terms = gammas.shape[0]
    size = 1 + num_terms
    matrix = jnp.zeros((size, size), dtype)
    matrix = matrix.at[0, 0].set(-theta).at[0, 1:].set(-scale * omegas * gammas)
    matrix = matrix.at[1:, 1:].set(-jnp.diag(gammas))
    coupling = jnp.concatenate([jnp.reshape(scale * jnp.sum(omegas), (1,)), jnp.ones((num_terms,))]).astype(dtype)
    return jnp.eye(size, dtype=dtype) + matrix * dt, coupling


def smoothing_control(observations: Float[Array, "M D"], obs_noise: float | Array, *, gammas: Float[Array, "K"],
                      omegas: Float[Array, "K"], scale: Float[Array, ""], theta: float, num_steps: int,
                      dt: float) -> SmoothingControl:
    """The exact posterior of the Euler-discretised linear system given all observations, step by step.

    Per dimension the prior step is z' = F z + g dW (`linear_system`) and o_i = X at step (i + 1) N / M plus
    N(0, sigma^2) (`obs_noise` sigma: a number, or one per observation `[M, D]`). A backward information filter (the Kalman smoother's backward pass) gives
    beta_n(z) = p(o_{future} | z_n = z) = exp(-z^T P_n z / 2 + h_n^T z + const): at an observation
    P += e e^T / sigma^2, h += e o / sigma^2, and over a step (a Gaussian integral over dW, rank one, no inversion)

        P_n = F^T P F - dt F^T P g g^T P F / (1 + dt g^T P g),   h_n = F^T h - dt F^T P g g^T h / (1 + dt g^T P g)

    with (P, h) those of z_{n+1}. The posterior of dW given z_n is then N(u_n dt, r_n dt) with
    u_n(z) = g^T (h - P F z) / (1 + dt g^T P g) and r_n = 1 / (1 + dt g^T P g): a drift control affine in (X, Y),
    gains set by the time to the observations and an offset linear in all future observations (Rauch, Tung &
    Striebel 1965; information form). Differentiable in omega, gamma and s.
    """
    num_obs, dim = observations.shape
    per_obs = num_steps // num_obs
    transition, coupling = linear_system(gammas, omegas, scale, theta, dt, observations.dtype)
    size = coupling.shape[0]
    unit = jnp.zeros((size,), observations.dtype).at[0].set(1.0)
    noise_MxD = jnp.broadcast_to(jnp.asarray(obs_noise, observations.dtype), observations.shape)

    def one_dimension(obs_M, noise_M):
        def backward(carry, n):
            precision, info = carry  # the message on z_{n+1}
            pg = precision @ coupling
            denominator = 1.0 + dt * coupling @ pg
            offset = coupling @ info / denominator
            gain = -(pg @ transition) / denominator
            fpg = transition.T @ pg
            precision = transition.T @ precision @ transition - dt * jnp.outer(fpg, fpg) / denominator
            info = transition.T @ info - dt * fpg * (coupling @ info) / denominator
            observed = (n % per_obs == 0) & (n > 0)  # z_n is observed (o_{n / per_obs - 1})
            i = jnp.maximum(n // per_obs - 1, 0)
            weight = jnp.where(observed, 1.0 / noise_M[i] ** 2, 0.0)
            precision = precision + weight * jnp.outer(unit, unit)
            info = info + weight * obs_M[i] * unit
            return (precision, info), (offset, gain, 1.0 / denominator)

        last = 1.0 / noise_M[-1] ** 2  # z_N carries the last observation
        start = (last * jnp.outer(unit, unit), last * obs_M[-1] * unit)
        (precision0, info0), (offset, gain, ratio) = jax.lax.scan(backward, start, jnp.arange(num_steps - 1, -1, -1))
        return offset[::-1], gain[::-1], ratio[::-1], precision0, info0

    return SmoothingControl(*jax.vmap(one_dimension, in_axes=1, out_axes=(1, 1, 1, 0, 0))(observations, noise_MxD))


def solve_fractional_smoothed(key: PRNGKeyArray, x0: Float[Array, "D"], increments: Float[Array, "N D"],
                              observations: Float[Array, "M D"], obs_noise: float, *, gammas: Float[Array, "K"],
                              omegas: Float[Array, "K"], kind: Kind, scale: Float[Array, ""], theta: float,
                              dt: float, control: Callable | None = None, params: Any = None) -> SegmentedSolution:
    """The exact smoothing posterior of the linear system (`smoothing_control`), plus an optional learned drift.

    Every Euler step draws dW ~ N((u_n(z) + c(t, z)) dt, r_n dt) with c = `control(t, z, params)` (a correction,
    zero for the exact posterior), KL 1/2 sum_d [r - 1 - log r + (u + c)^2 dt] per step; type I also draws Y_0
    from its posterior, Y_0 = L eps with L L^T = C (`stationary_cholesky`) and q(eps) proportional to
    N(eps; 0, I) beta_0(x0, L eps), a Gaussian with precision I + L^T P_yy L, KL to N(0, I) in closed form. The
    bound is log_lik - kl with log_lik = sum_i log N(o_i; X_{t_i}, sigma^2) at the sampled states; without a
    correction its expectation is the exact log-likelihood of the discretised model (the bound is tight).
    """
    num_steps, dim = increments.shape
    num_obs = observations.shape[0]
    per_obs = num_steps // num_obs
    smooth = smoothing_control(observations, obs_noise, gammas=gammas, omegas=omegas, scale=scale, theta=theta,
                               num_steps=num_steps, dt=dt)
    transition, coupling = linear_system(gammas, omegas, scale, theta, dt, increments.dtype)
    num_terms = gammas.shape[0]
    zero = jnp.zeros((), increments.dtype)
    if kind == "type1":
        chol = stationary_cholesky(gammas).astype(increments.dtype)

        def initial(precision, info, x, eps):
            prec = jnp.eye(num_terms, dtype=chol.dtype) + chol.T @ precision[1:, 1:] @ chol
            mean = jnp.linalg.solve(prec, chol.T @ (info[1:] - precision[1:, 0] * x))
            half = jnp.linalg.cholesky(prec)  # eps = mean + half^{-T} noise has covariance prec^{-1}
            sample = mean + jax.scipy.linalg.solve_triangular(half.T, eps, lower=False)
            kl = 0.5 * (jnp.trace(jnp.linalg.inv(prec)) + mean @ mean - num_terms) + jnp.sum(jnp.log(jnp.diag(half)))
            return chol @ sample, kl

        eps = jax.random.normal(key, (dim, num_terms), increments.dtype)
        y0, kl0 = jax.vmap(initial)(smooth.precision0, smooth.info0, x0, eps)
        kl0 = jnp.sum(kl0)
    elif kind == "type2":
        y0, kl0 = jnp.zeros((dim, num_terms), increments.dtype), zero
    else:
        raise ValueError(f"kind must be 'type1' or 'type2', got {kind!r}")
    z0 = jnp.concatenate([x0[:, None], y0], axis=1)

    def step(carry, inputs):
        z, log_lik, kl = carry
        n, dw, offset, gain, ratio = inputs
        u = offset + jnp.sum(gain * z, axis=-1)
        if control is not None:
            u = u + control(n * dt, z, params)
        dw_q = u * dt + jnp.sqrt(ratio) * dw
        z = z @ transition.T + coupling[None, :] * dw_q[:, None]
        kl = kl + 0.5 * jnp.sum(ratio - 1.0 - jnp.log(ratio) + jnp.square(u) * dt)
        observed = (n + 1) % per_obs == 0
        o = observations[jnp.minimum((n + 1) // per_obs - 1, num_obs - 1)]
        term = jnp.sum(-0.5 * (jnp.log(2 * jnp.pi * obs_noise**2) + jnp.square(o - z[:, 0]) / obs_noise**2))
        return (z, log_lik + jnp.where(observed, term, 0.0), kl), z

    (_, log_lik, kl), zs = jax.lax.scan(step, (z0, zero, kl0), (jnp.arange(num_steps), increments, smooth.offset,
                                                                 smooth.gain, smooth.variance_ratio))
    return SegmentedSolution(zs=zs[per_obs - 1::per_obs], log_lik=log_lik, kl=kl, failed=jnp.zeros((), bool))
