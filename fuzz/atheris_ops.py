#!/usr/bin/env python3
"""Coverage-guided fuzzing of the op decoder, canonical msgpack and replica ingest (atheris).

Run by hand (not part of the test suite; see fuzz/README.md):

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/atheris_ops.py -max_total_time=60 [CORPUS_DIR ...]

Without a corpus dir, a temporary one is seeded with a valid op of every kind.
A crash (an exception other than the expected ones, or a broken property) is
written by libFuzzer as ``crash-<sha1>`` in the current directory.

Properties, for every input:
* ``core.ops.decode`` raises only ``InvalidOp``; an accepted op re-encodes to the
  input bytes and, unless it is a seed, its signature does not verify;
* ``core.encoding.decode`` raises only ``EncodingError``; accepted values
  re-encode to the input bytes;
* ``Replica.ingest_raw`` never raises and applies nothing that is not a seed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["gossipmind"]):
    from gossipmind.core import encoding
    from gossipmind.core import ops as opsmod
    from gossipmind.core.errors import EncodingError, InvalidOp
    from gossipmind.core.replica import Replica
    from gossipmind.core.schema import pattern_id
    from gossipmind.testing import KB, sample_recipe


def seeds() -> list[bytes]:
    kb = KB(seed=3)
    kb.grant("admin", "a", "member")
    kb.grant("admin", "v", "verifier", tier=2, scopes=("search",))
    for name in ("a", "v"):
        kb.sync("admin", name)
    kb.report("a", count=3)
    pattern = pattern_id("search", "query", "timeout", "request timed out after <*> ms")
    fix = kb.propose("a", pattern, sample_recipe("search", 3))
    kb.sync("a", "v")
    kb.write("v", "fix.attest", kb.attest_body(fix, "search"))
    kb.write("a", "fix.outcome", {"fix": fix, "attempts": 3, "successes": 2, "window": [0, 5]})
    kb.revoke("admin", "a")
    return [op.raw for op in kb.ops]


SEEDS = seeds()
SEED_SET = frozenset(SEEDS)
REPLICA = Replica(opsmod.decode(SEEDS[0]))
for _raw in SEEDS[1:]:
    REPLICA.ingest_raw(_raw)
ROOT = REPLICA.root()


def test_one_input(data: bytes) -> None:
    try:
        op = opsmod.decode(data)
    except InvalidOp:
        pass
    else:
        if op.raw != data:
            raise AssertionError("decoded op does not keep its bytes")
        envelope = [1, op.net, op.kind, op.author, op.seq, op.lamport, list(op.deps), op.ts,
                    op.body, op.sig]  # fmt: skip
        if encoding.encode(envelope) != data:
            raise AssertionError("an accepted op re-encodes differently")
        if data not in SEED_SET and op.verify_signature():
            raise AssertionError("a mutated op carries a valid signature")
    try:
        value = encoding.decode(data)
    except EncodingError:
        pass
    else:
        if encoding.encode(value) != data:
            raise AssertionError("accepted msgpack re-encodes differently")
    before = set(REPLICA.rejected)
    result = REPLICA.ingest_raw(data)
    for oid in set(REPLICA.rejected) - before:  # keep the replica's memory flat
        del REPLICA.rejected[oid]
    if result.applied or result.pending or REPLICA.root() != ROOT:
        raise AssertionError("junk changed the replica")


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="gm-ops-corpus-"))
        for i, raw in enumerate(SEEDS):
            (corpus / f"seed-{i}").write_bytes(raw)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
