"""FOLD_VERSION must change when the fold's output does.

Stores keep rows the fold computed and rewrite them only when FOLD_VERSION (or
the number of ops) differs from their stamp (store/sqlite.py, `_refresh_rows`).
So a change to the fold's rules that leaves FOLD_VERSION alone would leave old
rows in every upgraded store. This digest of the fold's output over fixed
histories pins it: if it changes, bump FOLD_VERSION in core/replica.py and
record the new digest under it. (A change to the History generator changes it
too: then record the new digest under the same version.)
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from gossipmind.core.replica import FOLD_VERSION, Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.testing import History

DIGESTS = {
    3: "3187980c212d46676ba1361ff81f8cd75cdfc5d72d7d2cbd9f7a980a2099fce2",
    # 4 changed the output only for shapes these histories do not hold (a late admin
    # grant, integers past 2^63 - 1, evidence nesting 30 levels, `<step>.type` fields)
    4: "3187980c212d46676ba1361ff81f8cd75cdfc5d72d7d2cbd9f7a980a2099fce2",
    # 5: every fix row shows `pattern_scope` ("" here: these histories propose for
    # patterns no report names), and one fix that was `accepted` is `proposed`: a
    # fix whose pattern no report names is never accepted. No author's outcomes
    # reach OUTCOME_CAP here, so the cap changes nothing.
    5: "23fec9cf23a65e2db9eb710458b7a03f7961fe4d78f7d0412c4810a495433ffe",
    # 6 changed the pattern scope only where service.operation is longer than 64
    # characters (these histories' longest is 15), refuses `*` as a report's
    # service or operation (none here), and keeps a fix's proposals as running
    # values, which gives the same rows.
    6: "23fec9cf23a65e2db9eb710458b7a03f7961fe4d78f7d0412c4810a495433ffe",
    # 7: every pattern row shows `latency_ms_typical` and `retry_after_ms_typical`
    # (medians over the authors: protocol.md §6.4)
    7: "819bc3688ef02859ab6806885e8a58ab114fd8183b09b5cfe9c756d5598c3842",
}


def test_the_fold_output_is_the_one_recorded_for_this_fold_version() -> None:
    h = hashlib.sha256()
    for seed in range(8):
        history = History(seed, steps=120)
        r = Replica(history.kb.genesis)
        for op in history.kb.ops[1:]:
            r.ingest(op)
        state = snapshot(r)
        state.pop("root", None)
        h.update(repr(state).encode())
    assert FOLD_VERSION in DIGESTS, f"record the digest of FOLD_VERSION {FOLD_VERSION}"
    assert h.hexdigest() == DIGESTS[FOLD_VERSION], (
        "the fold's output changed: bump FOLD_VERSION (core/replica.py) and record "
        f"{h.hexdigest()} under it"
    )


def test_operations_md_shows_the_stamp_of_this_fold_version() -> None:
    # operations.md §10 tells an operator what the `fold` row of `meta` holds; it
    # said `3:N` while FOLD_VERSION was 6
    ops = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    stamps = re.findall(r"`(\d+):N`", ops)
    assert stamps == [str(FOLD_VERSION)], f"operations.md §10 shows {stamps}, not {FOLD_VERSION}:N"
