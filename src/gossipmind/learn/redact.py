"""Redaction of PII and secrets from free text (DESIGN §6, step 1).

``redact(text)`` replaces every match of a fixed, ordered list of precompiled
rules by a typed placeholder such as ``<email>`` or ``<card>``. The rules are
ordered from the most specific to the most generic (a JWT is recognised before
it could be mistaken for a generic high-entropy token; a Luhn-valid card number
before it could be mistaken for a phone number or a long number). The values
of ``key=value`` / ``key: value`` pairs with a secret or personal key come last,
once everything inside them is a placeholder.

Guarantees:

* the text is NFKC-normalised first (a full-width at sign is ``@``);
* never raises on any ``str`` (including lone surrogates and control
  characters) and stays fast on hostile input: matches can only start at the
  beginning of a run (look-behinds), repetitions are bounded where a run could
  restart, no look-ahead rescans a token at each position, input is bounded
  (tests cover pathological strings): linear in the input;
* the value of a secret or personal key is redacted up to the next delimiter
  (``,;&}]``, and ``)`` for a personal value, a quote for a secret), the end of
  the line or the next ``word:`` / ``word=`` key: ``name=John Smith`` -> ``name=<pii>``,
  ``Password: correct horse battery staple`` -> ``Password: <secret>``. A word
  ending in ``=`` is no key, and after a secret's ``key:`` no ``word=`` is
  (``Password: hunter2 is=the secret`` -> ``Password: <secret>``);
* a key is also the last part of a compound name, after ``_``, ``-`` or a
  case change (``db_password``, ``X-Auth-Token``, ``dbPassword``,
  ``shipping_name``), and the strongest secret keys also with nothing between
  (``PGPASSWORD``, ``GITHUBTOKEN``); the whole name is kept;
* a quoted value is redacted up to its closing quote, whatever it holds (a
  backslash escapes a quote): ``password='p,w')`` -> ``password=<secret>)``;
* every pair of a ``Cookie`` / ``Set-Cookie`` value is redacted, to the end of
  the line (or of a quoted value): ``cookie: a=b; c=d`` -> ``cookie: <secret>``;
* ``user@host`` with a bare host label (``bob@localhost``) is an email, and so is
  an internationalised address (``josé@exämple.com``, ``田中@例え.jp``);
* the user of a home directory (``/home/alice``, ``~alice/``, ``C:\\Users\\alice``) is a
  ``<name>``, and so is the segment after any personal one (``/customers/acme``);
* URL credentials are redacted whole, even when the password holds ``/``, ``?``
  or ``#`` (``postgres://admin:pa/ss@db/app`` -> ``postgres://<cred>@db/app``);
* input longer than :data:`MAX_INPUT` is cut at the last whitespace before the
  limit (so a truncated secret is dropped whole, never half-kept) and
  :data:`TRUNCATED` is appended;
* host names with a common public or internal suffix become ``<host>``
  (``db-3.prod.internal``, ``acme.myshopify.com``): they name replicas,
  tenants and sometimes people;
* idempotent: ``redact(redact(s)) == redact(s)`` (placeholders match no rule).

Redaction is deliberately greedy: a false positive costs a little precision in
a template, a false negative leaks data off the node.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable

from gossipmind.learn.redact_keys import (
    COOKIE_KEYS,
    GLUED_SECRET_KEYS,
    HOST_SUFFIXES,
    PII_KEYS,
    SECRET_KEYS,
    final_letters,
)
from gossipmind.learn.redact_parts import (
    _LABEL,
    _NA,
    _QUERY_PAIR,
    _UNC_HOST,
    _URL,
    _WIN_PERSONAL,
    PLACEHOLDERS,
    _card,
    _url,
    placeholder,
)

__all__ = [
    "MAX_INPUT",
    "PLACEHOLDERS",
    "TRUNCATED",
    "luhn_ok",
    "looks_random",
    "placeholder",
    "redact",
    "shannon_entropy",
]

MAX_INPUT = 8192
TRUNCATED = "<trunc>"


def shannon_entropy(s: str) -> float:
    """Shannon entropy of ``s`` in bits per character (0.0 for the empty string)."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(k / n * math.log2(k / n) for k in Counter(s).values())


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a string of ASCII digits (False for anything else)."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_CAMEL_PIECE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def looks_random(run: str) -> bool:
    """A letters-only run of mixed case that is not CamelCase words (``NffrFeUfNVHib``).

    CamelCase identifiers split into pieces of three letters or more
    (``XMLHttpRequest`` -> XML, Http, Request), switch case rarely and have
    vowels; random ids mostly fail one of these (about nine in ten of 14-letter
    random runs are caught; digits make the rest of an id variable anyway).
    """
    n = len(run)
    if n < 8 or not run.isascii() or not run.isalpha() or run.islower() or run.isupper():
        return False
    long_chars = sum(len(p) for p in _CAMEL_PIECE.findall(run) if len(p) >= 3)
    switches = sum(1 for a, b in itertools.pairwise(run) if a.isupper() != b.isupper())
    vowels = sum(ch in "aeiouyAEIOUY" for ch in run)
    return long_chars < 0.75 * n or switches > 0.45 * (n - 1) or vowels < 0.2 * n


