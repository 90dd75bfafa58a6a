"""discrete-diffusion experiments (see each module's docstring)."""
