"""A hold rebuilt from the writes it was told (``Hold.replay``: a restarted node
reads them back from its own report ops, node/reportstart.py) answers as the hold
that made them: the same ``due`` and ``held_until``, and the same writes after."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.learn.hold import Hold

KEYS = [bytes([k]) * 32 for k in range(5)]
WINDOW, MAX = 1_000, 8_000
Write = tuple[bytes, int, int]


class Sim:
    """A reporter's use of a hold: reports come, a flush every window writes the
    keys that are due (``first_ms`` their first report, rounded down to ``grain``),
    then forgets the quiet ones; every write is recorded, as an op would be."""

    def __init__(self, hold: Hold) -> None:
        self.hold = hold
        self.pending: dict[bytes, int] = {}  # key -> its first report not written
        self.writes: list[Write] = []

    def report(self, key: bytes, now: int) -> None:
        self.pending.setdefault(key, now)

    def flush(self, now: int) -> list[bytes]:
        due = sorted(k for k in self.pending if self.hold.due(k, now))
        for k in due:
            first = self.pending.pop(k)
            first -= first % self.hold.grain_ms if self.hold.grain_ms else 0
            self.hold.written(k, now, first)
            self.writes.append((k, now, first))
        self.hold.forget_quiet(now)
        return due


def _rebuilt(sim: Sim, now: int) -> Hold:
    old = sim.hold
    hold = Hold(old.window_ms, old.max_ms, max_keys=old.max_keys, grain_ms=old.grain_ms)
    recent = [w for w in sim.writes if w[1] >= now - 3 * old.max_ms]  # what a node reads
    hold.replay(recent, now)
    return hold


def _same(a: Hold, b: Hold, now: int) -> None:
    for k in KEYS:
        assert a.held_until(k) == b.held_until(k), k
        for t in range(now, now + 2 * MAX, WINDOW // 2):
            assert a.due(k, t) == b.due(k, t), (k, t)


Flushes = list[tuple[int, list[bytes]]]  # (when, the keys written)


def _drive(steps: list[tuple[int, int]], sims: list[Sim], start: int) -> tuple[int, list[Flushes]]:
    """Feed ``steps`` (key, ms until the next report) to every sim; flush each window."""
    now, out = start, [Flushes() for _ in sims]
    window = sims[0].hold.window_ms
    for key, gap in steps:
        end = now + gap
        while (now // window + 1) * window <= end:
            now = (now // window + 1) * window
            for sim, got in zip(sims, out, strict=True):
                got.append((now, sim.flush(now)))
        now = end
        for sim in sims:
            sim.report(KEYS[key], now)
    return now, out


def test_a_dense_stream_restarted_is_held_as_if_it_had_not_been() -> None:
    sim = Sim(Hold(WINDOW, MAX))
    dense = [(0, 250)] * 80  # 20 s of reports: written after 1, 2, 4, 8 s, then 8 s apart
    now, (flushes,) = _drive(dense, [sim], 0)
    written = [t for t, keys in flushes if keys]
    assert written == [1_000, 2_000, 4_000, 8_000, 16_000]
    hold = _rebuilt(sim, now)
    _same(sim.hold, hold, now)
    assert hold.held_until(KEYS[0]) == 24_000 and not hold.due(KEYS[0], 20_000)
    fresh = Hold(WINDOW, MAX)  # what a restart did before: the stream starts again
    assert fresh.due(KEYS[0], 20_000)


def test_a_quiet_gap_splits_two_streams_in_the_rebuilt_hold_too() -> None:
    sim = Sim(Hold(WINDOW, MAX))
    steps = [(0, 250)] * 40 + [(0, 15_000)] + [(0, 250)] * 16  # 10 s, quiet 15 s, 4 s
    now, _ = _drive(steps, [sim], 0)
    assert [(t, first) for _, t, first in sim.writes[4:]] == [
        (16_000, 8_000),
        (26_000, 25_000),
        (27_000, 26_000),
        (29_000, 27_000),
    ]
    hold = _rebuilt(sim, now)
    _same(sim.hold, hold, now)
    assert hold.held_until(KEYS[0]) == 29_000 + 4_000  # the second stream lasted 4 s


def test_a_stream_older_than_the_ops_read_back_is_still_held_its_longest() -> None:
    """The writes read back go back 3 maxima: a stream written at 24 s (held 8 s,
    its longest), reported to again at 32 s (within 8 s: it goes on) and written at
    33 s is held until 41 s; from 2 maxima back (40.5 s - 16 s), the write at 24 s
    would be left out and the one at 33 s would start a stream: held 1 s."""
    sim = Sim(Hold(WINDOW, MAX))
    _drive([(0, 250)] * 80 + [(0, 12_000), (1, 1_000)], [sim], 0)
    last_two = [w[1:] for w in sim.writes if w[0] == KEYS[0]][-2:]
    assert last_two == [(24_000, 16_000), (33_000, 32_000)]
    restart = 40_500
    _same(sim.hold, _rebuilt(sim, restart), restart)
    assert _rebuilt(sim, restart).held_until(KEYS[0]) == 41_000


def test_a_first_report_known_to_the_second_is_forgotten_a_second_late() -> None:
    """A pattern's op shows its first report in whole seconds (``grain_ms``): one
    reported at 9.6 s after a write at 1 s goes on the stream in a replay (its
    second, 9 s, is within 8 s of the write), so the hold that ran must not have
    forgotten the pattern at 9.5 s either (8.5 s after its write)."""
    sim = Sim(Hold(500, MAX, grain_ms=1_000))
    now, _ = _drive([(0, 500), (0, 9_100), (0, 500)], [sim], 0)
    assert sim.writes == [(KEYS[0], 1_000, 0), (KEYS[0], 10_000, 9_000)]
    assert sim.hold.held_until(KEYS[0]) == 18_000  # the stream began at 0 s: held 8 s
    _same(sim.hold, _rebuilt(sim, now), now)


def test_the_rebuilt_hold_keeps_at_most_max_keys_the_latest_written() -> None:
    sim = Sim(Hold(WINDOW, MAX, max_keys=3))
    steps = [(k, 300) for _ in range(6) for k in range(5)]
    now, _ = _drive(steps, [sim], 0)
    hold = _rebuilt(sim, now)
    assert len(hold) == len(sim.hold) == 3
    _same(sim.hold, hold, now)


@settings(max_examples=150, deadline=None)
@given(
    before=st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from([0, 90, 400, 1_500, 5_000, 9_500, 30_000])),
        max_size=120,
    ),
    after=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 12_000)), max_size=40),
    restart=st.integers(0, 3 * MAX),
    max_keys=st.integers(1, 6),
    grain=st.sampled_from([0, 1_000]),
)
def test_a_restart_anywhere_changes_no_answer_and_no_write(
    before: list[tuple[int, int]],
    after: list[tuple[int, int]],
    restart: int,
    max_keys: int,
    grain: int,
) -> None:
    """Reports of 5 keys (dense, sparse, quiet for longer than the hold's maximum), a
    restart after ``restart`` ms more, then more reports: the rebuilt hold answers as
    the one that ran on, and the same keys are written at the same flushes."""
    ran = Sim(Hold(WINDOW, MAX, max_keys=max_keys, grain_ms=grain))
    now, _ = _drive(before, [ran], 5_000)
    now, _ = _drive([], [ran], now)
    down = now + restart  # the node is down meanwhile: no flush, no write
    restarted = Sim(_rebuilt(ran, down))
    restarted.pending = dict(ran.pending)  # (its journal: counted again at the start)
    restarted.writes = list(ran.writes)
    ran.hold.forget_quiet(down)  # (the flushes it had while up would forget as much)
    _same(ran.hold, restarted.hold, down)
    _, (a, b) = _drive([*after, (0, 2 * MAX)], [ran, restarted], down)
    assert a == b
