"""Shared CLI plumbing: data dir, identity, store access, error mapping."""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from gossipmind.cli.output import visible
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
from gossipmind.node.logfile import backups_problem, size_problem
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


PASSPHRASE_HELP = (
    "The passphrase of an encrypted identity key, in a file (or set GOSSIPMIND_PASSPHRASE)."
)


def read_passphrase(path: Path) -> str:
    """The passphrase in ``path`` (surrounding whitespace stripped); a usage error if
    the file holds none: an empty passphrase would mean an unencrypted key."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise click.BadParameter(
            f"{path} is not UTF-8 text", param_hint="'--passphrase-file'"
        ) from None
    passphrase = text.strip()
    if not passphrase:
        raise click.BadParameter(
            f"{path} is empty: it must hold the passphrase", param_hint="'--passphrase-file'"
        )
    return passphrase


class Ctx:
    def __init__(self, data_dir: str | None) -> None:
        self.dir = DataDir.resolve(data_dir)
        self.passphrase_file: Path | None = None

    def passphrase(self) -> str | None:
        """From --passphrase-file, else $GOSSIPMIND_PASSPHRASE, else None."""
        if self.passphrase_file is not None:
            return read_passphrase(self.passphrase_file)
        return os.environ.get("GOSSIPMIND_PASSPHRASE") or None

    def identity(self) -> Identity:
        """The local identity. An encrypted key takes --passphrase-file or
        $GOSSIPMIND_PASSPHRASE; only on a terminal is the passphrase asked for. Without
        one, the same IdentityError (exit 6) as the node's."""
        path = self.dir.key
        passphrase = None
        if key_is_encrypted(path):
            passphrase = self.passphrase()
            if passphrase is None and sys.stdin.isatty():
                passphrase = click.prompt("Key passphrase", hide_input=True, err=True)
        return read_key(path, passphrase)

    def reader(self) -> Reader:
        self._not_a_directory()
        return Reader(self.dir.store)

    def store(self) -> Store:
        self._not_a_directory()
        return Store.open(self.dir.store)

    def _not_a_directory(self) -> None:
        if self.dir.store.is_dir():
            raise StoreError(f"{self.dir.store} is a directory, not a gossipmind store")


pass_ctx = click.make_pass_decorator(Ctx)


def _remember_passphrase_file(ctx: click.Context, _: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(Ctx).passphrase_file = value


passphrase_option = click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    expose_value=False,
    callback=_remember_passphrase_file,
    help=PASSPHRASE_HELP,
)
"""For every command that signs with the local identity (read through :meth:`Ctx.identity`)."""


class FloatRange(click.FloatRange):
    """A click.FloatRange that refuses nan and infinities (nan compares false with
    every bound, so click's own range lets it through)."""

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return float(number)


def is_utf8(text: str) -> bool:
    """Whether ``text`` came from UTF-8 bytes: Python hands an argument or path that is
    not UTF-8 over with lone surrogates in it (``surrogateescape``), which no op,
    query or SQLite URI can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def with_raw_bytes(text: str) -> str:
    """``text`` to show, its bytes that are not UTF-8 written ``\\xff``."""
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return visible(raw)


class Utf8Text(click.types.StringParamType):
    """Text that must be UTF-8 (every plain text argument and option: see
    :func:`require_utf8`); other bytes are a usage error naming the parameter."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = super().convert(value, param, ctx)
        if not is_utf8(text):
            self.fail(f"'{with_raw_bytes(text)}' is not UTF-8 text", param, ctx)
        return text


UTF8_TEXT = Utf8Text()


def require_utf8(command: click.Command, *, except_params: frozenset[str]) -> None:
    """Make every plain text parameter of ``command`` and its subcommands refuse bytes
    that are not UTF-8 (:class:`Utf8Text`), before the command runs: such text would
    otherwise reach an op or a query and fail there. Paths (``click.Path``), choices
    and the parameters named in ``except_params`` (text that may be a file name)
    keep their type."""
    for param in command.params:
        if type(param.type) is click.types.StringParamType and param.name not in except_params:
            param.type = UTF8_TEXT
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            require_utf8(sub, except_params=except_params)


def max_length(limit: int) -> Callable[[click.Context, click.Parameter, str], str]:
    """A callback refusing a text option longer than ``limit`` characters (the schema's
    limit: it would otherwise be refused, or cut, later)."""

    def check(_ctx: click.Context, param: click.Parameter, value: str) -> str:
        if value is not None and len(value) > limit:
            raise click.BadParameter(f"at most {limit} characters, got {len(value)}")
        return value

    return check


def check_log_max_bytes(
    _ctx: click.Context, _param: click.Parameter, value: int | None
) -> int | None:
    """Click callback of a ``--log-max-bytes`` (``node``, ``testnet up``): 0 or ≥ 1024."""
    if value is not None and (why := size_problem(value)) is not None:
        raise click.BadParameter(why)
    return value


def check_log_backups(
    _ctx: click.Context, _param: click.Parameter, value: int | None
) -> int | None:
    """Click callback of a ``--log-backups`` (``node``, ``testnet up``): 1 to 1000."""
    if value is not None and (why := backups_problem(value)) is not None:
        raise click.BadParameter(why)
    return value


def check_output_path(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: its directory
    must exist and be writable, and it must not be a directory."""
    parent = path.parent
    if path.is_dir():
        raise click.BadParameter(f"{path} is a directory", param_hint=f"'{option}'")
    if not parent.is_dir():
        raise click.BadParameter(
            f"cannot write {path}: no directory {parent}", param_hint=f"'{option}'"
        )
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise click.BadParameter(
            f"cannot write {path}: permission denied", param_hint=f"'{option}'"
        )


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
            raise click.exceptions.Exit(_fail(os_error_text(exc), 1)) from None

    return wrapper


def os_error_text(exc: OSError) -> str:
    """``filename: strerror`` (both file names when there are two): never a bare reason."""
    reason = exc.strerror or str(exc)
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def _fail(message: str, code: int) -> int:
    click.echo(f"error: {visible(message, lines=True)}", err=True)  # it may quote a peer's text
    return code


def parse_hex(value: str, what: str, size: int = 32) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise click.BadParameter(f"{what} must be hex") from None
    if len(raw) != size:
        raise click.BadParameter(f"{what} must be {size} bytes ({2 * size} hex characters)")
    return raw


HEX_DIGITS = frozenset("0123456789abcdef")


def id_prefix(value: str) -> str:
    """``value`` lowercased, if it is 4 to 64 hex digits; else bad input (exit 4)."""
    prefix = value.lower()
    if not (4 <= len(prefix) <= 64 and all(c in HEX_DIGITS for c in prefix)):
        raise ConfigError(f"{value!r} is not a hex id prefix of 4 to 64 characters")
    return prefix


def resolve_prefix(ctx: Ctx, value: str, kind: str) -> bytes:
    """The id of the fix/pattern/goal/member named by ``value``: a full hex id or a
    unique prefix (malformed: exit 4). Either way it must exist here and be of
    that kind (else exit 3)."""
    prefix = id_prefix(value)
    with ctx.reader() as r:
        try:
            found = r.show(prefix)
        except NotFound:
            if len(value) == 64:
                raise NotFound(f"no {kind} {value} here") from None
            raise
    key = {"fix": "fix", "pattern": "pattern", "goal": "goal", "member": "key"}[kind]
    if found["type"] != kind:
        raise NotFound(f"{value} is {_a(found['type'])}, not {_a(kind)}")
    return bytes(found[key])


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
