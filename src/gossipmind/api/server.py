"""The local HTTP API of a node: 127.0.0.1 only, bearer token, JSON, SSE.

Bad input gets a 4xx with a precise message; the handlers never let an
exception through as a 500 (an unexpected one is logged as a bug and answered
with a generic 500 — tests assert it never happens on malformed input).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gossipmind.api import metrics
from gossipmind.api.openapi import OPENAPI
from gossipmind.api.process import own_start_time
from gossipmind.api.token import RECHECK_S as TOKEN_RECHECK_S
from gossipmind.api.token import TokenFile
from gossipmind.api.wire import (
    MAX_BODY,
    failure_from_json,
    fix_summary,
    hex_id,
    jsonable,
    outcome_from_json,
    report_id,
)
from gossipmind.core import encoding
from gossipmind.core.errors import (
    ConfigError,
    EncodingError,
    GossipmindError,
    InvalidOp,
    NotFound,
    SchemaError,
    StoreError,
    Unavailable,
)
from gossipmind.core.ops import KINDS, MAX_OP_SIZE
from gossipmind.core.schema import check_body
from gossipmind.core.snapshot import FIX_STATUSES, pattern_row
from gossipmind.learn.patterns import Failure
from gossipmind.learn.synth import is_non_idempotent
from gossipmind.node.groups import unwrapped
from gossipmind.node.listeners import TooManyListeners
from gossipmind.node.node import Node
from gossipmind.store.datadir import write_atomic

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger("gossipmind.api")


class _NoBanner(logging.Filter):
    """Drop hypercorn's "Running on http://… (CTRL + C to quit)" (its only info line):
    the node logs "API listening on …" itself, and under systemd nobody can press
    Ctrl-C. Its warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on ")


_HTTP_LOG = logging.getLogger("gossipmind.api.http")  # hypercorn's error log
_HTTP_LOG.addFilter(_NoBanner())
KEEPALIVE_S = 15.0  # s: an idle event stream gets a comment line this often
Handler = Callable[[Request], Awaitable[Response]]


class PayloadTooLarge(GossipmindError):
    """A request body over the API's size limit."""


