"""Helpers for the net tests: identities, a genesis, signed ops (imported as ``netkit``)."""

from __future__ import annotations

import hashlib

from gossipmind.core import ops as opsmod
from gossipmind.core.identity import Identity
from gossipmind.core.ops import Op
from gossipmind.core.policy import Policy
from gossipmind.core.replica import create_genesis


def identity(n: int) -> Identity:
    return Identity(hashlib.sha256(b"net-test-%d" % n).digest())


def make_op(author: Identity, net: bytes, seq: int, *, size: int = 0) -> Op:
    body = {"fingerprint": b"\x01" * 16, "count": seq, "pad": b"x" * size}
    return opsmod.create(
        author, net=net, kind="pattern.report", seq=seq, lamport=seq, deps=[], ts=1000, body=body
    )


GENESIS: Op = create_genesis(identity(0), "net-tests", Policy(), b"\x00" * 16, 1)
NET_ID: bytes = GENESIS.id
OTHER_GENESIS: Op = create_genesis(identity(0), "other-net", Policy(), b"\x01" * 16, 1)
