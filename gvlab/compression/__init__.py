"""Learned image compression: quantisers, the UMG mixture prior (McQuic), a factorised scalar baseline, real
bitstreams (`coding`, constriction), rate-distortion metrics (bpp, PSNR, MS-SSIM, BD-rate) and small codecs.

Submodules: `quantisers` (scalar and multi-codebook VQ, straight-through, commitment, EMA codebooks), `mixture`
(UMG prior, probabilistic VQ), `factorised` (logistic factorised density), `coding` (constriction range/ANS coding),
`metrics`, `codec` (transforms + the three quantisers as `Method`s). Photograph patches:
`gvlab.data.patches.photo_patches`.
PSNR is `gvlab.inverse.metrics.psnr` (re-exported here).
"""

from gvlab.compression import coding as coding
from gvlab.compression import factorised as factorised
from gvlab.compression import mixture as mixture
from gvlab.compression import quantisers as quantisers
from gvlab.compression.metrics import bd_rate as bd_rate
from gvlab.compression.metrics import bd_rate_with_reason as bd_rate_with_reason
from gvlab.compression.metrics import bits_per_pixel as bits_per_pixel
from gvlab.compression.metrics import ms_ssim as ms_ssim
from gvlab.inverse.metrics import psnr as psnr
