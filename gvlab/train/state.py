"""`TrainState`: the data a run carries between steps, and nothing else (no functions, no keys).

The step counter is explicit (not read from the optimiser's count) because data, per-step keys and schedules are
all functions of it; checkpoints hold exactly this object.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """Step, parameters, optimiser state, and the optional slots a run may carry.

    Attributes:
        step: int32 scalar, the number of optimiser steps already taken.
        params: the method's parameter pytree (what gradients reach).
        opt_state: the optax state of `params` (a custom step may hold several optimisers' states here).
        ema_params: EMA of `params` when the run uses one, else `None`.
        extra: non-gradient state (`Method.init_extra`): EMA codebooks, moving-average baselines, support
            masks, dual variables; else `None`.
        args: this run's model hyperparameters (`Spec.args`), constant through the run and checkpointed with it
            so a resumed run cannot silently use other values; else `None`.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any = None
    extra: Any = None
    args: Any = None
