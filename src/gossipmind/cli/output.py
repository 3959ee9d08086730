"""Output helpers: JSON (bytes as hex) and rich tables.

Every piece of data (names, templates, reasons, paths, anything a user or a peer
wrote) must reach rich either escaped (:func:`esc`) or through :func:`table` /
:func:`styled`: a ``[`` in it would otherwise be read as markup, crash the command
or vanish. All three also pass it through :func:`visible`: any member can sign free
text (a pattern template, a member name, a rationale), and a control character in
it (ESC, C1, a bidi override) would otherwise reach the operator's terminal and
act on it (clear the screen, retitle the window, hide or reorder text).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table
from rich.text import Text

UNWRAPPED_WIDTH = 100_000
"""The width of a console writing to a pipe or a file: wide enough never to split a
line, so ids and addresses stay whole for grep and copy-paste."""


class _Console(Console):
    """A console that wraps to the terminal only when it writes to one (or when
    $COLUMNS or an explicit width says so); into a pipe or a file it never wraps."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kwargs.get("width") is None:  # rich froze $COLUMNS here: read it when printing
            self._width = None
        if kwargs.get("height") is None:
            self._height = None

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and not os.environ.get("COLUMNS"):
            return ConsoleDimensions(UNWRAPPED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)


_TERMINAL_CONTROLS = r"\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_INLINE = re.compile(rf"[\t\n{_TERMINAL_CONTROLS}]")
_MULTILINE = re.compile(rf"[{_TERMINAL_CONTROLS}]")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _shown(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str, *, lines: bool = False) -> str:
    """``text`` with every character that could act on a terminal written as a
    visible escape (``\\x1b``, ``\\x9b``, ``\\u202e``, ``\\n``): C0 controls, DEL, C1
    controls and the bidi overrides and isolates (U+202A-U+202E, U+2066-U+2069).
    With ``lines`` a newline and a tab are kept (a table cell, an error message);
    otherwise they are escaped too, so one value cannot forge another line."""
    return (_MULTILINE if lines else _INLINE).sub(_shown, text)


def esc(value: object) -> str:
    """``str(value)`` made safe to embed in rich markup, on one line (:func:`visible`)."""
    return escape(visible(str(value)))


def styled(text: str, style: str) -> Text:
    """A table cell with a style (plain cells are never parsed as markup)."""
    return Text(visible(text, lines=True), style=style)


def jsonable(value: Any) -> Any:
    """Bytes become lowercase hex; tuples lists; sets sorted lists."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(value), indent=2, sort_keys=True) + "\n")


def short(value: bytes | str, n: int = 12) -> str:
    text = value.hex() if isinstance(value, bytes) else value
    return text[:n]


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table whose cells are data: a str cell is shown verbatim (control characters
    made :func:`visible`), never as markup; pass a :class:`Text` (see :func:`styled`)
    for a styled cell."""
    t = Table(title=esc(title), title_justify="left", show_lines=False)
    for col in columns:
        t.add_column(esc(col), overflow="fold")
    for row in rows:
        t.add_row(*[c if isinstance(c, Text) else Text(visible(str(c), lines=True)) for c in row])
    console.print(t)
