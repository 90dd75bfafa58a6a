"""fbm experiments (see each module's docstring)."""
