"""Signals the CLI received, kept where a fit can see them (standard library only: `gvlab list` stays JAX-free).

A KeyboardInterrupt raised while Python runs a callback from C code (a finaliser, a library hook) is printed and
dropped, so a Ctrl-C during start-up could be lost and the run would train to the end. The CLI's handlers note
every SIGINT/SIGTERM here, and `gvlab.train.fit` calls `raise_if_received` before its first step.
"""

from __future__ import annotations

import signal

_RECEIVED: list[str] = []


def note(signum: int) -> None:
    """Remember a SIGINT or SIGTERM (called by the CLI's handlers before they raise KeyboardInterrupt)."""
    _RECEIVED.append(signal.Signals(signum).name)


def raise_if_received() -> None:
    """Raise KeyboardInterrupt for a signal noted since the last call or `clear`, and forget it."""
    if _RECEIVED:
        name = _RECEIVED[-1]
        _RECEIVED.clear()
        raise KeyboardInterrupt(name)


def clear() -> None:
    """Forget the noted signals (their KeyboardInterrupt reached the caller)."""
    _RECEIVED.clear()
