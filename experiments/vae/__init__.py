"""vae experiments (see each module's docstring)."""
