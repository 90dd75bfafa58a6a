"""Behaviour-cloning methods (gvlab `Method`s) and the controllers their parameters define.

* `make_bc`: tanh-Gaussian BC, L = -E log pi(a | o) (official `bc_main.py`; `tanh_gaussian.log_prob`), for the
  routing primitive and the flat end-to-end baseline.
* `make_sequencer`: the high level, L = CE(logits(o, history), expert primitive) (official
  `primitive_selection_main.py`), on `Padded` histories; `mean_over_examples` is not needed (one label per
  example), the history's padding is handled inside `gvlab.nn.policy.Sequencer` by a masked sum.

Training data are dicts of arrays with a `count` of real rows (real rows first; a member's dataset in a DAgger fit
is padded to the longest member's): `uniform_rows` samples batches among the real rows only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gvlab.data.padded import Padded
from gvlab.imitation import tanh_gaussian
from gvlab.nn.policy import GaussianPolicy, Sequencer
from gvlab.types import DataSource, Method


def uniform_rows(batch_size: int):
    """`batch(arrays, key, step)`: `batch_size` rows drawn uniformly (with replacement) among `arrays["count"]`."""
    def batch(arrays, key, step):
        del step
        index = jax.random.randint(key, (batch_size,), 0, arrays["count"])
        return {name: value[index] for name, value in arrays.items() if name != "count"}
    return batch


def bc_loss(policy: GaussianPolicy, params, batch: dict) -> tuple[jax.Array, dict]:
    """-mean log pi(a | o) on {"obs" [B, O], "action" [B, A]}, and the mode's mean absolute action error."""
    mean, log_std = policy.apply(params, batch["obs"])
    nll = -jnp.mean(tanh_gaussian.log_prob(mean, log_std, batch["action"]))
    error = jnp.mean(jnp.abs(jnp.tanh(mean) - batch["action"]))
    return nll, {"bc/nll": nll, "bc/mode_abs_error": error}


def sequencer_logits(sequencer: Sequencer, params, obs, history: Padded):
    return sequencer.apply(params, obs, history.values, history.mask)


def sequencer_loss(sequencer: Sequencer, params, batch: dict) -> tuple[jax.Array, dict]:
    """Mean CE of the expert's primitive class on {"obs", "ids", "mask", "label"}, and the accuracy."""
    logits = sequencer_logits(sequencer, params, batch["obs"], Padded(batch["ids"], batch["mask"]))
    log_p = jax.nn.log_softmax(logits)
    ce = -jnp.mean(jnp.take_along_axis(log_p, batch["label"][:, None], -1))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return ce, {"sequencer/ce": ce, "sequencer/accuracy": accuracy}


def make_bc(policy: GaussianPolicy) -> Method:
    """Tanh-Gaussian behaviour cloning on batches {"obs" [B, O], "action" [B, A]}."""
    return Method(init=lambda key, batch: policy.init(key, batch["obs"][:1]),
                  loss=lambda params, batch, key, step: bc_loss(policy, params, batch))


def make_sequencer(sequencer: Sequencer) -> Method:
    """Cross-entropy of the expert's primitive (ids 1..P -> classes 0..P-1) on {"obs", "ids", "mask", "label"}."""
    def init(key, batch):
        return sequencer.init(key, batch["obs"][:1], batch["ids"][:1], batch["mask"][:1])
    return Method(init=init, loss=lambda params, batch, key, step: sequencer_loss(sequencer, params, batch))


def make_hierarchical(policy: GaussianPolicy, sequencer: Sequencer) -> Method:
    """Both levels in one method: params {"route", "sequencer"}, batch {"route": rows, "decision": rows},
    L = L_BC(route) + L_CE(sequencer). The parts share no parameters, so each gets its own loss's gradient (and,
    with `optax.multi_transform`, its own optimiser): the same as two separate fits, in one compiled program."""
    def init(key, batch):
        route_key, sequencer_key = jax.random.split(key)
        return {"route": make_bc(policy).init(route_key, batch["route"]),
                "sequencer": make_sequencer(sequencer).init(sequencer_key, batch["decision"])}

    def loss(params, batch, key, step):
        nll, route_terms = bc_loss(policy, params["route"], batch["route"])
        ce, sequencer_terms = sequencer_loss(sequencer, params["sequencer"], batch["decision"])
        return nll + ce, {**route_terms, **sequencer_terms}

    return Method(init=init, loss=loss)


def hierarchical_source(route_rows: dict, decision_rows: dict, route_batch: int, decision_batch: int,
                        per_member: bool = False) -> DataSource:
    """`make_hierarchical`'s data: `uniform_rows` batches of each dataset (`count` real rows; per member: [M, ...])."""
    route_draw, decision_draw = uniform_rows(route_batch), uniform_rows(decision_batch)

    def batch(arrays, key, step):
        route_key, decision_key = jax.random.split(key)
        return {"route": route_draw(arrays["route"], route_key, step),
                "decision": decision_draw(arrays["decision"], decision_key, step)}

    arrays = {"route": {k: jnp.asarray(v) for k, v in route_rows.items()},
              "decision": {k: jnp.asarray(v) for k, v in decision_rows.items()}}
    return DataSource(arrays=arrays, batch=batch, per_member=per_member)


def route_controller(policy: GaussianPolicy, params):
    """`route(obs, key)`: the deterministic action tanh(mu) of the learned primitive."""
    return lambda obs, key: tanh_gaussian.mode(*policy.apply(params, obs))


def sequencer_choose(sequencer: Sequencer, params):
    """`choose(...)`: the most likely primitive id given the observation and the history (greedy)."""
    def choose(state, layout, obs, history, h, key):
        del state, layout, h, key
        return jnp.argmax(sequencer_logits(sequencer, params, obs, history)).astype(jnp.int32) + 1
    return choose
