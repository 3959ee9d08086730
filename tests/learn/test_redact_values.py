"""Key/value pairs with several words, bare-host emails, and hostile input (redact.py).

A reviewer found that only the first word after a personal or secret key was
redacted (``name=John Smith`` kept ``Smith``), that ``bob@localhost`` was kept
verbatim, and that a scheme-less-path look-ahead made ``redact('@' * 8192)``
quadratic. No test here measures time: the hostile inputs are checked for a
correct result, and the URL rule is checked structurally (no look-ahead) and
against the old semantics it replaces.
"""

import re
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gossipmind.learn import redact_parts
from gossipmind.learn.patterns import Failure, reduce
from gossipmind.learn.redact import MAX_INPUT, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("invalid name=John Smith", "invalid name=<pii>"),
        ("invalid customer_name: John Smith", "invalid customer_name: <pii>"),
        ("invalid full_name=Jane Q Public", "invalid full_name=<pii>"),
        ("invalid address: 742 Evergreen Terrace Springfield", "invalid address: <pii>"),
        ("invalid card_holder=JOHN SMITH", "invalid card_holder=<pii>"),
        ("street=Baker Street city=London", "street=<pii> city=<pii>"),
        ("Password: correct horse battery staple", "Password: <secret>"),
        ("token=abc def ghi", "token=<secret>"),
        ('{"password": "correct horse"}', '{"password": <secret>}'),
        ("password='correct horse' rejected", "password=<secret>"),
        # a value stops at a delimiter, the end of the line or the next key
        ("name=John Smith, retrying", "name=<pii>, retrying"),
        ("name=John Smith; retrying", "name=<pii>; retrying"),
        ("(name=John Smith) rejected", "(name=<pii>) rejected"),
        ("name=John Smith\nretrying", "name=<pii>\nretrying"),
        ("name=John Smith status: 422", "name=<pii> status: 422"),
        ("name=John Smith status=422", "name=<pii> status=422"),
        ("ip: 10.0.0.1 port: 5432", "ip: <pii> port: 5432"),
        ("password=hunter two, user_name=jane doe", "password=<secret>, user_name=<pii>"),
    ],
)
def test_every_word_of_a_personal_or_secret_value_is_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login failed for bob@localhost", "login failed for <email>"),
        ("ssh alice@bastion denied", "ssh <email> denied"),
        ("ssh alice@bastion-2: denied", "ssh <email>: denied"),
        ("connect deploy@db01:5432 failed", "connect <email>:5432 failed"),
        ("mail to bob@localhost.", "mail to <email>."),
        # a version pin or a decorator is no email
        ("lodash@4.17.21 failed", "lodash@4.17.21 failed"),
        ("in @property getter", "in @property getter"),
    ],
)
def test_user_at_bare_host_is_an_email(text: str, expected: str) -> None:
    assert redact(text) == expected


_KEYS = ["name", "full_name", "customer_name", "address", "card_holder", "password", "token"]
# The fixed text of the messages and templates below: a generated word found in it is
# not a leak, so such words are not generated; nor "Bearer" and "Basic", which make the
# next word a token (even across a line break: "name=Bearer\nretrying").
_FIXED = " ".join(
    [*_KEYS, "invalid", "status", "retrying", "ValueError", "pii", "secret", "bearer", "basic"]
).lower()
_WORD = st.text(string.ascii_letters, min_size=3, max_size=10).filter(
    lambda w: w.lower() not in _FIXED
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(_KEYS),
    st.sampled_from(["=", ": ", ":", " = "]),
    st.lists(_WORD, min_size=1, max_size=5),
    st.lists(_WORD, min_size=1, max_size=5),
    st.sampled_from(["", ", retrying", "\nretrying", " status: 422"]),
)
@example("name", "=", ["John", "Smith"], ["Jane", "Q", "Public"], "")
def test_multi_word_values_never_leak_and_share_one_template(
    key: str, sep: str, value: list[str], other: list[str], tail: str
) -> None:
    def failure(words: list[str]) -> Failure:
        message = f"invalid {key}{sep}{' '.join(words)}{tail}"
        return Failure("billing", "charge", "ValueError", message, 422)

    out = redact(failure(value).message)
    assert redact(out) == out
    assert not [w for w in value if re.search(rf"(?<![A-Za-z]){w}(?![A-Za-z])", out)]
    # the same failure with other values has the same template, hence the same fingerprint
    assert reduce(failure(value)).template == reduce(failure(other)).template
    assert reduce(failure(value)).pattern == reduce(failure(other)).pattern


# --- hostile input: no quadratic look-ahead -----------------------------------------

# The scheme-less path alternative of the old URL rule: its look-ahead rescanned the rest
# of the token at every position, so a run of "@" (or of most punctuation) was quadratic.
_OLD_URL = re.compile(
    r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,30}://[^\s\"'<>\\`]+"
    r"|(?<![\w./:~\-])(?![^\s\"'<>\\`]*@(?:[A-Za-z0-9\-]+\.)+[A-Za-z])"
    r"(?:/|~[A-Za-z_][A-Za-z0-9_.:\-]*/|[A-Za-z0-9_.:\-]+/)[^\s\"'<>\\`]+"
)  # "~": a home directory written ~alice/ is a path too (a letter or "_" first; s9 reviews)


