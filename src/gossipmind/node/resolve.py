"""Bootstrap addresses by DNS name (docs/operations.md §3).

An operator's bootstrap address may name its host by DNS:
``/dns4/<name>/tcp/<port>/p2p/<id>`` (IPv4 addresses only), ``/dns6/…`` (IPv6
only) or ``/dns/…`` (either), or name a list published in DNS,
``/dnsaddr/<name>/p2p/<id>`` (:mod:`gossipmind.node.dnsaddr`). The name is
resolved at **every dial**, not once at start, so a bootstrap node that moves
to another IP is found again without a restart. At most :data:`MAX_RESOLVED`
of the addresses a name resolves to are tried, in the resolver's order (for
``/dns``, IPv6 and IPv4 in turn), within one dial's budget (``node.peering``);
the peer id in the address still authenticates whoever answers, so a lying
resolver can make a dial fail, never reach another peer. An address must be
written in its normal form (no trailing ``/``), and a name must not be written
like an IP address (``127.1``).

Only bootstrap addresses take names. Addresses learned by peer exchange stay
``/ip4|ip6`` (:func:`gossipmind.node.addrbook.dialable`): a peer must not make a
node resolve names it chose.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from itertools import zip_longest
from typing import Any

import trio

from gossipmind.core.errors import NetworkError
from gossipmind.node import dnsaddr

MAX_RESOLVED = 4
RESOLVE_TIMEOUT = 5.0
MAX_NAME = 253
_FAMILIES = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6, "dns": socket.AF_UNSPEC}
_FORM = (
    "/ip4|ip6/<host>/tcp/<port>/p2p/<peer-id>, /dns4|dns6|dns/<name>/tcp/<port>/p2p/<peer-id> "
    "or /dnsaddr/<name>/p2p/<peer-id>"
)

Resolver = Callable[..., Awaitable[list[Any]]]  # trio.socket.getaddrinfo's signature


def bootstrap_problem(addr: str) -> str | None:
    """Why ``addr`` is not a bootstrap address a node can dial (None if it is one)."""
    from multiaddr import Multiaddr
    from multiaddr.exceptions import Error as MultiaddrError

    try:
        maddr = Multiaddr(addr)
    except (ValueError, MultiaddrError) as exc:
        return str(exc)  # names the address
    names = [p.name for p in maddr.protocols()]
    if names != ["dnsaddr", "p2p"] and (
        len(names) != 3 or names[1:] != ["tcp", "p2p"] or names[0] not in ("ip4", "ip6", *_FAMILIES)
    ):
        return f"{addr!r} must have the form {_FORM}"
    if str(maddr) != addr:  # a trailing or doubled "/", a port with leading zeros…
        return f"{addr!r}: write it as {str(maddr)!r}"
    if names[0] in (*_FAMILIES, "dnsaddr") and (
        why := _name_problem(maddr.value_for_protocol(names[0]))
    ):
        return f"{addr!r}: {why}"
    return None


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a DNS host name (letters, digits, hyphens; dot-separated
    labels of 1..63; 253 characters at most; one trailing dot allowed)."""
    bare = name[:-1] if name.endswith(".") else name
    if not bare or len(bare) > MAX_NAME:
        return f"a DNS name has 1 to {MAX_NAME} characters"
    for label in bare.split("."):
        if not 1 <= len(label) <= 63:
            return f"{name!r} has an empty or over-long (63+) label"
        if not (label.isascii() and label.replace("-", "").isalnum()):
            return f"{name!r}: a DNS label holds letters, digits and hyphens only"
        if label.startswith("-") or label.endswith("-"):
            return f"{name!r}: a DNS label neither starts nor ends with a hyphen"
    try:  # an IP written where a name goes: say which protocol to use
        ip = ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        return f"{name!r} is an IP address: write /ip{ip.version}/{bare}/…"
    if all(label.isdigit() for label in bare.split(".")) or bare.lower().startswith("0x"):
        # (127.1, 0x7f.1: the resolver reads them as IPv4 addresses)
        return f"{name!r} is written like an IP address: use /ip4/ or /ip6/ with the address"
    return None