class Api:
    def __init__(self, node: Node, tokens: TokenFile) -> None:
        self.node = node
        self.tokens = tokens
        self.requests = 0
        routes = [
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/status", self.guard(self.status), methods=["GET"]),
            Route("/v1/metrics", self.guard(self.metrics), methods=["GET"]),
            Route("/v1/failures", self.guard(self.report_failure, agent=True), methods=["POST"]),
            Route("/v1/failures/count", self.guard(self.count, agent=True), methods=["GET"]),
            Route("/v1/fix", self.guard(self.get_fix, agent=True), methods=["GET"]),
            Route("/v1/outcomes", self.guard(self.outcome, agent=True), methods=["POST"]),
            Route("/v1/patterns", self.guard(self.patterns), methods=["GET"]),
            Route("/v1/fixes", self.guard(self.fixes), methods=["GET"]),
            Route("/v1/events", self.guard(self.events), methods=["GET"]),
            Route("/v1/ops", self.guard(self.write_op), methods=["POST"]),
        ]
        handlers = {404: _http_error, 405: _http_error}  # unknown route, wrong method
        self.app = Starlette(routes=routes, exception_handlers=handlers)

    # -- plumbing -------------------------------------------------------------------

    def refused(self, given: bytes) -> Response | None:
        """The answer to a request presenting ``given`` as its token, or None to go
        on. A token other than the one held makes the file be looked at again at
        once (it may just have been rotated or mended). Compared in constant time."""
        held = self.tokens.current()
        if held is not None and hmac.compare_digest(given, held.encode()):
            return None
        version = self.tokens.version
        fresh = self.tokens.current(force=True)
        if fresh is None:
            return _unusable_token()
        changed = held is None or self.tokens.version != version  # mended, or rotated
        if changed and hmac.compare_digest(given, fresh.encode()):
            return None  # (unchanged: no second look)
        return error(401, "wrong bearer token")

    def guard(self, handler: Handler, *, agent: bool = False) -> Handler:
        async def wrapped(request: Request) -> Response:
            self.requests += 1
            auth = request.headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not given:
                if self.tokens.current() is None:  # (what the client read may be that file)
                    return _unusable_token()
                return error(401, "missing bearer token (see api.token in the node's data dir)")
            if (refused := self.refused(given.strip().encode())) is not None:
                return refused
            if agent:
                self.node.touch()
            try:
                return await handler(request)
            except SchemaError as exc:
                return error(422, str(exc), field=exc.path)
            except NotFound as exc:
                return error(404, str(exc))
            except Unavailable as exc:  # nothing was taken: the SDK sends it again
                return error(503, str(exc))
            except InvalidOp as exc:
                return error(403 if exc.code in _FORBIDDEN else 409, str(exc), code=exc.code)
            except PayloadTooLarge as exc:
                return error(413, str(exc))
            except GossipmindError as exc:
                return error(400, str(exc))
            except Exception:  # a bug: log it with the traceback, answer without details
                log.exception("unhandled error in %s %s", request.method, request.url.path)
                return error(500, "internal error (logged by the node)")

        return wrapped

    async def json_body(self, request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not _decimal(length, 12) or int(length) > MAX_BODY):
            raise PayloadTooLarge(f"request body larger than {MAX_BODY} bytes")
        body = b""
        async with aclosing(request.stream()) as chunks:  # closed when we stop early
            async for chunk in chunks:
                body += chunk
                if len(body) > MAX_BODY:
                    raise PayloadTooLarge(f"request body larger than {MAX_BODY} bytes")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SchemaError("", f"the body is not valid JSON: {exc}") from None
        except RecursionError:  # e.g. 60 000 nested brackets fit in the size limit
            raise SchemaError("", "the body is nested too deeply") from None

    def summary(self, row: dict[str, Any]) -> dict[str, Any]:
        """A fix as the SDK caches it, with its pattern's service and operation, and
        whether the policy lists its scope as non-idempotent (``non_idempotent``: the
        SDK then never retries a call whose failed attempt had no key, even one the
        agent did not mark ``idempotent=False``)."""
        r = self.node.store.replica
        p = r.fold.patterns.get(row["pattern"])
        where = {"service": p.service, "operation": p.operation} if p else {}
        scope = row["recipe"].get("scope") if isinstance(row["recipe"], dict) else None
        unsafe = isinstance(scope, str) and is_non_idempotent(scope, r.policy)
        return fix_summary(row) | where | {"non_idempotent": unsafe}

    # -- handlers -------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def status(self, request: Request) -> Response:
        return JSONResponse(jsonable(metrics.full_status(self.node)))

    async def metrics(self, request: Request) -> Response:
        """The status in the Prometheus text format (:mod:`gossipmind.api.metrics`)."""
        text = metrics.render(metrics.full_status(self.node, root=False))
        return Response(text, media_type=metrics.CONTENT_TYPE)

    async def report_failure(self, request: Request) -> Response:
        rid, doc = report_id(await self.json_body(request))  # (a re-send: counted once)
        reduced = await self.node.reporter.take_failure(Failure(**failure_from_json(doc)), rid)
        best = self.node.fixes.best(reduced.pattern)
        return JSONResponse(
            {
                "pattern": reduced.pattern.hex(),
                "error_class": reduced.error_class,
                "template": reduced.template,
                "fix": self.summary(best) if best else None,
            },
            status_code=202,
        )

    async def count(self, request: Request) -> Response:
        pattern = hex_id(request.query_params.get("pattern"), "pattern")
        r = self.node.store.replica
        p = r.fold.patterns.get(pattern)
        row = pattern_row(p, r.policy.synthesis_threshold) if p else None
        return JSONResponse(
            {
                "pattern": pattern.hex(),
                "count": row["count"] if row else 0,
                "reporters": row["reporters"] if row else 0,
                "local_unsent": self.node.reporter.local_counts.get(pattern, 0),
            }
        )

    async def get_fix(self, request: Request) -> Response:
        pattern = hex_id(request.query_params.get("pattern"), "pattern")
        canary = request.query_params.get("canary", "0")
        if canary not in ("0", "1"):
            raise SchemaError("canary", "must be 0 or 1")
        best = self.node.fixes.best(pattern, canary=canary == "1")
        if best is None:
            raise NotFound(f"no accepted fix for pattern {pattern.hex()[:12]}")
        return JSONResponse(self.summary(best))

    async def outcome(self, request: Request) -> Response:
        rid, doc = report_id(await self.json_body(request))  # (a re-send: counted once)
        fix, attempts, successes = outcome_from_json(doc)
        if self.node.fixes.row(fix) is None:
            raise NotFound(f"no fix {fix.hex()[:12]} here")
        await self.node.reporter.take_outcome(fix, attempts, successes, rid)
        return JSONResponse({"queued": True}, status_code=202)

    async def write_op(self, request: Request) -> Response:
        """Sign and publish an op with the node's identity (what the CLI uses while
        the node holds the store). Body: ``{"kind": str, "body": hex(canonical msgpack)}``."""
        doc = await self.json_body(request)
        if not isinstance(doc, dict) or set(doc) != {"kind", "body"}:
            raise SchemaError("", "expected exactly the fields kind and body")
        kind, raw = doc["kind"], doc["body"]
        if kind not in KINDS or kind == "net.genesis":
            raise SchemaError("kind", f"cannot write ops of kind {kind!r}")
        if not isinstance(raw, str):
            raise SchemaError("body", "must be hex of a canonical msgpack map")
        try:
            body = encoding.decode(bytes.fromhex(raw), max_size=MAX_OP_SIZE)
        except (ValueError, EncodingError) as exc:
            raise SchemaError("body", f"not canonical msgpack hex: {exc}") from None
        if not isinstance(body, dict):
            raise SchemaError("body", "must encode a map")
        try:
            check_body(kind, body)
        except SchemaError as exc:
            raise SchemaError(f"body.{exc.path}", exc.message) from None
        op = await self.node.write(kind, body)
        return JSONResponse({"op": op.id.hex()}, status_code=201)

    async def patterns(self, request: Request) -> Response:
        r = self.node.store.replica
        rows = [pattern_row(p, r.policy.synthesis_threshold) for p in r.fold.patterns.values()]
        rows.sort(key=lambda x: (-x["reporters"], -x["count"]))
        return JSONResponse(jsonable(rows[: _limit(request)]))

    async def fixes(self, request: Request) -> Response:
        status = request.query_params.get("status")
        if status is not None and status not in FIX_STATUSES:
            raise SchemaError("status", "must be one of " + ", ".join(FIX_STATUSES))
        pat = request.query_params.get("pattern")
        pattern = hex_id(pat, "pattern") if pat is not None else None
        rows = self.node.fixes.rows(pattern=pattern, status=status)
        return JSONResponse(jsonable(rows[: _limit(request)]))

    async def events(self, request: Request) -> Response:
        """Server-sent events: every accepted fix now, then each status transition.

        The listener is closed when the stream ends, however it ends (the node
        prunes closed ones); 503 when the node serves its most listeners. A HEAD
        (Starlette answers it on every GET route) gets the headers and no
        listener: its stream would never end."""
        if request.method == "HEAD":
            return Response(media_type="text/event-stream")
        try:
            transitions = self.node.fix_events()
        except TooManyListeners as exc:
            return error(503, str(exc))
        try:
            snapshot = self.node.fixes.rows(status="accepted")
        except BaseException:
            transitions.close()
            raise

        version = self.tokens.version  # the stream ends once its token is rotated

        def revoked() -> bool:
            return self.tokens.current() is None or self.tokens.version != version

        async def stream() -> AsyncIterator[str]:
            with transitions:  # closed on disconnect (the generator is closed) or error
                for row in snapshot:
                    yield sse("fix", self.summary(row))
                yield sse("ready", {"accepted": len(snapshot)})
                quiet = 0.0
                while not revoked():
                    with trio.move_on_after(TOKEN_RECHECK_S) as waited:
                        t = await transitions.receive()
                    if waited.cancelled_caught:
                        quiet += TOKEN_RECHECK_S
                        if quiet >= KEEPALIVE_S:
                            quiet = 0.0
                            yield ": keep-alive\n\n"
                        continue
                    if revoked():  # (rotated while it waited: not for this stream)
                        break
                    yield sse("fix", self.summary(t.row) | {"previous": t.old})

        return StreamingResponse(stream(), media_type="text/event-stream")


