"""Implicit neural representations: DDMI's latent -> hierarchical-grid INRs (Park et al., ICLR 2024) and a Functa-style
weight-modulation baseline, on analytically rendered continuous images.

Modules: `grids` (pixel-centre coordinates, bilinear feature-grid lookup with border padding at points or on product
grids, Fourier features), `shapes` (smooth ellipses on a gradient, rendered exactly at any coordinate), `models` (the
D2C-VAE `Method` `make_d2c_vae`, `encode_mean`, `render_latents` at any resolution; the flax modules `GridEncoder`,
`HierarchicalGrids`, `StyledBlock`, `ScaleModulatedMLP`, `GridField`, `FourierField`, `INRAutoencoder` live in
`gvlab.nn.inr` and are re-exported), `latent` (the latent diffusion model on `gvlab.diffusion`: LSGM mixed prediction,
DDIM sampling; PCA features and the Frechet distance). Submodules load on first use (PEP 562), so `gvlab.nn.inr` can
read `gvlab.inr.grids` without an import cycle.

    >>> import jax
    >>> from gvlab.inr import shapes
    >>> shapes.render_images(shapes.sample(jax.random.key(0), 2), 64).shape
    (2, 64, 64)
"""

import importlib
from typing import TYPE_CHECKING, Any

SUBMODULES = ("grids", "latent", "models", "shapes")


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f"gvlab.inr.{name}")
    raise AttributeError(f"module 'gvlab.inr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBMODULES))


if TYPE_CHECKING:  # static analysers see the eager imports
    from gvlab.inr import grids as grids
    from gvlab.inr import latent as latent
    from gvlab.inr import models as models
    from gvlab.inr import shapes as shapes
