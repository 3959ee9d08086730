"""The agent-side SDK: ``gossipmind.Client``, in the agent's process (never importing
the node or libp2p). It talks to the local node over HTTP on 127.0.0.1, keeps a cache
of accepted fixes fresh through the node's event stream (``get_fix`` costs
microseconds), and fails open: with the node down, the agent's calls still work and
reports wait in a bounded queue. The fix cache and its lookups are in its base class
:class:`~gossipmind.api.fixcache.FixCache`."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from gossipmind.api.aliases import Aliases
from gossipmind.api.fixcache import FixCache
from gossipmind.api.lifecycle import EXIT_FLUSH_S, dropped, track, untrack, weak_send
from gossipmind.api.outbox import Outbox, Sender, check_outcome, report_id
from gossipmind.api.records import ClientStats, Fix, describe
from gossipmind.api.transport import Http, MaybeSent, NodeNotFound, discover, env_data_dir
from gossipmind.api.wire import sendable_failure
from gossipmind.core.errors import GossipmindError, NetworkError
from gossipmind.learn.executor import Execution, Executor, LocalRegistry
from gossipmind.learn.patterns import Failure, Reduced, reduce
from gossipmind.learn.taxonomy import Rule, classify

log = logging.getLogger("gossipmind.sdk")
T = TypeVar("T")
__all__ = ["Client", "ClientStats", "Fix", "Resilient", "describe"]


class Client(FixCache):
    """Connects an agent to its local gossipmind node.

    ``Client()`` finds the node through ``$GOSSIPMIND_HOME`` (or ``data_dir``);
    ``url``/``token`` may be given directly. Nothing here raises because the node
    is down or not started yet: reports queue (at most ``queue_max``) and fixes
    come from the cache.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 0.5,
        queue_max: int = 1000,
        registry: LocalRegistry | None = None,
        rules: tuple[Rule, ...] = (),
        stream: bool = True,
        canary: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir else env_data_dir()
        self._url, self._token = url, token
        self.timeout = timeout
        self.rules = rules
        self.canary = canary  # also try provisional fixes (so senior verifiers get evidence)
        self.registry = registry or LocalRegistry()
        self.executor = Executor(self.registry, classifier=self.classify)
        self.stats = ClientStats()
        self.outbox = Outbox(queue_max, self.stats)
        self.aliases = Aliases()  # the node's pattern where it differs from ours
        self._sender = Sender(self.outbox, weak_send(self))
        # a client dropped unclosed: its thread ends (at exit, _at_exit sends the queue instead)
        self._dropped = weakref.finalize(self, dropped, self.outbox, self._sender)
        self._dropped.atexit = False
        self._live: dict[str, Http] = {}  # "http": the node's, once known (set, taken atomically)
        self._closed = False
        self._config_checked = -1.0  # (monotonic) when _check_config last read the data dir
        self._cache: dict[bytes, dict[bytes, Fix]] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._streams = stream  # the cache follows the node's event stream
        self._starting = threading.Lock()
        self._swap = threading.Lock()  # _drop_http's look-then-take of the connection
        self._thread: threading.Thread | None = None
        track(self)  # sent at exit, reset after a fork
        self._follow_events()

    # -- lifecycle -------------------------------------------------------------------

    def _follow_events(self) -> None:
        """Start the thread that keeps the cache (if the client streams and has none)."""
        with self._starting:
            if self._thread is not None or not self._streams or self._closed:
                return
            thread = threading.Thread(target=self._follow, name="gossipmind-events", daemon=True)
            thread.start()
            self._thread = thread

    def _resume(self) -> None:
        """A forked child's first use of the cache: follow the node again. Without a
        thread (none can be started), the cache is never ready: fix_for asks the node."""
        if self._thread is None and self._streams:
            try:
                self._follow_events()
            except RuntimeError as exc:  # "can't start new thread"
                log.debug("gossipmind: no event thread: %r", exc)

    def _after_fork(self) -> None:
        """In a forked child no thread follows the node, so the parent's cache would stay
        as at the fork: empty it; the next lookup starts an event thread (ready: serves)."""
        self._starting = threading.Lock()
        self._swap = threading.Lock()
        self._ready, self._stop = threading.Event(), threading.Event()
        self._cache, self._live, self._thread = {}, {}, None
        self.stats.stream_connected = False

    def _at_exit(self, deadline: float) -> None:
        """At interpreter exit, a client never closed: send what is queued until
        ``deadline`` (monotonic). Its thread would be killed with the queue."""
        if self._closed:
            return
        self._stop.set()
        self._sender.close()  # it stops after the round it is sending, if any
        if not self.outbox.pending():
            return
        self.timeout = min(self.timeout, EXIT_FLUSH_S)  # for the connections made from now on
        self._drop_http()
        self.outbox.drain(self._post, wait=True, deadline=deadline)
        if left := len(self.outbox.items):
            log.warning(
                "gossipmind: %d queued report(s) lost at exit: the node did not take them "
                "within %g s (down or slow); close() the client to send them earlier",
                left,
                EXIT_FLUSH_S,
            )

    def close(self) -> None:
        """Stop following events, send what is queued (if possible), close connections."""
        untrack(self)
        self._stop.set()
        self._sender.close()
        self.flush()
        http = self._http
        if http is not None:
            http.close()  # also ends the event stream the thread is reading
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sender.close(timeout=self.timeout + 1)
        self._closed = True
        self._drop_http()
        if self._dropped.detach() and (left := len(self.outbox.items)):  # (said once, here)
            log.warning("gossipmind: %d queued report(s) lost at close(): the node did not "
                        "take them (down, or it did not answer)", left)  # fmt: skip

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Wait until the fix cache holds the node's accepted fixes (True) or give up."""
        self._resume()
        return self._ready.wait(timeout)

    @property
    def _http(self) -> Http | None:
        return self._live.get("http")

    def _api(self) -> Http:
        if self._closed:
            raise NetworkError("the client is closed")
        http = self._live.get("http")
        if http is None:
            if self._url and self._token:
                url, token = self._url, self._token
            else:
                try:
                    url, token = discover(self.data_dir)
                except NodeNotFound as exc:  # not started yet: unreachable, like a dead node
                    raise NetworkError(f"node API unreachable: {exc}") from exc
            new = Http(url, token, self.timeout)
            http = self._live.setdefault("http", new)  # another thread's, if it was first
            if http is not new:
                new.close()
        return http

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request. A 401 with the token read from the data dir is asked again
        once with the file read anew: the token may have been rotated (a refused
        request was not processed, so asking again is safe)."""
        for attempt in range(2):
            http = None
            try:
                http = self._api()
                status, doc = http.request(method, path, body)
            except GossipmindError as exc:
                self._drop_http(http)  # rediscover next time (the node may have restarted)
                if not isinstance(exc, NetworkError):  # e.g. a corrupt api.json: say so
                    log.warning("gossipmind: cannot reach the node: %s", exc)
                    self._note_error(f"{path}: {exc}")
                raise
            if status != 401 or attempt or (self._url and self._token):  # given: not ours
                return status, doc
            self._drop_http(http)  # (only this one: another thread's may be newer)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _note_error(self, text: str) -> None:
        self.stats.errors.append(text)
        del self.stats.errors[:-20]

    def _check_config(self) -> None:
        """Read the node's settings now if not yet (files, no network; at most once a
        second), so a data dir that cannot be used is told at the call, not only
        once the outbox thread tries to send."""
        if self._http is not None or self._closed:
            return
        now = time.monotonic()
        if now - self._config_checked < 1.0:
            return
        self._config_checked = now
        try:
            self._api()
        except NetworkError:
            pass  # not started yet: the queue waits for it
        except GossipmindError as exc:
            log.warning("gossipmind: cannot reach the node: %s", exc)
            self._note_error(f"config: {exc}")

    def _drop_http(self, only: Http | None = None) -> None:
        """Close the shared connection (``only`` that one, not a newer one): find the node anew."""
        with self._swap:  # (a setdefault cannot replace it meanwhile: only a drop can)
            http = self._live.get("http")
            if http is None or (only is not None and http is not only):
                return
            del self._live["http"]
        http.close()

    # -- failures and fixes ---------------------------------------------------------

    def classify(self, exc: BaseException) -> str:
        name, message, status, _ = describe(exc)
        return classify(name, status, message, self.rules)

    def _failure(
        self, exc: BaseException | None, service: str, operation: str, **kw: Any
    ) -> Failure:
        """The failure as the node will get it: within the API's limits, its context
        as JSON of the same shape (:func:`~gossipmind.api.wire.sendable_failure`).
        The pattern computed locally is then the node's."""
        name, message, status, retry_after = (
            describe(exc) if exc is not None else ("Exception", "", None, None)
        )
        return Failure(
            **sendable_failure(
                service=service,
                operation=operation,
                exc_type=kw.get("exc_type") or name,
                message=str(kw["message"]) if kw.get("message") is not None else message,
                status=kw.get("status") if kw.get("status") is not None else status,
                context=kw.get("context"),
                latency_ms=kw.get("latency_ms"),
                retry_after_ms=kw.get("retry_after_ms")
                if kw.get("retry_after_ms") is not None
                else retry_after,
            )
        )

    def pattern_of(
        self, exc: BaseException | None = None, *, service: str, operation: str, **kw: Any
    ) -> Reduced:
        """The pattern a failure reduces to (computed locally, nothing is sent)."""
        return reduce(self._failure(exc, service, operation, **kw), self.rules)

    def report_failure(
        self, exc: BaseException | None = None, *, service: str, operation: str, **kw: Any
    ) -> Reduced:
        """Report a failure to the node (queued if it is down). Returns its pattern.

        Keyword arguments override what is read from ``exc``: ``message``,
        ``exc_type``, ``status``, ``context`` (only its shape reaches the node:
        see :func:`~gossipmind.api.wire.sendable_failure`), ``latency_ms``,
        ``retry_after_ms``.
        """
        failure = self._failure(exc, service, operation, **kw)
        reduced = reduce(failure, self.rules)
        self._send("/v1/failures", _body(failure))
        return reduced

    def _queue_failure(
        self, exc: BaseException, *, service: str, operation: str, latency_ms: int
    ) -> Reduced:
        """:meth:`report_failure` for the decorator: queued, never waiting for the node."""
        failure = self._failure(exc, service, operation, latency_ms=latency_ms)
        reduced = reduce(failure, self.rules)
        self._enqueue("/v1/failures", _body(failure))
        return reduced

    def get_fix(
        self, exc: BaseException | None = None, *, service: str, operation: str, **kw: Any
    ) -> Fix | None:
        """The best accepted fix for this failure's pattern, from the local cache."""
        pattern = self.pattern_of(exc, service=service, operation=operation, **kw).pattern
        return self.fix_for(pattern)

    def apply_fix(
        self,
        fix: Fix,
        fn: Callable[..., T],
        *args: Any,
        idempotent: bool = True,
        prior_error: BaseException | None = None,
        **kwargs: Any,
    ) -> Execution[T]:
        """Run ``fn`` under the fix's recipe (sync); see :class:`Execution`.

        A fix whose scope the policy lists as non-idempotent (``fix.non_idempotent``)
        runs the call as non-idempotent whatever ``idempotent`` says: after a
        ``prior_error`` (an attempt without a key) it is never retried."""
        execution = self.executor.run_sync(
            fix.recipe,
            fn,
            *args,
            idempotent=idempotent and not fix.non_idempotent,
            prior_error=prior_error,
            breaker_key=fix.pattern,
            **kwargs,
        )
        self.stats.fixes_applied += 1  # not if it raised: the recipe was refused, no attempt
        return execution

    async def apply_fix_async(
        self,
        fix: Fix,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        idempotent: bool = True,
        prior_error: BaseException | None = None,
        **kwargs: Any,
    ) -> Execution[T]:
        """Run a coroutine function under the fix's recipe (asyncio or trio); see
        :meth:`apply_fix`."""
        execution = await self.executor.run_async(
            fix.recipe,
            fn,
            *args,
            idempotent=idempotent and not fix.non_idempotent,
            prior_error=prior_error,
            breaker_key=fix.pattern,
            **kwargs,
        )
        self.stats.fixes_applied += 1  # not if it raised: the recipe was refused, no attempt
        return execution

    def count_failures(self, pattern: bytes | Reduced) -> dict[str, Any]:
        """Fleet-wide count and reporters of a pattern — its id, or what
        :meth:`report_failure` returned (NetworkError if the node is down)."""
        pid = pattern.pattern if isinstance(pattern, Reduced) else pattern
        status, doc = self._call("GET", f"/v1/failures/count?pattern={pid.hex()}")
        if status != 200:
            raise NetworkError(f"count failed: HTTP {status}: {doc}")
        return dict(doc)

    def report_outcome(
        self,
        fix: Fix | bytes,
        success: bool | None = None,
        *,
        attempts: int = 1,
        successes: int | None = None,
    ) -> None:
        """Report how applying a fix went: queued, sent by the SDK's outbox thread
        (outcomes of one fix waiting there add up into one request).

        ``ValueError`` (nothing queued) for a fix id that is not 32 bytes or
        counts the node would refuse."""
        fid = fix.id if isinstance(fix, Fix) else fix
        ok = successes if successes is not None else int(bool(success)) * attempts
        self.outbox.put_outcome(check_outcome(fid, attempts, ok), attempts, ok)
        self.stats.reports_queued += 1
        self._check_config()
        self._sender.wake()

    def resilient(
        self,
        *,
        service: str,
        operation: str,
        idempotent: bool = True,
        on_failure: str = "raise",
        default: Any = None,
    ) -> Resilient:
        """Decorator / context manager doing the whole flow; see :class:`Resilient`."""
        if on_failure not in ("raise", "degrade"):
            raise ValueError("on_failure must be 'raise' or 'degrade'")
        return Resilient(self, service, operation, idempotent, on_failure, default)

    # -- sending ---------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> bool:
        """POST a report: True if the node took it, False if it refused it (4xx,
        noted: sending it again would not help). NetworkError: it did not get it;
        :class:`MaybeSent` (noted; a 5xx but 503, which processed nothing): it may have it."""
        try:
            status, doc = self._call("POST", path, body)
        except MaybeSent as exc:
            self._note_error(f"{path}: {exc}")
            raise
        if status >= 500:
            raise (NetworkError if status == 503 else MaybeSent)(f"node error {status}: {doc}")
        if status == 401:  # not processed: kept to send again (the token may be given anew)
            self._note_error(f"{path}: 401 {doc}")
            raise NetworkError(f"the node refused the token (401): {doc}")
        if status >= 400:
            self.stats.reports_refused += 1
            log.warning("gossipmind: the node refused a report: %s %s", status, doc)
            self._note_error(f"{path}: {status} {doc}")
            return False
        self.aliases.learn(path, body, doc, self.rules)
        return True

    def _send(self, path: str, body: dict[str, Any]) -> None:
        """Send one report now; queue it if the node did not get it."""
        try:
            if self._post(path, body):
                self.stats.reports_sent += 1
                if self.outbox.pending():
                    self._sender.wake(now=True)  # the node is up: send the queue too
        except MaybeSent:  # the node may have it: the outbox sends it again, same id
            self._enqueue(path, body, tried=True, unanswered=True)
        except GossipmindError:  # node down, not started, or misconfigured (noted): queue it
            self._enqueue(path, body, tried=True)

    def _enqueue(self, path: str, body: dict[str, Any], *, tried: bool = False, **kw: bool) -> None:
        self.outbox.put(path, body, **kw)  # (unanswered=True: sent once, no answer came)
        self.stats.reports_queued += 1
        if not tried:  # (a send that failed told what was wrong)
            self._check_config()
        self._sender.wake()

    def flush(self) -> int:
        """Send queued reports now (if the node is up); return how many went.

        If another thread is sending them, waits for it, then sends what is left
        (a re-send under way that would wait longer than ``timeout`` is cut short)."""
        if (http := self._http) is not None:
            http.interrupt_patient()
        return self.outbox.drain(self._post, wait=True)


def _body(failure: Failure) -> dict[str, Any]:
    """A failure report, with its id (the node counts it once, however often it is sent)."""
    return {k: v for k, v in vars(failure).items() if v is not None} | {"id": report_id()}


from gossipmind.api.resilient import Resilient  # noqa: E402 - re-export
