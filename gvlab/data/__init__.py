"""Data: bundled real datasets and synthetic generators; batches are pure functions of `(key, step)`.

Modules: `digits` (scikit-learn's 8x8 digits), `batching` (epoch and sampled batch sources), `pfsm`
(probabilistic finite-state-machine sequences), `balls` (fBM-driven ball videos), `shapes` (dSprites-lite images
with known factors), `correlated` (input-output pairs of chosen correlation, for the CVAE collapse study).
"""

from gvlab.data import digits as digits
from gvlab.data.batching import epoch_batches as epoch_batches
from gvlab.data.batching import sampled_batches as sampled_batches
