"""Backward Pass Differentiable Approximation (BPDA; Athalye, Carlini and Wagner 2018, Sec. 4.1).

A defence that puts a non-differentiable (or gradient-masking) filter F in front of a classifier C, such as
rounding, bit-depth reduction or a quantised latent, gives C(F(x)) a zero or useless gradient, so a gradient attack
fails without the defence being robust ("obfuscated gradients"). BPDA keeps the forward pass F(x) and replaces
F's Jacobian by that of a differentiable approximation g(x) ~ F(x); the identity g(x) = x is the straight-through
estimator (Bengio et al. 2013), right for filters meant to return something close to their input:

    forward  = F(x),        backward = dg/dx (= I by default).

The white-box attack is then `pgd(lambda x: classifier(bpda(filter_fn)(x)), x, y, key, ...)`.

    >>> import jax, jax.numpy as jnp
    >>> straight_round = bpda(jnp.round)
    >>> straight_round(jnp.array([0.3, 1.7]))
    Array([0., 2.], dtype=float32)
    >>> jax.grad(lambda x: jnp.sum(straight_round(x)))(jnp.array([0.3, 1.7]))
    Array([1., 1.], dtype=float32)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array


def bpda(filter_fn: Callable[[Array], Array],
         approximation: Callable[[Array], Array] | None = None) -> Callable[[Array], Array]:
    """The filter with the backward pass of `approximation` (the identity by default: straight-through).

    Built as sg(F(x)) + g(x) - sg(g(x)) (sg = `jax.lax.stop_gradient`) rather than with `jax.custom_vjp`: the
    forward value is F(x) exactly (g(x) - g(x) is 0 for finite values, where x + sg(F(x) - x) is off by rounding),
    and a filter that closes over traced parameters (a VAE filter under vmap over members) needs no special care.
    No gradient reaches the filter's own parameters, which an attack does not need.

    Args:
        filter_fn: F, any function of an array, returning an array of the same shape (cast to the input's dtype).
        approximation: g, differentiable, same output shape as F; None for the identity.

    Returns:
        A function x -> F(x) whose vector-Jacobian product is that of g.
    """
    def straight_through(x: Array) -> Array:
        forward = jax.lax.stop_gradient(filter_fn(x))
        surrogate = x if approximation is None else approximation(x)
        if jnp.shape(forward) != jnp.shape(surrogate):
            raise ValueError(f"bpda: the filter returns shape {jnp.shape(forward)} but the backward approximation "
                             f"{jnp.shape(surrogate)}; the identity needs the filter to keep the input's shape")
        # The input's dtype throughout: a filter returning integers (a quantiser's levels) still gives a gradient.
        dtype = jnp.result_type(x)
        return forward.astype(dtype) + (surrogate - jax.lax.stop_gradient(surrogate)).astype(dtype)

    return straight_through
