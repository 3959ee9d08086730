"""The word lists and character classes of :mod:`gossipmind.learn.redact`.

Kept apart from the rules that use them so that both stay readable. Key lists are
regex alternatives, matched case-insensitively; every other name here is plain data.
"""

from __future__ import annotations

__all__ = [
    "COOKIE_KEYS",
    "GLUED_SECRET_KEYS",
    "HOST_SUFFIXES",
    "NAME_CHARS_NON_ASCII",
    "PERSONAL_SEGMENTS",
    "PII_KEYS",
    "ROUTE_SEGMENTS",
    "SECRET_KEYS",
    "final_letters",
]

# Path segments after which the next segment names a person or an account ("home":
# /home/alice, /var/home/alice; "users": /Users/alice, C:\\Users\\alice).
PERSONAL_SEGMENTS = frozenset(
    [
        "u",
        "home",
        "user",
        "users",
        "customer",
        "customers",
        "person",
        "people",
        "profile",
        "profiles",
        "member",
        "members",
        "account",
        "accounts",
        "employee",
        "employees",
        "patient",
        "patients",
        "contact",
        "contacts",
        "client",
        "clients",
        "owner",
        "owners",
        "author",
        "authors",
        "student",
        "students",
        "documents and settings",
    ]
)
# Segments after a personal keyword that are routes, not names.
ROUTE_SEGMENTS = frozenset(["me", "self", "current", "new", "search", "list", "all", "count"])

# Host names are parameters (which replica, which tenant) and may name a person or a
# customer ("acme-corp.myshopify.com"); recognised by a common top-level or internal suffix.
HOST_SUFFIXES = (
    r"com|net|org|io|dev|ai|co|app|cloud|info|biz|uk|de|fr|nl|eu|jp|cn|br|ru|ca|au|ch|se"
    r"|es|pl|internal|local|localhost|lan|corp|home|svc|cluster|intra|test|example|invalid"
)

# Keys whose value is a secret or personal. A key is also the last part of a compound
# name (db_password, X-Auth-Token, dbPassword: see ``redact._KEY_PREFIX``).
SECRET_KEYS = (
    r"password|passwd|pwd|passphrase|secret|client[_-]?secret|api[_-]?key|apikey|x-api-key"
    r"|(?:secret|access|signing|encryption|master)[_-]?key"
    r"|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token|session[_-]?(?:id|token)"
    r"|token|private[_-]?key|signature|cookie|set-cookie|authorization|otp|pin|cvv|cvc"
)
# Secret keys that are keys at the end of a name even when run together with the rest of
# it, with no separator or case change (PGPASSWORD, mysqlpwd, GITHUBTOKEN, clientsecret).
GLUED_SECRET_KEYS = r"pass(?:word|wd|phrase)|pwd|secret|token|api[_-]?key"
PII_KEYS = (
    r"e-?mail|name|first[_-]?name|last[_-]?name|full[_-]?name|user[_-]?name|login"
    r"|surname|nickname"
    r"|customer[_-]?name|card[_-]?holder|holder|address|street|city|zip|zip[_-]?code"
    r"|post[_-]?code|postal[_-]?code|dob|birth[_-]?date|date[_-]?of[_-]?birth|ssn|iban"
    r"|phone|phone[_-]?number|telephone|mobile|tel|ip|ip[_-]?address|client[_-]?ip"
)
COOKIE_KEYS = r"cookie|set-cookie"


def final_letters(keys: str) -> str:
    """The letters a key of ``keys`` can end with, lower-case: a name that ends in no
    other is no key, which a rule can tell from the name's last character alone.

    Each alternative must end in a letter or in a ``(?:...)`` group of such alternatives
    (``session[_-]?(?:id|token)``); anything else raises ``ValueError``.
    """
    out: set[str] = set()
    for alt in _alternatives(keys):
        if alt.endswith(")"):
            depth = 0
            for i in range(len(alt) - 1, -1, -1):
                depth += {")": 1, "(": -1}.get(alt[i], 0)
                if depth == 0:
                    break
            if not alt.startswith("(?:", i):
                raise ValueError(f"a key group must be (?:...): {alt!r}")
            out.update(final_letters(alt[i + 3 : -1]))
        elif alt[-1:].isascii() and alt[-1:].isalpha():
            out.add(alt[-1].lower())
        else:
            raise ValueError(f"a key must end in a letter or a group: {alt!r}")
    return "".join(sorted(out))


def _alternatives(keys: str) -> list[str]:
    """The top-level alternatives of a regex alternation (no "|" inside brackets)."""
    alts, depth, start = [], 0, 0
    for i, ch in enumerate(keys):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "|" and depth == 0:
            alts.append(keys[start:i])
            start = i + 1
    alts.append(keys[start:])
    return alts


# The non-ASCII characters of a name, for a regex character class: the middle dot U+00B7
# of Catalan (col·legi; NFKC splits the letter U+0140 into "l" and this dot), and every
# character above U+00BF but whitespace (after NFKC: U+1680, U+2028, U+2029), general
# punctuation (dashes, quotes, ellipsis: U+2010-U+2027, U+2030-U+205F) and CJK punctuation
# (U+3000-U+3004, U+3008-U+3020, U+3030, U+303D-U+303F). The rest of U+0080-U+00BF is
# C1 controls and Latin-1 punctuation (NFKC turns its few letters and digits into others).
# Every letter, mark and decimal digit, NFKC-normalised, is made of these and ASCII:
# Python's re has no class for combining marks, which Indic scripts need inside a word,
# so ``\w`` would cut a name.
NAME_CHARS_NON_ASCII = (
    "\u00b7\u00c0-\u167f\u1681-\u1fff\u200b-\u200f\u202a-\u202e\u2060-\u2fff"
    "\u3005-\u3007\u3021-\u302f\u3031-\u303c\u3040-\U0010ffff"
)
