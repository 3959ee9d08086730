"""A seeded fault simulator in simulated time (DESIGN §6 step 4, "daydreaming").

Pure: no wall clock, no I/O, no global randomness. Every decision comes from a
``random.Random(seed)`` drawn with integer methods only (``randrange``,
``getrandbits``) and every quantity is an integer number of milliseconds or
basis points, so two processes — on any platform, with any hash seed —
produce the same sequence of outcomes for the same seed.

The fault model (:class:`FaultModel`):

- ``failure_bp``: per error class, the probability (basis points) that one
  attempt fails with that class; the classes are drawn from one roll, so the
  total must not exceed 10 000.
- latency of an answered attempt: a log-logistic distribution given by its
  median and 95th percentile (the quantile function needs only ``ln`` and
  ``exp``, computed with :mod:`decimal`, which is correctly rounded and
  therefore bit-identical everywhere — unlike ``random.lognormvariate``,
  whose libm calls may differ in the last bit between platforms).
- ``timeout`` failures hang for ``hang_ms`` before the caller sees the error
  (how long the agents waited before giving up).
- ``rate_limited`` failures carry ``retry_after_ms``: the service then stays
  limited for that long (every call starting in the window is refused again),
  which is what makes respecting Retry-After pay off.
- outage bursts: every ``burst_period_ms``, for ``burst_len_ms``, every call
  fails with ``burst_class``; the phase is drawn from the seed.

:class:`SimClock` (sync) and :class:`AsyncSimClock` implement the executor's
clock protocols in simulated time: sleeping advances the clock, and
``call_with_timeout`` cuts a call that ran past its limit at the limit.
"""

from __future__ import annotations

import bisect
import functools
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any, TypeVar

from gossipmind.core.errors import GossipmindError, SchemaError
from gossipmind.core.recipe import ERROR_CLASSES
from gossipmind.learn.breaker import AttemptTimeout

T = TypeVar("T")
MAX_LATENCY_MS = 600_000
LATENCY_BUCKETS = 1024
_CTX = Context(prec=34)


# --------------------------------------------------------------------------- clocks


class SimClock:
    """Simulated time in integer-valued milliseconds; implements the executor's ``Clock``."""

    def __init__(self, start_ms: int = 0) -> None:
        self.t: float = start_ms
        self.slept_ms = 0

    def now_ms(self) -> float:
        return self.t

    def advance(self, ms: float) -> None:
        if ms < 0:
            raise ValueError("time does not go backwards")
        self.t += ms

    def sleep_ms(self, ms: int) -> None:
        self.slept_ms += ms
        self.advance(ms)

    def call_with_timeout(self, fn: Callable[[], T], timeout_ms: float) -> T:
        t0 = self.t
        try:
            result = fn()
        except Exception:
            if self.t - t0 > timeout_ms:
                self._cut(t0, timeout_ms)
            raise
        if self.t - t0 > timeout_ms:
            self._cut(t0, timeout_ms)
        return result

    def _cut(self, t0: float, timeout_ms: float) -> None:
        self.t = t0 + timeout_ms
        raise AttemptTimeout(f"attempt exceeded {timeout_ms:.0f} ms (simulated)")

    def aio(self) -> AsyncSimClock:
        """An async view of this clock (same time line), for ``Executor(async_clock=...)``."""
        return AsyncSimClock(self)


class AsyncSimClock:
    """The executor's ``AsyncClock`` in simulated time; shares the time of a :class:`SimClock`."""

    def __init__(self, base: SimClock | None = None) -> None:
        self.base = base if base is not None else SimClock()

    def now_ms(self) -> float:
        return self.base.t

    async def sleep_ms(self, ms: int) -> None:
        self.base.sleep_ms(ms)

    async def call_with_timeout(self, fn: Callable[[], Awaitable[T]], timeout_ms: float) -> T:
        t0 = self.base.t
        try:
            result = await fn()
        except Exception:
            if self.base.t - t0 > timeout_ms:
                self.base._cut(t0, timeout_ms)
            raise
        if self.base.t - t0 > timeout_ms:
            self.base._cut(t0, timeout_ms)
        return result


# ---------------------------------------------------------------------- fault model


@functools.lru_cache(maxsize=64)
def latency_table(median_ms: int, p95_ms: int) -> tuple[int, ...]:
    """Latency quantiles (ms) at ``LATENCY_BUCKETS`` evenly spaced probabilities.

    Log-logistic with the given median and 95th percentile:
    ``q(u) = median * (u / (1 - u)) ** (ln(p95 / median) / ln 19)``.
    """
    median = max(1, median_ms)
    if p95_ms <= median:
        return (median,) * LATENCY_BUCKETS
    k = _CTX.divide(_CTX.ln(_CTX.divide(Decimal(p95_ms), Decimal(median))), _CTX.ln(Decimal(19)))
    out = []
    for i in range(LATENCY_BUCKETS):
        odds = _CTX.divide(Decimal(2 * i + 1), Decimal(2 * LATENCY_BUCKETS - 2 * i - 1))
        q = _CTX.multiply(Decimal(median), _CTX.exp(_CTX.multiply(k, _CTX.ln(odds))))
        out.append(min(MAX_LATENCY_MS, max(1, int(q.to_integral_value()))))
    return tuple(out)


