"""Fuzz the local HTTP API: methods, paths, query strings, headers, content types,
bodies (JSON, junk, oversized, chunked). Never a 500, never an exception out of the
app, and memory stays bounded under a large batch of junk.

The hypothesis part drives the Starlette app in-process through ASGI (whatever
escapes the app reaches the test); the memory part goes through the real server
(hypercorn on 127.0.0.1) with ``tracemalloc`` tracing the whole process.
"""

from __future__ import annotations

import json
import os
import random
import tracemalloc
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import trio
from fuzzkit import fuzz_settings
from hypothesis import event, given
from hypothesis import strategies as st

from gossipmind.api.server import Api
from gossipmind.api.token import TokenFile
from gossipmind.testing.fleet import fleet

TOKEN = "fuzz-token-" + "x" * 32


def token_file(tmp_path: Path) -> TokenFile:
    """The API's token file, holding TOKEN."""
    path = tmp_path / "fuzz.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(TOKEN + "\n")
    return TokenFile(path)


ROUTES = ["/openapi.json", "/v1/status", "/v1/failures", "/v1/failures/count", "/v1/fix",
          "/v1/outcomes", "/v1/patterns", "/v1/fixes", "/v1/events", "/v1/ops"]  # fmt: skip
ODD_PATHS = ["/", "/v1", "/v1/", "/v1/fix/", "//v1/status", "/v1/../v1/status", "/%00",
             "/v1/status%2f..", "/V1/STATUS", "/v1/status?", "/openapi.json/x"]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["00" * 32, "ff" * 32, "zz" * 32, "timeout", "503"]),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=15,
)  # fmt: skip
field_names = st.sampled_from(
    ["service", "operation", "exc_type", "message", "status", "context", "latency_ms",
     "retry_after_ms", "fix", "attempts", "successes", "kind", "body", "x"]
)  # fmt: skip
documents = st.dictionaries(field_names, json_values, max_size=8)
documents = documents | st.builds(  # a failure report that may be valid
    lambda d, s, o: {**{k: v for k, v in d.items() if k in ("message", "context")},
                     "service": s, "operation": o},
    documents, st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=10),
)  # fmt: skip
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
).map(lambda t: t.strip().encode("latin-1"))  # any byte a header value may hold
header_names = st.sampled_from(
    [b"Accept", b"Accept-Encoding", b"Content-Encoding", b"Expect", b"Origin", b"Host", b"Cookie",
     b"X-Forwarded-For", b"Range", b"If-None-Match", b"Transfer-Encoding", b"X-Junk"]
)  # fmt: skip
content_types = st.sampled_from(
    [b"application/json", b"application/json; charset=utf-16", b"text/plain", b"",
     b"multipart/form-data; boundary=x", b"application/x-www-form-urlencoded",
     b"application/msgpack", b"*/*"]
) | header_text  # fmt: skip
auths = st.sampled_from(
    [f"Bearer {TOKEN}"] * 12 + [f"bearer {TOKEN}", "Bearer wrong", "", f"Basic {TOKEN}",
     f"Bearer {TOKEN} x", "Bearer", f"Bearer {TOKEN}\u00e9"]
).map(lambda t: t.encode("latin-1"))  # fmt: skip
VALID = [("GET", "/openapi.json"), ("GET", "/v1/status"), ("POST", "/v1/failures"),
         ("GET", "/v1/failures/count"), ("GET", "/v1/fix"), ("POST", "/v1/outcomes"),
         ("GET", "/v1/patterns"), ("GET", "/v1/fixes"), ("POST", "/v1/ops")]  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> bytes | list[bytes]:
    kind = draw(st.sampled_from(["doc"] * 5 + ["json", "bytes", "deep", "big", "chunked", "none"]))
    if kind == "doc":
        return json.dumps(draw(documents)).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(100, 40_000))
        return draw(st.sampled_from([b"[", b'{"a":'])) * depth
    if kind == "big":
        return b'{"message": "' + b"x" * draw(st.integers(60_000, 70_000)) + b'"}'
    if kind == "chunked":  # sent as chunks (no Content-Length)
        size = draw(st.integers(1, 20_000))
        return [b" " * size for _ in range(draw(st.integers(1, 8)))] + [b"{}"]
    return b""


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    method, path = draw(st.sampled_from(VALID))  # mostly a served route and its method
    if draw(st.integers(0, 3)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
        path = draw(st.sampled_from(ROUTES) | st.sampled_from(ODD_PATHS))
    if draw(st.integers(0, 19)) == 0:
        path = "/" + urllib.parse.quote(draw(st.text(max_size=20)), safe="/")
    query = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["pattern", "limit", "status", "canary", "x"])
                | st.text(max_size=5),
                st.sampled_from(["00" * 32, "1", "0", "100000", "-1", "accepted"])
                | st.text(max_size=70),
            ),
            max_size=4,
        )
    )  # fmt: skip
    headers = draw(st.lists(st.tuples(header_names, header_text), max_size=4))
    auth = draw(auths)
    if auth:
        headers.append((b"Authorization", auth))
    headers.append((b"Content-Type", draw(content_types)))
    return {"method": method, "path": path, "query": query, "headers": headers,
            "body": draw(bodies())}  # fmt: skip


ALLOWED = {200, 201, 202, 307, 400, 401, 403, 404, 405, 409, 413, 422}  # 307: trailing slash


