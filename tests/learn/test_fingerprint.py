"""Must show: fingerprints are stable for the same failure and distinct for different ones."""

import json
import os
import subprocess
import sys
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.bench.fingerprint import run
from gossipmind.learn.corpus import corpus, evaluate
from gossipmind.learn.patterns import Failure, reduce
from gossipmind.learn.template import Drain


def test_corpus_has_at_least_200_labelled_messages_and_is_deterministic() -> None:
    ex = corpus()
    assert len(ex) >= 200
    assert len({e.label for e in ex}) >= 40
    assert ex == corpus()
    assert ex != corpus(seed=1)


def test_precision_and_recall_on_the_corpus() -> None:
    res = evaluate(corpus())
    print(f"fingerprint precision={res['precision']:.4f} recall={res['recall']:.4f}")
    assert res["messages"] >= 200
    assert res["precision"] >= 0.95
    assert res["recall"] >= 0.95
    # And on corpora generated from other seeds (not tuned to seed 0).
    for seed in (1, 2):
        other = evaluate(corpus(seed=seed))
        assert other["precision"] >= 0.95 and other["recall"] >= 0.95


def test_different_events_never_share_a_fingerprint() -> None:
    labels_of = defaultdict(set)
    for e in corpus():
        labels_of[reduce(e.failure).pattern].add(e.label)
    assert all(len(labels) == 1 for labels in labels_of.values())


def test_evaluate_counts_pairs() -> None:
    ex = corpus(per_event=2)[:6]  # 3 events x 2 messages
    perfect = evaluate(ex, fingerprint=lambda f: f.exc_type.encode() + f.operation.encode())
    assert perfect["pairs_same_label"] == 3
    lumped = evaluate(ex, fingerprint=lambda f: b"x")
    assert lumped["pairs_same_fingerprint"] == 15
    assert lumped["precision"] == 3 / 15 and lumped["recall"] == 1.0
    split = evaluate(ex, fingerprint=lambda f: f.message.encode())
    assert split["recall"] == 0.0 and split["precision"] == 1.0


# Conventional addresses (the PII property tests also use RFC-exotic ones, for leaks).
emails = st.from_regex(
    r"[a-z0-9][a-z0-9._%+\-]{0,20}@[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?(\.[a-z]{2,8}){1,2}",
    fullmatch=True,
)
ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=20).filter(
    lambda s: any(c.isdigit() for c in s)
)


@settings(max_examples=100, deadline=None)
@given(
    ids,
    st.integers(1, 10**9),
    st.decimals(0, 10**6, places=2, allow_nan=False, allow_infinity=False),
    st.datetimes(),
    st.uuids(),
    emails,
    st.integers(1, 10**6),
)
def test_same_failure_with_different_parameters_gives_one_fingerprint(
    order_id: str, n: int, amount: object, ts: object, uid: object, email: str, latency: int
) -> None:
    def failure(oid: str, num: int, amt: object, when: object, u: object, mail: str) -> Failure:
        return Failure(
            service="payments",
            operation="charge",
            exc_type="stripe.error.APIConnectionError",
            message=(
                f"Charge ord_{oid} of ${amt} ({num} items) for {mail} failed at {when} "
                f"(request {u}): Connection reset by peer"
            ),
            status=None,
            context={"order": oid, "amount": num},
            latency_ms=latency,
        )

    a = reduce(failure(order_id, n, amount, ts, uid, email))
    b = reduce(
        failure(
            "x1",
            7,
            "3.50",
            "2020-01-01T00:00:00Z",
            "0" * 8 + "-0000-0000-0000-" + "0" * 12,
            "a@b.co",
        )
    )
    assert a.pattern == b.pattern
    assert a.template == (
        "APIConnectionError: Charge ord_<*> of <*> (<*> items) for <*> failed at <*> "
        "(request <*>): Connection reset by peer"
    )


_CHILD = """
import json, sys
from gossipmind.learn.corpus import corpus
from gossipmind.learn.patterns import Failure, reduce
warm = int(sys.argv[1])
for i in range(warm):  # a node with a different history
    msg = "unrelated message %d kind %s" % (i, "xyz"[i % 3])
    reduce(Failure("svc%d" % i, "op", "ValueError", msg))
ex = corpus()
if warm:
    ex = list(reversed(ex))
print(json.dumps(sorted(reduce(e.failure).pattern.hex() for e in ex)))
"""


def test_two_independent_processes_agree() -> None:
    outs = []
    for warm, hashseed in ((0, "1"), (300, "2")):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(warm)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=60,
        )
        outs.append(json.loads(proc.stdout))
    here = sorted(reduce(e.failure).pattern.hex() for e in corpus())
    assert outs[0] == outs[1] == here


def test_drain_merges_what_the_canonical_template_cannot() -> None:
    # The corpus' one known miss: unquoted personal names in free text. The local Drain
    # clustering merges them, without the fingerprint depending on it.
    msgs = [reduce(e.failure).template for e in corpus() if e.label == "limits.daily"]
    assert len(set(msgs)) > 1
    d = Drain()
    assert len({d.add(m).id for m in msgs}) == 1


def test_bench_contract() -> None:
    out = run()
    for key in ("name", "value", "unit", "baseline", "ratio", "target", "passed"):
        assert key in out
    assert out["name"] == "fingerprint"
    # quality is asserted; the hostile-redaction timing is reported, and only
    # decides `passed` in the bench (tests never assert wall-clock figures)
    assert out["redact_hostile_worst_ms"] > 0 and out["redact_plain_8k_ms"] > 0
    assert out["passed"] is (out["redact_hostile_ratio"] <= out["target_hostile_ratio"])
    assert out["precision"] >= 0.95 and out["recall"] >= 0.95
    assert out["value"] > out["baseline"]
    json.dumps(out)
