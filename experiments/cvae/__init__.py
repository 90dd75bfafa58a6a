"""cvae experiments (see each module's docstring)."""
