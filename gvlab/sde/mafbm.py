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

from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.sde.solve import SDESolution, solve_sde, solve_sde_reference

Kind = Literal["type1", "type2"]


def brownian_coefficients(dtype=jnp.float32) -> tuple[Array, Array]:
    """gamma = [0], omega = [1]: B^H reduces to W itself (the Brownian-motion model, H = 1/2)."""
    return jnp.zeros((1,), dtype), jnp.ones((1,), dtype)


def noise_to_state(dw: Float[Array, "D"], num_terms: int) -> Float[Array, "D K1"]:
    """One Brownian increment per dimension drives X and all K OU processes of that dimension."""
    return jnp.broadcast_to(dw[:, None], (dw.shape[0], num_terms + 1))


def initial_state(key: PRNGKeyArray, x0: Float[Array, "D"], gammas: Float[Array, "K"], kind: Kind
                  ) -> Float[Array, "D K1"]:
    """Z_0 = (x0, Y_0): Y_0 ~ N(0, C) per dimension for type I (stationary OU start), Y_0 = 0 for type II."""
    dim, num_terms = x0.shape[0], gammas.shape[0]
    if kind == "type2":
        y0 = jnp.zeros((dim, num_terms), x0.dtype)
    elif kind == "type1":
        cov = 1.0 / (gammas[:, None] + gammas[None, :])
        # A tiny jitter: C is a Cauchy matrix, positive definite but badly conditioned for wide gamma grids.
        chol = jnp.linalg.cholesky(cov + 1e-6 * jnp.eye(num_terms, dtype=cov.dtype))
        y0 = jax.random.normal(key, (dim, num_terms), x0.dtype) @ chol.T
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
