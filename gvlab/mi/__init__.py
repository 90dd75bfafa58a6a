"""Mutual information between views of multi-latent generators (Serez et al., TMLR 2025).

Modules: `infonce` (InfoNCE / NT-Xent with 2B - 1 candidates, the MI estimate log(2B - 1) - L_NCE and its
ceiling, closed-form Gaussian oracle), `generator` (a procedural multi-latent generator with known latent
influence, including a dead chunk), `views` (chunk-resampled views, the MI critic, SimCLR and its linear probe).
"""

from gvlab.mi import generator as generator
from gvlab.mi import infonce as infonce
from gvlab.mi import views as views
