"""Mutual-information experiments (see each module's docstring)."""
