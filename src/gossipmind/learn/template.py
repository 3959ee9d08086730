"""Drain-style message templating.

Two tools, with different guarantees:

* :func:`canonical` is the **fingerprint template**: a pure function of one
  (already redacted) message. Variable parts (numbers, hex, ids, dates, quoted
  strings, redaction placeholders) become ``<*>``; adjacent variables collapse
  into one. Because it depends on nothing but the message, a fresh node and a
  node that has seen a million other messages produce the same template, so
  every node of the network computes the same pattern id for the same failure.

* :class:`Drain` is the classic online clustering (a fixed-depth prefix tree by
  token count, then token similarity) over canonical templates. It merges
  variants that the masking rules cannot know are variable (``user alice not
  found`` / ``user bob not found`` -> ``user <*> not found``). Its result
  depends on what it has seen and in which order, so it is **never** used for
  the fingerprint; it is a local tool (grouping, display, suggesting user
  rules).

Masking rules of :func:`canonical`, in order:

1. control characters and lone surrogates are replaced, whitespace collapsed;
2. redaction placeholders (``<email>``...), with any letters glued to them,
   become ``<*>``;
3. quoted strings ('...', "...", `...`) become a quoted ``<*>``, except map
   keys that are plain identifiers (``"type":``, ``'code':``) and lowercase
   identifier values of error-code keys (``"code": "rate_limit_exceeded"``),
   which name the event rather than a parameter;
4. every alphanumeric run that contains a digit, looks like a random id
   (mixed case, not CamelCase words; or mixed case after a short lowercase
   type prefix such as ``req_``), or is a month or weekday name, becomes
   ``<*>``; currency signs and codes and a leading sign next to it go too;
5. ``<*>`` runs separated only by whitespace or ``.:,-_/+`` collapse into one;
6. the result is cut to :data:`MAX_TEMPLATE` characters at a token boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gossipmind.core.errors import ConfigError
from gossipmind.learn.redact import PLACEHOLDERS, looks_random

__all__ = ["MAX_TEMPLATE", "WILDCARD", "Cluster", "Drain", "canonical", "tokens"]

MAX_TEMPLATE = 1024
WILDCARD = "<*>"

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
# A placeholder with the letters glued to it ("ord_<num>a", "<num>ms") is one variable.
_PLACEHOLDER = re.compile(r"[^\W_]*<(?:\*|trunc|" + "|".join(PLACEHOLDERS) + r")>[^\W_]*")
_QUOTED = re.compile(
    r"(?<!\w)\"(?:[^\"\\\n]|\\.){0,512}\""
    r"|(?<!\w)'[^'\n]{0,512}'(?!\w)"
    r"|`[^`\n]{0,512}`"
)
_JSON_KEY = re.compile(r"\s*:")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z_.\-]{0,63}")
_CODE_VALUE = re.compile(r"[a-z_][a-z_.\-]{0,63}")
# Keys whose quoted values are error codes ("code": "rate_limit_exceeded"), kept verbatim.
_CODE_KEY = re.compile(
    r"[\"'](?:code|error_code|err_code|type|error_type|kind|reason|status|param|field)[\"']\s*:\s*$"
)
_WORD = re.compile(r"[^\W_]+")
# An id with a short lowercase type prefix: req_wefUgtuprHdxbf, org-AbCdEfGhIjKl.
_PREFIXED_ID = re.compile(
    r"(?<![A-Za-z0-9])([a-z]{1,8}[_-])(?=[A-Za-z]*[A-Z])(?=[A-Za-z]*[a-z])[A-Za-z]{10,}(?![A-Za-z0-9])"
)
# A run of signs goes whole ("--5" → "<*>"): dropping only the last one left
# "-<*>", which a second pass turned into "<*>" (canonical() not idempotent).
_SIGN = re.compile(r"(?<![\w>])[-+]+(?=<\*>)")
_CURRENCY = re.compile(
    r"[$€£¥₹](?=<\*>)"
    r"|(?<=<\*>) ?(?:USD|EUR|GBP|JPY|CHF|CAD|AUD|INR|BRL|CNY|SEK|NOK|DKK|MXN)\b"
    r"|\b(?:USD|EUR|GBP|JPY|CHF|CAD|AUD|INR|BRL|CNY|SEK|NOK|DKK|MXN) ?(?=<\*>)"
)
_COLLAPSE = re.compile(r"<\*>(?:[\s.:,\-_/+]*<\*>)+")
# Masking can leave a kept word glued to a wildcard ("A£0" → "A<*>"); the first
# step absorbs such words, so this one must too, or canonical() is not idempotent.
_GLUED = re.compile(r"[^\W_]+<\*>[^\W_]*|<\*>[^\W_]+")
_CALENDAR = frozenset(
    [
        "jan",
        "feb",
        "mar",
        "apr",
        "may",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "mon",
        "tue",
        "tues",
        "wed",
        "thu",
        "thur",
        "thurs",
        "fri",
        "sat",
        "sun",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
)


def _sanitize(text: str) -> str:
    s = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub(" ", s)


def _quoted(m: re.Match[str]) -> str:
    q = m.group(0)
    inner = q[1:-1]
    if q[0] == "`":
        return q[0] + WILDCARD + q[-1]
    is_key = _JSON_KEY.match(m.string, m.end()) is not None
    if is_key and _IDENT.fullmatch(inner):
        return q
    before = m.string[max(0, m.start() - 24) : m.start()]
    if _CODE_KEY.search(before) and _CODE_VALUE.fullmatch(inner):
        return q
    return q[0] + WILDCARD + q[-1]


def _is_variable(word: str) -> bool:
    if any(ch.isdigit() for ch in word):
        return True
    if word.lower() in _CALENDAR and word[0].isupper():
        return True
    return looks_random(word)


def _word(m: re.Match[str]) -> str:
    w = m.group(0)
    return WILDCARD if _is_variable(w) else w


def _cut(s: str) -> str:
    if len(s) <= MAX_TEMPLATE:
        return s
    cut = s[:MAX_TEMPLATE]
    space = cut.rfind(" ")
    if space > 0:
        return cut[:space]
    # One giant token: do not leave a broken "<*" behind.
    return re.sub(r"<\*?$", "", cut)


def canonical(text: str) -> str:
    """The fingerprint template of one redacted message (pure, history-independent)."""
    s = _sanitize(text)
    s = _PLACEHOLDER.sub(WILDCARD, s)
    s = _QUOTED.sub(_quoted, s)
    s = _PREFIXED_ID.sub(r"\1" + WILDCARD, s)
    # Mask words outside the <*> markers only (they contain no word characters).
    s = _WORD.sub(_word, s)
    s = _CURRENCY.sub("", s)
    s = _SIGN.sub("", s)
    s = _GLUED.sub(WILDCARD, s)
    s = _COLLAPSE.sub(WILDCARD, s)
    s = " ".join(s.split())
    return _cut(s)


def tokens(template: str) -> list[str]:
    return template.split()


# --- local clustering ------------------------------------------------------


@dataclass
class Cluster:
    """A Drain cluster: a template whose differing positions have become ``<*>``."""

    id: int
    tokens: list[str]
    size: int = 0

    @property
    def template(self) -> str:
        return " ".join(self.tokens)


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    clusters: list[Cluster] = field(default_factory=list)


class Drain:
    """Online Drain clustering over canonical templates (deterministic for a given input order).

    ``depth`` counts the root and the token-count level, as in the paper: the
    tree routes on the first ``depth - 2`` tokens (one by default, so a
    variable second token such as a user name can still merge). Tokens that are ``<*>`` (or
    any token once a node has ``max_children`` children) route to a ``<*>``
    child. In the leaf, the cluster with the highest similarity (equal
    non-wildcard tokens / length; ties: more wildcards, then lower id) is
    merged into when the similarity reaches ``similarity``. At most
    ``max_clusters`` clusters are kept; beyond that :meth:`add` returns an
    unstored cluster with id ``-1``.
    """

    def __init__(
        self,
        *,
        depth: int = 3,
        similarity: float = 0.6,
        max_children: int = 64,
        max_clusters: int = 4096,
    ) -> None:
        if depth < 3 or not 0.0 <= similarity <= 1.0 or max_children < 1 or max_clusters < 1:
            raise ConfigError("Drain: depth >= 3, 0 <= similarity <= 1, positive limits")
        self.depth = depth
        self.similarity = similarity
        self.max_children = max_children
        self.max_clusters = max_clusters
        self._root = _Node()
        self._clusters: list[Cluster] = []

    @property
    def clusters(self) -> list[Cluster]:
        return list(self._clusters)

    def _leaf(self, toks: list[str], *, create: bool) -> _Node | None:
        node = self._root.children.get(str(len(toks)))
        if node is None:
            if not create:
                return None
            node = self._root.children.setdefault(str(len(toks)), _Node())
        for tok in toks[: self.depth - 2]:
            key = tok if WILDCARD not in tok else WILDCARD
            child = node.children.get(key)
            if child is None and key != WILDCARD and len(node.children) >= self.max_children:
                key = WILDCARD
                child = node.children.get(key)
            if child is None:
                if not create:
                    return None
                child = node.children.setdefault(key, _Node())
            node = child
        return node

    def _best(self, leaf: _Node, toks: list[str]) -> Cluster | None:
        best: tuple[float, int, int] | None = None
        chosen: Cluster | None = None
        for cl in leaf.clusters:
            same = sum(1 for a, b in zip(cl.tokens, toks, strict=True) if a == b and a != WILDCARD)
            wild = sum(1 for a in cl.tokens if a == WILDCARD)
            sim = same / len(toks) if toks else 1.0
            key = (sim, wild, -cl.id)
            if sim >= self.similarity and (best is None or key > best):
                best, chosen = key, cl
        return chosen

    def match(self, template: str) -> Cluster | None:
        """The cluster ``template`` would join, without changing anything."""
        toks = tokens(template)
        leaf = self._leaf(toks, create=False)
        return None if leaf is None else self._best(leaf, toks)

    def add(self, template: str) -> Cluster:
        """Add one canonical template; return the (possibly generalised) cluster it joined."""
        toks = tokens(template)
        leaf = self._leaf(toks, create=False)
        cl = None if leaf is None else self._best(leaf, toks)
        if cl is not None:
            cl.tokens = [a if a == b else WILDCARD for a, b in zip(cl.tokens, toks, strict=True)]
            cl.size += 1
            return cl
        if len(self._clusters) >= self.max_clusters:
            return Cluster(id=-1, tokens=toks, size=1)
        leaf = self._leaf(toks, create=True)
        assert leaf is not None
        cl = Cluster(id=len(self._clusters), tokens=toks, size=1)
        leaf.clusters.append(cl)
        self._clusters.append(cl)
        return cl
