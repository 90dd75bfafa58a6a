"""Core types: a method is a bundle of pure functions (cf. optax's `GradientTransformation`).

`Method(init, loss, sample=None, step=None, init_extra=None, make_step=None)`:

* `init(key, batch) -> params`: parameters from a key and one example batch (shapes only).
* `loss(params, batch, key, step) -> (scalar, terms)`: the objective to *minimise* and a flat dict of every term
  under a `/` namespace (`{"elbo/recon": ..., "elbo/kl": ...}`), each already reduced over the batch.
* `sample(params, key, num) -> samples`: optional generator.
* `step(state, batch, key) -> (state, metrics)`: optional custom train step with the canonical signature, for
  methods that need several optimisers or alternating updates; the loop uses it instead of the default step.
* `make_step(tx) -> step`: optional, instead of `step`, for a custom step that applies the fit's optimiser
  (`Spec.optimizer`, wrapped as `fit` wraps it) with updates of its own around it (e.g. SSVI's support updates);
  the loop calls it with the fit's transformation, so the step never closes over a second copy of it.
* `init_extra(key, batch, params) -> extra`: optional non-gradient state (EMA codebooks, moving-average
  baselines, support masks, dual variables). It lives in `TrainState.extra`, is checkpointed and resumed with the
  rest, and the default step hands it to the loss, which then returns it updated:
  `loss(params, batch, key, step, extra=extra) -> (scalar, terms, new_extra)`.

Two more keyword arguments reach `loss` only when a fit supplies them: `args=` (this run's model
hyperparameters, `Spec.args`, e.g. a beta of a beta sweep: one compiled program for the whole sweep) and `extra=`.

Static settings (layer sizes, beta, number of samples) are captured when the method is built, so the arguments are
arrays only and everything composes with `jit`, `vmap` and `grad`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Protocol

import jax

PRNGKey = jax.Array  # typed key, `jax.random.key(seed)`
Params = Any  # a pytree of arrays
Batch = Mapping[str, jax.Array]  # fixed keys per data type: "x", "y", "t", ...
Metrics = dict[str, jax.Array]  # flat, `/`-namespaced scalars


class InitFn(Protocol):
    def __call__(self, key: PRNGKey, batch: Batch) -> Params: ...


class LossFn(Protocol):
    """`loss(params, batch, key, step[, args=..., extra=...]) -> (scalar, terms[, new_extra])`."""

    def __call__(self, params: Params, batch: Batch, key: PRNGKey, step: jax.Array, **context: Any) -> tuple: ...


class SampleFn(Protocol):
    def __call__(self, params: Params, key: PRNGKey, num: int) -> Any: ...


class StepFn(Protocol):
    """`step(state, batch, key) -> (state, metrics)`; `state` is a `gvlab.train.TrainState`."""

    def __call__(self, state: Any, batch: Batch, key: PRNGKey) -> tuple[Any, Metrics]: ...


class InitExtraFn(Protocol):
    def __call__(self, key: PRNGKey, batch: Batch, params: Params) -> Any: ...


class Method(NamedTuple):
    """A variational or generative method as pure functions (see the module docstring)."""

    init: InitFn
    loss: LossFn
    sample: SampleFn | None = None
    step: StepFn | None = None
    init_extra: InitExtraFn | None = None
    make_step: Callable[[Any], StepFn] | None = None


class DataSource(NamedTuple):
    """Training data as a pure function of `(key, step)`, so resuming needs no iterator state.

    `batch(arrays, key, step) -> Batch` runs inside the compiled step; `arrays` (a pytree of device arrays, e.g.
    the training set) is passed to it as an argument rather than closed over, so large datasets do not become
    compile-time constants. Generators of synthetic data use `arrays = {}`.

    `per_member=True`: every leaf of `arrays` has a leading member axis [M] (each member its own dataset of one
    shape: a forget set, a task, a correlation level), and each run's `batch` sees its member's slice.
    """

    arrays: Any
    batch: Callable[[Any, PRNGKey, jax.Array], Batch]
    per_member: bool = False


class Spec(NamedTuple):
    """Everything `fit` needs besides the train config.

    Attributes:
        method: the pure functions of the method.
        optimizer: an optax transformation (learning-rate schedules close over step counts here), or None for
            Adam at `train.lr` (the config is then the one source of the learning rate).
        data: the training data source.
        evals: `{name: fn(params, key) -> metrics}` run every `train.eval_every` steps and at the end, with a
            fixed key so curves are comparable across steps; logged as `eval/<name>/<metric>`. They close over
            their (small) evaluation arrays.
        hyperparams: per-member optimiser hyperparameters, `{name: values [M]}` (e.g. a learning-rate sweep):
            `fit` then trains M x `train.num_seeds` members in one compiled program, member (m, s) with seed
            `seed + s` and `opt_state.hyperparams[name] = values[m]`. The optimiser must hold `name` as an
            injected hyperparameter (`optax.inject_hyperparams`, e.g. `gvlab.train.optimizers.independent_adamw`).
        args: per-member model hyperparameters, a pytree whose leaves have a leading member axis [M] (e.g.
            `{"beta": jnp.array([1., 4., 8.])}`); run r's slice is handed to `method.loss` as `args=`, so a beta or
            lambda sweep is one compiled program. `None`: the loss takes no `args`.

    The members of a fit are the M values shared by `hyperparams`, `args` and a per-member `data` (each may be
    absent; those present must agree on M); with `train.num_seeds = S` a fit has R = M x S runs, member-major.
    """

    method: Method
    optimizer: Any
    data: DataSource
    evals: Mapping[str, Callable[[Params, PRNGKey], Metrics]] = {}
    hyperparams: Mapping[str, Any] = {}
    args: Any = None
