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
    """Step, parameters, optimiser state and (optionally) an exponential moving average of the parameters.

    Attributes:
        step: int32 scalar, the number of optimiser steps already taken.
        params: the method's parameter pytree.
        opt_state: the optax state of `params`.
        ema_params: EMA of `params` when the run uses one, else `None`.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any = None
