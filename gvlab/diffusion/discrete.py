"""Discrete diffusion on token sequences: VQ-Diffusion's mask-and-replace path and CDCD's contrastive term.

Tokens x in {0..K-1}^N; state K is the absorbing [MASK], so every position has S = K + 1 states.

**Forward step** (Gu et al. 2022, VQ-Diffusion, Eq. 7): from a real token i, stay with alpha_t + beta_t, move to
each other real token with beta_t, to [MASK] with gamma_t; [MASK] stays [MASK]. Rows of Q_t sum to
alpha_t + K beta_t + gamma_t = 1. The products of such matrices keep the form, so the **cumulative** marginal is
closed-form (VQ-Diffusion Eq. 8): q(x_t | x_0 = i) puts bar_alpha_t + bar_beta_t on i, bar_beta_t on every other
real token and bar_gamma_t on [MASK], with bar_alpha_t = prod alpha, 1 - bar_gamma_t = prod (1 - gamma),
bar_beta_t = (1 - bar_alpha_t - bar_gamma_t) / K. The schedule is the official `alpha_schedule`
(L-YeZhu/CDCD `synthesis/modeling/transformers/diffusion_transformer.py` at 667f9c0, from VQ-Diffusion): bar_alpha
linear from 0.99999 (t = 1) to 0.000009 (t = T), bar_gamma linear from 0.000009 to 0.99999; per-step values are
the ratios above.

**Posterior** by Bayes: q(x_{t-1} | x_t, x_0) = q(x_t | x_{t-1}) q(x_{t-1} | x_0) / q(x_t | x_0).
**Reverse model** (x0-parameterisation, `q_posterior` of the official code):
    p(x_{t-1} | x_t) = sum_{x0} q(x_{t-1} | x_t, x0) p_theta(x0 | x_t)
                     = q(x_t | x_{t-1}) * [sum_{x0} p_theta(x0 | x_t) / q(x_t | x0) * q(x_{t-1} | x0)],
the bracket being q_pred of the (unnormalised) weights p_theta / q(x_t | x0) at t - 1: linear in the weights, so
no S x S matrix is formed. Everything is in log space with log-probabilities floored at log(1e-30) (the code's
`index_to_log_onehot` clamp, and its final clamp to [-70, 0]).

**Variational bound** in nats (VQ-Diffusion Eq. 5; Sohl-Dickstein et al. 2015):
    -log p(x0) <= L_T + sum_{t=2}^T L_{t-1} + L_0,
    L_T = KL(q(x_T | x0) || p(x_T)),  L_{t-1} = E_q KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)),
    L_0 = -E_q log p(x0 | x_1).
p(x_T) defaults to q(x_T) under uniform x0 ((1 - bar_gamma_T) / K per real token, bar_gamma_T on [MASK]);
VQ-Diffusion's `prior_loss` uses the uniform law over all S states instead (the term has no parameters).

**CDCD** (Zhu et al. 2023, Eq. 9 and `_train_loss` of the official code): the loss subtracts, with weight
lambda, the mean over negatives x0^j of (1 + (t - 1)/T) l_t(x0^j) / p_t, where l_t is
* step-wise ("step"): the bound term of the negative, KL(q(x_{t-1} | x_t, x0^j) || p_theta(x_{t-1} | x_t, c)) with the
  **positive's** x_t (and -log p_theta(x0^j | x_1, c) at t = 1);
* sample-wise ("sample"): -log p_theta(x0^j | x_t, c) (the KL from the one-hot negative to the x0 prediction).
Negatives: intra (`shuffle_chunks`, the official `neg_sampling(x, 'random')`: the sequence's 8 equal chunks
permuted) and inter (`other_class_negatives`: samples of other conditions).

Step indices t are integer arrays with the batch shape of x (or scalars); t = 1..T. Public functions are pure jnp
and compose with jit, vmap and grad.

    >>> path = MaskAndReplace(num_tokens=4, num_steps=10)
    >>> m = path.cumulative_matrix(3); bool(jnp.allclose(m.sum(1), 1.0))
    True
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

LOG_ZERO = float(np.log(1e-30))  # the official code's floor for log 0 (index_to_log_onehot, clamp(1e-30))
Mode = Literal["step", "sample"]
MODES = ("step", "sample")
X0Logits = Callable[[Int[Array, "*b N"], Int[Array, "*b"]], Float[Array, "*b N K"]]


@functools.lru_cache(maxsize=64)
def _tables(num_tokens: int, num_steps: int, alpha_start: float, alpha_end: float, gamma_start: float,
            gamma_end: float) -> dict[str, np.ndarray]:
    """Per-step and cumulative coefficients, float64 [T + 1], index 0 the identity (the official alpha_schedule)."""
    k, steps = num_tokens, num_steps
    bar_alpha = np.concatenate([[1.0], np.linspace(alpha_start, alpha_end, steps)])
    bar_gamma = np.concatenate([[0.0], np.linspace(gamma_start, gamma_end, steps)])
    bar_beta = (1.0 - bar_alpha - bar_gamma) / k
    alpha = np.concatenate([[1.0], bar_alpha[1:] / bar_alpha[:-1]])
    gamma = np.concatenate([[0.0], 1.0 - (1.0 - bar_gamma[1:]) / (1.0 - bar_gamma[:-1])])
    beta = (1.0 - alpha - gamma) / k
    beta[0] = bar_beta[0] = 0.0  # exact zeros, not rounding residues
    return {"bar_alpha": bar_alpha, "bar_beta": bar_beta, "bar_gamma": bar_gamma,
            "alpha": alpha, "beta": beta, "gamma": gamma}


def _steps(t: ArrayLike, x: Array) -> Int[Array, "*b"]:
    """Step indices broadcast to the batch shape of the sequences x [*b, N] (explicitly: rank promotion is off)."""
    return jnp.broadcast_to(jnp.asarray(t), x.shape[:-1])


def _log(values: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(values, 1e-30)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class MaskAndReplace:
    """The mask-and-replace path with K real tokens and T steps (module docstring); hashable, static.

    Attributes:
        num_tokens: K, the real tokens 0..K-1; token K is [MASK].
        num_steps: T >= 2 (the official schedule interpolates between t = 1 and t = T).
        alpha_start, alpha_end: bar_alpha at t = 1 and t = T.
        gamma_start, gamma_end: bar_gamma at t = 1 and t = T.
    """

    num_tokens: int
    num_steps: int
    alpha_start: float = 0.99999
    alpha_end: float = 0.000009
    gamma_start: float = 0.000009
    gamma_end: float = 0.99999

    def __post_init__(self):
        if self.num_tokens < 1 or self.num_steps < 2:
            raise ValueError(f"need num_tokens >= 1 and num_steps >= 2, got {self.num_tokens}, {self.num_steps}")
        tables = self.tables()
        bad = [name for name, v in tables.items() if np.any(v < -1e-12) or np.any(v > 1 + 1e-12)]
        if bad:
            raise ValueError(f"the schedule gives coefficients outside [0, 1] in {bad}: the transition matrices would"
                             f" not be stochastic (alpha {self.alpha_start}->{self.alpha_end}, gamma "
                             f"{self.gamma_start}->{self.gamma_end}, K={self.num_tokens}, T={self.num_steps})")

    @property
    def mask_token(self) -> int:
        return self.num_tokens

    @property
    def num_states(self) -> int:
        return self.num_tokens + 1

    def tables(self) -> dict[str, np.ndarray]:
        return _tables(self.num_tokens, self.num_steps, self.alpha_start, self.alpha_end, self.gamma_start,
                       self.gamma_end)

    def _log_table(self, name: str, t: ArrayLike, ndim: int) -> Float[Array, "..."]:
        """log of a table at steps t, shaped to broadcast against [*t, N, S] arrays of rank `ndim`."""
        tab = self.tables()
        if name == "bar_stay":
            values = tab["bar_alpha"] + tab["bar_beta"]
        elif name == "stay":
            values = tab["alpha"] + tab["beta"]
        elif name == "bar_keep":
            values = 1.0 - tab["bar_gamma"]
        else:
            values = tab[name]
        t = jnp.asarray(t)
        out = jnp.asarray(_log(values))[t]  # t: the batch shape of x (see _steps), or a scalar
        return jnp.reshape(out, t.shape + (1,) * (ndim - t.ndim))

    # -- dense matrices (small K; tests and plots) ------------------------------------------------------------------
    def transition_matrix(self, t: int) -> Float[Array, "S S"]:
        """Q_t[i, j] = q(x_t = j | x_{t-1} = i), one step (rows sum to 1)."""
        tab = self.tables()
        return jnp.asarray(self._dense(tab["alpha"][t], tab["beta"][t], tab["gamma"][t]), jnp.float32)

    def cumulative_matrix(self, t: int) -> Float[Array, "S S"]:
        """bar Q_t[i, j] = q(x_t = j | x_0 = i) in closed form (rows sum to 1)."""
        tab = self.tables()
        return jnp.asarray(self._dense(tab["bar_alpha"][t], tab["bar_beta"][t], tab["bar_gamma"][t]), jnp.float32)

    def _dense(self, a: float, b: float, g: float) -> np.ndarray:
        k = self.num_tokens
        m = np.zeros((k + 1, k + 1))
        m[:k, :k] = a * np.eye(k) + b
        m[:k, k] = g
        m[k, k] = 1.0
        return m

    # -- the path ----------------------------------------------------------------------------------------------------
    def log_onehot(self, x: Int[Array, "*b N"]) -> Float[Array, "*b N S"]:
        return jnp.where(jax.nn.one_hot(x, self.num_states, dtype=bool), 0.0, LOG_ZERO)

    def q_pred(self, log_v: Float[Array, "*b N S"], t: ArrayLike) -> Float[Array, "*b N S"]:
        """log sum_i v_i q(x_t = . | x_0 = i) for nonnegative weights v (a distribution or not): linear in v."""
        k, ndim = self.num_tokens, log_v.ndim
        real_mass = jax.nn.logsumexp(log_v[..., :k], axis=-1, keepdims=True)
        real = jnp.logaddexp(log_v[..., :k] + self._log_table("bar_alpha", t, ndim),
                             real_mass + self._log_table("bar_beta", t, ndim))
        mask = jnp.logaddexp(log_v[..., k:], real_mass + self._log_table("bar_gamma", t, ndim))
        return jnp.concatenate([real, mask], axis=-1)

    def log_marginal(self, x0: Int[Array, "*b N"], t: ArrayLike) -> Float[Array, "*b N S"]:
        """log q(x_t | x_0), closed form: bar_alpha + bar_beta at x0, bar_beta at other tokens, bar_gamma at [MASK]."""
        ndim = x0.ndim + 1
        j, x = jnp.arange(self.num_states).reshape((1,) * x0.ndim + (-1,)), x0[..., None]
        real = jnp.where(j == x, self._log_table("bar_stay", t, ndim), self._log_table("bar_beta", t, ndim))
        return jnp.where(j == self.mask_token, self._log_table("bar_gamma", t, ndim), real)

    def marginal(self, key: PRNGKeyArray, x0: Int[Array, "*b N"], t: ArrayLike) -> Int[Array, "*b N"]:
        """x_t ~ q(x_t | x_0) (Gumbel-max, as the official `q_sample`)."""
        return jax.random.categorical(key, self.log_marginal(x0, t), axis=-1)

    def _log_step_column(self, x_t: Int[Array, "*b N"], t: ArrayLike) -> Float[Array, "*b N S"]:
        """log q(x_t | x_{t-1} = j) for every state j (one step)."""
        ndim = x_t.ndim + 1
        j, x = jnp.arange(self.num_states).reshape((1,) * x_t.ndim + (-1,)), x_t[..., None]
        from_real = jnp.where(j == x, self._log_table("stay", t, ndim),
                              jnp.where(j < self.num_tokens, self._log_table("beta", t, ndim), LOG_ZERO))
        from_mask = jnp.where(j < self.num_tokens, self._log_table("gamma", t, ndim), 0.0)
        return jnp.where(x == self.mask_token, from_mask, from_real)

    def _log_cumulative_column(self, x_t: Int[Array, "*b N"], t: ArrayLike) -> Float[Array, "*b N K"]:
        """log q(x_t | x_0 = i) for every real token i."""
        ndim = x_t.ndim + 1
        i, x = jnp.arange(self.num_tokens).reshape((1,) * x_t.ndim + (-1,)), x_t[..., None]
        from_real = jnp.where(i == x, self._log_table("bar_stay", t, ndim), self._log_table("bar_beta", t, ndim))
        return jnp.where(x == self.mask_token, self._log_table("bar_gamma", t, ndim), from_real)

    def reverse(self, x_t: Int[Array, "*b N"], x0_logits: Float[Array, "*b N K"], t: ArrayLike
                ) -> Float[Array, "*b N S"]:
        """log p(x_{t-1} | x_t) = log sum_{x0} q(x_{t-1} | x_t, x0) softmax(x0_logits)(x0), t >= 1."""
        t = _steps(t, x_t)
        log_w = jax.nn.log_softmax(x0_logits, axis=-1) - self._log_cumulative_column(x_t, t)
        log_w = jnp.concatenate([log_w, jnp.full(log_w.shape[:-1] + (1,), LOG_ZERO, log_w.dtype)], axis=-1)
        out = self._log_step_column(x_t, t) + self.q_pred(log_w, jnp.asarray(t) - 1)
        return jnp.clip(jax.nn.log_softmax(out, axis=-1), LOG_ZERO, 0.0)

    def posterior(self, x_t: Int[Array, "*b N"], x0: Int[Array, "*b N"], t: ArrayLike) -> Float[Array, "*b N S"]:
        """log q(x_{t-1} | x_t, x_0) = log q(x_t | x_{t-1}) + log q(x_{t-1} | x_0) - log q(x_t | x_0), t >= 1."""
        t = _steps(t, x_t)
        normaliser = jnp.take_along_axis(self._log_cumulative_column(x_t, t), x0[..., None], axis=-1)
        out = self._log_step_column(x_t, t) + self.log_marginal(x0, t - 1) - normaliser
        return jnp.clip(out, LOG_ZERO, 0.0)  # no transcendental function: cheap for many negatives

    def prior_log_prob(self) -> Float[Array, " S"]:
        """log p(x_T): q(x_T) under uniform x_0."""
        bar_gamma = self.tables()["bar_gamma"][-1]
        probs = np.concatenate([np.full(self.num_tokens, (1.0 - bar_gamma) / self.num_tokens), [bar_gamma]])
        return jnp.asarray(_log(probs))

    def prior_sample(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Int[Array, "..."]:
        return jax.random.categorical(key, self.prior_log_prob(), shape=shape)

    def loss(self, x0: Int[Array, "*b N"], x_t: Int[Array, "*b N"], t: ArrayLike,
             x0_logits: Float[Array, "*b N K"]) -> Float[Array, "*b"]:
        """The bound term L_{t-1} in nats, summed over positions: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for
        t >= 2, -log p(x0 | x_1) for t = 1 (the official `_train_loss`'s kl_loss, mask_weight [1, 1])."""
        t = _steps(t, x_t)
        return self.bound_term(x0, x_t, t, self.reverse(x_t, x0_logits, t))

    def bound_term(self, x0: Int[Array, "*b N"], x_t: Int[Array, "*b N"], t: ArrayLike,
                   log_model: Float[Array, "*b N S"]) -> Float[Array, "*b"]:
        """`loss` from the reverse model's log p(x_{t-1} | x_t) (`reverse`), computed once for several x0."""
        t = _steps(t, x_t)
        log_true = self.posterior(x_t, x0, t)
        kl = jnp.sum(jnp.exp(log_true) * (log_true - log_model), axis=(-2, -1))
        nll = -jnp.sum(jnp.take_along_axis(log_model, x0[..., None], axis=-1)[..., 0], axis=-1)
        return jnp.where(t == 1, nll, kl)


def categorical_kl(log_p: Float[Array, "... S"], log_q: Float[Array, "... S"]) -> Float[Array, "..."]:
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def prior_term(path: MaskAndReplace, x0: Int[Array, "*b N"], log_prior: Float[Array, " S"] | None = None
               ) -> Float[Array, "*b"]:
    """L_T = KL(q(x_T | x0) || p(x_T)) summed over positions (default prior: `path.prior_log_prob()`)."""
    log_q = path.log_marginal(x0, path.num_steps)
    log_prior = path.prior_log_prob() if log_prior is None else log_prior
    return jnp.sum(categorical_kl(log_q, jnp.broadcast_to(log_prior, log_q.shape)), axis=-1)


def variational_bound(path: MaskAndReplace, x0_logits_fn: X0Logits, x0: Int[Array, "*b N"], key: PRNGKeyArray,
                      log_prior: Float[Array, " S"] | None = None) -> tuple[Float[Array, "*b"], Float[Array, "T *b"]]:
    """One-sample estimate of the bound L_T + sum_t L_{t-1} (nats per sequence) and its terms [T, *b] (t = 1..T).

    Every t draws its own x_t ~ q(x_t | x0) from `fold_in(key, t)`; `lax.map` over t keeps one model trace.
    """
    steps = jnp.arange(1, path.num_steps + 1)

    def term(t):
        t_b = jnp.full(x0.shape[:-1], t)
        x_t = path.marginal(jax.random.fold_in(key, t), x0, t_b)
        return path.loss(x0, x_t, t_b, x0_logits_fn(x_t, t_b))

    terms = jax.lax.map(term, steps)
    return prior_term(path, x0, log_prior) + jnp.sum(terms, axis=0), terms


def auxiliary_term(path: MaskAndReplace, x0: Int[Array, "*b N"], t: ArrayLike, x0_logits: Float[Array, "*b N K"]
                   ) -> Float[Array, "*b"]:
    """(2 - (t - 1)/T) * (-log p_theta(x0 | x_t)): VQ-Diffusion's auxiliary x0 loss with `adaptive_auxiliary_loss`
    (official `_train_loss`: `(1 - t/T) + 1` with the code's t = our t - 1)."""
    nll = -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(x0_logits, -1), x0[..., None], -1)[..., 0], axis=-1)
    return (2.0 - (_steps(t, x0).astype(nll.dtype) - 1.0) / path.num_steps) * nll


