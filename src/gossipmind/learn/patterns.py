"""A failure reduced to a privacy-preserving pattern (DESIGN §6, step 1).

``reduce(failure)`` keeps nothing raw: the message is redacted then templated,
the context is reduced to its shape, service and operation are redacted and
normalised to lowercase names, and the numbers kept (status, latency,
Retry-After) are range-checked integers. The fingerprint is
``core.schema.pattern_id(service, operation, error_class, template)``.

The template is ``"<ExceptionName>: <message template>"``: the last component
of the exception's type name is part of the fingerprint (a ``KeyError`` and a
``ValueError`` with the same text are different failures), while its module
path is not, and neither is the status code (several codes may belong to one
pattern; they are counted in the report's status histogram).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gossipmind.core.errors import SchemaError
from gossipmind.core.schema import pattern_id
from gossipmind.learn.redact import looks_random, redact
from gossipmind.learn.shape import shape
from gossipmind.learn.taxonomy import Rule, classify
from gossipmind.learn.template import canonical

__all__ = [
    "MAX_MS",
    "Failure",
    "Reduced",
    "normalise_name",
    "reduce",
    "short_type",
    "template_of",
]

MAX_MS = 2**31 - 1
MAX_NAME = 64
_PH = re.compile(r"<([a-z]+)>")
_BAD = re.compile(r"[^a-z0-9._/-]+")
_CLASS_REPR = re.compile(r"<class '([^']*)'>")
_RUN = re.compile(r"(?<![>A-Za-z0-9])(?:[A-Za-z0-9]|<[a-z]+>)+(?![<A-Za-z0-9])")
# a piece of a CamelCase name: a capitalised or lowercase word, or an acronym
_CAMEL_PIECE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_VOWELS = frozenset("aeiouyAEIOUY")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class Failure:
    """One failure as the agent reports it (raw; never leaves the node)."""

    service: str
    operation: str
    exc_type: str
    message: str
    status: int | None = None
    context: Any = None
    latency_ms: int | None = None
    retry_after_ms: int | None = None


@dataclass(frozen=True)
class Reduced:
    """What survives of a failure: the pattern and bounded numbers, nothing raw."""

    pattern: bytes
    service: str
    operation: str
    error_class: str
    template: str
    shape: str
    status: int | None = None
    latency_ms: int | None = None
    retry_after_ms: int | None = None


def normalise_name(raw: str, *, max_len: int = MAX_NAME) -> str:
    """A core ``name``: redacted, ASCII-folded, lowercase ``[a-z0-9][a-z0-9._/-]*``.

    Redaction placeholders become their kind (``/users/<name>`` ->
    ``/users/name``); runs of other characters become ``_``; an empty result
    is ``unknown``.
    """
    if len(raw) <= 256:
        return _normalise_cached(raw, max_len)
    return _normalise(raw, max_len)


@functools.lru_cache(maxsize=1024)
def _normalise_cached(raw: str, max_len: int) -> str:
    return _normalise(raw, max_len)


def _id_run(m: re.Match[str]) -> str:
    """An id in a name (a customer, an order): a run of letters and digits that
    alternates between them four times or more (``N3xT8kLq``, ``a3f9c2``; not ``ec2``,
    ``utf8mb4``, ``v1beta1``), a random-looking run of letters, four digits or more, or
    a run that redaction masked in part.
    The template masks such words in a message; a name needs it too."""
    run = m.group(0)
    if "<" in run:  # redaction masked part of it: A2A22222A -> A2A<num>A
        return run if _PH.fullmatch(run) else "<id>"
    if run.isdigit():
        return "<num>" if len(run) >= 4 else run
    flips = sum(1 for a, b in itertools.pairwise(run) if a.isdigit() != b.isdigit())
    return "<id>" if flips >= 4 or (looks_random(run) and not _camel_words(run)) else run


def _camel_words(run: str) -> bool:
    """Whether a run of letters reads as CamelCase words: every piece an acronym of four
    capitals at most or a word of two letters or more with a vowel (``GetBucketAcl``,
    ``getUserById``). :func:`looks_random` takes short words for noise, and an
    operation name is a service's API, not an id: masking it merged every such
    operation of a service into one pattern. (Random runs keep a piece without a
    vowel, ``Nffr`` in ``NffrFeUfNVHib``, about 4 in 5 times at 10 letters.)"""
    for piece in _CAMEL_PIECE.findall(run):
        if piece.isupper():
            if len(piece) > 4:
                return False
        elif len(piece) < 2 or _VOWELS.isdisjoint(piece):
            return False
    return True


def _normalise(raw: str, max_len: int) -> str:
    s = _PH.sub(r"\1", _RUN.sub(_id_run, redact(raw)))
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii").lower()
    s = _BAD.sub("_", s)
    s = s.lstrip("._/-")[:max_len]
    return s or "unknown"


def short_type(exc_type: str) -> str:
    """The exception's class name without its module: ``httpx.ReadTimeout`` -> ``ReadTimeout``.

    ``"<class 'httpx.ReadTimeout'>"`` is accepted too. The name is redacted
    first; anything that is not then a dotted Python identifier (a type name
    carrying data) gives ``""``, and so does a class name over 64 characters.
    """
    s = exc_type.strip()[:256]
    m = _CLASS_REPR.fullmatch(s)
    s = redact(m.group(1) if m else s)
    if not _DOTTED.fullmatch(s):
        return ""
    last = s.rsplit(".", 1)[-1]
    return last if len(last) <= 64 else ""


def template_of(exc_type: str, message: str) -> str:
    """The fingerprint template: ``canonical(redact("<ExceptionName>: <message>"))``."""
    name = short_type(exc_type)
    text = f"{name}: {message}" if name else message
    return canonical(redact(text))


def _ms(x: object) -> int | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    if math.isnan(x) or x < 0:
        return None
    return MAX_MS if math.isinf(x) else min(int(x), MAX_MS)


def _status(x: object) -> int | None:
    if isinstance(x, int) and not isinstance(x, bool) and 100 <= x <= 599:
        return x
    return None


def _text(x: object, path: str) -> str:
    if not isinstance(x, str):
        raise SchemaError(path, f"expected a string, got {type(x).__name__}")
    return x


def reduce(failure: Failure, rules: Sequence[Rule] = ()) -> Reduced:
    """Reduce a failure to its pattern. Raises :class:`SchemaError` on non-string text fields."""
    exc_type = _text(failure.exc_type, "exc_type")
    message = _text(failure.message, "message")
    service = normalise_name(_text(failure.service, "service"))
    operation = normalise_name(_text(failure.operation, "operation"))
    status = _status(failure.status)
    error_class = classify(exc_type, status, message, rules)
    template = template_of(exc_type, message)
    return Reduced(
        pattern=pattern_id(service, operation, error_class, template),
        service=service,
        operation=operation,
        error_class=error_class,
        template=template,
        shape=shape(failure.context),
        status=status,
        latency_ms=_ms(failure.latency_ms),
        retry_after_ms=_ms(failure.retry_after_ms),
    )