async def asgi(app: Any, req: dict[str, Any]) -> tuple[int, dict[bytes, bytes], bytes]:
    """Call the ASGI app directly, as hypercorn would: the body arrives in chunks
    (``more_body``), exceptions that escape the app reach the test unchanged."""
    body = req["body"]
    chunks = body if isinstance(body, list) else [body]
    headers = [(k.lower(), v) for k, v in req["headers"]]
    if not isinstance(body, list):
        headers.append((b"content-length", str(len(body)).encode()))
    path = req["path"]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": req["method"],
        "scheme": "http",
        "path": urllib.parse.unquote(path),
        "raw_path": path.encode(),
        "query_string": urllib.parse.urlencode(req["query"]).encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }
    pending = list(chunks)
    out: dict[str, Any] = {"status": 0, "headers": {}, "body": b""}

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = dict(message.get("headers", []))
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["headers"], out["body"]


async def test_no_request_gets_a_500_or_escapes_the_app(tmp_path: Path) -> None:
    seen: dict[int, int] = {}
    async with fleet(tmp_path, 1, 0, api=False) as (r,):
        api = Api(r.node, token_file(tmp_path))

        @fuzz_settings(600)
        @given(requests())
        def fuzz(req: dict[str, Any]) -> None:
            if req["path"] == "/v1/events" and req["method"] in ("GET", "HEAD"):
                req["headers"] = [h for h in req["headers"] if h[0] != b"Authorization"]
            status, headers, body = trio.from_thread.run(asgi, api.app, req)
            event(f"status {status}")
            seen[status] = seen.get(status, 0) + 1
            assert status in ALLOWED, (status, body[:300])
            if headers.get(b"content-type") == b"application/json" and body:
                doc = json.loads(body)  # the app's own answers are JSON; errors name the error
                assert status < 400 or "error" in doc, doc
            else:  # only the router answers in plain text
                assert status in (200, 307, 404, 405) or not body, body

        await trio.to_thread.run_sync(fuzz)
    print(f"\nAPI fuzz answers: {dict(sorted(seen.items()))}")
    assert {200, 401, 422} <= set(seen), seen  # the handlers were reached


async def test_memory_stays_bounded_under_a_batch_of_junk(tmp_path: Path) -> None:
    """Through the real server: oversized declared and chunked bodies, junk of every
    size, deep JSON. tracemalloc's peak (the whole process: hypercorn, app, node and
    client) stays far below the bytes sent."""
    rng = random.Random(5)
    async with fleet(tmp_path, 1, 0) as (r,):
        token = r.token
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def chunked(total: int) -> Any:
            def gen() -> Any:
                for _ in range(total // 65536):
                    yield bytes(65536)  # a fresh 64 KiB buffer each time

            return gen()

        def jobs() -> Any:
            """(path, body) made one at a time, so the client holds one body at most."""
            for path in ("/v1/failures", "/v1/outcomes", "/v1/ops") * 4:
                yield path, chunked(8 << 20), 8 << 20  # 8 MiB, chunked
            for _ in range(150):
                junk = rng.randbytes(rng.randint(1, 65_000))
                yield rng.choice(["/v1/failures", "/v1/ops"]), junk, len(junk)
            for _ in range(40):
                deep = b"[" * rng.randint(1000, 65_000)
                yield "/v1/failures", deep, len(deep)

        def batch() -> tuple[int, dict[int, int]]:
            sent = 0
            codes: dict[int, int] = {}
            with httpx.Client(base_url=r.url, timeout=30) as c:
                for path, content, size in jobs():
                    resp = c.post(path, headers=auth, content=content)
                    codes[resp.status_code] = codes.get(resp.status_code, 0) + 1
                    sent += size
                    del content
            return sent, codes

        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            sent, codes = await trio.to_thread.run_sync(batch)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert 500 not in codes and codes.get(413, 0) >= 12, codes
    assert sent > 100 << 20  # > 100 MiB offered
    print(f"\nAPI junk batch: {sent >> 20} MiB offered, answers {codes}, "
          f"traced peak {(peak - base) >> 10} KiB")  # fmt: skip
    assert peak - base < 6 << 20, f"peak {(peak - base) >> 20} MiB for {sent >> 20} MiB sent"


async def test_unicode_digits_and_huge_numbers_are_4xx(tmp_path: Path) -> None:
    """Found by this fuzzer (scaled up): ``"²".isdigit()`` is true but ``int("²")``
    fails, so ``?limit=²`` was a 500; so were 5,000-digit limits (int's digit cap)."""
    auth = (b"Authorization", f"Bearer {TOKEN}".encode())
    async with fleet(tmp_path, 1, 0, api=False) as (r,):
        app = Api(r.node, token_file(tmp_path)).app
        for query in ([("limit", "²")], [("limit", "9" * 5000)], [("limit", "١٢")]):
            req = {"method": "GET", "path": "/v1/patterns", "query": query,
                   "headers": [auth], "body": b""}  # fmt: skip
            status, _, _ = await asgi(app, req)
            assert status == 422, query
        for length in (b"\xb2", b"9" * 5000, b"-1", b""):
            req = {"method": "POST", "path": "/v1/failures", "query": [],
                   "headers": [auth, (b"content-length", length)], "body": [b"{}"]}  # fmt: skip
            status, _, _ = await asgi(app, req)
            assert status == 413, length  # not a length we accept: refused unread
