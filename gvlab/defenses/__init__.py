"""Input-filter adversarial defences: a filter F in front of an unchanged classifier C, prediction C(F(x)).

Modules: `quantise` (the uniform L-level latent quantiser with its straight-through form, and feature squeezing's
bit-depth reduction, Xu et al. 2018), `lsq` (the latent-space-quantisation VAE filter of Kyatham et al. 2019 with a
spectrally normalised encoder, and its continuous ablation at L = 0), `classifier` (the MLP classifier the filters
protect). Attacks on them are `gvlab.attacks` (gray-box: `pgd` on C alone; white-box: `pgd` on C o `bpda`(F)).

The public surface: the module `lsq`; `quantise`, `quantise_straight_through`, `squeeze_bits`; `make_classifier`.

    >>> from gvlab.defenses import lsq, make_classifier, quantise, squeeze_bits
"""

from gvlab.defenses import lsq as lsq
from gvlab.defenses.classifier import make_classifier as make_classifier
from gvlab.defenses.quantise import quantise as quantise
from gvlab.defenses.quantise import quantise_straight_through as quantise_straight_through
from gvlab.defenses.quantise import squeeze_bits as squeeze_bits

__all__ = ["lsq", "make_classifier", "quantise", "quantise_straight_through", "squeeze_bits"]
