"""Spectral normalisation of dense kernels by power iteration (Miyato et al. 2018, "Spectral Normalization for
Generative Adversarial Networks", Sec. 2.1 and Algorithm 1), as pure functions.

A kernel W (flax layout [in, out], y = x W) is replaced by W / sigma(W), sigma the largest singular value, so the
layer is 1-Lipschitz in the L2 norm and a network of such layers with 1-Lipschitz activations (ReLU, tanh) is too.
sigma is estimated by power iteration with a persistent vector u in R^out (Algorithm 1):

    v <- W u / ||W u||,    u <- W^T v / ||W^T v||,    sigma ~ v^T W u,

one iteration per training step, u carried from step to step (it converges as W changes slowly). u and v are
constants for the gradient; sigma = v^T W u is differentiated in W, as in the paper's Eq. 12 and the reference
implementations (PyTorch `torch.nn.utils.spectral_norm`, flax `SpectralNorm`). The vectors are non-gradient
state: in gvlab they live in `TrainState.extra` (`Method.init_extra`), and the loss returns them updated.

Kernels are found by name in a parameter pytree (every two-dimensional leaf called "kernel", as `gvlab.nn.MLP`
makes them); the vectors form a pytree of the same nesting with one u per kernel.

    >>> import jax.numpy as jnp
    >>> w = jnp.array([[3.0, 0.0], [0.0, 1.0]])
    >>> sigma, u = power_iteration(w, jnp.array([1.0, 1.0]), num_iters=30)
    >>> round(float(sigma), 4)
    3.0
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

EPS = 1e-12  # keeps the normalisation of a zero vector finite (W = 0 gives sigma = 0, not NaN)


def _unit(v: Array) -> Array:
    return v / jnp.maximum(jnp.linalg.norm(v), EPS)


def power_iteration(kernel: Float[Array, "n m"], u: Float[Array, " m"], num_iters: int = 1
                    ) -> tuple[Float[Array, ""], Float[Array, " m"]]:
    """`num_iters` power iterations on W^T W from u; returns (sigma = v^T W u, the new u).

    sigma is a lower bound on the largest singular value that converges to it (geometrically, at the rate
    (sigma_2 / sigma_1)^2 per iteration) when u is not orthogonal to the top right-singular vector. u and v carry
    no gradient; sigma's gradient in W is v u^T (Miyato et al. 2018, Eq. 12).

    Args:
        kernel: W [n, m] (a flax Dense kernel: inputs x outputs).
        u: the current estimate of the top right-singular vector [m] (any non-zero start).
        num_iters: a Python int >= 1.
    """
    if not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters must be a Python int >= 1, got {num_iters!r}")
    if kernel.ndim != 2 or u.shape != kernel.shape[1:]:
        raise ValueError(f"power_iteration needs a kernel [n, m] and u [m]; got {kernel.shape} and {u.shape}")
    w = jax.lax.stop_gradient(kernel)
    u = jax.lax.stop_gradient(u)

    def body(_, u):
        v = _unit(w @ u)
        return _unit(w.T @ v)

    u = jax.lax.fori_loop(0, num_iters, body, u)
    v = jax.lax.stop_gradient(_unit(w @ u))
    return v @ kernel @ u, u


def _is_kernel(name: Any, leaf: Any) -> bool:
    return name == "kernel" and hasattr(leaf, "ndim") and leaf.ndim == 2


def _map_kernels(fn: Callable, params: Mapping, *others: Mapping) -> dict:
    """`{...: fn(kernel, *matching leaves of others)}` with the nesting of `params`, kernels only."""
    out = {}
    for name, leaf in params.items():
        if _is_kernel(name, leaf):
            out[name] = fn(leaf, *(o[name] for o in others))
        elif isinstance(leaf, Mapping):
            sub = _map_kernels(fn, leaf, *(o[name] for o in others))
            if sub:
                out[name] = sub
    return out


def init_vectors(key: PRNGKeyArray, params: Mapping) -> dict:
    """One random unit vector u [out] per kernel of `params` (the power iteration's start), same nesting."""
    counter = iter(range(1 << 30))
    return _map_kernels(lambda w: _unit(jax.random.normal(jax.random.fold_in(key, next(counter)), w.shape[1:],
                                                          w.dtype)), params)


def _replace_kernels(params: Mapping, new: Mapping) -> dict:
    return {name: (new[name] if _is_kernel(name, leaf) else
                   _replace_kernels(leaf, new.get(name, {})) if isinstance(leaf, Mapping) else leaf)
            for name, leaf in params.items()}


def normalise(params: Mapping, vectors: Mapping | None = None, num_iters: int = 1) -> tuple[dict, dict | None, dict]:
    """Every kernel W of `params` replaced by W / sigma(W) (Miyato et al. 2018, Eq. 8).

    Args:
        params: a parameter pytree (nested dicts, e.g. a flax MLP's `{"params": {"dense_0": {"kernel": ...}}}`).
        vectors: the power-iteration vectors (`init_vectors`, then the returned ones), or None for the exact
            largest singular value (an SVD, with its gradient; for evaluation and tests).
        num_iters: power iterations per call when `vectors` are given.

    Returns:
        (normalised params, updated vectors (None without vectors), {kernel path: sigma} as a nested dict).
    """
    if vectors is None:
        sigmas = _map_kernels(lambda w: jnp.linalg.svd(w, compute_uv=False)[0], params)
        new_vectors = None
    else:
        both = _map_kernels(lambda w, u: power_iteration(w, u, num_iters), params, vectors)
        is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
        sigmas = jax.tree.map(lambda pair: pair[0], both, is_leaf=is_pair)
        new_vectors = jax.tree.map(lambda pair: pair[1], both, is_leaf=is_pair)
    scaled = _map_kernels(lambda w, s: w / jnp.maximum(s, EPS).astype(w.dtype), params, sigmas)
    return _replace_kernels(params, scaled), new_vectors, sigmas
