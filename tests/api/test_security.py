"""Local API security: loopback only, bearer token everywhere, a private token file,
request size limits enforced before reading, and nothing from the network executed.
"""

from __future__ import annotations

import ast
import hmac
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from conftest import Running, fleet
from gossipmind.api import server
from gossipmind.api.client import Client, Fix
from gossipmind.api.server import Api, serve_api
from gossipmind.api.token import TokenFile, ensure_token
from gossipmind.api.wire import MAX_BODY
from gossipmind.core.errors import ConfigError
from gossipmind.core.schema import check_body
from gossipmind.learn.executor import Executor, LocalRegistry

SRC = Path(server.__file__).resolve().parents[1]

# -- the listening socket -------------------------------------------------------------


def listening(port: int) -> list[tuple[str, str]]:
    """(family, local address) of every TCP/UDP socket of this process bound to ``port``."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            mine.add(link[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            cols = line.split()
            addr, port_hex = cols[1].rsplit(":", 1)
            if int(port_hex, 16) == port and cols[9] in mine:
                if table.startswith("tcp") and cols[3] != "0A":  # not LISTEN: a connection
                    continue
                found.append((table, addr))
    return found


async def test_the_api_listens_on_loopback_only(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        port = int(r.url.rsplit(":", 1)[1])
        assert r.url == f"http://127.0.0.1:{port}"
        socks = listening(port)
        assert socks == [("tcp", "0100007F")], socks  # 127.0.0.1, IPv4 only, one socket
        assert json.loads((r.spec.dir / "api.json").read_text())["url"] == r.url


@pytest.mark.parametrize("port", ["0.0.0.0:0", "0 0.0.0.0", -1, 65536, 80.5, True, None])
async def test_the_port_setting_cannot_choose_an_address(tmp_path: Path, port: Any) -> None:
    async with fleet(tmp_path, 1, 0, api=False) as (r,):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConfigError, match="API port"):
                await nursery.start(serve_api, r.node, port)
        assert not (r.spec.dir / "api.json").exists()


# -- the token ------------------------------------------------------------------------------


def request(r: Running, method: str, path: str, headers: dict[str, str], **kw: Any) -> int:
    with httpx.Client(base_url=r.url, timeout=10) as c:
        return c.request(method, path, headers=headers, **kw).status_code


async def test_every_route_but_the_openapi_document_needs_the_token(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        token = r.token
        bad = [
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer "},
            {"Authorization": f"Basic {token}"},
            {"Authorization": f"Token {token}"},
            {"Authorization": f"Bearer{token}"},
            {"Authorization": f"Bearer {token[:-1]}"},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": f"Bearer x{token}"},
            {"Authorization": f"Bearer {token} {token}"},
            {"Authorization": f"Bearer {token.upper()}"},
            {"Authorization": f"Bearer {'A' * 4000}"},
            {"Authorization": "Bearer \u00e9\u00e8"},
            {"X-Api-Key": token},
            {"Cookie": f"token={token}"},
        ]
        routes = [
            (route.path, method)
            for route in Api(r.node, TokenFile(r.spec.dir / "api.token")).app.routes
            for method in sorted(route.methods or ())  # type: ignore[attr-defined]
        ]
        protected = [(p, m) for p, m in routes if p != "/openapi.json"]
        assert len(protected) >= 10

        def probe() -> list[tuple[str, str, int]]:
            seen = []
            for path, method in protected:
                for headers in bad:
                    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                    req = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}"
                    req += "Content-Length: 2\r\nConnection: close\r\n\r\n{}"
                    code, _ = raw_http(r.url, req.encode("latin-1"))
                    seen.append((method, path, code))
            return seen

        seen = await trio.to_thread.run_sync(probe)
        assert {code for _, _, code in seen} == {401}, [s for s in seen if s[2] != 401]
        ok = await trio.to_thread.run_sync(
            request, r, "GET", "/v1/status", {"Authorization": f"bearer {token}"}
        )
        assert ok == 200  # the scheme is case-insensitive (RFC 7235), the token is not
        public = await trio.to_thread.run_sync(request, r, "GET", "/openapi.json", {})
        assert public == 200


async def test_the_token_is_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(server.hmac, "compare_digest", spy)
    async with fleet(tmp_path, 1, 0) as (r,):
        code = await trio.to_thread.run_sync(
            request, r, "GET", "/v1/status", {"Authorization": "Bearer guess"}
        )
    token = r.token.encode()
    assert code == 401 and [c for c in calls if c[0] == b"guess"] == [(b"guess", token)]
    assert all(c == (token, token) for c in calls if c[0] != b"guess")  # the file vs held
    # and nowhere in the API is a token's value compared with == / != / in / <
    for module in ("server.py", "token.py"):
        tree = ast.parse((SRC / "api" / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and not none_test(node):
                operands = [node.left, *node.comparators]
                assert not any(secret(x) for x in operands), f"{module}: {ast.unparse(node)}"


def none_test(node: ast.Compare) -> bool:
    """``x is None`` / ``x is not None``: whether there is a token, not what it is."""
    return all(isinstance(op, ast.Is | ast.IsNot) for op in node.ops) and all(
        isinstance(c, ast.Constant) and c.value is None for c in node.comparators
    )


def secret(node: ast.expr) -> bool:
    """``token``, ``self.token``, ``given.strip().encode()`` ... (not ``len(token)``)."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        node = node.func.value
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name in {"token", "given", "auth", "held", "fresh"}


