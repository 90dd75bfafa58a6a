"""Probability distributions as immutable pytrees: densities, samplers and closed-form KL divergences.

Each distribution is a frozen dataclass registered with `jax.tree_util.register_dataclass`: parameters are
data leaves and the integer `event_ndims` is static metadata, so distributions pass through `jit`, `vmap`,
`grad` and `tree_map`. gvlab writes these itself because distrax and TFP fail to import with current JAX.

Shapes follow distrax: a sample has shape `sample_shape + batch_shape + event_shape`; `log_prob`, `entropy`
and `kl_divergence` sum over the event axes and return `sample_shape + batch_shape`. Arguments are broadcast
against the parameters explicitly (`jnp.broadcast_to`), so leading sample axes in `x` also work under
`jax_numpy_rank_promotion="raise"`. Results take the parameters' dtype (float32 in, float32 out).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)
Shape = int | Sequence[int]


def _check_event_ndims(dist) -> None:
    # Only the meta field is checked: JAX rebuilds pytrees with placeholder leaves (e.g. vmap in_axes).
    if not isinstance(dist.event_ndims, int) or dist.event_ndims < 0:
        raise ValueError(f"event_ndims must be a non-negative Python int, got {dist.event_ndims!r}")


def _pytree(*data_fields: str, meta_fields: Sequence[str] = ()):
    """A frozen dataclass registered as a pytree (eq=False: `==` on array fields has no truth value)."""

    def wrap(cls):
        if "event_ndims" in meta_fields:
            cls.__post_init__ = _check_event_ndims
        cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
        return jax.tree_util.register_dataclass(cls, data_fields=data_fields, meta_fields=meta_fields)

    return wrap


def _broadcast(*arrays: ArrayLike) -> tuple[Array, ...]:
    """Broadcasts to the common shape explicitly, which strict rank promotion allows."""
    shape = jnp.broadcast_shapes(*(jnp.shape(a) for a in arrays))
    return tuple(jnp.broadcast_to(a, shape) for a in arrays)


def _sum_event(x: Array, event_ndims: int) -> Array:
    return jnp.sum(x, axis=tuple(range(-event_ndims, 0)))  # event_ndims = 0 gives axis=(): no reduction


def _shape(sample_shape: Shape) -> tuple[int, ...]:
    return (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)


@_pytree("loc", "scale", meta_fields=("event_ndims",))
class DiagNormal:
    """Factorised Gaussian N(loc, diag(scale²)) whose last `event_ndims` axes form one event.

    log p(x) = Σ_event [−(x − μ)²/(2σ²) − log σ − ½ log 2π].

    Attributes:
        loc: mean μ, shape `batch_shape + event_shape`, broadcast against `scale`.
        scale: standard deviation σ > 0.
        event_ndims: trailing axes summed by `log_prob`, `entropy` and `kl_divergence` (static).

    Examples:
        >>> p = DiagNormal(jnp.array([0.5, -1.0]), jnp.array([1.0, 2.0]))
        >>> p.log_prob(jnp.zeros((3, 2))).shape, p.sample(jax.random.key(0), (5,)).shape
        ((3,), (5, 2))
        >>> print(f"{float(p.entropy()):.4f}")  # 2 · ½ log(2πe) + log 1 + log 2
        3.5310
    """

    loc: Float[ArrayLike, "*shape"]
    scale: Float[ArrayLike, "*shape"]
    event_ndims: int = 1

    @classmethod
    def from_log_variance(cls, mean: ArrayLike, log_variance: ArrayLike, event_ndims: int = 1) -> DiagNormal:
        """N(mean, exp(log_variance)) with σ = exp(½ log σ²): the usual VAE encoder head."""
        return cls(mean, jnp.exp(0.5 * jnp.asarray(log_variance)), event_ndims)

    def log_prob(self, x: Float[ArrayLike, "*shape"]) -> Float[Array, "*batch"]:
        """Log-density of `x` (`sample_shape + batch + event`), summed over the event axes."""
        x, loc, scale = _broadcast(x, self.loc, self.scale)
        log_p = -0.5 * jnp.square((x - loc) / scale) - jnp.log(scale) - _HALF_LOG_2PI
        return _sum_event(log_p, self.event_ndims)

    def sample(self, key: PRNGKeyArray, sample_shape: Shape = ()) -> Float[Array, "*shape"]:
        """Reparameterised draw loc + scale·ε, ε ~ N(0, I), of shape `sample_shape + batch + event`.

        ε does not depend on the parameters, so `jax.grad` flows through loc and scale (pathwise gradient).
        """
        shape = _shape(sample_shape) + jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.scale))
        eps = jax.random.normal(key, shape, jnp.result_type(self.loc, self.scale))
        eps, loc, scale = _broadcast(eps, self.loc, self.scale)
        return loc + scale * eps

    def mean(self) -> Float[Array, "*shape"]:
        """μ, broadcast to `batch + event`."""
        return _broadcast(self.loc, self.scale)[0]

    def variance(self) -> Float[Array, "*shape"]:
        """σ², broadcast to `batch + event`."""
        return jnp.square(_broadcast(self.scale, self.loc)[0])

    def entropy(self) -> Float[Array, "*batch"]:
        """H = Σ_event [½ log(2πe) + log σ]."""
        return _sum_event(jnp.log(_broadcast(self.scale, self.loc)[0]) + _HALF_LOG_2PI_E, self.event_ndims)


@_pytree("logits", meta_fields=("event_ndims",))
class Bernoulli:
    """Independent Bernoulli variables, P(x = 1) = σ(logits); the last `event_ndims` axes form one event.

    log p(x) = Σ_event [x log σ(l) + (1 − x) log σ(−l)] = Σ_event [x·l − softplus(l)].

    For fractional x ∈ [0, 1] (grey-level pixels) the same expression is the negative binary cross-entropy.
    It is then *not* a normalised density on [0, 1] (the continuous Bernoulli adds a log-normaliser), so such
    values are only comparable with each other.

    Attributes:
        logits: log-odds l, shape `batch_shape + event_shape`.
        event_ndims: trailing axes summed by `log_prob`, `entropy` and `kl_divergence` (static).
    """

    logits: Float[ArrayLike, "*shape"]
    event_ndims: int = 1

    def log_prob(self, x: Float[ArrayLike, "*shape"]) -> Float[Array, "*batch"]:
        """log p(x) for x ∈ {0, 1} (bool, int or float), or −BCE for x ∈ [0, 1]; summed over event axes."""
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):  # strict promotion forbids int·float; 0/1 cast exactly
            x = x.astype(jnp.result_type(self.logits))
        x, logits = _broadcast(x, self.logits)
        # Never form σ(l): in float32 it rounds to exactly 1 above l ≈ 17 and to 0 below l ≈ −104, and then
        # log(1 − σ) or log σ is −inf. log_sigmoid(l) = −(max(−l, 0) + log1p(e^{−|l|})) is accurate
        # everywhere and both terms are ≤ 0, so nothing large cancels: l = ±80 or ±1e4 gives log p to float32
        # precision (−80, −1e4, or −1.8e-35 ≈ 0) where the naive form gives −inf or NaN.
        log_p = x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits)
        return _sum_event(log_p, self.event_ndims)

    def sample(self, key: PRNGKeyArray, sample_shape: Shape = ()) -> Float[Array, "*shape"]:
        """0.0/1.0 in the logits' dtype (`log_prob(sample)` type-checks); `sample_shape + batch + event`."""
        probs = self.probs()
        u, probs = _broadcast(jax.random.uniform(key, _shape(sample_shape) + probs.shape, probs.dtype), probs)
        return (u < probs).astype(probs.dtype)

    def probs(self) -> Float[Array, "*shape"]:
        """σ(logits) = P(x = 1)."""
        return jax.nn.sigmoid(jnp.asarray(self.logits))

    def mean(self) -> Float[Array, "*shape"]:
        """E[x] = σ(logits)."""
        return self.probs()

    def variance(self) -> Float[Array, "*shape"]:
        """Var[x] = σ(l)·σ(−l); 1 − p is computed as σ(−l) so it does not round to 0."""
        return self.probs() * jax.nn.sigmoid(-jnp.asarray(self.logits))

    def entropy(self) -> Float[Array, "*batch"]:
        """H = −Σ_event [σ(l) log σ(l) + σ(−l) log σ(−l)], finite for every finite logit."""
        lg = jnp.asarray(self.logits)
        h = jax.nn.sigmoid(lg) * jax.nn.log_sigmoid(lg) + jax.nn.sigmoid(-lg) * jax.nn.log_sigmoid(-lg)
        return -_sum_event(h, self.event_ndims)


