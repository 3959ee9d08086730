"""Must show: PII sent in failures never leaves the node (property tests).

Generated PII (Luhn-valid cards, emails, JWT-like tokens, API keys, bearer
tokens, high-entropy tokens, IPv4/IPv6 addresses, phone numbers, UUIDs, names
inside URLs) is embedded in messages, in contexts (as values and as keys) and
in operation names; none of it may appear in the ``Reduced`` value, nor in the
``pattern.report`` bodies the batcher emits, nor in their canonical encoding.
"""

import dataclasses
import ipaddress
import re
import string
import uuid

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from gossipmind.core import encoding
from gossipmind.core.schema import check_body
from gossipmind.learn.batcher import ReportBatcher
from gossipmind.learn.patterns import Failure, Reduced, reduce
from gossipmind.learn.redact import redact

B62 = string.ascii_letters + string.digits
# Route words after /users/ are not names (redact keeps /users/me/settings).
ROUTES = {"me", "self", "current", "new", "search", "list", "all", "count"}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


@st.composite
def cards(draw: st.DrawFn) -> tuple[str, list[str]]:
    length = draw(st.integers(13, 19))
    body = draw(st.sampled_from("3456")) + draw(
        st.text(string.digits, min_size=length - 2, max_size=length - 2)
    )
    digits = _luhn_complete(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    shown = sep.join(digits[i : i + 4] for i in range(0, len(digits), 4)) if sep else digits
    return shown, [shown, digits]


def _alnum(lo: int, hi: int, alphabet: str = B62) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=lo, max_size=hi)


@st.composite
def emails(draw: st.DrawFn) -> tuple[str, list[str]]:
    if draw(st.booleans()):
        email = draw(st.emails())  # RFC 5322 local parts: !#$%&'*+/=?^_`{|}~ and more
        local = email.rsplit("@", 1)[0]
        return email, [email, *([f"{local}@"] if len(local) >= 3 else [])]
    local = draw(st.from_regex(r"[a-z0-9][a-z0-9._+\-]{2,20}", fullmatch=True))
    domain = draw(st.from_regex(r"[a-z0-9]{2,12}(\.[a-z0-9]{2,10})?\.[a-z]{2,6}", fullmatch=True))
    email = f"{local}@{domain}"
    return email, [email, f"{local}@"]


@st.composite
def jwts(draw: st.DrawFn) -> tuple[str, list[str]]:
    url = string.ascii_letters + string.digits + "-_"
    parts = [draw(_alnum(10, 60, url)) for _ in range(3)]
    token = "eyJ" + ".".join(parts)
    return token, [token, *[p for p in parts if len(p) >= 10]]


@st.composite
def high_entropy(draw: st.DrawFn) -> tuple[str, list[str]]:
    chars = draw(st.permutations(B62))
    n = draw(st.integers(18, 40))
    token = (
        "".join(chars[:n])
        + draw(st.sampled_from(string.digits))
        + draw(st.sampled_from(string.ascii_letters))
    )
    return token, [token]


@st.composite
def api_keys(draw: st.DrawFn) -> tuple[str, list[str]]:
    kind = draw(st.integers(0, 8))
    if kind == 0:
        secret = draw(_alnum(24, 32))
        key = draw(st.sampled_from(["sk_live_", "sk_test_", "rk_live_"])) + secret
    elif kind == 1:
        secret = draw(_alnum(40, 48, B62 + "-_"))
        key = draw(st.sampled_from(["sk-", "sk-proj-", "sk-ant-api03-"])) + secret
    elif kind == 2:
        secret = draw(_alnum(16, 16, string.ascii_uppercase + string.digits))
        key = "AKIA" + secret
    elif kind == 3:
        secret = draw(_alnum(36, 36))
        key = draw(st.sampled_from(["ghp_", "gho_", "ghs_"])) + secret
    elif kind == 4:
        secret = draw(_alnum(10, 30, B62 + "-"))
        key = draw(st.sampled_from(["xoxb-", "xoxp-"])) + secret
    elif kind == 5:
        secret = draw(_alnum(35, 35, B62 + "-_"))
        key = "AIza" + secret
    elif kind == 6:
        secret = draw(_alnum(20, 40))
        key = "hf_" + secret
    elif kind == 7:
        secret, _ = draw(high_entropy())
        return f"Bearer {secret}", [secret]
    else:
        secret = draw(_alnum(24, 40))
        key = "whsec_" + secret
    return key, [key, secret]