def contrastive_term(path: MaskAndReplace, x_t: Int[Array, "*b N"], t: ArrayLike,
                     x0_logits: Float[Array, "*b N K"], negatives: Int[Array, "M *b N"], mode: Mode = "step"
                     ) -> Float[Array, "*b"]:
    """(1/M) sum_j (1 + (t - 1)/T) l_t(x0^j): the CDCD term the loss subtracts (times lambda / p_t).

    `mode="step"`: l_t = `path.loss(x0^j, x_t, t, x0_logits)` with the positive's x_t (step-wise parallel
    diffusion); `mode="sample"`: l_t = -log p_theta(x0^j | x_t) (sample-wise auxiliary diffusion).
    """
    if mode not in MODES:
        raise ValueError(f"unknown contrastive mode {mode!r}; choose from {MODES}")
    if mode == "step":
        log_model = path.reverse(x_t, x0_logits, t)  # shared by the negatives: they use the positive's x_t
        per_negative = jax.vmap(lambda neg: path.bound_term(neg, x_t, t, log_model))(negatives)
    else:
        log_p = jax.nn.log_softmax(x0_logits, -1)
        per_negative = jax.vmap(lambda neg: -jnp.sum(
            jnp.take_along_axis(log_p, neg[..., None], -1)[..., 0], axis=-1))(negatives)
    weight = 1.0 + (_steps(t, x_t).astype(per_negative.dtype) - 1.0) / path.num_steps
    return weight * jnp.mean(per_negative, axis=0)


