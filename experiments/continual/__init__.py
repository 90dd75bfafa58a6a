"""continual experiments (see each module's docstring)."""