@st.composite
def ipv4s(draw: st.DrawFn) -> tuple[str, list[str]]:
    ip = str(ipaddress.IPv4Address(draw(st.integers(2**24, 2**32 - 1))))
    return ip, [ip]


@st.composite
def ipv6s(draw: st.DrawFn) -> tuple[str, list[str]]:
    groups = draw(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8))
    assume(sum(1 for g in groups if g) >= 4)
    ip = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
    return str(ip), [str(ip), ip.exploded]


@st.composite
def phones(draw: st.DrawFn) -> tuple[str, list[str]]:
    d = lambda n: draw(st.text(string.digits, min_size=n, max_size=n))  # noqa: E731
    first = draw(st.sampled_from("23456789")) + d(2)
    kind = draw(st.integers(0, 5))
    phone = [
        f"+1 ({first}) {d(3)}-{d(4)}",
        f"+44 20 {d(4)} {d(4)}",
        f"+49{d(11)}",
        f"{first}-{d(3)}-{d(4)}",
        f"({first}) {d(3)}-{d(4)}",
        f"0{draw(st.sampled_from('123456789'))}{d(2)} {d(4)} {d(4)}",
    ][kind]
    return phone, [phone, re.sub(r"\D", "", phone)]


@st.composite
def uuids(draw: st.DrawFn) -> tuple[str, list[str]]:
    u = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    return u, [u, u.upper(), u.replace("-", "")]


@st.composite
def url_names(draw: st.DrawFn) -> tuple[str, list[str]]:
    name = draw(st.from_regex(r"[a-z][a-z0-9]{2,10}([._-][a-z]{3,10})?", fullmatch=True))
    assume(name not in ROUTES)
    word = draw(st.sampled_from(["users", "customers", "u", "accounts", "profiles", "members"]))
    rest = draw(st.sampled_from(["", "/orders", "/cards/42", "?expand=true"]))
    host = draw(st.sampled_from(["https://api.example.com", "http://10.1.2.3:8080", ""]))
    return f"{host}/v1/{word}/{name}{rest}", [name]


PII = st.one_of(
    cards(),
    emails(),
    jwts(),
    api_keys(),
    high_entropy(),
    ipv4s(),
    ipv6s(),
    phones(),
    uuids(),
    url_names(),
)

WRAPPERS = [
    "charge failed for {}",
    "{}",
    "customer={} declined",
    "No such customer: '{}'",
    'detail: "{}" rejected',
    "value ({}) invalid",
    "GET https://api.example.com/v1/search?q={}&page=2 failed",
    "user <{}> unknown",
    "{}: connection refused",
    "token:{} expired",
    "[{}]",
    "{{'email': '{}'}}",
]


def _failure(pii: str, wrapper: str, where: int) -> Failure:
    message = wrapper.format(pii)
    context = {
        "customer": {"contact": pii, "tags": [pii, 3]},
        pii: {"nested": [pii]},
        "amount": 12,
    }
    return Failure(
        service="payments",
        operation=f"charge {pii}" if where == 1 else "charge",
        exc_type="httpx.ReadTimeout" if where != 2 else f"errors.Err_{pii}",
        message=message,
        status=504,
        context=context,
        latency_ms=1200,
        retry_after_ms=None,
    )


def _leaks(forms: list[str], texts: list[str], blobs: list[bytes]) -> list[str]:
    """Forms found verbatim; all-digit forms are also looked for across separators."""
    digit_texts = [re.sub(r"\D", "", t) for t in texts]
    found = []
    for form in forms:
        verbatim = any(form in t for t in texts) or any(form.encode() in b for b in blobs)
        spread = form.isdigit() and any(form in d for d in digit_texts)
        if verbatim or spread:
            found.append(form)
    return found


