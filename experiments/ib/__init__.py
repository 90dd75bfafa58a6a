"""ib experiments: information-bottleneck regression (see each module's docstring)."""
