"""Every experiment module, imported explicitly (a test checks this list against the folder).

Registration happens when a module is imported; listing the modules here, rather than discovering them, keeps
the registry greppable and makes a forgotten module a test failure instead of a silently missing experiment.
"""

GVLAB_EXPERIMENTS = True  # lets the registry tell this package from another folder named `experiments`

from experiments import vae_digits as vae_digits  # noqa: E402

MODULES = ("vae_digits",)