def shuffle_chunks(key: PRNGKeyArray, x: Int[Array, "*b N"], num_chunks: int = 8) -> Int[Array, "*b N"]:
    """Intra negatives: each sequence's `num_chunks` equal chunks in a random order (one permutation per sequence;
    the official `neg_sampling(x, 'random')` draws one per batch)."""
    n = x.shape[-1]
    if n % num_chunks:
        raise ValueError(f"sequence length {n} is not a multiple of num_chunks={num_chunks}")
    flat = x.reshape(-1, num_chunks, n // num_chunks)
    keys = jax.random.split(key, flat.shape[0])
    shuffled = jax.vmap(lambda k, c: c[jax.random.permutation(k, num_chunks)])(keys, flat)
    return shuffled.reshape(x.shape)


def other_class_negatives(key: PRNGKeyArray, labels: Int[Array, " B"], pool_labels: Int[Array, " P"],
                          num: int, num_classes: int) -> Int[Array, "M B"]:
    """Inter negatives: `num` indices into a pool per example: a uniform other class, then a uniform pool item of it.

    O(P log P + M B) (a sort of the pool, then two draws per negative), not O(M B P). Every class must occur in the
    pool (labels in [0, num_classes)).
    """
    class_key, item_key = jax.random.split(key)
    shift = jax.random.randint(class_key, (num,) + labels.shape, 1, num_classes)
    other = (labels[None, :] + shift) % num_classes
    order = jnp.argsort(pool_labels)
    counts = jnp.bincount(pool_labels, length=num_classes)
    starts = jnp.cumsum(counts) - counts
    offset = jnp.floor(jax.random.uniform(item_key, other.shape) * counts[other]).astype(jnp.int32)
    return order[starts[other] + jnp.minimum(offset, counts[other] - 1)]


def ancestral_sample(path: MaskAndReplace, x0_logits_fn: X0Logits, key: PRNGKeyArray, shape: tuple[int, ...]
                     ) -> Int[Array, "..."]:
    """x_T ~ p(x_T), then x_{t-1} ~ p(x_{t-1} | x_t) for t = T..1 by Gumbel-max (`lax.scan`); returns x_0.

    Step t uses `fold_in(key, t)` (x_T: `fold_in(key, 0)`), so a sample is a pure function of the key.
    """
    x_T = path.prior_sample(jax.random.fold_in(key, 0), shape)

    def step(x_t, t):
        t_b = jnp.full(shape[:-1], t)
        log_p = path.reverse(x_t, x0_logits_fn(x_t, t_b), t_b)
        return jax.random.categorical(jax.random.fold_in(key, t), log_p, axis=-1), None

    x0, _ = jax.lax.scan(step, x_T, jnp.arange(path.num_steps, 0, -1))
    return x0