@_pytree("logits", meta_fields=("event_ndims",))
class Categorical:
    """Categorical over the last axis, P(x = k) = softmax(logits)_k; a −inf logit is a zero-probability class.

    log p(x) = Σ_event [l_x − logsumexp(l)]. A sample is an integer array of shape `sample_shape +
    logits.shape[:-1]`; the last `event_ndims` (default 0) of the non-class axes form one event, e.g. a latent
    made of several independent codes.

    Attributes:
        logits: unnormalised log-probabilities, shape `batch_shape + event_shape + (K,)`.
        event_ndims: trailing non-class axes summed by `log_prob`, `entropy` and `kl_divergence` (static).
    """

    logits: Float[ArrayLike, "*shape K"]
    event_ndims: int = 0

    def log_prob(self, x: Int[ArrayLike, "*shape"]) -> Float[Array, "*batch"]:
        """log softmax(logits)_x for integer `x` in [0, K) (unchecked), summed over the event axes."""
        log_p, x = jax.nn.log_softmax(jnp.asarray(self.logits), axis=-1), jnp.asarray(x)
        shape = jnp.broadcast_shapes(x.shape, log_p.shape[:-1])
        log_p, x = jnp.broadcast_to(log_p, shape + log_p.shape[-1:]), jnp.broadcast_to(x, shape)
        # Gather, not Σ one_hot(x)·log p: 0·(−inf) = NaN as soon as any other class has a −inf logit.
        return _sum_event(jnp.take_along_axis(log_p, x[..., None], axis=-1)[..., 0], self.event_ndims)

    def sample(self, key: PRNGKeyArray, sample_shape: Shape = ()) -> Int[Array, "*shape"]:
        """int32 classes, shape `sample_shape + logits.shape[:-1]` (Gumbel-max: −inf classes never drawn)."""
        logits = jnp.asarray(self.logits)
        shape = _shape(sample_shape) + logits.shape[:-1]
        return jax.random.categorical(key, logits, axis=-1, shape=shape).astype(jnp.int32)

    def probs(self) -> Float[Array, "*shape K"]:
        """softmax(logits) over the last axis."""
        return jax.nn.softmax(jnp.asarray(self.logits), axis=-1)

    def entropy(self) -> Float[Array, "*batch"]:
        """H = −Σ_event Σ_k p_k log p_k, with 0·log 0 = 0."""
        log_p = jax.nn.log_softmax(jnp.asarray(self.logits), axis=-1)
        # Zero log p (not the product) where p = 0: 0·(−inf) is NaN, and so is the gradient of p·log p there.
        h = jnp.sum(jnp.exp(log_p) * jnp.where(jnp.isneginf(log_p), 0.0, log_p), axis=-1)
        return -_sum_event(h, self.event_ndims)


