"""MASHA1 and MASHA2: extragradient with compressed operator differences (Beznosikov et al., NeurIPS 2022).

Both are the loopless variance-reduced extragradient of Alacaoglu & Malitsky (2021) with an anchor w^k whose
operator value F(w^k) every worker knows (Alg. 1 and Alg. 2 of arXiv 2110.03313, unconstrained, g = 0):

    zbar^k    = tau z^k + (1 - tau) w^k
    z^{k+1/2} = zbar^k - gamma F(w^k)
    MASHA1:  z^{k+1} = zbar^k - gamma [F(w^k) + (1/M) sum_m Q_m(F_m(z^{k+1/2}) - F_m(w^k))]      (Q = RandK)
    MASHA2:  c_m^k   = C_m(e_m^k + gamma (F_m(z^{k+1/2}) - F_m(w^k)))                            (C = TopK)
             e_m^{k+1} = e_m^k + gamma (F_m(z^{k+1/2}) - F_m(w^k)) - c_m^k                  (error feedback)
             z^{k+1} = zbar^k - gamma F(w^k) - (1/M) sum_m c_m^k
    b_k ~ Bernoulli(1 - tau), common to all workers:  w^{k+1} = z^{k+1} if b_k else w^k; when b_k = 1 every
          worker sends F_m(w^{k+1}) uncompressed (d floats) and all keep F(w^{k+1}).

Only the operator differences are compressed, and they vanish at the solution (z^{k+1/2}, w^k -> z*), so the
compression noise vanishes too: linear convergence for strongly monotone F, unlike compressing F_m itself
(`NaiveCompressedExtragradient`). Uplink per worker and iteration: one compressed message (2K floats with indices)
plus d with probability 1 - tau; the paper's choice 1 - tau ~ 1/q = K/d makes the two terms comparable.

Verification status: the structure above is a reconstruction, consistent with the paper's abstract (RandK
for MASHA1, TopK for MASHA2, unbiased vs contractive); the algorithm boxes themselves could not be read through the
search tools (only the abstract was retrievable), so the update order is unconfirmed and the theorems' step-size
constants are not used: gamma is chosen on a grid (see `experiments/vi/masha.py`). Test oracle: with K = d and
1 - tau = 1 both methods reduce exactly to extragradient.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from gvlab.errors import ConfigError
from gvlab.optim import compression
from gvlab.optim.distributed import WorkerState
from gvlab.optim.variational import AffineVI, worker_operators


def _check_probability(p: float) -> None:
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"refresh_probability (1 - tau) must be in (0, 1], got {p}")


def _anchor_init(problem: AffineVI, start: Float[Array, " d"], comm) -> WorkerState:
    """w^0 = z^0; every worker sends F_m(w^0) once, uncompressed (d floats)."""
    local = worker_operators(problem, start)
    return WorkerState(z=start, shared={"anchor": start, "anchor_operator": comm.mean(local)},
                       local={"anchor_operator": local}, floats=jnp.asarray(start.shape[-1], jnp.int32))


def _extrapolate(state: WorkerState, step_size: Float[Array, ""], refresh_probability: float):
    """zbar^k and z^{k+1/2} (server side, replicated)."""
    tau = 1.0 - refresh_probability
    z_bar = tau * state.z + (1.0 - tau) * state.shared["anchor"]
    return z_bar, z_bar - step_size * state.shared["anchor_operator"]


def _refresh_anchor(problem: AffineVI, state: WorkerState, z_next: Float[Array, " d"], coin_key: PRNGKeyArray,
                    refresh_probability: float, comm, message_cost: int) -> WorkerState:
    """The coin b_k ~ Bernoulli(1 - tau): on heads w^{k+1} = z^{k+1} and the workers send F_m(w^{k+1})."""
    dim = z_next.shape[-1]
    refresh = jax.random.bernoulli(coin_key, refresh_probability)

    def new_anchor(_):
        local = worker_operators(problem, z_next)
        return z_next, comm.mean(local), local

    def same_anchor(_):
        return state.shared["anchor"], state.shared["anchor_operator"], state.local["anchor_operator"]

    # lax.cond: the full-vector collective only runs on heads (under vmap over runs it becomes a select).
    anchor, anchor_operator, local_operator = jax.lax.cond(refresh, new_anchor, same_anchor, None)
    floats = state.floats + jnp.int32(message_cost) + refresh.astype(jnp.int32) * jnp.int32(dim)
    return WorkerState(z=z_next, shared={**state.shared, "anchor": anchor, "anchor_operator": anchor_operator},
                       local={**state.local, "anchor_operator": local_operator}, floats=floats)


def _worker_keys(key: PRNGKeyArray, worker_ids: Int[Array, " m"]) -> PRNGKeyArray:
    """One key per worker from its global index: the same messages whatever the number of devices."""
    return jax.vmap(jax.random.fold_in, (None, 0))(key, worker_ids)


@dataclasses.dataclass(frozen=True)
class Masha1:
    """MASHA1 (Alg. 1 of Beznosikov et al. 2022) with the unbiased RandK compressor.

    Attributes:
        k: coordinates per compressed message (q = d/K).
        refresh_probability: 1 - tau, the probability of moving the anchor (the paper: about 1/q = K/d).
        count_indices: count the K indices of a message as floats (see `gvlab.optim.compression`).
    """

    k: int
    refresh_probability: float
    count_indices: bool = True

    def __post_init__(self):
        _check_probability(self.refresh_probability)

    def init(self, problem: AffineVI, start: Float[Array, " d"], comm) -> WorkerState:
        return _anchor_init(problem, start, comm)

    def step(self, problem: AffineVI, worker_ids: Int[Array, " m"], state: WorkerState, key: PRNGKeyArray,
             step_size: Float[Array, ""], comm) -> WorkerState:
        coin_key, compress_key = jax.random.split(key)
        z_bar, z_half = _extrapolate(state, step_size, self.refresh_probability)
        difference = worker_operators(problem, z_half) - state.local["anchor_operator"]  # [m, d]
        messages = jax.vmap(compression.rand_k, (0, 0, None))(_worker_keys(compress_key, worker_ids), difference,
                                                               self.k)
        z_next = z_bar - step_size * (state.shared["anchor_operator"] + comm.mean(messages))
        cost = compression.message_floats(z_next.shape[-1], self.k, count_indices=self.count_indices)
        return _refresh_anchor(problem, state, z_next, coin_key, self.refresh_probability, comm, cost)


@dataclasses.dataclass(frozen=True)
class Masha2:
    """MASHA2 (Alg. 2 of Beznosikov et al. 2022): the contractive TopK compressor with error feedback.

    Attributes:
        k: coordinates per compressed message (delta = K/d).
        refresh_probability: 1 - tau, the probability of moving the anchor.
        count_indices: count the K indices of a message as floats (TopK must send them).
    """

    k: int
    refresh_probability: float
    count_indices: bool = True

    def __post_init__(self):
        _check_probability(self.refresh_probability)

    def init(self, problem: AffineVI, start: Float[Array, " d"], comm) -> WorkerState:
        state = _anchor_init(problem, start, comm)
        return state._replace(local={**state.local, "error": jnp.zeros_like(state.local["anchor_operator"])})

    def step(self, problem: AffineVI, worker_ids: Int[Array, " m"], state: WorkerState, key: PRNGKeyArray,
             step_size: Float[Array, ""], comm) -> WorkerState:
        coin_key, _ = jax.random.split(key)
        z_bar, z_half = _extrapolate(state, step_size, self.refresh_probability)
        difference = worker_operators(problem, z_half) - state.local["anchor_operator"]
        corrected = state.local["error"] + step_size * difference  # what should be sent, with the unsent rest
        messages = jax.vmap(compression.top_k, (0, None))(corrected, self.k)
        z_next = z_bar - step_size * state.shared["anchor_operator"] - comm.mean(messages)
        cost = compression.message_floats(z_next.shape[-1], self.k, count_indices=self.count_indices)
        state = state._replace(local={**state.local, "error": corrected - messages})
        return _refresh_anchor(problem, state, z_next, coin_key, self.refresh_probability, comm, cost)
