"""Stochastic differential equations: diffrax solvers with pre-sampled Brownian increments, a `lax.scan`
Euler-Maruyama reference, Girsanov path KL, and fractional noise (Markov-approximate fBM)."""