def test_url_rule_has_no_look_ahead() -> None:
    # Structural: only look-behinds (one character each) decide where a URL starts; the
    # "token holds an email" test runs once per token in the callback.
    pattern = redact_parts._URL.pattern
    assert "(?!" not in pattern
    assert "(?=" not in pattern


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [*"ab/@.:,-_~%?#=& '<", "https://", "x@a.bc", "/users/", "bob", "u:p@", "com"]
        ),
        max_size=16,
    ).map("".join)
)
@example("/x@example.com,/users/bob")
@example("/a,https://u:p@x.com/users/bob")
@example("@/@/@/x@a.bc")
@example("~a/users/")
@example("~./users/")
def test_url_rule_keeps_the_old_semantics(text: str) -> None:
    new = redact_parts._URL.sub(redact_parts._url, text)
    old = _OLD_URL.sub(lambda m: redact_parts._url_text(m.group(0)), text)
    assert new == old


@pytest.mark.parametrize(
    "unit", ["@", "a@", "@a", "=@", ".@", "@a.", "a=b@", "@/", "/@", "?", "%", "(1)", "x=y&", "1 "]
)
def test_hostile_runs_are_redacted_correctly(unit: str) -> None:
    # The reviewer's hostile runs, padded around real PII: the padding comes out as
    # redact() gives it alone, the PII never.
    pad = (unit * (MAX_INPUT // len(unit)))[: MAX_INPUT // 2 - 64]
    text = f"{pad}\n/users/jane.doe?q=s3cr3t name=John Smith\n{pad}"
    out = redact(text)
    alone = redact(pad)
    assert out == f"{alone}\n/users/<name>?q=<val> name=<pii>\n{alone}"


def test_a_full_run_of_at_signs_is_kept() -> None:
    assert redact("@" * MAX_INPUT) == "@" * MAX_INPUT
    assert redact("\uff20" * MAX_INPUT) == "@" * MAX_INPUT  # full-width, NFKC
    assert (
        redact("@/" * (MAX_INPUT // 2 - 4) + "x@a.bc") == "@/" * (MAX_INPUT // 2 - 5) + "@<email>"
    )


# --- quoted values, "=" inside a secret, cookies (a second review) ---------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a word ending in "=" is no key
        ("password: correct horse battery staple=", "password: <secret>"),
        ("password=correct horse staple=", "password=<secret>"),
        ("token=abc def== retrying", "token=<secret>"),
        # after a secret's "key:", "word=" is part of the value; after "key=" it is a key
        ("Password: hunter2 is=the secret", "Password: <secret>"),
        ("password=hunter2 user=bob", "password=<secret> user=bob"),
        ("password: hunter2 user: bob", "password: <secret> user: bob"),
        # a quoted value runs to its closing quote, whatever it holds
        ("connect(user='bob', password='p,w')", "connect(user='bob', password=<secret>)"),
        ('login(password="abc,def") failed', "login(password=<secret>) failed"),
        ('{"password": "ab\\"cd,ef", "user": "bob"}', '{"password": <secret>, "user": "bob"}'),
        ("{'api_key': 'a;b&c}d]e', 'x': 1}", "{'api_key': <secret>, 'x': 1}"),
        ('name="Smith, John" rejected', "name=<pii>"),
        # every pair of a cookie header
        ("cookie: a=b; c=d", "cookie: <secret>"),
        # a second quoted word after a quoted secret was kept (a review found it)
        ("password: 'correct' 'horse' 'battery'", "password: <secret>"),
        ('secret="abc" "def"', "secret=<secret>"),
        ("token: 'a b' next: 1", "token: <secret> next: 1"),
        ("Cookie: sid=abc; theme=dark\nretrying", "Cookie: <secret>\nretrying"),
        (
            "Set-Cookie: sid=abc123xyz; Path=/; Expires=Wed, 21 Oct 2015 07:28:00 GMT; HttpOnly",
            "Set-Cookie: <secret>",
        ),
        ("{'Cookie': 'a=b; c=d', 'Host': 'x'}", "{'Cookie': <secret>, 'Host': 'x'}"),
        ('cookie="a=b; c=d" rejected', "cookie=<secret>"),
    ],
)
def test_quoted_values_equals_signs_and_cookies_are_redacted_whole(
    text: str, expected: str
) -> None:
    out = redact(text)
    assert out == expected
    assert redact(out) == out


# Anything but a bare quote or a lone backslash: quotes and backslashes come escaped.
# Anything but a bare quote or a lone backslash: quotes and backslashes come escaped.
_QUOTED_PIECES = st.sampled_from(
    [*"abcXYZ019 ,;&}]):=.-/#?!", "\\'", '\\"', "\\\\", "user=bob", "c=d", "word: x"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["password", "api_key", "token", "cookie", "name", "address"]),
    st.sampled_from(["=", ": ", ":", " = "]),
    st.sampled_from(["'", '"']),
    st.lists(_QUOTED_PIECES, min_size=1, max_size=24).map("".join),
)
def test_a_quoted_value_never_leaks_whatever_it_holds(
    key: str, sep: str, quote: str, body: str
) -> None:
    text = f"call({key}{sep}{quote}{body}{quote}) failed"
    kind = "pii" if key in ("name", "address") else "secret"
    out = redact(text)
    assert out == f"call({key}{sep}<{kind}>) failed", (text, out)
    assert redact(out) == out


def test_a_cookie_key_before_a_long_run_of_spaces_is_redacted_correctly() -> None:
    # the cookie value runs to the line's end: a run of blanks must not be rescanned
    spaces = " \t" * (MAX_INPUT // 4)
    assert redact("cookie:" + spaces) == "cookie:" + spaces
    assert redact("cookie:" + spaces + "a=b; c=d ") == "cookie:" + spaces + "<secret> "
    assert redact("Set-Cookie: a=b" + spaces + "\nok") == "Set-Cookie: <secret>" + spaces + "\nok"
