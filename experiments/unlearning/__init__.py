"""unlearning experiments (see each module's docstring)."""
