"""inr experiments (see each module's docstring)."""
