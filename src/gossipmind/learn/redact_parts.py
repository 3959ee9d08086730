"""The URL, path and card helpers of :mod:`gossipmind.learn.redact`, and its placeholders.

Moved out of ``redact.py`` (which keeps the ordered rules and ``redact`` itself) so
that both stay under the module size limit. The URL and path helpers redact the
credentials, host, query, fragment and personal segments of a URL or a path apart;
``_card`` recognises a Luhn-valid card number made of whole groups of a candidate.
``redact.py`` re-exports :data:`PLACEHOLDERS` and :func:`placeholder`.
"""

from __future__ import annotations

import re

from gossipmind.learn.redact_keys import (
    NAME_CHARS_NON_ASCII,
    PERSONAL_SEGMENTS,
    ROUTE_SEGMENTS,
)

__all__ = ["PLACEHOLDERS", "placeholder"]

PLACEHOLDERS = (
    "card",
    "cred",
    "email",
    "frag",
    "host",
    "iban",
    "ip",
    "jwt",
    "key",
    "mac",
    "name",
    "num",
    "phone",
    "pii",
    "secret",
    "ssn",
    "token",
    "uuid",
    "val",
)

_PH_RE = re.compile(r"<(?:" + "|".join(PLACEHOLDERS) + r"|trunc)>")


def placeholder(kind: str) -> str:
    return f"<{kind}>"


# The characters of an email's local part and of a domain label, non-ASCII ones included
# (josé@exämple.com, 田中@例え.jp): internationalised addresses are emails too, and their
# hosts start paths (exämple.com/users/bob).
_NA = NAME_CHARS_NON_ASCII
_LABEL = "A-Za-z0-9" + _NA
_TOKEN_CHARS = r"[^\s\"'<>\\`]"
# A URL with a scheme; the credentials, host, path, query and fragment are redacted apart.
_SCHEME_URL = r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,30}://" + _TOKEN_CHARS + "+"
# A scheme-less path. Both kinds run to the end of the token, and a start is the beginning
# of a run (look-behinds, possessive prefix): each character is looked at a bounded number
# of times, however hostile the text.
# So does a home directory "~alice/" (a name: a letter or "_" first; "~5/10" is no home).
_BP = rf"(?<![\w./:~\-{_NA}])(?:/|~[^\W\d][{_LABEL}_.:\-]*+/|[{_LABEL}_.:\-]++/)"
_BARE_PATH = _BP + _TOKEN_CHARS + "+"
_URL = re.compile(f"(?P<scheme>{_SCHEME_URL})|{_BARE_PATH}")
_SCHEME_URL_RE = re.compile(_SCHEME_URL)
_BARE_PATH_RE = re.compile(_BARE_PATH)
# "@" then a dotted domain: a token holding one is left to the email rule, which takes it
# whole. Searched once per token, never by a look-ahead at every position (quadratic).
_EMAIL_AT = re.compile(rf"@(?:[{_LABEL}\-]+\.)+[A-Za-z{_NA}]")
# A backslash and the character it escapes go together, here and in key/value pairs: a
# value taken up to an escaped quote must not leave the quote bare (it would then close a
# quoted value early).
_QUERY_PAIR = re.compile(r"([?&;][A-Za-z0-9_.\-\[\]%]{1,64}=)(?:[^&;#\s\"'\\]|\\.)+")


def _redact_path(path: str) -> str:
    segments = path.split("/")
    out: list[str] = []
    prev = ""
    for seg in segments:
        low = seg.lower()
        if (
            seg
            and prev in PERSONAL_SEGMENTS
            and low not in ROUTE_SEGMENTS
            and not _PH_RE.fullmatch(seg)
        ):
            out.append(placeholder("name"))
        elif len(seg) > 1 and seg[0] in "~@":
            out.append(seg[0] + placeholder("name"))
        else:
            out.append(seg)
        prev = low.rsplit(":", 1)[-1]
    return "/".join(out)


# A Windows path: the segment after a personal one (C:\\Users\\bob) is a name, spaces
# included, up to a backslash, a quote, ",", ";" or the line's end; backslashes may be
# doubled (JSON). A match starts only at the first backslash of a run: linear.
_WIN_PERSONAL = re.compile(
    r"(?i)(?<!\\)(\\+(?:"
    + "|".join(sorted((re.escape(s) for s in PERSONAL_SEGMENTS), key=len, reverse=True))
    + r")\\+)(?!<name>)[^\\\r\n\"'<>|,;:*?]+"
)
# A UNC path names a host: \\fileserver\share -> \\<host>\share (or doubled: an OSError's repr).
_UNC_HOST = re.compile(r"(?<![\\\w:])(\\\\(?:\\\\)?)[A-Za-z0-9][A-Za-z0-9.\-]{0,253}(?=\\)")


