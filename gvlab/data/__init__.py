"""Data: bundled real datasets and synthetic generators; batches are pure functions of `(key, step)`.

Modules: `digits` (scikit-learn's 8x8 digits), `batching` (epoch and sampled batch sources), `pfsm`
(probabilistic finite-state-machine sequences), `balls` (fBM-driven ball videos), `shapes` (dSprites-lite images
with known factors), `correlated` (input-output pairs of chosen correlation, for the CVAE collapse study), `crossing` (two agents crossing, with an
environment parameter for controlled shifts), `eth_ucy` (the real ETH/UCY pedestrian files from a folder the user
gives, in the 8 + 12 step leave-one-scene-out protocol), `ehr` (synthetic EHR code sets with the exact outcome
posterior), `speech` (espeak-ng utterances of controlled pitch and rate, cached outside the repository).

Data that is not a dense array (sequences of different lengths, scenes with different numbers of agents, graphs
with different numbers of nodes) follows one convention, `padded`: values padded to a fixed size plus a boolean
mask, reduced only through its masked functions. Files the project cannot ship are read from a folder the user
gives and checked against known SHA-256 digests by `external`.
"""

from gvlab.data import digits as digits
from gvlab.data.batching import epoch_batches as epoch_batches
from gvlab.data.batching import sampled_batches as sampled_batches
