"""adversarial experiments (see each module's docstring)."""
