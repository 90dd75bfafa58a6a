"""bnn experiments (see each module's docstring)."""
