"""Stop a fit cleanly on Ctrl-C (SIGINT) or a scheduler's SIGTERM: finish the step, checkpoint, then raise.

Python runs signal handlers between bytecodes, and a fit spends nearly all its time inside the compiled step.
An exception raised by the default handler therefore lands right after the step returns and *before* its
results are assigned, when the only state in reach is the step's donated (deleted) input. So during a fit the
handlers only record the request; the loop looks at it after every step, checkpoints the state it holds, and
raises `KeyboardInterrupt` itself. A second signal raises at once, for a user who does not want to wait.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class StopRequest:
    """Set by the handlers; `requested` is read by the loop after each step."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM set `StopRequest.requested` instead of raising (main thread only)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signals cannot be handled here; the default behaviour stays
        return

    def handler(signum, frame):
        if request.requested:  # asked twice: stop now
            raise KeyboardInterrupt
        request.requested = True
        request.signal_name = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
