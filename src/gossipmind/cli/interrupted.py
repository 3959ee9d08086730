"""How `gossipmind testnet` commands that start processes end on a signal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from gossipmind.cli.output import err_console, esc


@contextmanager
def exit_on_signal(cleaned: str) -> Iterator[None]:
    """SIGTERM/SIGHUP inside (turned into Terminated by the launcher, which then
    cleans up): one line on stderr, exit 128 + the signal number."""
    from gossipmind.testnet.interrupt import Terminated

    try:
        yield
    except Terminated as exc:
        click.echo(f"error: {exc}: stopped {cleaned}", err=True)
        raise click.exceptions.Exit(exc.exit_code) from None


@contextmanager
def until_started(cleaned: str) -> Iterator[None]:
    """`up`/`start`/`restart`: Ctrl-C (SIGINT) as well as SIGTERM/SIGHUP stop what
    the launcher started (one line, exit 128 + the signal number) until it is
    ready; after that (interrupt.settle) a signal changes nothing: exit 0."""
    from gossipmind.testnet.interrupt import interruptible

    with interruptible() as scope, exit_on_signal(cleaned):
        yield
    if scope.late:
        note = f"{scope.late[0].name} came after the start had succeeded: ignored, it runs"
        err_console.print(esc(note), style="yellow")
