"""pvrnn experiments (see each module's docstring)."""
