"""Speech experiments (see each module's docstring)."""
