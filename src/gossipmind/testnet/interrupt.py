"""SIGTERM and SIGHUP as exceptions, so that they clean up like Ctrl-C does.

``testnet up`` starts node processes that outlive it once it returns; if it is
stopped half-way, it must stop what it started. Ctrl-C raises
KeyboardInterrupt, which the cleanup sees; SIGTERM (``kill``, a CI runner
cancelling a job) and SIGHUP (a closed terminal) would end the process without
any cleanup. Inside :func:`terminating` they raise :class:`Terminated` instead.

Cleanup that must run to its end (``testnet chaos`` lifting its faults) runs
inside :func:`deferred`: a signal that arrives meanwhile is raised only once the
block is over.

A command whose work either succeeds (and leaves processes running) or fails
(and stops them) runs inside :func:`interruptible`: SIGINT too raises
:class:`Terminated` there, until the work calls :func:`settle` as the last step
of the block that cleans up on failure. From then on the work has succeeded: a
signal is only recorded, so the command cannot report a failure while what it
started keeps running.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_DEFERRING = threading.Event()  # inside deferred(): terminating() leaves the handlers alone


class Terminated(KeyboardInterrupt):
    """The process received ``signum`` (SIGTERM or SIGHUP) inside :func:`terminating`,
    or SIGINT too inside :func:`interruptible`.

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
    if (
        _DEFERRING.is_set()
        or _ACTIVE  # interruptible() already turns them into Terminated
        or threading.current_thread() is not threading.main_thread()
    ):
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


@contextmanager
def deferred() -> Iterator[None]:
    """Hold off SIGINT, SIGTERM and SIGHUP while inside, so that the block runs to
    its end; the first of them that arrived is delivered when it ends, to the
    handler that was there before (KeyboardInterrupt for Ctrl-C, :class:`Terminated`
    inside :func:`terminating`); later ones are dropped. An ignored signal stays
    ignored.

    :func:`terminating` inside does nothing. Outside the main thread (where
    handlers cannot be set) this does nothing either.
    """
    if _DEFERRING.is_set() or threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[signal.Signals] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        caught.append(signal.Signals(signum))

    previous = {}
    for sig in (signal.SIGINT, *SIGNALS):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    _DEFERRING.set()
    try:
        yield
    finally:
        _DEFERRING.clear()
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
    if caught:
        first = previous[caught[0]]
        if callable(first):
            first(caught[0], None)
        else:  # the default action (SIG_DFL): end the process as the signal would have
            signal.raise_signal(caught[0])


class Scope:
    """What :func:`interruptible` saw: ``late`` holds the signals that arrived after
    :func:`settle` (recorded, not raised)."""

    def __init__(self) -> None:
        self.fired = False
        self.settled = False
        self.late: list[signal.Signals] = []


_ACTIVE: list[Scope] = []  # the interruptible() scope in force, if any


@contextmanager
def interruptible() -> Iterator[Scope]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Terminated` while inside, until
    :func:`settle` is called; after that they are recorded in the scope's ``late``.

    Only the first signal raises: later ones are ignored, so that they cannot
    interrupt the cleanup the first one started. :func:`terminating` inside does
    nothing. Outside the main thread, or nested, this does nothing (and
    :func:`settle` neither).
    """
    scope = Scope()
    if _ACTIVE or threading.current_thread() is not threading.main_thread():
        yield scope
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if scope.settled:
            scope.late.append(signal.Signals(signum))
        elif not scope.fired:
            scope.fired = True
            raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, *SIGNALS)}
    _ACTIVE.append(scope)
    try:
        yield scope
    finally:
        _ACTIVE.clear()
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def settle() -> None:
    """Inside :func:`interruptible`: the work is done, signals no longer raise.

    Call it as the last statement of the ``try`` whose ``except`` undoes the work:
    a signal raised before it is handled there (the work undone), one after it is
    only recorded. It is atomic for signals, whose Python handlers run between
    bytecodes of the main thread.
    """
    for scope in _ACTIVE:
        scope.settled = True
