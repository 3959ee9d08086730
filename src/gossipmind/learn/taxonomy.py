"""Error taxonomy: a failure's class in :data:`gossipmind.core.recipe.ERROR_CLASSES`.

``classify(exc_type, status, message, rules)`` decides, first match wins:

1. the user's :class:`Rule` s, in the order given;
2. the HTTP status code (408/504/524/598/599 timeout, 429 rate_limited,
   401/403/407 auth, 400/413/414/415/422 validation, 404/410 not_found,
   409/412/423 conflict, other 5xx server_error);
3. the exception type name (its dotted path, e.g. ``httpx.ReadTimeout``);
4. keywords in the message (``_`` reads as a space, so gRPC status codes such as
   ``DEADLINE_EXCEEDED`` or ``PERMISSION_DENIED`` count);
5. ``unknown``.

Each step's table is an ordered list, so a name like ``ConnectTimeout`` is a
timeout (timeouts are checked before connection errors). Deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gossipmind.core.errors import ConfigError
from gossipmind.core.recipe import ERROR_CLASSES

__all__ = ["MAX_MESSAGE", "Rule", "classify", "class_of_status", "class_of_type", "rules_from"]

MAX_MESSAGE = 4096

_STATUS: dict[int, str] = {
    400: "validation",
    401: "auth",
    403: "auth",
    404: "not_found",
    407: "auth",
    408: "timeout",
    409: "conflict",
    410: "not_found",
    412: "conflict",
    413: "validation",
    414: "validation",
    415: "validation",
    422: "validation",
    423: "conflict",
    429: "rate_limited",
    504: "timeout",
    524: "timeout",
    598: "timeout",
    599: "timeout",
}

# Matched against the lowercased last component of the type name, in order.
_TYPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (cls, re.compile(rx))
    for cls, rx in (
        ("timeout", r"timeout|timedout|deadlineexceeded|timelimit"),
        (
            "rate_limited",
            r"ratelimit|throttl|toomanyrequests|quotaexceeded|slowdown|resourceexhausted",
        ),
        (
            "auth",
            r"^auth|authenticat|authoriz|unauthori|permission|forbidden|accessdenied"
            r"|credential|expiredtoken|tokenexpired|invalidtoken|invalidsignature|notauthorized",
        ),
        ("not_found", r"notfound|doesnotexist|nosuch|^gone"),
        (
            "conflict",
            r"conflict|alreadyexists|duplicate|integrityerror|uniqueviolation|preconditionfailed"
            r"|concurrentmodification|optimisticlock|serializationfailure|deadlock|stale|^aborted$",
        ),
        (
            "connection",
            r"connect|network|socket|brokenpipe|unreachable|gaierror|dns"
            r"|ssl|tls|certificate|remotedisconnected|incompleteread|protocolerror|eoferror"
            r"|disconnect|chunkedencoding|hostresolution|nameresolution|^readerror$|^writeerror$",
        ),
        (
            "server_error",
            r"servererror|internalerror|serviceunavailable|unavailable|badgateway|overloaded"
            r"|upstream|internalserver",
        ),
        (
            "validation",
            r"validation|valueerror|typeerror|invalid|schema|parseerror|decodeerror|jsondecode"
            r"|unprocessable|badrequest|malformed|unicodeerror|unicodedecode|unicodeencode",
        ),
    )
)

# Matched against the lowercased message, in order.
_MESSAGES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (cls, re.compile(rx))
    for cls, rx in (
        (
            "timeout",
            r"timed? ?out|timeout|deadline exceeded|took too long|gateway time-?out",
        ),
        (
            "rate_limited",
            r"rate[ _-]?limit|too many requests|throttl|quota exceeded|exceeded your .*quota"
            r"|slow down|resource exhausted|\b429\b",
        ),
        (
            "auth",
            r"unauthori[sz]ed|forbidden|permission denied|access ?denied|invalid (?:api[ _-]?)?key"
            r"|authenticat|expired token|token (?:has )?expired|invalid credentials"
            r"|not authori[sz]ed|incorrect api key|\b40[13]\b",
        ),
        ("not_found", r"not found|no such|does not exist|\b404\b|unknown (?:resource|model)"),
        (
            "conflict",
            r"conflict|already exists|duplicate key|duplicate entry|deadlock|lock wait"
            r"|could not serialize|concurrent (?:update|modification)|version mismatch"
            r"|precondition failed|idempotency|database is locked|\b409\b",
        ),
        (
            "connection",
            r"connection (?:reset|refused|aborted|closed|error|failed|lost)|broken pipe"
            r"|network is unreachable|no route to host|host unreachable|name or service not known"
            r"|could not resolve|temporary failure in name resolution|getaddrinfo|econnreset"
            r"|econnrefused|ssl|eof occurred|remote end closed|server closed the connection"
            r"|could not connect|failed to (?:establish|connect)|disconnected",
        ),
        (
            "server_error",
            r"internal server error|internal error|service unavailable|bad gateway|overloaded"
            r"|upstream|server error|too many (?:clients|connections)|statuscode\.unavailable"
            r"|temporarily unavailable|\b5\d\d\b",
        ),
        (
            "validation",
            r"invalid|validation|must be|is required|required field|missing required|malformed"
            r"|unprocessable|bad request|cannot parse|could not parse|unexpected token"
            r"|expected .{0,40} got|\b4(?:00|22)\b",
        ),
    )
)


@dataclass(frozen=True)
class Rule:
    """A user rule: when every given condition holds, the failure is ``error_class``.

    ``type_pattern`` and ``message_pattern`` are regular expressions searched
    (case-insensitively) in the exception's dotted type name and in the
    message; ``statuses`` is a set of HTTP status codes. At least one condition
    is required. Invalid rules raise :class:`ConfigError`.
    """

    error_class: str
    type_pattern: str | None = None
    statuses: frozenset[int] | None = None
    message_pattern: str | None = None
    _type_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _message_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.error_class not in ERROR_CLASSES:
            raise ConfigError(
                f"rule error_class {self.error_class!r} is not one of {', '.join(ERROR_CLASSES)}"
            )
        if self.type_pattern is None and self.statuses is None and self.message_pattern is None:
            raise ConfigError("a rule needs type_pattern, statuses or message_pattern")
        if self.statuses is not None:
            try:
                statuses = frozenset(self.statuses)
            except TypeError as e:
                raise ConfigError("rule statuses must be a set of HTTP codes") from e
            bad = sorted(
                (s for s in statuses if not isinstance(s, int) or not 100 <= s <= 599), key=str
            )
            if bad or not statuses:
                raise ConfigError(f"rule statuses must be HTTP codes 100-599, got {bad or '{}'}")
            object.__setattr__(self, "statuses", statuses)
        object.__setattr__(self, "_type_re", _compile(self.type_pattern, "type_pattern"))
        object.__setattr__(self, "_message_re", _compile(self.message_pattern, "message_pattern"))

    def matches(self, exc_type: str, status: int | None, message: str) -> bool:
        if self.statuses is not None and status not in self.statuses:
            return False
        if self._type_re is not None and not self._type_re.search(exc_type):
            return False
        return self._message_re is None or self._message_re.search(message) is not None


def _compile(pattern: str | None, what: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise ConfigError(f"rule {what} must be a string")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise ConfigError(f"rule {what} {pattern!r} is not a valid regex: {e}") from e


def rules_from(config: Iterable[Mapping[str, Any]]) -> tuple[Rule, ...]:
    """Rules from configuration data: ``[{"class": "timeout", "type": "...", "status": [504]}]``.

    Keys: ``class`` (required), ``type``, ``status`` (a code or a list of
    codes), ``message``. Unknown keys are errors.
    """
    out = []
    for i, item in enumerate(config):
        if not isinstance(item, Mapping):
            raise ConfigError(f"rules[{i}] must be a map")
        unknown = sorted(set(item) - {"class", "type", "status", "message"})
        if unknown:
            raise ConfigError(f"rules[{i}]: unknown key {unknown[0]!r}")
        if "class" not in item:
            raise ConfigError(f"rules[{i}]: 'class' is required")
        status = item.get("status")
        statuses: frozenset[int] | None = None
        if isinstance(status, int) and not isinstance(status, bool):
            statuses = frozenset({status})
        elif isinstance(status, list | tuple):
            statuses = frozenset(status)
        elif status is not None:
            raise ConfigError(f"rules[{i}].status must be a code or a list of codes")
        try:
            out.append(
                Rule(
                    error_class=item["class"],
                    type_pattern=item.get("type"),
                    statuses=statuses,
                    message_pattern=item.get("message"),
                )
            )
        except ConfigError as e:
            raise ConfigError(f"rules[{i}]: {e}") from e
    return tuple(out)


def class_of_status(status: int | None) -> str | None:
    if status is None:
        return None
    if status in _STATUS:
        return _STATUS[status]
    if 500 <= status <= 599:
        return "server_error"
    return None


def class_of_type(exc_type: str) -> str | None:
    last = exc_type.rsplit(".", 1)[-1].lower()
    for cls, rx in _TYPES:
        if rx.search(last):
            return cls
    return None


def class_of_message(message: str) -> str | None:
    # "_" reads as a space: gRPC codes (DEADLINE_EXCEEDED, PERMISSION_DENIED,
    # RESOURCE_EXHAUSTED) were all "unknown", and no fix was ever made for them
    low = message[:MAX_MESSAGE].lower().replace("_", " ")
    for cls, rx in _MESSAGES:
        if rx.search(low):
            return cls
    return None


def classify(
    exc_type: str,
    status: int | None = None,
    message: str = "",
    rules: Sequence[Rule] = (),
) -> str:
    """The error class of a failure (one of ``ERROR_CLASSES``)."""
    exc_type = exc_type[:256]
    message = message[:MAX_MESSAGE]
    for rule in rules:
        if rule.matches(exc_type, status, message):
            return rule.error_class
    return (
        class_of_status(status) or class_of_type(exc_type) or class_of_message(message) or "unknown"
    )