def test_the_token_file_is_created_private_and_refused_when_readable(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        path = tmp_path / "api.token"
        token = ensure_token(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 32
    assert ensure_token(path) == token
    for mode in (0o640, 0o604, 0o660, 0o644, 0o666, 0o700 | 0o004, 0o620):
        os.chmod(path, mode)
        with pytest.raises(ConfigError, match="must be 0600"):
            ensure_token(path)
    os.chmod(path, 0o600)
    link = tmp_path / "link.token"
    target = tmp_path / "shared.token"
    target.write_text("x" * 40)
    os.chmod(target, 0o644)
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="must be 0600"):  # the mode of what it points to
        ensure_token(link)
    short = tmp_path / "short.token"
    short.write_text("abc\n")
    os.chmod(short, 0o600)
    with pytest.raises(ConfigError, match="no usable token"):
        ensure_token(short)


async def test_a_node_will_not_serve_with_a_readable_token(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0, api=False) as (r,):
        token = r.spec.dir / "api.token"
        ensure_token(token)
        os.chmod(token, 0o644)
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConfigError, match="must be 0600"):
                await nursery.start(serve_api, r.node)


# -- request size ---------------------------------------------------------------------------


def raw_http(url: str, head: bytes, body_chunks: list[bytes] = ()) -> tuple[int, bytes]:
    """Send a request by hand; return the status and the response.

    The socket timeout only bounds a hang; no assertion depends on time.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(head)
        for chunk in body_chunks:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: it read no further
        data = b""
        while b"\r\n\r\n" not in data:
            part = s.recv(65536)
            if not part:
                break
            data += part
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data


def head(r: Running, path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {r.token}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def chunked(data: bytes, size: int = 16384) -> list[bytes]:
    out = [b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size])
           for i in range(0, len(data), size)]  # fmt: skip
    return [*out, b"0\r\n\r\n"]


async def test_request_size_limits(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        report = json.dumps({"service": "s", "operation": "o", "message": "m"}).encode()

        def probe() -> dict[str, int]:
            codes = {}
            # a declared length over the limit is refused before any byte of the body
            codes["length"], _ = raw_http(
                r.url, head(r, "/v1/failures", "Content-Length: 10000000\r\n")
            )
            codes["length_ops"], _ = raw_http(
                r.url, head(r, "/v1/ops", "Content-Length: 65537\r\n")
            )
            # a chunked body is cut when it passes the limit
            big = b"[" + b"1," * 40_000 + b"1]"
            codes["chunked"], _ = raw_http(
                r.url, head(r, "/v1/failures", "Transfer-Encoding: chunked\r\n"), chunked(big)
            )
            codes["chunked_ok"], _ = raw_http(
                r.url, head(r, "/v1/failures", "Transfer-Encoding: chunked\r\n"), chunked(report, 7)
            )
            at_limit = report.ljust(MAX_BODY, b" ")
            codes["at_limit"], _ = raw_http(
                r.url, head(r, "/v1/failures", f"Content-Length: {len(at_limit)}\r\n"), [at_limit]
            )
            over = at_limit + b" "
            codes["over_limit"], _ = raw_http(
                r.url, head(r, "/v1/failures", f"Content-Length: {len(over)}\r\n"), [over]
            )
            codes["bad_length"], _ = raw_http(
                r.url, head(r, "/v1/failures", "Content-Length: -1\r\n")
            )
            huge_header = "X-Junk: " + "a" * 200_000 + "\r\n"
            codes["huge_header"], _ = raw_http(r.url, head(r, "/v1/status", huge_header))
            codes["deep_json"], _ = raw_http(
                r.url, head(r, "/v1/failures", "Content-Length: 60000\r\n"), [b"[" * 60_000]
            )
            codes["after"] = request(r, "GET", "/v1/status", {"Authorization": f"Bearer {r.token}"})
            return codes

        codes = await trio.to_thread.run_sync(probe)
    assert codes["length"] == 413 and codes["length_ops"] == 413
    assert codes["chunked"] == 413 and codes["chunked_ok"] == 202
    assert codes["at_limit"] == 202 and codes["over_limit"] == 413
    assert codes["bad_length"] in (0, 400, 413)  # refused by the HTTP layer or by us
    assert codes["huge_header"] in (0, 400, 413, 431)  # never served, never a 500
    assert codes["deep_json"] == 422  # was a 500 (RecursionError in json.loads)
    assert codes["after"] == 200  # still serving


# -- nothing from the network is executed ----------------------------------------------------

FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile", "breakpoint"}
FORBIDDEN_MODULES = {"pickle", "marshal", "shelve", "importlib", "subprocess", "runpy", "code",
                     "pydoc", "ctypes", "dill", "yaml"}  # fmt: skip
# getattr with a name that is not a literal: allowed only where the names are local constants
DYNAMIC_GETATTR_OK = {("executor.py", "getattr(self, k)")}


def sources() -> list[Path]:
    return [*sorted((SRC / "api").glob("*.py")), SRC / "learn" / "executor.py"]


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.name)
def test_the_api_and_executor_resolve_nothing_dynamically(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                assert (name or "").split(".")[0] not in FORBIDDEN_MODULES, (path.name, name)
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        assert name not in FORBIDDEN_CALLS, (path.name, ast.unparse(node))
        assert ast.unparse(func) not in {"os.system", "os.popen", "os.execv", "os.spawnv"}
        if name in ("getattr", "setattr", "delattr") and len(node.args) >= 2:
            literal = isinstance(node.args[1], ast.Constant)
            ok = literal or (path.name, ast.unparse(node)) in DYNAMIC_GETATTR_OK
            assert ok, (path.name, ast.unparse(node))


def network_fix(steps: list[dict[str, Any]]) -> Fix:
    """A fix as it reaches an agent: a recipe from a peer's op, through the API's JSON."""
    recipe = {"scope": "search", "steps": steps, "budget_ms": 1000}
    check_body(
        "fix.propose",
        {"pattern": b"\x01" * 32, "recipe": recipe, "risk": "high", "rationale": "",
         "origin": "synth"},
    )  # fmt: skip
    doc = json.loads(json.dumps({"fix": "02" * 32, "pattern": "01" * 32, "recipe": recipe}))
    return Fix.from_json(doc)


def backup(*_: object) -> str:  # a module-level function with the target's name: never used
    raise AssertionError("a fallback name was resolved outside the local registry")


@pytest.mark.parametrize(
    "target", ["backup", "os.system", "builtins.eval", "eval", "subprocess.run", "print"]
)
def test_a_recipe_naming_an_unregistered_target_is_skipped(target: str) -> None:
    registry = LocalRegistry()
    registry.add_fallback("cache", lambda: "cached")  # registered, but not named by the fix
    client = Client(url="http://127.0.0.1:9", token="t" * 32, registry=registry, stream=False)
    calls = []

    def call() -> str:
        calls.append(1)
        raise ConnectionError("down")

    fix = network_fix(
        [{"type": "fallback", "target": target}, {"type": "escalate", "to": target},
         {"type": "set_param", "name": target.replace("_", "x").strip("x") or "p", "value": 1}]
    )  # fmt: skip
    try:
        ex = client.apply_fix(fix, call)
    finally:
        client.close()
    assert ex.outcome == "failed" and ex.fallback is None and ex.escalated is None
    assert calls == [1] and isinstance(ex.error, ConnectionError)
    assert {s.step for s in ex.skipped} == {"fallback", "escalate", "set_param"}
    assert f"no local fallback named {target!r}" in [s.reason for s in ex.skipped]
    direct = Executor(LocalRegistry()).run_sync(fix.recipe, call, idempotent=True)
    assert direct.outcome == "failed" and not direct.applied
