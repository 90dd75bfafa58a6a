"""Errors that the CLI turns into a one-line message and a non-zero exit code.

Library users catch them like any exception; every message says what was wrong and what to do instead.
"""

from __future__ import annotations


class GvlabError(Exception):
    """Base class: bad input or a state the user can fix. The CLI prints it without a traceback."""


class ConfigError(GvlabError, ValueError):
    """An unknown config key, or a value that does not convert to the declared type."""


class UnknownExperimentError(GvlabError, KeyError):
    """An experiment name that is not registered (the message suggests close names)."""

    def __str__(self) -> str:  # KeyError would quote the message; show it as written
        return str(self.args[0]) if self.args else ""


class WorkdirError(GvlabError):
    """A workdir that belongs to another experiment or another configuration."""


class CheckpointError(GvlabError):
    """No readable checkpoint where one was expected."""


class NonFiniteError(GvlabError, FloatingPointError):
    """Training produced NaN or inf; the message names the step and the metric."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a fit; `checkpoint_step` is the step now on disk (None: nothing was saved)."""

    def __init__(self, checkpoint_step: int | None, workdir=None):
        super().__init__(checkpoint_step)
        self.checkpoint_step, self.workdir = checkpoint_step, workdir
