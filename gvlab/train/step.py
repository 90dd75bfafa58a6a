"""The canonical train step: `step(state, batch, key) -> (state, metrics)`.

One builder serves every method. It folds the step number into the key (so no key lives in the state and a
resumed run draws the same numbers), reports every term of the loss plus gradient, update and parameter norms,
and leaves `jit`, donation and shardings to the caller (`gvlab.train.loop.fit`). Methods that need several
optimisers or non-gradient updates provide `Method.step` with the same signature instead of forking the loop.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from gvlab.errors import ConfigError
from gvlab.rng import step_key
from gvlab.train.state import TrainState
from gvlab.types import Batch, Method, Metrics, PRNGKey

StepFn = Callable[[TrainState, Batch, PRNGKey], tuple[TrainState, Metrics]]


def init_state(method: Method, tx: optax.GradientTransformation, key: PRNGKey, batch: Batch,
               ema_decay: float = 0.0, *, params=None, args=None) -> TrainState:
    """A fresh `TrainState` at step 0: `params = method.init(key, batch)` (or the warm-start `params` given),
    `opt_state = tx.init(params)`, `extra = method.init_extra(fold_in(key, 1), batch, params)` when the method has
    non-gradient state, and the run's model hyperparameters `args`."""
    if params is None:
        params = method.init(key, batch)
    ema = jax.tree.map(jnp.copy, params) if ema_decay > 0 else None
    extra = None
    if method.init_extra is not None:  # its own key: adding a slot must not change the parameters' draw
        extra = method.init_extra(jax.random.fold_in(key, 1), batch, params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), ema_params=ema,
                      extra=extra, args=args)


def loss_context(state: TrainState) -> dict:
    """The keyword arguments `loss` receives besides the four positional ones: `args=` and `extra=` when set."""
    context = {}
    if state.args is not None:
        context["args"] = state.args
    if state.extra is not None:
        context["extra"] = state.extra
    return context


def make_train_step(method: Method, tx: optax.GradientTransformation, ema_decay: float = 0.0) -> StepFn:
    """Return the pure step `(state, batch, key) -> (state, metrics)`; jit it at the call site.

    The loss is evaluated with `key_t = fold_in(key, state.step)` and `state.step`, so step t of any run with
    the same key sees the same randomness whether or not the run was interrupted. It also receives the run's model
    hyperparameters (`args=state.args`) and non-gradient state (`extra=state.extra`) when the run has them; with
    `extra` the loss returns `(scalar, terms, new_extra)` and the new extra is stored without gradient.

    Metrics: `loss`, every term the method reports, `norm/grads`, `norm/updates`, `norm/params`, and
    `norm/grad_rms` = norm/grads / sqrt(number of parameters) (the gradient RMS of Wortsman et al. 2023, Figs. 11-13).

    Args:
        method: the method; if `method.step` is set it is returned unchanged (it owns its update); if
            `method.make_step` is set, `method.make_step(tx)` is returned (a custom step around `tx`).
        tx: the optax transformation that turns gradients into updates.
        ema_decay: if > 0, also track `ema = decay * ema + (1 - decay) * params`.
    """
    if method.step is not None and method.make_step is not None:
        raise ConfigError("a Method sets `step` or `make_step`, not both")
    if method.step is not None:
        return method.step
    if method.make_step is not None:
        return method.make_step(tx)

    def loss_with_extra(params, batch, key, step, context):
        out = method.loss(params, batch, key, step, **context)
        if "extra" in context:  # (scalar, terms, new_extra): the new extra rides in the aux output
            loss, terms, extra = out
            return loss, (terms, extra)
        loss, terms = out
        return loss, (terms, None)

    grad_fn = jax.value_and_grad(loss_with_extra, has_aux=True)

    def train_step(state: TrainState, batch: Batch, key: PRNGKey) -> tuple[TrainState, Metrics]:
        (loss, (terms, extra)), grads = grad_fn(state.params, batch, step_key(key, state.step), state.step,
                                                loss_context(state))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        ema = state.ema_params
        if ema_decay > 0:
            ema = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
        metrics = {
            "loss": loss,
            **terms,
            "norm/grads": grad_norm,
            "norm/grad_rms": grad_norm / jnp.sqrt(float(max(optax.tree.size(grads), 1))),
            "norm/updates": optax.tree.norm(updates),
            "norm/params": optax.tree.norm(params),
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
                                  extra=jax.lax.stop_gradient(extra))
        return new_state, metrics

    return train_step
