"""compression experiments (see each module's docstring)."""
