"""`gossipmind token`: the local API's bearer token (``api.token`` in the data dir)."""

from __future__ import annotations

import click

from gossipmind.api.token import RECHECK_S, rotate_token
from gossipmind.api.transport import discover
from gossipmind.cli.common import Ctx, errors, json_option, pass_ctx
from gossipmind.cli.output import console, esc, print_json
from gossipmind.core.errors import ConfigError


@click.group()
def token() -> None:
    """The local API's bearer token (api.token in the data dir, mode 0600)."""


@token.command("rotate")
@json_option
@pass_ctx
@errors
def rotate(ctx: Ctx, as_json: bool) -> None:
    """Replace api.token with a new random token, while the node runs or not.

    A running node accepts only the new token within a second (at once for a
    request that presents it), and ends the event streams opened with the old
    one. SDK clients that read the data dir take the new token on their next
    request; a client given the token directly must be given the new one (its
    reports wait in its queue meanwhile). The token itself is not printed: it
    stays in the file. Run it as the node's user: a token another user owns is
    one the node refuses.
    """
    d = ctx.dir
    if not d.key.is_file():
        raise ConfigError(
            f"{d.root} is not a gossipmind data dir (no identity.key): run `gossipmind init`"
        )
    rotate_token(d.token)
    try:
        url: str | None = discover(d.root)[0]
    except ConfigError:  # no node running (or its api.json unreadable): nothing to tell
        url = None
    if as_json:
        print_json({"rotated": str(d.token), "running_api": url, "recheck_s": RECHECK_S})
    elif url is not None:
        console.print(
            f"rotated {esc(d.token)}: the node at {esc(url)} accepts only the new token "
            f"within {RECHECK_S:g} s (at once for a request that presents it)"
        )
    else:
        console.print(f"rotated {esc(d.token)} (no node running: it starts with the new token)")


__all__ = ["token"]
