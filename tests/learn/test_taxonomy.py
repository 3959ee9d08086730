import pytest

from gossipmind.core.errors import ConfigError, GossipmindError
from gossipmind.core.recipe import ERROR_CLASSES
from gossipmind.learn.taxonomy import Rule, classify, rules_from


@pytest.mark.parametrize(
    ("exc_type", "expected"),
    [
        ("TimeoutError", "timeout"),
        ("asyncio.exceptions.TimeoutError", "timeout"),
        ("httpx.ReadTimeout", "timeout"),
        ("requests.exceptions.ConnectTimeout", "timeout"),
        ("socket.timeout", "timeout"),
        ("grpc.DeadlineExceeded", "timeout"),
        ("openai.RateLimitError", "rate_limited"),
        ("botocore.exceptions.ThrottlingException", "rate_limited"),
        ("requests.exceptions.ConnectionError", "connection"),
        ("ConnectionResetError", "connection"),
        ("BrokenPipeError", "connection"),
        ("httpx.ConnectError", "connection"),
        ("ssl.SSLError", "connection"),
        ("socket.gaierror", "connection"),
        ("PermissionError", "auth"),
        ("openai.AuthenticationError", "auth"),
        ("ValueError", "validation"),
        ("TypeError", "validation"),
        ("pydantic.ValidationError", "validation"),
        ("json.decoder.JSONDecodeError", "validation"),
        ("FileNotFoundError", "not_found"),
        ("openai.NotFoundError", "not_found"),
        ("psycopg2.errors.UniqueViolation", "conflict"),
        ("sqlalchemy.exc.IntegrityError", "conflict"),
        ("anthropic.InternalServerError", "server_error"),
        ("RuntimeError", "unknown"),
        ("", "unknown"),
    ],
)
def test_exception_types(exc_type: str, expected: str) -> None:
    assert classify(exc_type) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (408, "timeout"),
        (504, "timeout"),
        (429, "rate_limited"),
        (500, "server_error"),
        (502, "server_error"),
        (503, "server_error"),
        (529, "server_error"),
        (401, "auth"),
        (403, "auth"),
        (400, "validation"),
        (422, "validation"),
        (404, "not_found"),
        (409, "conflict"),
        (412, "conflict"),
        (418, "unknown"),
        (302, "unknown"),
    ],
)
def test_status_codes(status: int, expected: str) -> None:
    assert classify("HTTPStatusError", status) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("The read operation timed out", "timeout"),
        ("Rate limit exceeded, slow down", "rate_limited"),
        ("You exceeded your current quota", "rate_limited"),
        ("permission denied for table orders", "auth"),
        ("Incorrect API key provided", "auth"),
        ("relation does not exist", "not_found"),
        ("deadlock detected", "conflict"),
        ("database is locked", "conflict"),
        ("[Errno 104] Connection reset by peer", "connection"),
        ("Name or service not known", "connection"),
        ("502 Bad Gateway", "server_error"),
        ("FATAL: sorry, too many clients already", "server_error"),
        ("field amount must be positive", "validation"),
        ("something odd", "unknown"),
    ],
)
def test_message_keywords(message: str, expected: str) -> None:
    assert classify("Exception", None, message) == expected


def test_precedence_status_then_type_then_message() -> None:
    assert classify("httpx.ReadTimeout", 429, "connection reset") == "rate_limited"
    assert classify("httpx.ReadTimeout", None, "connection reset") == "timeout"
    assert classify("httpx.ReadTimeout", 418, "connection reset") == "timeout"


def test_user_rules_take_precedence_in_order() -> None:
    rules = [
        Rule("auth", message_pattern=r"card.*declined"),
        Rule("rate_limited", type_pattern=r"^stripe\.", statuses=frozenset({402})),
        Rule("not_found", type_pattern="CardError"),
    ]
    assert classify("stripe.error.CardError", 402, "Your CARD was Declined", rules) == "auth"
    assert classify("stripe.error.CardError", 402, "insufficient funds", rules) == "rate_limited"
    assert classify("other.CardError", 402, "insufficient funds", rules) == "not_found"
    assert classify("httpx.ReadTimeout", None, "", rules) == "timeout"


def test_rule_validation() -> None:
    with pytest.raises(ConfigError, match="error_class"):
        Rule("flaky", statuses=frozenset({500}))
    with pytest.raises(ConfigError, match="needs"):
        Rule("timeout")
    with pytest.raises(ConfigError, match="valid regex"):
        Rule("timeout", message_pattern="(")
    with pytest.raises(ConfigError, match="100-599"):
        Rule("timeout", statuses=frozenset({99}))
    with pytest.raises(GossipmindError):
        Rule("timeout", statuses=frozenset())


def test_rules_from_config() -> None:
    rules = rules_from(
        [
            {"class": "timeout", "status": 599},
            {"class": "conflict", "type": "Lock", "message": "wait", "status": [423, 409]},
        ]
    )
    assert rules[0].statuses == frozenset({599})
    assert classify("X", 599, "", rules) == "timeout"
    assert classify("LockError", 423, "lock wait", rules) == "conflict"
    for bad, msg in [
        ([{"type": "x"}], "'class' is required"),
        ([{"class": "timeout", "typo": 1}], "unknown key"),
        ([{"class": "timeout", "status": "504"}], "status"),
        (["nope"], "must be a map"),
        ([{"class": "bogus", "status": 504}], r"rules\[0\]"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            rules_from(bad)  # type: ignore[arg-type]


def test_always_a_known_class() -> None:
    for exc in ["", "x" * 10_000, "a.b.c.", "Ошибка"]:
        for status in [None, 0, 200, 404, 599, 10_000]:
            assert classify(exc, status, "m" * 10_000) in ERROR_CLASSES


@pytest.mark.parametrize(
    ("exc_type", "message", "expected"),
    [
        # gRPC status codes name the class with "_" between words: all were "unknown"
        ("grpc.RpcError", "StatusCode.DEADLINE_EXCEEDED", "timeout"),
        ("grpc.RpcError", "StatusCode.RESOURCE_EXHAUSTED: quota", "rate_limited"),
        ("grpc.RpcError", "StatusCode.PERMISSION_DENIED", "auth"),
        ("grpc.RpcError", "StatusCode.NOT_FOUND", "not_found"),
        (
            "grpc.RpcError",
            "StatusCode.UNAVAILABLE: failed to connect to all addresses",
            "connection",
        ),
        ("grpc.RpcError", "StatusCode.UNAVAILABLE", "server_error"),
        # an AWS error code in the message: an auth failure, never retried
        (
            "botocore.exceptions.ClientError",
            "An error occurred (AccessDeniedException) when calling the InvokeModel operation",
            "auth",
        ),
    ],
)
def test_error_codes_in_messages(exc_type: str, message: str, expected: str) -> None:
    assert classify(exc_type, None, message) == expected
