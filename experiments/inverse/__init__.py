"""inverse experiments (see each module's docstring)."""
