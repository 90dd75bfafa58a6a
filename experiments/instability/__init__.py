"""instability experiments (see each module's docstring)."""
