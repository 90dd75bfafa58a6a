"""Variational continual learning of a binary perceptron (Li & Huang, "Statistical mechanics of continual learning:
variational principle and mean-field potential", arXiv 2212.02846, PRE 2023).

Teacher-student setting: inputs x in {-1, +1}^N, labels y = sign(w* . x) with a binary teacher w* in {-1, +1}^N,
and a sequence of tasks whose teachers overlap by r0 = w1* . w2* / N. The student is a mean-field (Ising)
distribution over binary weights, trained in **field space**:

    q_h(w) = prod_i exp(beta h_i w_i) / (2 cosh(beta h_i)),   m_i = tanh(beta h_i),   v_i = 1 - m_i^2.

Its log-likelihood uses the Gaussian-field (central-limit) approximation of the pre-activation
u = w . x ~ N(m . x, sum_i v_i x_i^2) with x_i^2 = 1, so log P(y | x) = log H(-y m.x / sqrt(sum_i v_i)) with
H(t) = erfc(t / sqrt 2) / 2, i.e. `log_ndtr(y m.x / sqrt(sum v))`. Task t minimises

    F_t(h) = -sum_mu log H(-y^mu m(h).x^mu / sqrt(sum_i v_i(h))) + kl_weight * KL(q_h || q_{h'}),

with h' the fields after task t-1 (the previous posterior as prior; h' = 0, the uniform prior, for task 1).
`kl_weight = 0` is plain continuation from h'. A tempered likelihood P(y | x)^beta_L (`likelihood_beta`, default 1)
scales the first term by beta_L: the Gibbs measure prior x prod_mu H(.)^beta_L of the paper's replica analysis
(Chan-Li/VCL `SecondTaskReplicaAndSGDWithKL.py`, `partial_E`: `(H(g))**beta`, with beta1 = 100 for task 1 and
beta2 = 20 for task 2), whereas the official SGD code trains the untempered beta_L = 1 objective. The
metaplasticity baseline (Laborieux et al. 2021) trains hidden real weights W whose sign is the binary weight
(straight-through gradient) and damps updates that move W towards a sign flip by f_meta(W) = 1 - tanh^2(strength W)
(`metaplasticity`, an optax transformation).

One run trains one student: params `{"field": [N]}` on one task's full batch `{"x": [P, N], "y": [P], "prior": [N]}`,
with its model hyperparameters in `args` (`kl_weight`, `num_examples`). A grid of tasks, overlaps, alphas and
objectives is a set of members of one fit (`Spec.args` and `DataSource(per_member=True)`), and the previous task's
fields reach the next task as a warm start (`fit(init=...)`) and as its `prior`.

Examples:
    >>> import jax.numpy as jnp
    >>> round(float(generalization_error(jnp.asarray(0.5))), 4)  # arccos(0.5) / pi = 1/3
    0.3333
    >>> float(binary_kl(jnp.zeros(3), jnp.zeros(3), 1.0))
    0.0
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import log_ndtr
from jaxtyping import Array, Float

from gvlab.errors import ConfigError
from gvlab.types import Batch, Method, PRNGKey

# ----------------------------------------------------------------------------------------------------------------
# Tasks: correlated binary teachers and their examples


def sign(x: Array) -> Array:
    """sign with sign(0) = +1, so clipped weights and labels are always in {-1, +1}."""
    return jnp.where(x >= 0, 1.0, -1.0).astype(jnp.float32)


def random_teacher(key: PRNGKey, num_inputs: int) -> Float[Array, " N"]:
    """A teacher with i.i.d. uniform entries in {-1, +1}."""
    return jax.random.rademacher(key, (num_inputs,), dtype=jnp.float32)


def overlapping_teacher(key: PRNGKey, teacher: Float[Array, " N"], overlap: Float[Array, ""] | float
                        ) -> Float[Array, " N"]:
    """A binary teacher whose overlap with `teacher` is `overlap` (to the nearest 2/N).

    Flips exactly n = round(N (1 - r0) / 2) entries at random positions, so (1/N) sum_i w1_i w2_i = 1 - 2n/N
    exactly, not just in expectation (the continual/binary_perceptron tasks use r0 in {-0.5, 0, 0.5}).

    Raises:
        ConfigError: a concrete overlap outside [-1, 1].
    """
    if isinstance(overlap, (int, float)) and not -1.0 <= overlap <= 1.0:
        raise ConfigError(f"teacher overlap must lie in [-1, 1], got {overlap}")
    num_inputs = teacher.shape[-1]
    num_flips = jnp.round(num_inputs * (1.0 - jnp.asarray(overlap, jnp.float32)) / 2.0)
    rank = jax.random.permutation(key, num_inputs)  # a random order; the first num_flips positions flip
    return jnp.where(rank < num_flips, -teacher, teacher)


def examples(key: PRNGKey, num_examples: int, num_inputs: int) -> Float[Array, "P N"]:
    """Inputs with i.i.d. uniform entries in {-1, +1}."""
    return jax.random.rademacher(key, (num_examples, num_inputs), dtype=jnp.float32)


def labels(teacher: Float[Array, "*T N"], x: Float[Array, "P N"]) -> Float[Array, "*T P"]:
    """y = sign(w* . x) for one teacher or a stack of them."""
    return sign(jnp.einsum("...n,pn->...p", teacher, x))


# ----------------------------------------------------------------------------------------------------------------
# Mean-field posterior over binary weights


def log_cosh(x: Array) -> Array:
    """log cosh x without overflow: |x| + log1p(exp(-2|x|)) - log 2."""
    x = jnp.abs(x)
    return x + jnp.log1p(jnp.exp(-2.0 * x)) - jnp.log(2.0)


def moments(field: Float[Array, "*R N"], beta: float) -> tuple[Float[Array, "*R N"], Float[Array, "*R N"]]:
    """(m, v) = (tanh(beta h), 1 - tanh^2(beta h)); v = exp(-2 log cosh) stays positive where tanh rounds to 1."""
    return jnp.tanh(beta * field), jnp.exp(-2.0 * log_cosh(beta * field))


def log_likelihood(field: Float[Array, "*R N"], x: Float[Array, "P N"], y: Float[Array, "*R P"], beta: float
                   ) -> Float[Array, "*R P"]:
    """Gaussian-field log-likelihood log H(-y m.x / sqrt(sum_i v_i)) of each example (Li & Huang, Sec. II).

    With binary inputs x_i^2 = 1, the pre-activation w.x under q_h has mean m.x and variance sum_i v_i.
    """
    m, v = moments(field, beta)
    scale = jnp.sqrt(jnp.sum(v, axis=-1, keepdims=True) + 1e-12)  # [*R, 1]
    return log_ndtr(y * jnp.einsum("...n,pn->...p", m, x) / scale)


def binary_kl(field: Float[Array, "*R N"], prior_field: Float[Array, "*R N"], beta: float) -> Float[Array, "*R"]:
    """KL(q_h || q_h') between factorised Ising distributions, summed over weights (Li & Huang, Sec. II):

        KL = sum_i [beta (h_i - h'_i) m_i - log cosh(beta h_i) + log cosh(beta h'_i)],  m_i = tanh(beta h_i),

    whose gradient is beta^2 (h_i - h'_i) v_i (an EWC-like pull modulated by the weight uncertainty v_i).
    """
    m = jnp.tanh(beta * field)
    terms = beta * (field - prior_field) * m - log_cosh(beta * field) + log_cosh(beta * prior_field)
    return jnp.sum(terms, axis=-1)


# ----------------------------------------------------------------------------------------------------------------
# Generalisation


def teacher_overlap(field: Float[Array, "*R N"], teacher: Float[Array, "*T N"]) -> Float[Array, "*B"]:
    """R = (1/N) sum_i sign(h_i) w*_i: overlap of the clipped student with a teacher (broadcast over stacks)."""
    return jnp.mean(sign(field) * teacher, axis=-1)


def generalization_error(overlap: Float[Array, "*B"]) -> Float[Array, "*B"]:
    """eps_g = arccos(R) / pi: probability that two perceptrons with normalised overlap R disagree on a Gaussian
    input (the angle between them over pi; Li & Huang Sec. III, the classic Gardner-Derrida result). For binary
    inputs it holds as N grows (central limit)."""
    return jnp.arccos(jnp.clip(overlap, -1.0, 1.0)) / jnp.pi


def test_error(student: Float[Array, "*R N"], teacher: Float[Array, "*R N"], x: Float[Array, "P N"]
               ) -> Float[Array, "*R"]:
    """Monte Carlo test error: the fraction of inputs on which sign(student . x) != sign(teacher . x)."""
    return jnp.mean(labels(student, x) != labels(teacher, x), axis=-1)


# ----------------------------------------------------------------------------------------------------------------
# Metaplasticity baseline (Laborieux et al., Nat. Commun. 2021)


def metaplasticity(strength: float) -> optax.GradientTransformation:
    """Scale each update that shrinks |W| (moves a hidden weight towards a sign flip) by 1 - tanh^2(strength W).

    Eq. 1 of Laborieux et al. 2021 (their `Adam_meta`: the damping applies when sign(W) and the update disagree);
    updates that grow |W| pass unchanged, so consolidated weights stop flipping. Chain it after the optimiser:
    `optax.chain(optax.adam(lr), metaplasticity(1.3))`. `strength = 0` is the identity.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("metaplasticity needs the parameters: call update(updates, state, params)")

        def damp(u, w):
            return jnp.where(u * w < 0, u * (1.0 - jnp.tanh(strength * w) ** 2), u)

        return jax.tree.map(damp, updates, params), state

    return optax.GradientTransformation(init, update)


# ----------------------------------------------------------------------------------------------------------------
# The method


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Settings of the continual binary perceptron.

    Attributes:
        objective: `"mean_field"` (fields h, Gaussian-field likelihood, KL to the prior fields weighted by
            `args["kl_weight"]`) or `"binary_ste"` (hidden weights W, deterministic binary forward sign(W) with a
            straight-through gradient and a probit loss: the metaplasticity baseline's model).
        beta: inverse temperature of q_h (and the probit gain of `binary_ste`).
        init_scale: std of the Gaussian initial fields (0: the uniform posterior h = 0; a warm start replaces them).
    """

    objective: Literal["mean_field", "binary_ste"] = "mean_field"
    beta: float = 1.0
    init_scale: float = 0.0

    def __post_init__(self):
        if self.objective not in ("mean_field", "binary_ste"):
            raise ConfigError(f"objective must be 'mean_field' or 'binary_ste', got {self.objective!r}")
        if not self.beta > 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")
        if self.init_scale < 0:
            raise ConfigError(f"init_scale must be >= 0, got {self.init_scale}")


def task_data(x: Float[Array, "*M P N"], y: Float[Array, "*M P"], prior: Float[Array, "*M N"],
              teachers: dict[str, Array] | None = None) -> dict[str, Array]:
    """The full-batch data of one task (leading member axes `*M` allowed); checks that the shapes agree.

    Args:
        x: the inputs.
        y: their labels.
        prior: the fields of the KL term's prior q_{h'} (the previous task's posterior; zeros: uniform).
        teachers: optional `{name: teacher [*M, N]}`: the loss then reports `error/<name>`, the generalisation
            error arccos(R)/pi of the clipped student against each (monitoring only, no gradient).

    Raises:
        ConfigError: inconsistent shapes.
    """
    *lead, p, n = x.shape
    expected = {"y": (*lead, p), "prior": (*lead, n), **{f"teachers/{k}": (*lead, n) for k in (teachers or {})}}
    given = {"y": y, "prior": prior, **{f"teachers/{k}": v for k, v in (teachers or {}).items()}}
    for name, array in given.items():
        if array.shape != expected[name]:
            raise ConfigError(f"task_data: {name} has shape {array.shape}, expected {expected[name]} "
                              f"(x is [*members={tuple(lead)}, examples={p}, inputs={n}])")
    return {"x": x, "y": y, "prior": prior, **({"teachers": dict(teachers)} if teachers else {})}


def objective(cfg: Config, field: Float[Array, " N"], batch: Batch, mask: Float[Array, " P"]
              ) -> tuple[Array, Array]:
    """(negative log-likelihood, KL to the prior) of one run on the examples where `mask` is 1."""
    if cfg.objective == "mean_field":
        nll = -jnp.sum(mask * log_likelihood(field, batch["x"], batch["y"], cfg.beta), axis=-1)
        return nll, binary_kl(field, batch["prior"], cfg.beta)
    # Straight-through: the forward pass uses sign(W), the gradient flows to W as if sign were the identity.
    binary = field + jax.lax.stop_gradient(sign(field) - field)
    margin = batch["y"] * jnp.einsum("n,pn->p", binary, batch["x"]) / jnp.sqrt(field.shape[-1])
    nll = -jnp.sum(mask * log_ndtr(cfg.beta * margin), axis=-1)
    return nll, jnp.zeros((), field.dtype)


def make(cfg: Config) -> Method:
    """The continual-learning method of one run: params `{"field": [N]}`, batch from `task_data`.

    `init` draws `init_scale` Gaussian noise (0: the uniform posterior h = 0; a previous task's fields come as a
    warm start). `loss(params, batch, key, step, args=None)` is likelihood_beta * nll + kl_weight * KL on the first
    `num_examples` examples; `args` (`Spec.args`, one value per member) holds `kl_weight` (default 1: the
    variational continual objective; 0: plain continuation), `num_examples` (default all: alpha N of a task's
    shared example set) and `likelihood_beta` (default 1: the untempered objective of the official SGD code; the
    replica analysis tempers the likelihood, see the module docstring). The `vcl/nll` term is the untempered nll.
    """

    def init(key: PRNGKey, batch: Batch):
        x = batch["x"]
        return {"field": cfg.init_scale * jax.random.normal(key, x.shape[-1:], x.dtype)}

    def loss(params, batch: Batch, key: PRNGKey, step: jax.Array, args=None):
        del key, step  # full batch, deterministic objective
        args = {} if args is None else args
        field = params["field"]
        num = batch["x"].shape[0]
        mask = jnp.ones((num,), field.dtype)
        if "num_examples" in args:
            mask = (jnp.arange(num) < args["num_examples"]).astype(field.dtype)
        nll, kl = objective(cfg, field, batch, mask)
        weighted_kl = args.get("kl_weight", 1.0) * kl
        tempered_nll = args.get("likelihood_beta", 1.0) * nll
        terms = {"vcl/nll": nll, "vcl/kl": weighted_kl}
        for name, teacher in batch.get("teachers", {}).items():
            terms[f"error/{name}"] = generalization_error(teacher_overlap(field, teacher))
        return tempered_nll + weighted_kl, terms

    return Method(init=init, loss=loss)
