"""Implicit neural representations: DDMI's latent -> hierarchical-grid INRs (Park et al., ICLR 2024) and a Functa-style
weight-modulation baseline, on analytically rendered continuous images.

Modules: `grids` (pixel-centre coordinates, bilinear feature-grid lookup with border padding, Fourier features),
`shapes` (smooth ellipses on a gradient, rendered exactly at any coordinate), `models` (`GridEncoder`,
`HierarchicalGrids`, `StyledBlock`, `ScaleModulatedMLP`, `GridField`, `FourierField`, `INRAutoencoder`, the D2C-VAE
`Method` `make_d2c_vae`, `render_latents` at any resolution), `latent` (the latent diffusion model on
`gvlab.diffusion`: LSGM mixed prediction, DDIM sampling; PCA features and the Frechet distance).

    >>> import jax
    >>> from gvlab.inr import shapes
    >>> shapes.render_images(shapes.sample(jax.random.key(0), 2), 64).shape
    (2, 64, 64)
"""

from gvlab.inr import grids as grids
from gvlab.inr import latent as latent
from gvlab.inr import models as models
from gvlab.inr import shapes as shapes