# --- rules -----------------------------------------------------------------

_Repl = str | Callable[[re.Match[str]], str]

# The characters of an email's local part, non-ASCII ones included (josé@exämple.com);
# a domain label's (_LABEL) and the URL and path rules are in redact_parts.py.
_LOCAL = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-" + _NA


def _digits_between(lo: int, hi: int, kind: str) -> Callable[[re.Match[str]], str]:
    def repl(m: re.Match[str]) -> str:
        n = sum(ch.isdigit() for ch in m.group(0))
        return placeholder(kind) if lo <= n <= hi else m.group(0)

    return repl


def _ipv6(m: re.Match[str]) -> str:
    s = m.group(0)
    core = s.split("%", 1)[0]
    # "2001:db8::1: refused" and "::1:: x": a trailing ':' may be punctuation.
    for cut in range(min(3, len(core))):
        cand = core[: len(core) - cut]
        if cut and core[len(cand)] != ":":
            break
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        return placeholder("ip") + core[len(cand) :]
    return s


def _alnum_token(m: re.Match[str]) -> str:
    s = m.group(0)
    has_digit = any(ch.isdigit() for ch in s)
    has_alpha = any(ch.isalpha() for ch in s)
    if has_digit and has_alpha and shannon_entropy(s) >= 3.0:
        return placeholder("token")
    if not has_digit and len(s) >= 20 and looks_random(s):
        return placeholder("token")
    return s


def _class_changes(s: str) -> int:
    """Pairs of neighbouring characters, neither a "/", of different classes (digit,
    lower, upper, other)."""
    cls = [0 if c.isdigit() else 1 if c.islower() else 2 if c.isupper() else 3 for c in s]
    return sum(1 for i in range(len(s) - 1) if "/" not in s[i : i + 2] and cls[i] != cls[i + 1])


def _b64_token(m: re.Match[str]) -> str:
    s = m.group(0)
    kinds = (
        any(c.isdigit() for c in s),
        any(c.islower() for c in s),
        any(c.isupper() for c in s),
    )
    # Base64 may hold "/" twice and no "+" (an AWS secret key: 40 such characters). A
    # path's characters change class at under a fifth of their pairs (0.18 at most over
    # a Python installation's paths), base64's at about two thirds (0.375 at least over
    # 3 000 keys; half without digits; a CamelCase name: under a third). A "+" between
    # letters of both cases is base64 too. Such a run is a token whatever its entropy.
    changes = _class_changes(s)  # (a 40-character path's: com/amazonaws/... 6 of 40)
    aws_secret = len(s) == 40 and not (s[0] == "/" or s[-1] == "/") and changes > 0.18 * len(s)
    if kinds[1] and kinds[2] and ("+" in s or changes > 0.4 * len(s)):
        return placeholder("token")
    path_like = s.count("/") >= 2 and "=" not in s and not aws_secret and changes <= 0.3 * len(s)
    if all(kinds) and not path_like and shannon_entropy(s) >= 4.0:
        return placeholder("token")
    return s


def _keep_key(kind: str) -> Callable[[re.Match[str]], str]:
    def repl(m: re.Match[str]) -> str:
        return m.group(1) + placeholder(kind)

    return repl


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"

# The value of a ``key: value`` or ``key=value`` pair: a quoted string, or words up to a
# delimiter, the end of the line or the next ``word:`` / ``word=`` key, so that
# ``name=John Smith`` and ``Password: correct horse battery staple`` are redacted whole.
# A value is a run of words of one class (quoted or not), so that a second pass reads the
# same extent: a secret's words also stop at quotes and run over ")" (a password may hold
# one); a PII value's words stop at ")". A word ending in "=" (``staple=``, ``abc==``) is
# no key; after a secret's ``key:`` (not ``key=``), no ``word=`` is a key either: the
# value is not in key=value form, so ``Password: hunter2 is=the secret`` is one value.
_NEXT_KEY = r"(?![A-Za-z_<][A-Za-z0-9_.<>\-]*+(?::(?!\S)|=(?=[^\s=])))"
_NEXT_COLON_KEY = r"(?![A-Za-z_<][A-Za-z0-9_.<>\-]*+:(?!\S))"
_SECRET_CHARS = r"(?:[^\s\"',;&}\]\\]|\\.)"
_PII_CHARS = r"(?:[^\s,;&)}\]\\]|\\.)"
# A quoted value runs to its closing quote, whatever it holds (a backslash escapes one);
# possessive, and its alternatives start with different characters: linear.
_QUOTED = r"(?:\"(?:[^\"\\\n]|\\.)*+\"|'(?:[^'\\\n]|\\.)*+')"


