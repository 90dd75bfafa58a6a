"""robotics experiments (see each module's docstring)."""
