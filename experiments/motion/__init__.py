"""motion experiments (see each module's docstring)."""
