"""collapse experiments (see each module's docstring)."""
