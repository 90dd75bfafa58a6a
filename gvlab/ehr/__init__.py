"""Graph-based representation learning for electronic health records (VGNN, Zhu & Razavian 2019; issue 19).

Modules: `vgnn` (the variational encoder-decoder and its non-variational graph model as one `Method`), `bag`
(bag-of-codes MLP and logistic regression), `metrics` (AUPRC as average precision, singular-value spectra). The data
come from `gvlab.data.ehr` (synthetic patients with a known outcome probability) and the layers from
`gvlab.nn.graph`.
"""

from gvlab.ehr import bag as bag
from gvlab.ehr import metrics as metrics
from gvlab.ehr import vgnn as vgnn
