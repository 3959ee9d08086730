"""Sleep-time learning: synthesize, drill and propose fixes while the agent is idle.

Work runs only after the agent has made no request for ``idle_s`` seconds,
stops at once when a request arrives (checked between small steps), and keeps
its CPU share under ``cpu_budget`` by sleeping in proportion to the time it
worked.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from gossipmind.core.errors import GossipmindError, StoreError
from gossipmind.core.replica import Replica
from gossipmind.core.schema import fix_id
from gossipmind.core.snapshot import fix_row, pattern_row
from gossipmind.learn.drill import drill
from gossipmind.learn.simulator import FaultModel
from gossipmind.learn.synth import Synthesizer, is_non_idempotent, propose_body, synthesize

log = logging.getLogger("gossipmind.node.learner")

Write = Callable[[str, dict[str, Any]], Awaitable[object]]
MAX_LISTED = 64  # proposals listed in the learner's stats (the count is `proposed`)


@dataclass
class LearnerStats:
    rounds: int = 0
    interrupted: int = 0
    synthesized: int = 0
    drilled: int = 0
    proposed: int = 0
    skipped_worse: int = 0
    refused: int = 0  # proposals refused for good (invalid, or this key may not propose)
    busy_s: float = 0.0
    last_error: str = ""
    proposals: list[str] = field(default_factory=list)  # the latest MAX_LISTED fix ids


class Learner:
    def __init__(
        self,
        replica: Replica,
        write: Write,
        *,
        idle_s: float = 5.0,
        cpu_budget: float = 0.25,
        tick_s: float = 0.5,
        synthesizers: Sequence[Synthesizer] | None = None,
    ) -> None:
        if not 0 < cpu_budget <= 1:
            raise ValueError("cpu_budget must be in (0, 1]")
        self.replica = replica
        self._write = write
        self.idle_s = idle_s
        self.cpu_budget = cpu_budget
        self.tick_s = tick_s
        self.synthesizers = synthesizers
        self.stats = LearnerStats()
        self._last_request = trio.current_time() if _in_trio() else 0.0
        self._generation = 0
        self._done: set[bytes] = set()  # patterns whose candidates were all handled

    def activity(self) -> None:
        """The agent made a request: learning yields now and waits for idleness again."""
        self._generation += 1
        self._last_request = trio.current_time()

    def idle(self) -> bool:
        return trio.current_time() - self._last_request >= self.idle_s

    def due(self) -> list[dict[str, Any]]:
        """Pattern rows over the threshold with no accepted fix, most reporters first."""
        r = self.replica
        threshold = r.policy.synthesis_threshold
        accepted = {
            f.pattern
            for f in r.fold.fixes.values()
            if (row := fix_row(r, f)) is not None and row["status"] in ("accepted",)
        }
        rows = [
            pattern_row(p, threshold)
            for pid, p in r.fold.patterns.items()
            if pid not in accepted and pid not in self._done and p.reporters >= threshold
        ]
        return sorted(rows, key=lambda x: (-x["reporters"], -x["count"], x["pattern"]))

    async def run(self) -> None:
        while True:
            await trio.sleep(self.tick_s)
            if self.idle():
                await self.round()

    async def round(self) -> int:
        """One pass over the due patterns; returns how many fixes were proposed."""
        self.stats.rounds += 1
        generation = self._generation
        proposed = 0
        for row in self.due():
            failed = False
            synth = functools.partial(synthesize, row, self.replica.policy, self.synthesizers)
            candidates = await self._step(synth)
            if candidates is None:
                return proposed
            self.stats.synthesized += len(candidates.candidates)
            for cand in candidates.candidates:
                if generation != self._generation:
                    self.stats.interrupted += 1
                    return proposed
                fid = fix_id(row["pattern"], cand.recipe)
                existing = self.replica.fold.fixes.get(fid)
                if existing is not None and self.replica.fold.fix_view(existing).proposals:
                    continue  # someone proposed it: identical proposals merge by fix id
                model = FaultModel.from_pattern(row)
                idem = not is_non_idempotent(cand.recipe["scope"], self.replica.policy)
                result = await self._step(
                    functools.partial(drill, cand.recipe, model, fid, idempotent=idem)
                )
                if result is None:
                    return proposed
                self.stats.drilled += 1
                if not result.better_than_baseline:
                    self.stats.skipped_worse += 1
                    continue
                summary = {**result.to_body(), "model": model.to_body()}
                try:
                    await self._write("fix.propose", propose_body(cand, row["pattern"], summary))
                except StoreError as exc:  # transient: try the pattern again next round
                    self.stats.last_error = str(exc)
                    log.warning("could not propose a fix (trying again later): %s", exc)
                    failed = True
                    continue
                except GossipmindError as exc:  # refused (InvalidOp, SchemaError): for good
                    self.stats.last_error = str(exc)
                    self.stats.refused += 1
                    log.warning("a fix proposal was refused (not retried): %s", exc)
                    continue
                self.stats.proposed += 1
                self.stats.proposals.append(fid.hex())
                del self.stats.proposals[:-MAX_LISTED]  # status stays small
                proposed += 1
                log.info(
                    "proposed fix %s for pattern %s (drill %d bp vs %d bp)",
                    fid.hex()[:12],
                    row["pattern"].hex()[:12],
                    result.success_bp,
                    result.baseline_success_bp,
                )
            if not failed:
                self._done.add(row["pattern"])
        return proposed

    async def _step(self, work: Callable[[], Any]) -> Any:
        """Run one small piece of work if still idle, then pay for it in sleep."""
        if not self.idle():
            self.stats.interrupted += 1
            return None
        t0 = time.perf_counter()
        out = work()
        spent = time.perf_counter() - t0
        self.stats.busy_s += spent
        await trio.sleep(spent * (1 - self.cpu_budget) / self.cpu_budget)
        return out


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
