"""Bag-of-codes baselines: an MLP and logistic regression on the multi-hot vector of a patient's codes.

Both read `gvlab.data.ehr.multi_hot(codes)`, so they see which codes are documented and nothing else: the order-free
summary every set model starts from. The MLP trains with the same weighted BCE as VGNN (`vgnn.weighted_bce`);
logistic regression is `gvlab.probe.fit_logistic` (L-BFGS, two classes).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from gvlab import probe
from gvlab.data.ehr import multi_hot
from gvlab.data.padded import Padded
from gvlab.ehr.vgnn import weighted_bce
from gvlab.nn import MLP
from gvlab.types import Method


def make_mlp(hidden: Sequence[int], num_codes: int, pos_weight: float) -> Method:
    """MLP(multi_hot) -> logit, trained with the weighted BCE (mean over patients)."""
    net = MLP(features=(*hidden, 1))

    def init(key, batch):
        return net.init(key, multi_hot(batch["codes"], num_codes))

    def loss(params, batch, key, step):
        del key, step
        logits = net.apply(params, multi_hot(batch["codes"], num_codes))[..., 0]
        bce = jnp.mean(weighted_bce(logits, batch["y"], pos_weight))
        return bce, {"bag/bce": bce}

    return Method(init=init, loss=loss)


def mlp_logits(hidden: Sequence[int], num_codes: int, params, codes: Padded) -> jax.Array:
    return MLP(features=(*hidden, 1)).apply(params, multi_hot(codes, num_codes))[..., 0]


def logistic_regression(codes: Padded, y: jax.Array, num_codes: int, l2: float = 1e-3,
                        steps: int = 200) -> probe.LogisticProbe:
    """L2-regularised logistic regression on the multi-hot codes (standardised features)."""
    return probe.fit_logistic(multi_hot(codes, num_codes), jnp.asarray(y, jnp.int32), 2, l2=l2, steps=steps)


def logistic_logits(fitted: probe.LogisticProbe, codes: Padded, num_codes: int) -> jax.Array:
    """The positive class's log-odds."""
    out = probe.logits(fitted, multi_hot(codes, num_codes))
    return out[..., 1] - out[..., 0]
