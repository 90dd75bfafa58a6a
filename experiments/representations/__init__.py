"""representations experiments (see each module's docstring)."""