def _unusable_token() -> JSONResponse:
    return error(503, "the node's API token file is unusable (see the node's log)")


_FORBIDDEN = frozenset(
    {"unauthorized", "not_member", "not_verifier", "out_of_scope", "revoked", "equivocating"}
)


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "1000")
    if not _decimal(raw, 6) or not 1 <= int(raw) <= 100_000:
        raise SchemaError("limit", "must be an integer between 1 and 100000")
    return int(raw)


def _decimal(text: str, max_len: int) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts '²' and other digits ``int`` refuses)."""
    return 0 < len(text) <= max_len and text.isascii() and text.isdigit()


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, method not allowed) as JSON, like ours."""
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTP codes
        raise exc
    message = f"{exc.detail}: {request.method} {request.url.path}"[:300]
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


API_FILE = "api.json"
STOP_GRACE = 1.0  # s a stopping API waits for responses in flight before dropping them


def api_doc(url: str) -> dict[str, Any]:
    """What ``api.json`` holds: the URL, this process's pid and (where there is procfs)
    its start time, so a process that reuses the pid after a SIGKILL is not taken
    for this one."""
    doc: dict[str, Any] = {"url": url, "pid": os.getpid()}
    started = own_start_time()
    if started is not None:
        doc["starttime"] = started
    return doc