# A key is also the last part of a compound name: after a prefix of name characters that
# ends in "_" or "-" (db_password, X-Auth-Token, --password, _token) or in a lower-case
# letter or digit before a capital (dbPassword, shippingName). The prefix is kept with the key.
_KEY_PREFIX = r"(?:[A-Za-z0-9_\-]*(?:[_\-]|(?-i:[a-z0-9](?=[A-Z]))))?"


def _kv_key(keys: str, glued: str | None = None) -> str:
    """Group 1: a whole name ending in one of ``keys`` (or in ``glued``, even with no
    separator before it), its closing quote and its separator; group 2 is set by ``=``.

    A match starts only at the start of a name (look-behind), and only where the name ends
    in a key's last letter and is followed by its separator: a possessive look-ahead reads
    the name once, so a word that is no key costs one pass over it. Past that, each
    alternative reads the name a bounded number of times (one backtracking scan each; the
    key alternatives are tried only where the prefix can end): linear in the name.
    """
    finals = final_letters(f"{keys}|{glued}" if glued else keys)
    tail = rf"|[A-Za-z0-9_\-]*(?:{glued})" if glued else ""
    return (
        rf"(?i)((?<![A-Za-z0-9_\-])(?=[A-Za-z0-9_\-]++(?<=[{finals}])[\"']?\s*+[=:])"
        + rf"(?:{_KEY_PREFIX}(?:{keys}){tail})"
        + r"[\"']?\s*(?:(=)|:)\s*+)"
    )


def _kv_rule(
    keys: str, chars: str, kind: str, *, colon_words: bool = False, glued: str | None = None
) -> re.Pattern[str]:
    """Key and value; with ``colon_words``, after ``key:`` only ``word:`` is a next key."""
    more = _NEXT_COLON_KEY if colon_words else _NEXT_KEY
    next_key = f"(?(2){_NEXT_KEY}|{more})"
    return re.compile(
        _kv_key(keys, glued)
        # a quoted value, and what sticks to its closing quote (not a ")": the quote
        # may close a call's argument); a placeholder this rule left before a ")" (its
        # second pass); or words of the value's class
        + rf"(?:{_QUOTED}(?:(?!\)){chars}+)?|<{kind}>(?=\))|[\"']?{chars}+)"
        # then more words of the value, quoted ones whole
        + rf"(?:[ \t]++{next_key}(?:{_QUOTED}|{chars}+))*"
    )


# A cookie or set-cookie header: every pair of it (``a=b; c=d``, ``Path=/; Expires=Wed,
# 21 Oct 2015``) up to the end of the line, or a quoted value that ends the field (as in
# JSON or a dict: ``{"Cookie": "a=b; c=d", "Host": …}``); so does this rule's placeholder
# on a second pass.
_COOKIE = re.compile(
    _kv_key(COOKIE_KEYS)
    + rf"(?:(?:{_QUOTED}|<secret>)(?=[ \t]*+(?:[,}}\])\r\n]|$))|\S(?:[^\r\n]*(?<=\S))?)"
)


