"""Synthetic electronic health records: patients as sets of medical codes with known code-code dependencies and an
outcome whose probability is known exactly (VGNN mini-experiment, notes_vae_bayes_ib.md sec. 1(d)).

Generative model, per patient (systems and their latent flags are 0-indexed; the notes' c_1, c_2 are c_0, c_1 here
and the notes' "system 5" is system 4):

    c in {0,1}^K                      organ systems (comorbidities), c_k ~ Bern(p_active) independently, except
                                      (c_0, c_1), whose correlation is `correlation`
    t_v ~ Bern(1 - (1 - q c_k(v))(1 - r))   code v present before documentation: an active system draws each of
                                      its codes with probability q (Binomial(codes_per_system, q) codes), and every
                                      code is a noise code with probability r = noise_codes / V
    x_v = t_v * Bern(keep)            documentation missingness: the record holds the codes x_v = 1
    y ~ Bern(sigmoid(f(c) + w_n n - b)), f(c) = w_pair [c_0 and c_1] + w_contrast [c_2 and not c_3],
                                      n = sum of t_v over the codes of `count_system` (the true, undocumented count)

with b solved (bisection on the exact prevalence) so that P(y = 1) = `prevalence`. The notes draw Poisson(1) noise
codes; here each code is a noise code independently with probability 1/V (Binomial(V, 1/V), the same mean), so the
codes are independent given c and the Bayes posterior below is exact.

Two probabilities come with every patient:

* `p_bayes = P(y = 1 | x)`: the best any model of the documented codes can do, by enumeration over the 2^K latent
  configurations (the codes enter only through their count per system) and over the undocumented count n. Its
  AUPRC is the ceiling of the experiment's claims.
* `p_latent = sigmoid(f(c) + w_n n - b)`: the generator's own probability, which also knows the latent systems and
  the undocumented codes (a higher, unreachable reference).

Patients are `Padded` code sets: `codes.values` [N, max_codes] int32 code ids (real entries first, sorted),
`codes.mask` [N, max_codes].
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from gvlab.data.padded import Padded, pad
from gvlab.errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Generator settings (defaults: notes sec. 1(d)).

    Attributes:
        num_systems, codes_per_system: K systems of codes each; V = K * codes_per_system code ids.
        p_active: P(c_k = 1).
        correlation: Pearson correlation of (c_0, c_1).
        code_rate: q, the probability that an active system draws each of its codes.
        noise_codes: expected number of noise codes per patient (r = noise_codes / V per code).
        keep: documentation probability of a present code.
        pair_weight, contrast_weight, count_weight: the outcome's logit weights w_pair, w_contrast, w_n.
        count_system: the system whose true code count enters the logit.
        prevalence: P(y = 1); the bias b is solved for it.
        max_codes: padded set size (a patient with more documented codes is an error, never truncated). The notes
            pad to 24, but 1 patient in ~20000 documents more (all systems active); 32 is exceeded with
            probability ~1e-9.
    """

    num_systems: int = 8
    codes_per_system: int = 8
    p_active: float = 0.25
    correlation: float = 0.4
    code_rate: float = 0.4
    noise_codes: float = 1.0
    keep: float = 0.7
    pair_weight: float = 2.0
    contrast_weight: float = 1.5
    count_weight: float = 0.3
    count_system: int = 4
    prevalence: float = 0.15
    max_codes: int = 32

    @property
    def num_codes(self) -> int:
        return self.num_systems * self.codes_per_system

    def __post_init__(self):
        if self.num_systems < 5 or self.num_systems > 12:
            raise ConfigError(f"num_systems must be in [5, 12] (the outcome reads systems 0-4; the posterior "
                              f"enumerates 2^K configurations), got {self.num_systems}")
        if not 0 <= self.count_system < self.num_systems:
            raise ConfigError(f"count_system={self.count_system} is not a system index < {self.num_systems}")
        for name in ("p_active", "code_rate", "keep", "prevalence"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must lie in (0, 1), got {getattr(self, name)}")


class Patients(NamedTuple):
    """A sample of patients: documented code sets, outcomes and the two known probabilities."""

    codes: Padded  # values [N, max_codes] int32, mask [N, max_codes]
    y: np.ndarray  # [N] int32
    p_bayes: np.ndarray  # [N] P(y = 1 | documented codes)
    p_latent: np.ndarray  # [N] P(y = 1 | latent systems, true count)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def latent_prior(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """All 2^K configurations [2^K, K] and their prior probabilities [2^K] (exact)."""
    configs = np.array(list(itertools.product((0, 1), repeat=cfg.num_systems)), np.int64)
    p = cfg.p_active
    pair = p * p + cfg.correlation * p * (1 - p)  # P(c_0 = c_1 = 1) for the requested correlation
    if not 0.0 <= pair <= p:
        raise ConfigError(f"correlation={cfg.correlation} is not reachable with p_active={p}")
    joint01 = {(1, 1): pair, (1, 0): p - pair, (0, 1): p - pair, (0, 0): 1 - 2 * p + pair}
    prior = np.array([joint01[int(c[0]), int(c[1])] for c in configs])
    rest = configs[:, 2:]
    prior = prior * np.prod(np.where(rest == 1, p, 1 - p), axis=1)
    return configs, prior


def _true_rate(cfg: Config, active) -> np.ndarray:
    """P(t_v = 1) for a code of a system with flag `active`."""
    noise = cfg.noise_codes / cfg.num_codes
    return 1.0 - (1.0 - cfg.code_rate * np.asarray(active, np.float64)) * (1.0 - noise)


def _base_logit(cfg: Config, c: np.ndarray) -> np.ndarray:
    return cfg.pair_weight * (c[..., 0] * c[..., 1]) + cfg.contrast_weight * (c[..., 2] * (1 - c[..., 3]))


def _binomial_pmf(n: int, p: np.ndarray) -> np.ndarray:
    """pmf [..., n + 1] of Binomial(n, p) for an array of p."""
    from math import comb

    k = np.arange(n + 1)
    coef = np.array([comb(n, int(j)) for j in k], np.float64)
    p = np.asarray(p, np.float64)[..., None]
    return coef * p**k * (1 - p) ** (n - k)


def solve_bias(cfg: Config) -> float:
    """b such that P(y = 1) = prevalence exactly (bisection; the prevalence falls as b grows)."""
    configs, prior = latent_prior(cfg)
    counts = _binomial_pmf(cfg.codes_per_system, _true_rate(cfg, configs[:, cfg.count_system]))  # [C, m + 1]
    logits = _base_logit(cfg, configs)[:, None] + cfg.count_weight * np.arange(cfg.codes_per_system + 1)[None]

    def prevalence(b):
        return float(np.sum(prior[:, None] * counts * _sigmoid(logits - b)))

    low, high = -30.0, 30.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if prevalence(mid) > cfg.prevalence else (low, mid)
    return 0.5 * (low + high)


def bayes_probability(cfg: Config, system_counts: np.ndarray, bias: float | None = None) -> np.ndarray:
    """P(y = 1 | x) from the documented code counts per system [N, K], by exact enumeration.

    P(c | x) is proportional to P(c) prod_k pi_k^{s_k} (1 - pi_k)^{m - s_k} with pi_k = keep P(t = 1 | c_k); given c
    and x, the undocumented codes of `count_system` are present with probability rho = tau (1 - keep) / (1 - keep
    tau), so n = s + Binomial(m - s, rho).
    """
    bias = solve_bias(cfg) if bias is None else bias
    m = cfg.codes_per_system
    configs, prior = latent_prior(cfg)
    tau = _true_rate(cfg, configs)  # [C, K]
    pi = cfg.keep * tau
    s = np.asarray(system_counts, np.float64)
    log_post = np.log(prior)[None] + s @ np.log(pi).T + (m - s) @ np.log1p(-pi).T  # [N, C]
    post = np.exp(log_post - log_post.max(1, keepdims=True))
    post /= post.sum(1, keepdims=True)
    tau_n = tau[:, cfg.count_system]
    rho = tau_n * (1 - cfg.keep) / (1 - cfg.keep * tau_n)  # [C]
    base = _base_logit(cfg, configs) - bias  # [C]
    # g[c, s] = E[sigmoid(base_c + w (s + J))], J ~ Binomial(m - s, rho_c): one column per documented count s.
    g = np.zeros((len(configs), m + 1))
    for documented in range(m + 1):
        pmf = _binomial_pmf(m - documented, rho)  # [C, m - s + 1]
        extra = np.arange(m - documented + 1)[None]
        g[:, documented] = np.sum(pmf * _sigmoid(base[:, None] + cfg.count_weight * (documented + extra)), axis=1)
    observed = s[:, cfg.count_system].astype(np.int64)
    return np.sum(post * g[:, observed].T, axis=1)


def sample(cfg: Config, num: int, seed: int) -> Patients:
    """`num` patients drawn from the generator with NumPy's generator at `seed` (host-side)."""
    rng = np.random.default_rng(seed)
    bias = solve_bias(cfg)
    configs, prior = latent_prior(cfg)
    c = configs[rng.choice(len(configs), size=num, p=prior / prior.sum())]  # [N, K]
    system_of_code = np.repeat(np.arange(cfg.num_systems), cfg.codes_per_system)  # [V]
    present = rng.random((num, cfg.num_codes)) < _true_rate(cfg, c[:, system_of_code])
    documented = present & (rng.random((num, cfg.num_codes)) < cfg.keep)
    in_count = system_of_code == cfg.count_system
    p_latent = _sigmoid(_base_logit(cfg, c) + cfg.count_weight * present[:, in_count].sum(1) - bias)
    y = (rng.random(num) < p_latent).astype(np.int32)
    counts = documented.reshape(num, cfg.num_systems, cfg.codes_per_system).sum(2)
    codes = pad([np.flatnonzero(row).astype(np.int32) for row in documented], size=cfg.max_codes)
    return Patients(codes=Padded(codes.values.astype(np.int32), codes.mask), y=y,
                    p_bayes=bayes_probability(cfg, counts, bias), p_latent=p_latent)


def multi_hot(codes: Padded, num_codes: int) -> Float[Array, "*batch V"]:
    """Bag of codes: 1 where a code id is among the example's real entries (the bag-of-codes baselines' input)."""
    hits = jax.nn.one_hot(codes.values, num_codes, dtype=jnp.float32) * codes.mask[..., :, None]
    return jnp.max(hits, axis=-2)


def take(patients: Patients, index) -> Patients:
    """A subset of patients (host-side)."""
    return Patients(Padded(patients.codes.values[index], patients.codes.mask[index]), patients.y[index],
                    patients.p_bayes[index], patients.p_latent[index])