def _redact_query(query: str) -> str:
    parts = []
    for piece in re.split(r"([&;])", query):
        if piece in ("&", ";", ""):
            parts.append(piece)
        elif "=" in piece:
            key, value = piece.split("=", 1)
            # an empty value has nothing to hide, and stays empty: "<val>" in its
            # place would be redacted again into "<val><val>" (not idempotent)
            parts.append(key + "=" + (placeholder("val") if value else ""))
        else:
            parts.append(placeholder("val"))
    return "".join(parts)


def _userinfo_end(rest: str, cut: int) -> int:
    """Where the credentials end when the password holds "/", "?" or "#" (-1: they don't).

    A raw connection string (``postgres://admin:pa/ss@db/app``) breaks the URL grammar:
    the authority ends at the first "/", "?" or "#", but the credentials run to the last
    "@". They do when the text before the cut is ``user:password`` with no "@", and the
    password is not a port (``host:8080/p?email=a@b.com``). A port-like password
    (``admin:1234/5@db``) still counts when only one path segment, with no "/", "?", "#",
    "=" or "&", lies between the cut and the "@". Greedy: ``http://h:80/p@y`` loses its
    host and path (a false positive costs a little precision, a false negative leaks).
    """
    at = rest.rfind("@")
    if not 0 <= cut < at or "@" in rest[:cut]:
        return -1
    _, colon, password = rest[:cut].partition(":")
    if not colon:
        return -1
    port_like = not password or (password.isascii() and password.isdigit())
    if not port_like:
        return at
    return -1 if any(ch in "/?#=&" for ch in rest[cut + 1 : at]) else at


def _url_text(s: str) -> str:
    head = ""
    if "://" in s:
        scheme, rest = s.split("://", 1)
        cut = min(
            (i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1
        )
        at = _userinfo_end(rest, cut)
        if at >= 0:  # the credentials first: "/", "?" or "#" in the password
            cut = min((i for i in (rest.find(c, at) for c in "/?#") if i >= 0), default=-1)
        authority, rest = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
        if "@" in authority:
            authority = placeholder("cred") + "@" + authority.rsplit("@", 1)[1]
        head = f"{scheme}://{authority}"
        s = rest
    frag = ""
    if "#" in s:
        s, frag_text = s.split("#", 1)
        frag = "#" + placeholder("frag") if frag_text else "#"
    query = ""
    if "?" in s:
        s, q = s.split("?", 1)
        query = "?" + _redact_query(q)
    return head + _redact_path(s) + query + frag


def _url(m: re.Match[str]) -> str:
    s = m.group(0)
    if m.group("scheme") is None:
        ats = [e.start() for e in _EMAIL_AT.finditer(s)]
        if ats:
            # A path may only start after the token's last email (the email rule takes
            # the rest whole); a URL with a scheme may start anywhere after this start.
            cands = [
                c
                for c in (_SCHEME_URL_RE.search(s, 1), _BARE_PATH_RE.search(s, ats[-1] + 1))
                if c is not None
            ]
            if not cands:
                return s
            first = min(cands, key=lambda c: c.start())
            return s[: first.start()] + _url_text(first.group(0))
    return _url_text(s)


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _card(m: re.Match[str]) -> str:
    """A Luhn-valid 13-19 digit number made of whole groups of the candidate, if any.

    One pass over the candidate, then a constant-time check per pair of group boundaries
    (a candidate has at most 23 digits): ``sums[c][k]`` is the Luhn sum (mod 10) of the
    digits before ``k`` for a number ending at an index of parity ``c`` (a digit is doubled
    when its index has the parity of the end), so the digits ``a..e`` pass when
    ``sums[c][a] == sums[c][e]``. Non-ASCII digits (``\\d`` matches them) are never part
    of a card.
    """
    s = m.group(0)
    sums: tuple[list[int], list[int]] = ([0], [0])
    bad = [0]  # non-ASCII digits before k
    bounds = [0]
    acc = [0, 0]
    for ch in s:
        if ch in " -":
            bounds.append(len(bad) - 1)
            continue
        k = len(bad) - 1
        d = ord(ch) - 48 if "0" <= ch <= "9" else 0
        acc[k & 1] += _DOUBLED[d]
        acc[1 - (k & 1)] += d
        sums[0].append(acc[0] % 10)
        sums[1].append(acc[1] % 10)
        bad.append(bad[-1] + (not "0" <= ch <= "9"))
    bounds.append(len(bad) - 1)
    for j, e in enumerate(bounds):
        key = sums[e & 1]
        for a in bounds[:j]:
            if 13 <= e - a <= 19 and key[a] == key[e] and bad[a] == bad[e]:
                return placeholder("card")
    return s
