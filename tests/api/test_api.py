"""The local HTTP API on a real server: auth, validation, limits, schema, events."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Running, fleet
from gossipmind.api.openapi import OPENAPI
from gossipmind.api.server import Api
from gossipmind.api.token import TokenFile, ensure_token
from gossipmind.core.errors import ConfigError
from gossipmind.core.snapshot import FIX_STATUSES


def call(
    r: Running, method: str, path: str, *, token: str | None = "ok", **kw: Any
) -> httpx.Response:
    headers = kw.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {r.token if token == 'ok' else token}"
    with httpx.Client(base_url=r.url, timeout=5) as c:
        return c.request(method, path, headers=headers, **kw)


async def acall(r: Running, method: str, path: str, **kw: Any) -> httpx.Response:
    return await trio.to_thread.run_sync(lambda: call(r, method, path, **kw))


async def test_auth_limits_and_precise_errors(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        assert r.url.startswith("http://127.0.0.1:")
        assert (await acall(r, "GET", "/v1/status", token=None)).status_code == 401
        assert (await acall(r, "GET", "/v1/status", token="wrong" * 8)).status_code == 401
        ok = await acall(r, "GET", "/v1/status")
        assert ok.status_code == 200 and ok.json()["network"] == r.node.net.hex()
        cases = [
            ("POST", "/v1/failures", {"content": b"{"}, 422, "not valid JSON"),
            ("POST", "/v1/failures", {"json": {"service": "s"}}, 422, "operation: is required"),
            ("POST", "/v1/failures", {"json": {"service": 5, "operation": "o"}}, 422, "service"),
            (
                "POST",
                "/v1/failures",
                {"json": {"service": "s", "operation": "o", "status": 42}},
                422,
                "status",
            ),
            (
                "POST",
                "/v1/failures",
                {"json": {"service": "s", "operation": "o", "x": 1}},
                422,
                "unknown field",
            ),
            ("POST", "/v1/failures", {"content": b"x" * 70_000}, 413, "larger than"),
            (
                "POST",
                "/v1/outcomes",
                {"json": {"fix": "ab", "attempts": 1, "successes": 1}},
                422,
                "fix",
            ),
            (
                "POST",
                "/v1/outcomes",
                {"json": {"fix": "00" * 32, "attempts": 1, "successes": 2}},
                422,
                "cannot exceed",
            ),
            (
                "POST",
                "/v1/outcomes",
                {"json": {"fix": "00" * 32, "attempts": 1, "successes": 1}},
                404,
                "no fix",
            ),
            ("GET", "/v1/fix?pattern=" + "00" * 32, {}, 404, "no accepted fix"),
            ("GET", "/v1/fix", {}, 422, "pattern"),
            ("GET", "/v1/fixes?status=bogus", {}, 422, "blocked, revoked, unproposed"),
            ("GET", "/v1/patterns?limit=-1", {}, 422, "limit"),
        ]
        for method, path, kw, code, message in cases:
            resp = await acall(r, method, path, **kw)
            assert resp.status_code == code, (path, kw, resp.text)
            assert message in resp.json()["error"], (path, resp.text)
        for status in FIX_STATUSES:  # every status a fix can have is a valid filter
            resp = await acall(r, "GET", f"/v1/fixes?status={status}")
            assert resp.status_code == 200 and resp.json() == [], (status, resp.text)


async def test_reporting_counting_and_openapi(tmp_path: Path) -> None:
    async with fleet(tmp_path, 2, 1) as (admin, r):
        body = {
            "service": "search",
            "operation": "query",
            "exc_type": "TimeoutError",
            "message": "timed out after 3000 ms for bob@example.com",
            "latency_ms": 3000,
        }
        resp = await acall(r, "POST", "/v1/failures", json=body)
        assert resp.status_code == 202
        doc = resp.json()
        assert doc["error_class"] == "timeout" and "bob@example.com" not in doc["template"]
        count = (await acall(r, "GET", f"/v1/failures/count?pattern={doc['pattern']}")).json()
        # counted at once: still in the report window, or already written
        assert count["local_unsent"] + count["count"] == 1
        with trio.fail_after(10):
            while (
                await acall(admin, "GET", f"/v1/failures/count?pattern={doc['pattern']}")
            ).json()["count"] != 1:
                await trio.sleep(0.1)
        spec = (await acall(r, "GET", "/openapi.json", token=None)).json()
        assert spec == json.loads(json.dumps(OPENAPI))
        api = Api(r.node, TokenFile(r.spec.dir / "api.token"))
        served = {route.path for route in api.app.routes}  # type: ignore[attr-defined]
        assert set(spec["paths"]) == served - {"/openapi.json"}  # every route is described


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(
    st.sampled_from(
        [
            "service",
            "operation",
            "exc_type",
            "message",
            "status",
            "context",
            "latency_ms",
            "retry_after_ms",
            "fix",
            "attempts",
            "successes",
            "junk",
        ]
    ),
    json_values,
    max_size=8,
)


async def test_no_input_gets_a_500(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        results: list[int] = []

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(path=st.sampled_from(["/v1/failures", "/v1/outcomes"]), body=bodies | json_values)
        def fuzz_post(path: str, body: Any) -> None:
            resp = call(r, "POST", path, json=body)
            results.append(resp.status_code)
            assert resp.status_code in (202, 404, 413, 422), resp.text

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            path=st.sampled_from(["/v1/fix", "/v1/failures/count", "/v1/fixes", "/v1/patterns"]),
            query=st.text(max_size=80),
        )
        def fuzz_get(path: str, query: str) -> None:
            resp = call(r, "GET", path, params={"pattern": query, "limit": query, "status": query})
            assert resp.status_code in (200, 404, 422), resp.text

        await trio.to_thread.run_sync(fuzz_post)
        await trio.to_thread.run_sync(fuzz_get)
        assert 422 in results  # valid bodies are covered by test_reporting_counting_and_openapi


def test_token_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "api.token"
    token = ensure_token(path)
    assert (path.stat().st_mode & 0o777) == 0o600 and ensure_token(path) == token
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="must be 0600"):
        ensure_token(path)