@_pytree("logits", "loc", "scale")
class GaussianMixture:
    """Mixture of K diagonal Gaussians over D dimensions; an event is one D-vector (`event_ndims` is 1).

    log p(x) = logsumexp_k [log w_k + log N(x; μ_k, diag σ_k²)] with w = softmax(logits).

    Attributes:
        logits: mixture log-weights, shape `batch_shape + (K,)`.
        loc: component means μ_k, shape `batch_shape + (K, D)`.
        scale: component standard deviations σ_k > 0, broadcast against `loc`.
    """

    logits: Float[ArrayLike, "*batch K"]
    loc: Float[ArrayLike, "*batch K D"]
    scale: Float[ArrayLike, "*batch K D"]

    @property
    def event_ndims(self) -> int:
        return 1

    def _params(self) -> tuple[Array, Array, Array]:
        """Log-weights `[..., K]`, loc and scale `[..., K, D]`, broadcast to one batch shape."""
        loc, scale = _broadcast(self.loc, self.scale)
        log_w = jax.nn.log_softmax(jnp.asarray(self.logits), axis=-1)
        batch_k = jnp.broadcast_shapes(log_w.shape, loc.shape[:-1])
        loc, scale = (jnp.broadcast_to(a, batch_k + loc.shape[-1:]) for a in (loc, scale))
        return jnp.broadcast_to(log_w, batch_k), loc, scale

    def log_prob(self, x: Float[ArrayLike, "*batch D"]) -> Float[Array, "*batch"]:
        """Log-density of `x` (`sample_shape + batch + (D,)`): summed over D, then logsumexp over K."""
        log_w, loc, scale = self._params()
        log_comp = DiagNormal(loc, scale).log_prob(jnp.expand_dims(jnp.asarray(x), -2))  # [..., K]
        log_w, log_comp = _broadcast(log_w, log_comp)
        return logsumexp(log_w + log_comp, axis=-1)

    def sample(self, key: PRNGKeyArray, sample_shape: Shape = ()) -> Float[Array, "*shape D"]:
        """k ~ Categorical(logits), then x ~ N(μ_k, σ_k²); shape `sample_shape + batch + (D,)`.

        Reparameterised in loc and scale given k; the discrete choice passes no gradient to the logits.
        """
        component_key, noise_key = jax.random.split(key)
        log_w, loc, scale = self._params()
        shape = _shape(sample_shape) + log_w.shape[:-1]
        k = jax.random.categorical(component_key, log_w, axis=-1, shape=shape)[..., None, None]
        loc_k, scale_k = (
            jnp.take_along_axis(jnp.broadcast_to(a, shape + a.shape[-2:]), k, axis=-2)[..., 0, :]
            for a in (loc, scale))
        return DiagNormal(loc_k, scale_k).sample(noise_key)

    def mean(self) -> Float[Array, "*batch D"]:
        """E[x] = Σ_k w_k μ_k."""
        log_w, loc, _ = self._params()
        return jnp.sum(jnp.exp(log_w)[..., None] * loc, axis=-2)

    def variance(self) -> Float[Array, "*batch D"]:
        """diag Cov[x] = Σ_k w_k (σ_k² + (μ_k − E[x])²): total variance, no E[x²] − E[x]² cancellation."""
        log_w, loc, scale = self._params()
        spread = jnp.square(scale) + jnp.square(loc - self.mean()[..., None, :])
        return jnp.sum(jnp.exp(log_w)[..., None] * spread, axis=-2)