@dataclass(frozen=True)
class FaultModel:
    """What the simulated service does; integers only (ms, basis points)."""

    failure_bp: Mapping[str, int] = field(default_factory=dict)
    latency_median_ms: int = 100
    latency_p95_ms: int = 400
    hang_ms: int = 10_000
    retry_after_ms: int = 0
    burst_period_ms: int = 0
    burst_len_ms: int = 0
    burst_class: str = "server_error"

    def __post_init__(self) -> None:
        # Every field is checked for its type too: a model can come from the
        # network (published with a proposal), and a verifier must get a
        # SchemaError from it, never a TypeError.
        if not isinstance(self.failure_bp, Mapping):
            raise SchemaError("failure_bp", "must be a map of error class to basis points")
        total = 0
        for cls, bp in self.failure_bp.items():
            if not isinstance(cls, str) or cls not in ERROR_CLASSES:
                raise SchemaError(
                    f"failure_bp.{cls!s}", f"not an error class; one of {ERROR_CLASSES}"
                )
            if not _is_int(bp) or not 0 <= bp <= 10_000:
                raise SchemaError(f"failure_bp.{cls}", "must be an integer in 0..10000")
            total += bp
        if total > 10_000:
            raise SchemaError("failure_bp", f"probabilities add up to {total} bp > 10000")
        if not isinstance(self.burst_class, str) or self.burst_class not in ERROR_CLASSES:
            raise SchemaError("burst_class", f"not an error class; one of {ERROR_CLASSES}")
        for name in (
            "latency_median_ms",
            "latency_p95_ms",
            "hang_ms",
            "retry_after_ms",
            "burst_period_ms",
            "burst_len_ms",
        ):
            v = getattr(self, name)
            if not _is_int(v) or not 0 <= v <= MAX_LATENCY_MS:
                raise SchemaError(name, f"must be an integer in 0..{MAX_LATENCY_MS}")
        if self.burst_len_ms > self.burst_period_ms:
            raise SchemaError("burst_len_ms", "bursts need 0 <= burst_len_ms <= burst_period_ms")

    def to_body(self) -> dict[str, Any]:
        """The model as canonical data (ints and strings), e.g. to publish beside a drill."""
        return {
            "failure_bp": dict(sorted(self.failure_bp.items())),
            "latency_median_ms": self.latency_median_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "hang_ms": self.hang_ms,
            "retry_after_ms": self.retry_after_ms,
            "burst_period_ms": self.burst_period_ms,
            "burst_len_ms": self.burst_len_ms,
            "burst_class": self.burst_class,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> FaultModel:
        """Inverse of :meth:`to_body`; validates like the constructor."""
        fields = set(cls().to_body())
        if not isinstance(body, Mapping) or set(body) - fields:
            raise SchemaError("model", f"a map with keys among {sorted(fields)}")
        failure_bp = body.get("failure_bp", {})
        if not isinstance(failure_bp, Mapping):
            raise SchemaError("failure_bp", "must be a map of error class to basis points")
        return cls(**{**body, "failure_bp": dict(failure_bp)})

    @classmethod
    def from_pattern(cls, pattern: Mapping[str, Any], failure_bp: int = 3000) -> FaultModel:
        """A model of the service behind a pattern row (``core.snapshot.pattern_row``).

        The pattern counts failures, not calls, so the failure rate is a
        parameter (default 30 %). Its error class fails with that probability;
        observed failure latency sets ``hang_ms`` for timeouts, and the typical
        latency otherwise; the largest observed Retry-After sets the window.
        """
        error_class = str(pattern.get("error_class", "unknown"))
        if error_class not in ERROR_CLASSES:
            error_class = "unknown"
        observed = observed_latency_ms(pattern)
        retry_after = observed_retry_after_ms(pattern)
        if error_class == "timeout":
            hang = min(MAX_LATENCY_MS, observed or 10_000)
            median = max(1, min(200, hang // 10))
        else:
            hang = 10_000
            median = min(MAX_LATENCY_MS // 4, observed or 100)
        if error_class == "rate_limited" and not retry_after:
            retry_after = 1000
        return cls(
            failure_bp={error_class: failure_bp},
            latency_median_ms=max(1, median),
            latency_p95_ms=max(1, median) * 4,
            hang_ms=hang,
            retry_after_ms=min(MAX_LATENCY_MS, retry_after),
        )


def observed_latency_ms(pattern: Mapping[str, Any]) -> int:
    """The failing calls' latency a pattern row shows, 0 if unknown: its typical
    value (``latency_ms_typical``, the median over the reporters, which one
    reporter cannot set alone) when the row has it, else its average."""
    if not _int(pattern.get("latency_n")):
        return 0
    return _int(pattern.get("latency_ms_typical", pattern.get("latency_ms_avg")))


def observed_retry_after_ms(pattern: Mapping[str, Any]) -> int:
    """The Retry-After a pattern row shows, 0 if none: its typical value
    (``retry_after_ms_typical``, the median over the reporters of each one's
    largest) when the row has it, else the largest."""
    if not _int(pattern.get("retry_after_n")):
        return 0
    return _int(pattern.get("retry_after_ms_typical", pattern.get("retry_after_ms_max")))


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int(x: Any) -> int:
    return int(x) if isinstance(x, int) and not isinstance(x, bool) and x > 0 else 0


# ------------------------------------------------------------------------ the service


class SimulatedFault(GossipmindError):
    """A failure of the simulated service; ``error_class`` says which."""

    def __init__(self, error_class: str, retry_after_ms: int | None = None) -> None:
        super().__init__(f"simulated {error_class}")
        self.error_class = error_class
        if retry_after_ms is not None:
            self.retry_after_ms = retry_after_ms


def sim_classifier(exc: BaseException) -> str:
    """The executor classifier for simulated faults."""
    return exc.error_class if isinstance(exc, SimulatedFault) else "unknown"


@dataclass(frozen=True)
class Decision:
    latency_ms: int
    error_class: str | None  # None: success
    retry_after_ms: int | None = None


class SimulatedService:
    """A service call whose outcome at simulated time ``t`` comes from ``random.Random(seed)``.

    ``decide(t)`` draws the next attempt's fate; calling the service advances
    ``clock`` by its latency, then returns ``"ok"`` or raises
    :class:`SimulatedFault`. ``calls`` counts attempts; ``keys`` records the
    idempotency key each attempt carried.
    """

    def __init__(self, model: FaultModel, seed: int, clock: SimClock | None = None) -> None:
        self.model = model
        self.clock = clock if clock is not None else SimClock()
        self.rng = random.Random(seed)
        self.table = latency_table(model.latency_median_ms, model.latency_p95_ms)
        period = model.burst_period_ms
        self.burst_phase = self.rng.randrange(period) if period and model.burst_len_ms else 0
        self.windows: list[float] = []  # sorted starts of rate-limit windows
        self.calls = 0
        self.keys: list[str | None] = []
        self._classes = sorted(model.failure_bp.items())

    def latency(self) -> int:
        return self.table[self.rng.getrandbits(10) % LATENCY_BUCKETS]

    def in_burst(self, t: float) -> bool:
        m = self.model
        if not (m.burst_period_ms and m.burst_len_ms):
            return False
        return (int(t) + self.burst_phase) % m.burst_period_ms < m.burst_len_ms

    def limited_until(self, t: float) -> float | None:
        """The end of the rate-limit window that covers time ``t``, if any.

        Windows are intervals ``[start, start + retry_after_ms)``, so a call is
        judged by the windows open at its own start time, whatever order the
        simulation visits overlapping calls in.
        """
        i = bisect.bisect_right(self.windows, t)
        if i and t < self.windows[i - 1] + self.model.retry_after_ms:
            return self.windows[i - 1] + self.model.retry_after_ms
        return None

    def decide(self, t: float) -> Decision:
        """The fate of an attempt starting at simulated time ``t`` (advances the RNG)."""
        m = self.model
        roll = self.rng.randrange(10_000)
        latency = self.latency()
        until = self.limited_until(t)
        if until is not None:
            return Decision(max(1, latency // 4), "rate_limited", int(until - t))
        cls: str | None = m.burst_class if self.in_burst(t) else None
        if cls is None:
            acc = 0
            for name, bp in self._classes:
                acc += bp
                if roll < acc:
                    cls = name
                    break
        if cls is None:
            return Decision(latency, None)
        if cls == "timeout":
            return Decision(m.hang_ms, cls)
        if cls == "rate_limited":
            hint = m.retry_after_ms or None
            if hint:
                bisect.insort(self.windows, t)
            return Decision(max(1, latency // 4), cls, hint)
        return Decision(latency, cls)

    def __call__(self, *, idempotency_key: str | None = None) -> str:
        self.calls += 1
        self.keys.append(idempotency_key)
        d = self.decide(self.clock.now_ms())
        self.clock.advance(d.latency_ms)
        if d.error_class is not None:
            raise SimulatedFault(d.error_class, d.retry_after_ms)
        return "ok"
