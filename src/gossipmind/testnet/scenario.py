"""Scenarios as data (TOML in ``testnet/scenarios/``) and the fault-injecting service.

A scenario says which network to run, which service the agents call, how that
service fails (a seeded schedule of timeouts, 429s with Retry-After, 5xx,
validation errors…), how many agents call it and when, and what the run must
end with (``expect = "fix"``: the fleet learns a fix; ``"no_fix"``: it must not).
A ``[poison]`` table makes one node propose a harmful fix on purpose.
"""

from __future__ import annotations

import hashlib
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossipmind.core.errors import ConfigError
from gossipmind.core.policy import Policy
from gossipmind.core.recipe import check_recipe

KINDS = ("timeout", "rate_limited", "server_error", "connection", "validation", "auth")
PERSISTENT = frozenset({"validation", "auth"})  # no retry can help these
SCENARIO_DIR = Path(__file__).resolve().parents[3] / "testnet" / "scenarios"


class ServiceTimeout(TimeoutError):
    pass


class ServiceError(Exception):
    """An HTTP-ish error from the simulated service (``status``, ``retry_after``)."""

    def __init__(self, message: str, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class SchemaDrift(ValueError):
    """The service changed its schema: every attempt fails the same way."""

    status = 422


@dataclass(frozen=True)
class Fault:
    kind: str
    weight: int
    message: str
    retry_after_ms: int = 0
    persistent: bool = False  # fails every attempt of a call (a retry cannot help)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    service: str
    operation: str
    idempotent: bool
    failure_rate: float
    faults: tuple[Fault, ...]
    agents: int = 3
    late_agents: int = 1
    calls: int = 80
    interval_ms: int = 40
    nodes: int = 6
    verifiers: int = 2
    seed: int = 1
    expect: str = "fix"
    policy: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    poison: dict[str, Any] | None = None

    def network_policy(self) -> Policy:
        return Policy.from_body({**Policy().to_body(), **self.policy})

    def shortened(self, factor: float) -> Scenario:
        from dataclasses import replace

        return replace(self, calls=max(20, int(self.calls * factor)))


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in doc:
        if default is ...:
            raise ConfigError(f"scenario: {key} is required")
        return default
    value = doc[key]
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"scenario: {key} has the wrong type")
    if not isinstance(value, kind):
        raise ConfigError(f"scenario: {key} must be {getattr(kind, '__name__', kind)}")
    return value


def load(path: Path | str) -> Scenario:
    """Read and validate a scenario file (or a name from ``testnet/scenarios/``)."""
    p = Path(path)
    if not p.exists() and (SCENARIO_DIR / f"{path}.toml").exists():
        p = SCENARIO_DIR / f"{path}.toml"
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"no scenario at {path} (nor in {SCENARIO_DIR})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read scenario {p}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    svc = _get(doc, "service", dict)
    faults = []
    for f in _get(doc, "faults", list):
        kind = _get(f, "kind", str)
        if kind not in KINDS:
            raise ConfigError(f"scenario: fault kind {kind!r} is not one of {KINDS}")
        faults.append(
            Fault(
                kind,
                _get(f, "weight", int, 1),
                _get(f, "message", str),
                _get(f, "retry_after_ms", int, 0),
                _get(f, "persistent", bool, kind == "validation"),
            )
        )
    if not faults:
        raise ConfigError("scenario: at least one fault is required")
    agents = _get(doc, "agents", dict, {})
    net = _get(doc, "network", dict, {})
    sc = Scenario(
        name=_get(doc, "name", str),
        description=_get(doc, "description", str, ""),
        service=_get(svc, "name", str),
        operation=_get(svc, "operation", str),
        idempotent=_get(svc, "idempotent", bool, True),
        failure_rate=float(_get(svc, "failure_rate", (int, float))),
        faults=tuple(faults),
        agents=_get(agents, "count", int, 3),
        late_agents=_get(agents, "late", int, 1),
        calls=_get(agents, "calls", int, 80),
        interval_ms=_get(agents, "interval_ms", int, 40),
        nodes=_get(net, "nodes", int, 6),
        verifiers=_get(net, "verifiers", int, 2),
        seed=_get(doc, "seed", int, 1),
        expect=_get(doc, "expect", str, "fix"),
        policy=_get(doc, "policy", dict, {}),
        settings=_get(doc, "settings", dict, {}),
        poison=_get(doc, "poison", dict, None),
    )
    check(sc)
    return sc


def check(sc: Scenario) -> None:
    if not 0 < sc.failure_rate < 1:
        raise ConfigError("scenario: service.failure_rate must be in (0, 1)")
    if sc.expect not in ("fix", "no_fix"):
        raise ConfigError("scenario: expect must be 'fix' or 'no_fix'")
    if sc.agents < 1 or sc.late_agents < 0 or sc.agents + sc.late_agents > sc.nodes - sc.verifiers:
        raise ConfigError("scenario: agents + late agents must fit on the non-verifier nodes")
    if sc.calls < 1 or sc.interval_ms < 0:
        raise ConfigError("scenario: calls ≥ 1 and interval_ms ≥ 0")
    sc.network_policy()  # raises on a bad policy override
    if sc.poison is not None:
        if "recipe" not in sc.poison:
            raise ConfigError("scenario: [poison] needs a recipe")
        check_recipe(sc.poison["recipe"])


class FaultService:
    """A seeded, fault-injecting stand-in for the agents' real service.

    Whether attempt ``k`` of call ``i`` by ``agent`` fails, and how, is a pure
    function of (seed, agent, i, k): every run of a scenario, networked or
    isolated, faces the same schedule.
    """

    def __init__(self, sc: Scenario, agent: str) -> None:
        self.sc = sc
        self.agent = agent
        self.attempts: dict[int, int] = {}
        self.total_attempts = 0

    def _rng(self, call: int, attempt: int) -> random.Random:
        key = f"{self.sc.seed}/{self.agent}/{call}/{attempt}".encode()
        return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))

    def fault_for(self, call: int, attempt: int) -> Fault | None:
        first = self._rng(call, 0)
        if first.random() >= self.sc.failure_rate:
            return None
        fault = first.choices(self.sc.faults, weights=[f.weight for f in self.sc.faults])[0]
        if attempt == 0 or fault.persistent:
            return fault
        # a transient fault: each retry fails the same way again at the same rate
        return fault if self._rng(call, attempt).random() < self.sc.failure_rate else None

    def call(
        self, i: int, customer: str, amount: int, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        attempt = self.attempts.get(i, 0)
        self.attempts[i] = attempt + 1
        self.total_attempts += 1
        fault = self.fault_for(i, attempt)
        if fault is None:
            return {"ok": True, "call": i, "attempt": attempt, "key": idempotency_key}
        rng = self._rng(i, attempt + 1000)
        msg = fault.message.format(
            customer=customer,
            amount=amount,
            ms=rng.randint(2000, 30000),
            req=f"{rng.getrandbits(48):012x}",
        )
        if fault.kind == "timeout":
            raise ServiceTimeout(msg)
        if fault.kind == "rate_limited":
            raise ServiceError(msg, 429, fault.retry_after_ms / 1000)
        if fault.kind == "server_error":
            raise ServiceError(msg, 503)
        if fault.kind == "connection":
            raise ConnectionResetError(msg)
        if fault.kind == "auth":
            raise ServiceError(msg, 401)
        raise SchemaDrift(msg)