_RULES: tuple[tuple[re.Pattern[str], _Repl], ...] = (
    (_WIN_PERSONAL, r"\1<name>"),
    (_UNC_HOST, r"\1<host>"),
    (_URL, _url),
    (_QUERY_PAIR, r"\1<val>"),
    (
        re.compile(
            r"(?<![A-Za-z0-9])eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){1,3}"
        ),
        "<jwt>",
    ),
    (re.compile(r"(?i)\b(bearer\s+)(?!realm\b)[A-Za-z0-9\-._~+/]{6,}=*"), r"\1<token>"),
    (re.compile(r"\b(Basic\s+)(?=[A-Za-z+/]*[0-9+/=])[A-Za-z0-9+/]{6,}={0,2}"), r"\1<token>"),
    (
        re.compile(
            r"(?<![A-Za-z0-9])(?:"
            r"(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{6,}"
            r"|whsec_[A-Za-z0-9]{8,}"
            r"|sk-(?:proj-|ant-(?:api\d\d-)?|or-v1-|svcacct-)?[A-Za-z0-9_\-]{12,}"
            r"|(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}"
            r"|gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,}"
            r"|xox[abprse]-[A-Za-z0-9\-]{8,}"
            r"|AIza[0-9A-Za-z_\-]{30,}"
            r"|glpat-[A-Za-z0-9_\-]{16,}"
            r"|hf_[A-Za-z0-9]{16,}"
            r"|npm_[A-Za-z0-9]{16,}"
            r"|SG\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
            r")"
        ),
        "<key>",
    ),
    (
        re.compile(
            # the local part: the whole run before "@" (possessive: read once)
            rf"(?<![{_LOCAL}.])[{_LOCAL}][{_LOCAL}.]*+@"
            rf"(?:(?:[{_LABEL}](?:[{_LABEL}\-]{{0,62}}[{_LABEL}])?\.)+"
            rf"(?:[A-Za-z{_NA}]{{2,24}}|[Xx][Nn]--[A-Za-z0-9\-]{{1,59}})"
            # or a bare host label: bob@localhost, alice@bastion
            rf"|[A-Za-z{_NA}][{_LABEL}\-]{{0,62}})(?![{_LABEL}\-])"
        ),
        "<email>",
    ),
    (
        re.compile(
            r"(?<![\w.\-])(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?\.)+"
            r"(?i:" + HOST_SUFFIXES + r")(?![\w\-]|\.[A-Za-z0-9])"
        ),
        "<host>",
    ),
    (
        re.compile(
            r"(?<![0-9A-Fa-f\-])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
            r"[0-9A-Fa-f]{12}(?![0-9A-Fa-f])"
        ),
        "<uuid>",
    ),
    (
        re.compile(r"(?<![0-9A-Fa-f:\-])(?:[0-9A-Fa-f]{2}[:\-]){5}[0-9A-Fa-f]{2}(?![0-9A-Fa-f])"),
        "<mac>",
    ),
    (
        re.compile(
            r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}"
            r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%[A-Za-z0-9_.]{1,16})?(?!\w|\.\d)"
        ),
        _ipv6,
    ),
    (re.compile(rf"(?<![\d.])(?:{_OCTET}\.){{3}}{_OCTET}(?:/\d{{1,2}})?(?!\d)"), "<ip>"),
    (re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"), "<ssn>"),
    (re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){12,22}(?![\d])"), _card),
    (
        re.compile(
            r"(?<![A-Z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,4})?(?![A-Z0-9])"
        ),
        "<iban>",
    ),
    (
        re.compile(r"(?<![\w+])(?:\+|\b00)[1-9]\d{0,3}(?:[ .\-]?\(?\d{1,4}\)?){2,6}(?![\w])"),
        _digits_between(8, 15, "phone"),
    ),
    (
        re.compile(r"(?<![\w+])(?:\(\d{3}\) ?|\d{3}[ .\-])\d{3}[ .\-]\d{4}(?!\w)"),
        "<phone>",
    ),
    (
        re.compile(r"(?<![\w+.])0\d{1,4}(?:[ .\-/]\d{2,8}){1,4}(?![\w])"),
        _digits_between(9, 13, "phone"),
    ),
    (re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])"), _b64_token),
    (re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{16,}(?![A-Za-z0-9])"), _alnum_token),
    (re.compile(r"\d{5,}"), "<num>"),
    # Key/value pairs last: the value is what remains once every other rule has run
    # (a second pass sees the same text, so the extent of a value is stable).
    (_COOKIE, _keep_key("secret")),
    (
        _kv_rule(SECRET_KEYS, _SECRET_CHARS, "secret", colon_words=True, glued=GLUED_SECRET_KEYS),
        _keep_key("secret"),
    ),
    (_kv_rule(PII_KEYS, _PII_CHARS, "pii"), _keep_key("pii")),
)


def _bound(text: str) -> str:
    if len(text) <= MAX_INPUT:
        return text
    cut = text[:MAX_INPUT]
    space = max(cut.rfind(ch) for ch in " \t\n\r")
    cut = cut[:space] if space > 0 else ""
    return f"{cut} {TRUNCATED}" if cut else TRUNCATED


def redact(text: str) -> str:
    """Replace PII and secrets in ``text`` by typed placeholders (``<email>``, ``<card>``...)."""
    # NFKC first, so that full-width or styled characters cannot hide an email or a key.
    s = _bound(unicodedata.normalize("NFKC", _bound(text)))
    for pattern, repl in _RULES:
        s = pattern.sub(repl, s)
    return s
