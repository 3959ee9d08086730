"""SIGTERM and SIGHUP as exceptions, so that they clean up like Ctrl-C does.

``testnet up`` starts node processes that outlive it once it returns; if it is
stopped half-way, it must stop what it started. Ctrl-C raises
KeyboardInterrupt, which the cleanup sees; SIGTERM (``kill``, a CI runner
cancelling a job) and SIGHUP (a closed terminal) would end the process without
any cleanup. Inside :func:`terminating` they raise :class:`Terminated` instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The process received ``signum`` (SIGTERM or SIGHUP) inside :func:`terminating`.

    A KeyboardInterrupt, so that whatever cleans up after Ctrl-C (and click's
    "Aborted!") handles it too.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process ended by this signal."""
        return 128 + self.signum


@contextmanager
def terminating() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while inside; restore after.

    Only the first signal raises: later ones are ignored, so that they cannot
    interrupt the cleanup the first one started. Outside the main thread
    (where handlers cannot be set) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
