"""Shared CLI plumbing: data dir, identity, store access, error mapping."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from gossipmind.core.errors import (
    ConfigError,
    GossipmindError,
    IdentityError,
    InvalidOp,
    NotFound,
    SchemaError,
    StoreError,
)
from gossipmind.core.identity import Identity
from gossipmind.store.datadir import DataDir
from gossipmind.store.keyfile import key_is_encrypted, read_key
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store

P = ParamSpec("P")
R = TypeVar("R")

# exit codes: 1 generic, 2 usage (click), 3 not found, 4 invalid op/input, 5 store, 6 identity
EXIT_CODES: dict[type[GossipmindError], int] = {
    NotFound: 3,
    InvalidOp: 4,
    SchemaError: 4,
    ConfigError: 4,
    StoreError: 5,
    IdentityError: 6,
}


class Ctx:
    def __init__(self, data_dir: str | None) -> None:
        self.dir = DataDir.resolve(data_dir)

    def identity(self) -> Identity:
        path = self.dir.key
        passphrase = None
        if key_is_encrypted(path):
            passphrase = os.environ.get("GOSSIPMIND_PASSPHRASE") or click.prompt(
                "Key passphrase", hide_input=True, err=True
            )
        return read_key(path, passphrase)

    def reader(self) -> Reader:
        return Reader(self.dir.store)

    def store(self) -> Store:
        return Store.open(self.dir.store)


pass_ctx = click.make_pass_decorator(Ctx)


def now_ms() -> int:
    return int(time.time() * 1000)


def errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Map GossipmindError (and OS errors) to one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except GossipmindError as exc:
            code = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
            raise click.exceptions.Exit(_fail(str(exc), code)) from None
        except OSError as exc:
            raise click.exceptions.Exit(_fail(f"{exc.strerror or exc}", 1)) from None

    return wrapper


def _fail(message: str, code: int) -> int:
    click.echo(f"error: {message}", err=True)
    return code


def parse_hex(value: str, what: str, size: int = 32) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise click.BadParameter(f"{what} must be hex") from None
    if len(raw) != size:
        raise click.BadParameter(f"{what} must be {size} bytes ({2 * size} hex characters)")
    return raw


def resolve_prefix(ctx: Ctx, value: str, kind: str) -> bytes:
    """Accept a full hex id or a unique prefix of a fix/pattern/goal/member id."""
    if len(value) == 64:
        return parse_hex(value, kind)
    with ctx.reader() as r:
        found = r.show(value)
    key = {"fix": "fix", "pattern": "pattern", "goal": "goal", "member": "key"}[kind]
    if found["type"] != kind:
        raise NotFound(f"{value} is a {found['type']}, not a {kind}")
    return bytes(found[key])


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
