"""A labelled corpus of realistic failures, and pairwise fingerprint evaluation.

``corpus(seed)`` generates, deterministically from a seeded
:class:`random.Random`, failures from payments, search, LLM APIs, databases,
HTTP clients, queues and messaging, each labelled with its ground-truth
**event** (as in the Loghub benchmarks: two messages share a label when they
are the same event with different parameters). The parameters vary the way
they vary between agents: ids, amounts, emails, card numbers, timestamps,
UUIDs, URLs with query strings, IP addresses, hosts, tokens, durations, names.
Several events are near misses of each other on purpose (same service,
operation, exception type and status; one phrase differs).

``evaluate(examples)`` reduces every failure and compares "same fingerprint"
with "same label" over all pairs.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gossipmind.learn.patterns import Failure, reduce
from gossipmind.learn.taxonomy import Rule

__all__ = ["PER_EVENT", "Example", "corpus", "evaluate"]

PER_EVENT = 6

R = random.Random
_B62 = string.ascii_letters + string.digits
_FIRST = [
    "james",
    "mary",
    "john",
    "patricia",
    "robert",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "wei",
    "aisha",
]
_LAST = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "martinez",
    "chen",
    "okafor",
]


@dataclass(frozen=True)
class Example:
    label: str
    failure: Failure


# --- parameter generators ----------------------------------------------------


def _b62(r: R, n: int) -> str:
    return "".join(r.choice(_B62) for _ in range(n))


def _hex(r: R, n: int) -> str:
    return "".join(r.choice("0123456789abcdef") for _ in range(n))


def _num(r: R, lo: int, hi: int) -> str:
    return str(r.randint(lo, hi))


def _name(r: R) -> tuple[str, str]:
    return r.choice(_FIRST), r.choice(_LAST)


def _email(r: R) -> str:
    first, last = _name(r)
    user = r.choice([f"{first}.{last}", f"{first}{r.randint(1, 99)}", f"{first[0]}{last}+shop"])
    return f"{user}@{r.choice(['gmail.com', 'example.org', 'corp.example.co.uk', 'mail.de'])}"


def _luhn_complete(prefix: str, length: int, r: R) -> str:
    body = prefix + "".join(r.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _card(r: R) -> str:
    prefix, length = r.choice([("4", 16), ("51", 16), ("37", 15), ("6011", 16), ("4", 13)])
    digits = _luhn_complete(prefix, length, r)
    style = r.randint(0, 2)
    if style == 0 or length != 16:
        return digits
    sep = " " if style == 1 else "-"
    return sep.join(digits[i : i + 4] for i in range(0, 16, 4))


def _uuid(r: R) -> str:
    h = _hex(r, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _ip(r: R) -> str:
    return ".".join(str(r.randint(1, 254)) for _ in range(4))


def _ipv6(r: R) -> str:
    return f"2001:db8:{_hex(r, 4)}::{_hex(r, 3)}"


def _host(r: R) -> str:
    return f"{r.choice(['db', 'db-replica'])}-{r.randint(1, 9)}.prod.internal"


def _ts(r: R) -> str:
    y, mo, d = r.randint(2023, 2026), r.randint(1, 12), r.randint(1, 28)
    h, mi, s = r.randint(0, 23), r.randint(0, 59), r.randint(0, 59)
    if r.random() < 0.5:
        return f"{y}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{r.randint(0, 999):03d}Z"
    return f"{y}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"


def _amount(r: R) -> str:
    return r.choice(
        [
            f"{r.randint(1, 999)}.{r.randint(0, 99):02d}",
            f"{r.randint(1, 9)},{r.randint(100, 999)}.00",
        ]
    )


def _secs(r: R) -> str:
    return r.choice([str(r.randint(1, 60)), f"{r.randint(1, 30)}.{r.randint(0, 9)}"])


def _jwt(r: R) -> str:
    return f"eyJhbGciOiJIUzI1NiJ9.eyJ{_b62(r, 40)}.{_b62(r, 43)}"


def _phone(r: R) -> str:
    return r.choice(
        [
            f"+1 ({r.randint(200, 999)}) {r.randint(200, 999)}-{r.randint(1000, 9999)}",
            f"+44 20 {r.randint(1000, 9999)} {r.randint(1000, 9999)}",
            f"+4915{r.randint(10**8, 10**9 - 1)}",
        ]
    )


# --- events ----------------------------------------------------------------------
#
# The events live in corpus.json; a message is a template whose ``${kind:arg}``
# fields are filled by the generators below (``${same}`` repeats the previous value).

_FIELD = re.compile(r"\$\{(\w+)(?::([^{}]*))?\}")


def _fill(kind: str, arg: str | None, r: R) -> str:
    simple: dict[str, Callable[[R], str]] = {
        "amount": _amount,
        "card": _card,
        "email": _email,
        "host": _host,
        "ip": _ip,
        "jwt": _jwt,
        "phone": _phone,
        "secs": _secs,
        "ts": _ts,
        "uuid": _uuid,
        "date": lambda r: _ts(r)[:10],
        "isots": lambda r: _ts(r).replace(" ", "T"),
        "login": lambda r: r.choice([".", "-", "_"]).join(_name(r)),
        "person": lambda r: " ".join(p.title() for p in _name(r)),
        "choice_ip": lambda r: r.choice([_ip(r), _ipv6(r)]),
        "openai_key": lambda r: "sk-proj-" + r.choice([_b62(r, 48), "*" * 36 + _b62(r, 4)]),
    }
    if kind in simple:
        return simple[kind](r)
    args = (arg or "").split(":")
    if kind == "b62":
        return _b62(r, int(args[0]))
    if kind == "hex":
        return _hex(r, int(args[0]))
    if kind == "int":
        return str(r.randint(int(args[0]), int(args[1])))
    if kind == "float":
        return f"{r.uniform(float(args[0]), float(args[1])):.5f}"
    if kind == "choice":
        return r.choice((arg or "").split("|"))
    raise ValueError(f"corpus.json: unknown field kind {kind!r}")


def _message(template: str, r: R) -> str:
    last = ""

    def sub(m: re.Match[str]) -> str:
        nonlocal last
        if m.group(1) != "same":
            last = _fill(m.group(1), m.group(2), r)
        return last

    return _FIELD.sub(sub, template)


@dataclass(frozen=True)
class _Event:
    label: str
    service: str
    operation: str
    exc_type: str
    statuses: tuple[int | None, ...]
    message: str


def _events() -> tuple[_Event, ...]:
    raw = json.loads(resources.files(__package__).joinpath("corpus.json").read_text("utf-8"))
    return tuple(
        _Event(
            e["label"],
            e["service"],
            e["operation"],
            e["exc_type"],
            tuple(e["statuses"]),
            e["message"],
        )
        for e in raw
    )


def _context(r: R, label: str) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "request_id": _uuid(r),
        "customer": {"email": _email(r), "phone": _phone(r), "name": " ".join(_name(r))},
        "amount": r.randint(50, 10**6),
        "attempt": r.randint(1, 3),
    }
    if label.startswith("pay."):
        ctx["card"] = {"number": _card(r), "exp": f"{r.randint(1, 12):02d}/{r.randint(26, 31)}"}
    if r.random() < 0.5:
        ctx["items"] = [{"sku": _b62(r, 8), "qty": r.randint(1, 5), "price": r.random() * 100}]
    if r.random() < 0.3:
        ctx["headers"] = {"Authorization": f"Bearer {_jwt(r)}", "X-Forwarded-For": _ip(r)}
    return ctx


def corpus(seed: int = 0, per_event: int = PER_EVENT) -> list[Example]:
    """``per_event`` failures of every event, with varying parameters; same seed, same corpus."""
    r = random.Random(seed)
    out: list[Example] = []
    for ev in _events():
        for _ in range(per_event):
            status = r.choice(ev.statuses)
            retry_after = r.randint(1, 60) * 1000 if status == 429 else None
            failure = Failure(
                service=ev.service,
                operation=ev.operation,
                exc_type=ev.exc_type,
                message=_message(ev.message, r),
                status=status,
                context=_context(r, ev.label),
                latency_ms=r.randint(1, 60_000),
                retry_after_ms=retry_after,
            )
            out.append(Example(ev.label, failure))
    return out


def _pairs(counts: Iterable[int]) -> int:
    return sum(n * (n - 1) // 2 for n in counts)


def evaluate(
    examples: Sequence[Example],
    rules: Sequence[Rule] = (),
    *,
    fingerprint: Callable[[Failure], bytes] | None = None,
) -> dict[str, Any]:
    """Pairwise precision and recall of "same fingerprint" against "same label".

    precision = pairs with the same fingerprint and the same label / pairs with
    the same fingerprint; recall = the same / pairs with the same label. The
    fingerprint is ``reduce(failure, rules).pattern`` unless ``fingerprint``
    is given (to score a baseline on the same corpus).
    """
    fixed = tuple(rules)
    fp = fingerprint or (lambda f: reduce(f, fixed).pattern)
    fps = [fp(ex.failure) for ex in examples]
    labels = [ex.label for ex in examples]
    same_fp = _pairs(Counter(fps).values())
    same_label = _pairs(Counter(labels).values())
    both = _pairs(Counter(zip(fps, labels, strict=True)).values())
    precision = both / same_fp if same_fp else 1.0
    recall = both / same_label if same_label else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "messages": len(examples),
        "labels": len(set(labels)),
        "fingerprints": len(set(fps)),
        "pairs_same_fingerprint": same_fp,
        "pairs_same_label": same_label,
        "pairs_both": both,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
