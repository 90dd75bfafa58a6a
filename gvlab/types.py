"""Core types: a method is a bundle of pure functions (cf. optax's `GradientTransformation`).

`Method(init, loss, sample=None, step=None)`:

* `init(key, batch) -> params`: parameters from a key and one example batch (shapes only).
* `loss(params, batch, key, step) -> (scalar, terms)`: the objective to *minimise* and a flat dict of every term
  under a `/` namespace (`{"elbo/recon": ..., "elbo/kl": ...}`), each already reduced over the batch.
* `sample(params, key, num) -> samples`: optional generator.
* `step(state, batch, key) -> (state, metrics)`: optional custom train step with the canonical signature, for
  methods that need several optimisers or non-gradient updates; the loop uses it instead of the default step.

Static settings (layer sizes, beta, number of samples) are captured when the method is built, so the arguments are
arrays only and everything composes with `jit`, `vmap` and `grad`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax

PRNGKey = jax.Array  # typed key, `jax.random.key(seed)`
Params = Any  # a pytree of arrays
Batch = Mapping[str, jax.Array]  # fixed keys per data type: "x", "y", "t", ...
Metrics = dict[str, jax.Array]  # flat, `/`-namespaced scalars


class Method(NamedTuple):
    """A variational or generative method as pure functions (see the module docstring)."""

    init: Callable[[PRNGKey, Batch], Params]
    loss: Callable[[Params, Batch, PRNGKey, jax.Array], tuple[jax.Array, Metrics]]
    sample: Callable[[Params, PRNGKey, int], Any] | None = None
    step: Callable[..., Any] | None = None


class DataSource(NamedTuple):
    """Training data as a pure function of `(key, step)`, so resuming needs no iterator state.

    `batch(arrays, key, step) -> Batch` runs inside the compiled step; `arrays` (a pytree of device arrays, e.g.
    the training set) is passed to it as an argument rather than closed over, so large datasets do not become
    compile-time constants. Generators of synthetic data use `arrays = {}`.
    """

    arrays: Any
    batch: Callable[[Any, PRNGKey, jax.Array], Batch]


class Spec(NamedTuple):
    """Everything `fit` needs besides the train config.

    Attributes:
        method: the pure functions of the method.
        optimizer: an optax transformation (learning-rate schedules close over step counts here).
        data: the training data source.
        evals: `{name: fn(params, key) -> metrics}` run every `train.eval_every` steps and at the end, with a
            fixed key so curves are comparable across steps; logged as `eval/<name>/<metric>`. They close over
            their (small) evaluation arrays.
        hyperparams: per-member optimiser hyperparameters, `{name: values [M]}` (e.g. a learning-rate sweep):
            `fit` then trains M x `train.num_seeds` members in one compiled program, member (m, s) with seed
            `seed + s` and `opt_state.hyperparams[name] = values[m]`. The optimiser must hold `name` as an
            injected hyperparameter (`optax.inject_hyperparams`, e.g. `gvlab.train.optimizers.independent_adamw`).
    """

    method: Method
    optimizer: Any
    data: DataSource
    evals: Mapping[str, Callable[[Params, PRNGKey], Metrics]] = {}
    hyperparams: Mapping[str, Any] = {}