def _neutral(value: str, forms: list[str]) -> str:
    """The same value with its PII replaced by an innocent word (a URL keeps its shell).

    Where a form stands as a token of its own, only those occurrences are replaced:
    the user name "ttp" in ``https://…/users/ttp`` must not turn the scheme into
    "hzzzzs" (the neutral failure would no longer hold a URL, and the "ttp" of
    "https" in the reduced template would pass for a leak)."""
    for form in sorted(forms, key=len, reverse=True):
        bounded = rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])"
        replaced = re.sub(bounded, "zzzz", value)
        value = replaced if replaced != value else value.replace(form, "zzzz")
    return value


def _reduced_texts(r: Reduced) -> list[str]:
    # Every text field (the pattern is a hash of some of them: random bytes, not text).
    return [r.service, r.operation, r.template, r.shape, r.error_class]


@SETTINGS
@given(PII, st.sampled_from(WRAPPERS), st.integers(0, 2))
@example(("https://api.example.com/v1/users/ttp", ["ttp"]), "charge failed for {}", 0)
def test_pii_never_reaches_reduced(pii: tuple[str, list[str]], wrapper: str, where: int) -> None:
    value, forms = pii
    r = reduce(_failure(value, wrapper, where))
    # A form that also occurs in the same failure without the PII is not a leak
    # (a generated name "hos" is in "<host>" whatever the name).
    neutral = reduce(_failure(_neutral(value, forms), wrapper, where))
    forms = [f for f in forms if not any(f in t for t in _reduced_texts(neutral))]
    assert not _leaks(forms, _reduced_texts(r), [])


@SETTINGS
@given(
    st.lists(st.tuples(PII, st.sampled_from(WRAPPERS), st.integers(0, 2)), min_size=1, max_size=6)
)
def test_pii_never_reaches_report_bodies_or_their_bytes(
    items: list[tuple[tuple[str, list[str]], str, int]],
) -> None:
    def flushed(values: list[str]) -> tuple[list[str], list[bytes]]:
        batcher = ReportBatcher(window_ms=60_000, max_patterns=16)
        for t, (value, (_, wrapper, where)) in enumerate(zip(values, items, strict=True)):
            batcher.add(reduce(_failure(value, wrapper, where)), now_ms=1_000 + t)
        bodies = batcher.flush(now_ms=10_000)
        assert bodies
        for body in bodies:
            check_body("pattern.report", body)
        # The bodies as they would be signed and gossiped, minus the pattern id
        # (32 hash bytes could contain a short form by chance).
        bodies = [{**b, "pattern": b""} for b in bodies]
        return [repr(b) for b in bodies], [encoding.encode(b) for b in bodies]

    texts, blobs = flushed([pii[0] for pii, _, _ in items])
    neutral_texts, neutral_blobs = flushed([_neutral(*pii) for pii, _, _ in items])
    forms = [f for pii, _, _ in items for f in pii[1]]
    forms = [f for f in forms if not _leaks([f], neutral_texts, neutral_blobs)]
    assert not _leaks(forms, texts, blobs)


@SETTINGS
@given(PII, st.sampled_from(WRAPPERS))
def test_redaction_alone_removes_every_generated_pii(
    pii: tuple[str, list[str]], wrapper: str
) -> None:
    # Without the later layers (templating, shape): redaction by itself is enough.
    value, forms = pii
    neutral = redact(wrapper.format(_neutral(value, forms)))
    forms = [f for f in forms if f not in neutral]
    assert not _leaks(forms, [redact(wrapper.format(value))], [])


def test_the_generators_really_produce_pii() -> None:
    # Guard against a vacuous property: the neutral filter keeps the real forms.
    f = _failure("jane.doe@example.com", "{}", 1)
    assert "jane.doe@example.com" in f.message
    r = reduce(f)
    assert "jane" not in r.template and "jane" not in r.operation
    assert (
        dataclasses.asdict(r)["shape"]
        == "{*:{nested:[str]},amount:int,customer:{contact:str,tags:[int|str]}}"
    )
