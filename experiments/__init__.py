"""Every experiment module, imported explicitly (a test checks this list against the folder).

Registration happens when a module is imported; listing the modules here, rather than discovering them, keeps
the registry greppable and makes a forgotten module a test failure instead of a silently missing experiment.
"""

GVLAB_EXPERIMENTS = True  # lets the registry tell this package from another folder named `experiments`

from experiments import collapse_digits_cvae as collapse_digits_cvae  # noqa: E402
from experiments import collapse_linear_cvae as collapse_linear_cvae  # noqa: E402
from experiments import collapse_linear_hvae as collapse_linear_hvae  # noqa: E402
from experiments import collapse_relu_cvae as collapse_relu_cvae  # noqa: E402
from experiments import continual_binary_perceptron as continual_binary_perceptron  # noqa: E402
from experiments import continual_gkcl as continual_gkcl  # noqa: E402
from experiments import cvae_attributes as cvae_attributes  # noqa: E402
from experiments import diffusion_principles as diffusion_principles  # noqa: E402
from experiments import fbm_approximation as fbm_approximation  # noqa: E402
from experiments import fbm_ball_video as fbm_ball_video  # noqa: E402
from experiments import fbm_bridge as fbm_bridge  # noqa: E402
from experiments import fbm_hurst as fbm_hurst  # noqa: E402
from experiments import instability_qk_layernorm as instability_qk_layernorm  # noqa: E402
from experiments import inverse_flair as inverse_flair  # noqa: E402
from experiments import inverse_lensnet as inverse_lensnet  # noqa: E402
from experiments import inverse_red_diff as inverse_red_diff  # noqa: E402
from experiments import pvrnn_meta_prior as pvrnn_meta_prior  # noqa: E402
from experiments import representations_mean_vs_sampled as representations_mean_vs_sampled  # noqa: E402
from experiments import vae_digits as vae_digits  # noqa: E402
from experiments import vi_masha as vi_masha  # noqa: E402

MODULES = ("collapse_digits_cvae", "collapse_linear_cvae", "collapse_linear_hvae", "collapse_relu_cvae", "continual_binary_perceptron", "continual_gkcl", "cvae_attributes", "diffusion_principles", "fbm_approximation", "fbm_ball_video", "fbm_bridge", "fbm_hurst", "instability_qk_layernorm", "inverse_flair", "inverse_lensnet", "inverse_red_diff", "pvrnn_meta_prior", "representations_mean_vs_sampled", "vae_digits", "vi_masha")