def is_dns(addr: str) -> bool:
    return addr.split("/", 2)[1:2] in (["dns4"], ["dns6"], ["dns"], ["dnsaddr"])


async def resolve(
    addr: str, resolver: Resolver | None = None, txt: dnsaddr.TxtLookup | None = None
) -> list[str]:
    """The ``/ip4|ip6`` addresses a ``/dns*`` bootstrap address names now (at most
    :data:`MAX_RESOLVED`, without duplicates, IPv6 and IPv4 taken in turn for
    ``/dns``); any other address, itself. ``addr`` passed :func:`bootstrap_problem`.
    A ``/dnsaddr`` address stands for the addresses its TXT records list for its
    peer (:mod:`gossipmind.node.dnsaddr`), each resolved in turn.

    :class:`NetworkError` if the name does not resolve (within
    :data:`RESOLVE_TIMEOUT`) or resolves to no address of the family it asks for.
    """
    if not is_dns(addr):
        return [addr]
    if addr.startswith("/dnsaddr/"):
        return await _resolve_dnsaddr(addr, resolver, txt or dnsaddr.system_txt)
    from multiaddr import Multiaddr

    maddr = Multiaddr(addr)
    proto = maddr.protocols()[0].name
    name, port, peer = (maddr.value_for_protocol(p) for p in (proto, "tcp", "p2p"))
    lookup = resolver or trio.socket.getaddrinfo
    try:
        with trio.fail_after(RESOLVE_TIMEOUT):
            infos = await lookup(name, int(port), _FAMILIES[proto], socket.SOCK_STREAM)
    except trio.TooSlowError as exc:
        raise NetworkError(f"resolving {name!r} timed out ({RESOLVE_TIMEOUT:g} s)") from exc
    except OSError as exc:  # socket.gaierror: unknown name, no DNS server…
        raise NetworkError(f"cannot resolve {name!r}: {exc}") from exc
    found: dict[str, list[str]] = {"ip6": [], "ip4": []}
    for family, *_rest, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        kind = "ip4" if family == socket.AF_INET else "ip6"
        host = str(sockaddr[0]).split("%", 1)[0]  # no IPv6 zone: a multiaddr has none
        resolved = f"/{kind}/{host}/tcp/{port}/p2p/{peer}"
        if resolved not in found[kind]:
            found[kind].append(resolved)
    # in turn, so that a host without IPv6 routes still tries IPv4 (and the reverse)
    out = [a for pair in zip_longest(found["ip6"], found["ip4"]) for a in pair if a]
    if not out:
        raise NetworkError(f"{name!r} resolves to no {_FAMILY_NAMES[proto]} address")
    return out[:MAX_RESOLVED]


_FAMILY_NAMES = {"dns4": "IPv4", "dns6": "IPv6", "dns": "IP"}


async def _resolve_dnsaddr(
    addr: str, resolver: Resolver | None, txt: dnsaddr.TxtLookup
) -> list[str]:
    _, _, name, _, peer = addr.split("/")
    out: list[str] = []
    failed: list[str] = []
    with trio.move_on_after(dnsaddr.BUDGET) as budget:
        for listed in await dnsaddr.expand(name, peer, txt):
            try:
                got = await resolve(listed, resolver)
            except NetworkError as exc:  # one listed name that does not resolve: the next
                failed.append(str(exc))
                continue
            out.extend(a for a in got if a not in out)
            if len(out) >= MAX_RESOLVED:
                break
    if not out:
        if budget.cancelled_caught:
            raise NetworkError(
                f"resolving _dnsaddr.{name} and what it lists took over {dnsaddr.BUDGET:g} s"
            )
        raise NetworkError(f"no address that _dnsaddr.{name} lists resolves: {failed[0]}")
    return out[:MAX_RESOLVED]