def _kl_diag_normal(p: DiagNormal, q: DiagNormal) -> Array:
    loc_p, scale_p, loc_q, scale_q = _broadcast(p.loc, p.scale, q.loc, q.scale)
    t = jnp.log(scale_p) - jnp.log(scale_q)
    # σp²/σq² − 1 − log(σp²/σq²) as expm1(2t) − 2t with t = log σp/σq: exactly 0 when σp = σq, and more
    # accurate than forming the ratio when σp ≈ σq, which is where a VAE posterior sits for an unused latent.
    kl = 0.5 * (jnp.expm1(2 * t) - 2 * t + jnp.square((loc_p - loc_q) / scale_q))
    return _sum_event(kl, p.event_ndims)


def _kl_bernoulli(p: Bernoulli, q: Bernoulli) -> Array:
    lp, lq = _broadcast(p.logits, q.logits)
    # Probabilities and their logs both come from the logits (1 − p as σ(−l)), so nothing saturates.
    ls = jax.nn.log_sigmoid
    kl = jax.nn.sigmoid(lp) * (ls(lp) - ls(lq)) + jax.nn.sigmoid(-lp) * (ls(-lp) - ls(-lq))
    return _sum_event(kl, p.event_ndims)


def _kl_categorical(p: Categorical, q: Categorical) -> Array:
    log_p, log_q = _broadcast(jax.nn.log_softmax(p.logits, axis=-1), jax.nn.log_softmax(q.logits, axis=-1))
    # Classes outside p's support contribute 0; masking the difference (not the product) also avoids
    # −inf − (−inf) = NaN when q excludes them too. A class p allows and q forbids gives +inf, the true value.
    diff = jnp.where(jnp.isneginf(log_p), 0.0, log_p - log_q)
    return _sum_event(jnp.sum(jnp.exp(log_p) * diff, axis=-1), p.event_ndims)