def write_api_file(data_dir: Path, url: str) -> None:
    """Write ``api.json`` (:func:`api_doc`) atomically, mode 0600."""
    write_atomic(data_dir / API_FILE, json.dumps(api_doc(url)) + "\n", 0o600)


def remove_api_file(data_dir: Path, url: str | None = None) -> None:
    """Remove ``api.json``: any (a stale one) if ``url`` is None, else only ours."""
    path = data_dir / API_FILE
    if url is not None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if doc != api_doc(url):
            return  # another API's (this dir is served by someone else now)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)


def drop_connections(port: int) -> int:
    """Shut down this process's accepted connections on 127.0.0.1:``port``; how many.

    Hypercorn sends a response in a shielded cancel scope: a client that stops
    reading holds a stopping server for as long as it likes. Shutting the socket
    down wakes that send (it fails), so the server can finish.
    """
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    try:
        fds = [int(fd) for fd in os.listdir(fd_dir)]
    except OSError:
        return 0
    dropped = 0
    for fd in fds:
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.type != socket.SOCK_STREAM or sock.family != socket.AF_INET:
                continue
            if sock.getsockname() != ("127.0.0.1", port):
                continue
            sock.getpeername()  # raises for the listening socket
            sock.shutdown(socket.SHUT_RDWR)
            dropped += 1
        except OSError:
            continue
        finally:
            sock.detach()  # the fd stays the server's: it closes it
    return dropped


async def serve_api(
    node: Node, port: int = 0, *, task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the API on 127.0.0.1:``port``; ``task_status.started(url)``. Writes
    ``api.json`` (the URL and pid, 0600) and ``api.token`` (0600) into the node's
    data dir, and removes ``api.json`` when it stops, however it stops.

    Stopping (cancelled) takes at most about :data:`STOP_GRACE` seconds per
    round: connections still open then (e.g. a client that does not read its
    responses) are shut down."""
    if type(port) is not int or not 0 <= port <= 65535:  # nothing but a port reaches the bind
        raise ConfigError(f"the API port must be an integer 0-65535, not {port!r}")
    data_dir = node.config.data_dir
    remove_api_file(data_dir)  # a previous process's: it names a server that is gone
    api = Api(node, TokenFile(data_dir / "api.token"))
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = _HTTP_LOG
    config.graceful_timeout = STOP_GRACE
    done = trio.Event()

    async def run_server(*, task_status: TaskStatus[list[str]]) -> None:
        try:
            app: Any = api.app  # Starlette is an ASGI app; hypercorn's types say otherwise
            await serve(app, config, task_status=task_status)
        finally:
            done.set()

    url: str | None = None
    try:
        async with unwrapped(), trio.open_nursery() as nursery:  # (its error, not a group)
            binds: list[str] = await nursery.start(run_server)
            url = str(binds[0])
            bound = int(url.rsplit(":", 1)[1])
            try:
                try:
                    write_api_file(data_dir, url)
                except OSError as exc:  # (a directory in its place, a full disk...)
                    raise StoreError(f"cannot write {data_dir / API_FILE}: {exc}") from exc
                log.info("API listening on %s", url)
                task_status.started(url)
                await done.wait()  # hypercorn does not stop by itself: only on error
            finally:
                remove_api_file(data_dir, url)  # first: no client may find us while stopping
                nursery.cancel_scope.cancel()  # the server stops only when cancelled: an
                with trio.CancelScope(shield=True):  # error here used to hang waiting for it
                    await _stop_server(done, bound)
    finally:
        if url is not None:
            remove_api_file(data_dir, url)


async def _stop_server(done: trio.Event, port: int) -> None:
    """Wait for the (cancelled) server to finish; drop connections that hold it up."""
    while not done.is_set():
        with trio.move_on_after(STOP_GRACE):
            await done.wait()
        if not done.is_set() and (n := drop_connections(port)):
            log.warning("API stopping: shut down %d connection(s) that held it up", n)
