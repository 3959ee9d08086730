"""The one exception root of gossipmind and its first-level families.

Every error the library raises on purpose derives from :class:`GossipmindError`.
Third-party errors (msgpack, PyNaCl, sqlite3, libp2p, httpx) are mapped at the
edge with ``raise ... from``.
"""

from __future__ import annotations

# The longest InvalidOp.detail kept: details are recorded with every rejected op
# (Replica.rejected, the store's rejected table; 100 000 of each), and a detail
# quoting a 60 000-character value would make that bounded record ~6 GiB.
MAX_DETAIL = 200


def cap_detail(detail: str) -> str:
    """``detail`` in ASCII (other characters escaped as ``\\uXXXX``), cut to
    :data:`MAX_DETAIL` characters, the last three then ``...``. ASCII keeps it
    at one byte a character in memory (one non-ASCII character would make every
    character take two or four)."""
    if not detail.isascii():
        detail = detail.encode("ascii", "backslashreplace").decode("ascii")
    return detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 3] + "..."


class GossipmindError(Exception):
    """Root of every error gossipmind raises on purpose."""


class EncodingError(GossipmindError):
    """Bytes are not canonical gossipmind msgpack (or hold a forbidden type)."""


class SchemaError(GossipmindError):
    """A value does not match its schema; ``path`` says where."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class InvalidOp(GossipmindError):
    """An op failed validation. ``code`` is a stable machine-readable reason;
    ``detail`` says why in words, at most :data:`MAX_DETAIL` characters."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail = cap_detail(detail)
        super().__init__(f"{code}: {detail}")


class IdentityError(GossipmindError):
    """A key file is missing, malformed, has unsafe permissions or a wrong passphrase."""


class StoreError(GossipmindError):
    """The SQLite store cannot be opened or used (corrupt, foreign, newer version)."""


class NetworkError(GossipmindError):
    """Transport-level failure (dial, stream, gossip)."""


class SyncError(GossipmindError):
    """A sync peer sent a malformed or out-of-protocol message."""


class RecipeError(GossipmindError):
    """A fix recipe could not be applied."""


class ConfigError(GossipmindError):
    """A configuration file, flag or data directory is invalid."""


class NotFound(GossipmindError):
    """The requested object (op, pattern, fix, goal, member) does not exist."""


class Unavailable(GossipmindError):
    """The node cannot take this request now (nothing was taken): send it again later."""
