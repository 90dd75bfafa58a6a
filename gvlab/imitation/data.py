"""Training sets from rollouts (host-side NumPy), and DAgger-style relabelling.

Every visited state of a `rollout.Trace` carries the expert's labels (its primitive at each decision, its routing
action at each step), so one function serves demonstrations and DAgger (Ross et al. 2011): on expert traces the
labels are the executed choices; on the learner's traces they are the corrections the expert would have made
(notes sec. 4(a): interactive fine-tuning of the high level by relabelled interventions; here both levels).

Datasets are dicts of arrays with `count` real rows (`policies.uniform_rows` samples among them).
"""

from __future__ import annotations

import numpy as np

from gvlab.errors import ConfigError
from gvlab.imitation import expert
from gvlab.imitation.rollout import Trace


def _host(trace: Trace) -> Trace:
    import jax
    return jax.tree.map(np.asarray, trace)


def route_rows(trace: Trace) -> dict:
    """(obs, expert route action) at every step taken under ROUTE: the routing primitive's data."""
    trace = _host(trace)
    where = trace.step_valid & (trace.primitive == expert.ROUTE)[..., None]
    return {"obs": trace.step_obs[where].astype(np.float32), "action": trace.expert_action[where].astype(np.float32)}


def flat_rows(trace: Trace) -> dict:
    """(obs, executed action) at every step taken: the flat end-to-end baseline's data (expert traces only)."""
    trace = _host(trace)
    return {"obs": trace.step_obs[trace.step_valid].astype(np.float32),
            "action": trace.action[trace.step_valid].astype(np.float32)}


def decision_rows(trace: Trace) -> dict:
    """(obs, history ids and mask, expert primitive class 0..P-1) at every decision before the episode stopped."""
    trace = _host(trace)
    where = trace.decision_valid
    return {"obs": trace.obs[where].astype(np.float32), "ids": trace.history.values[where].astype(np.int32),
            "mask": trace.history.mask[where], "label": (trace.expert_primitive[where] - 1).astype(np.int32)}


def concatenate(*datasets: dict) -> dict:
    """Rows of several datasets with the same fields, one after the other."""
    fields = {tuple(sorted(d)) for d in datasets}
    if len(fields) != 1:
        raise ConfigError(f"datasets must share their fields, got {sorted(fields)}")
    return {k: np.concatenate([d[k] for d in datasets]) for k in datasets[0]}


def with_count(dataset: dict, size: int | None = None) -> dict:
    """The rows padded (zeros) to `size` (default: as many as there are) and their `count`."""
    n = len(next(iter(dataset.values())))
    size = n if size is None else size
    if n > size or n == 0:
        raise ConfigError(f"a dataset of {n} rows does not fit {size} (and must not be empty)")
    out = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in dataset.items()}
    return {**out, "count": np.int32(n)}


def stack_members(datasets: list[dict]) -> dict:
    """Per-member datasets (DAgger: one per learner) as arrays [M, N_max, ...] and counts [M]."""
    size = max(len(next(iter(d.values()))) for d in datasets)
    padded = [with_count(d, size) for d in datasets]
    return {k: np.stack([p[k] for p in padded]) for k in padded[0]}
