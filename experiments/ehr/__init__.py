"""Electronic health records experiments (see each module's docstring)."""