# The catalogue of closed forms, keyed by exact (type(p), type(q)); a subclass needs its own entry.
_KL_CLOSED_FORMS = {
    (DiagNormal, DiagNormal): _kl_diag_normal,
    (Bernoulli, Bernoulli): _kl_bernoulli,
    (Categorical, Categorical): _kl_categorical,
}


def _check_same_event_ndims(p, q) -> None:
    if p.event_ndims != q.event_ndims:
        raise ValueError(f"KL needs equal event_ndims, got {type(p).__name__}(event_ndims={p.event_ndims}) "
                         f"and {type(q).__name__}(event_ndims={q.event_ndims})")


def kl_divergence(p, q) -> Float[Array, "*batch"]:
    """Closed-form KL(p ‖ q) = E_p[log p(x) − log q(x)], summed over the event axes.

    DiagNormal: ½ Σ_event [log σq²/σp² + (σp² + (μp − μq)²)/σq² − 1].
    Bernoulli: Σ_event Σ_{x∈{0,1}} p(x) log p(x)/q(x). Categorical: Σ_event Σ_k p_k log p_k/q_k (0·log 0 = 0).

    Args:
        p: distribution of one of the catalogued types.
        q: distribution of the same type and `event_ndims`; parameters broadcast against p's.

    Returns:
        KL of shape `batch_shape` (the broadcast batch shape of p and q).

    Raises:
        NotImplementedError: no closed form for `(type(p), type(q))`; `kl_monte_carlo` estimates any pair.
        ValueError: `p.event_ndims != q.event_ndims`.

    Examples:
        >>> p = DiagNormal(jnp.array([0.5, -1.0]), jnp.array([1.0, 2.0]))
        >>> standard = DiagNormal(jnp.zeros(2), jnp.ones(2))
        >>> print(f"{float(kl_divergence(p, standard)):.4f}")  # ½Σ(μ² + σ² − log σ² − 1) = 0.125 + 1.3069
        1.4319
        >>> float(kl_divergence(standard, standard))
        0.0
    """
    closed_form = _KL_CLOSED_FORMS.get((type(p), type(q)))
    if closed_form is None:
        known = ", ".join(f"({a.__name__}, {b.__name__})" for a, b in _KL_CLOSED_FORMS)
        raise NotImplementedError(
            f"No closed-form KL for ({type(p).__name__}, {type(q).__name__}); closed forms exist for "
            f"{known}. Use kl_monte_carlo(p, q, key, num_samples) instead.")
    _check_same_event_ndims(p, q)
    return closed_form(p, q)


def kl_monte_carlo(p, q, key: PRNGKeyArray, num_samples: int) -> Float[Array, "*batch"]:
    """Unbiased Monte-Carlo estimate of KL(p ‖ q): mean_i [log p(x_i) − log q(x_i)], x_i ~ p.

    Works for any pair with `sample` and `log_prob` and equal event dims (e.g. DiagNormal against
    GaussianMixture). The average is over the `num_samples` axis, so the result has shape `batch_shape`; its
    standard error is std/√num_samples. `num_samples` is a Python int (static under `jit`). The gradient
    with respect to p's parameters is pathwise, hence unbiased only for reparameterised p (DiagNormal); a
    discrete p (or a mixture's logits) would also need a score-function term.
    """
    _check_same_event_ndims(p, q)
    x = p.sample(key, (num_samples,))
    return jnp.mean(p.log_prob(x) - q.log_prob(x), axis=0)
