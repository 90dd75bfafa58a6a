"""vi experiments (see each module's docstring)."""
