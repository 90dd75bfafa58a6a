"""Adversarial attacks as pure functions of `(predict_fn, x, y, key)`, for any classifier or regressor.

Modules: `gradient` (FGSM and PGD in the L-infinity and L2 balls, with step size, random start, restarts and an
input range; the per-example loss they maximise) and `bpda` (straight-through / BPDA wrapping of a
non-differentiable filter, for white-box attacks on input-filter defences). Everything composes with `jit`, `vmap`
and `grad`; `eps` and `step_size` may be traced, so one program attacks at a vector of epsilons.

The public surface:

* gradient: `fgsm`, `pgd`, `per_example_loss`, `NORMS`, `LOSSES`, `Norm`, `LossFn`;
* bpda: `bpda`.

    >>> from gvlab.attacks import bpda, fgsm, pgd
"""

from gvlab.attacks.bpda import bpda as bpda
from gvlab.attacks.gradient import LOSSES as LOSSES
from gvlab.attacks.gradient import NORMS as NORMS
from gvlab.attacks.gradient import LossFn as LossFn
from gvlab.attacks.gradient import Norm as Norm
from gvlab.attacks.gradient import fgsm as fgsm
from gvlab.attacks.gradient import per_example_loss as per_example_loss
from gvlab.attacks.gradient import pgd as pgd

__all__ = ["LOSSES", "NORMS", "LossFn", "Norm", "bpda", "fgsm", "per_example_loss", "pgd"]
