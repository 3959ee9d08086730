"""Bootstrap lists published in DNS: ``/dnsaddr/<name>/p2p/<id>`` (node.dnsaddr).

A real DNS server on 127.0.0.1 (UDP, answers built with dnspython) serves the
TXT records; the node asks it through dnspython's own resolver, the path a
node takes with the system's servers, and joins a real node over libp2p.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest
import trio
import trio.testing
from test_resolve import PEER, connected, named, two_nodes

from gossipmind.core.errors import NetworkError
from gossipmind.node import dnsaddr, resolve
from gossipmind.testing import sample_report

OTHER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"


class DnsServer:
    """Answers TXT questions from ``records`` (name -> texts; a name not in it is
    NXDOMAIN) and records the names it was asked."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.asked: list[str] = []
        self.port = 0

    async def serve(self, sock: trio.socket.SocketType) -> None:
        while True:
            data, peer = await sock.recvfrom(4096)
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            self.asked.append(name)
            texts = self.records.get(name)
            if texts is None:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            elif texts and question.rdtype == dns.rdatatype.TXT:
                # each text as quoted strings of at most 255 bytes, as a zone would hold it
                quoted = [
                    " ".join(f'"{t[i : i + 255]}"' for i in range(0, len(t), 255)) for t in texts
                ]
                reply.answer.append(dns.rrset.from_text_list(question.name, 0, "IN", "TXT", quoted))
            await sock.sendto(reply.to_wire(), peer)

    def resolver(self) -> dns.asyncresolver.Resolver:
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = ["127.0.0.1"]
        res.port = self.port
        return res

    async def txt(self, qname: str) -> list[str]:
        return await dnsaddr.txt_via(self.resolver(), qname)


@asynccontextmanager
async def dns_server(records: dict[str, list[str]]) -> AsyncIterator[DnsServer]:
    server = DnsServer(records)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        server.port = sock.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve, sock)
            yield server
            nursery.cancel_scope.cancel()


def peer_of(addr: str) -> str:
    return addr.rsplit("/p2p/", 1)[1]


async def test_a_node_joins_through_a_dnsaddr_list_served_by_a_real_dns_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list holds another peer's entry, a QUIC address, a TXT record of another
    use and an entry that names a second list, which holds the first node by
    ``/dns4/localhost``: the second node follows it, joins, and gets an op. The
    node asks our server instead of the system's (nothing leaves 127.0.0.1)."""
    peer: list[str] = []
    records: dict[str, list[str]] = {}

    def boot(addr: str) -> tuple[str, ...]:
        me = peer_of(addr)
        peer.append(me)
        records["_dnsaddr.boot.gossipmind.test"] = [
            "v=spf1 -all",
            f"dnsaddr=/ip4/127.0.0.1/tcp/9/p2p/{OTHER}",
            f"dnsaddr=/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{me}",
            f"dnsaddr=/dnsaddr/more.gossipmind.test/p2p/{me}",
        ]
        records["_dnsaddr.more.gossipmind.test"] = [f"dnsaddr={named(addr, 'dns4')}"]
        return (f"/dnsaddr/boot.gossipmind.test/p2p/{me}",)

    async with dns_server(records) as server, AsyncExitStack() as stack:
        monkeypatch.setattr(dnsaddr, "system_txt", server.txt)
        first, second = await two_nodes(stack, tmp_path, boot)
        await connected(second, first, 30)
        op = await first.write("pattern.report", sample_report(template="by dnsaddr <*>"))
        with trio.fail_after(30):
            while op.id not in second.store.replica.meta:
                await trio.sleep(0.05)
    assert peer == [first.transport.peer_id]
    assert server.asked[:2] == ["_dnsaddr.boot.gossipmind.test", "_dnsaddr.more.gossipmind.test"]


async def test_txt_records_from_a_real_server() -> None:
    """Records come back whole (a long one is split into 255-byte strings on the
    wire and joined again), a missing name gives none, and a server that does not
    answer is a NetworkError within the lookup's time."""
    long = "dnsaddr=/dns4/" + "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 60
    long += f".example.org/tcp/4001/p2p/{PEER}"
    assert len(long) > 255
    async with dns_server({"_dnsaddr.x.test": [long, "other"]}) as server:
        assert sorted(await server.txt("_dnsaddr.x.test")) == sorted([long, "other"])
        assert await server.txt("_dnsaddr.missing.test") == []
        silent = server.resolver()
    # the server is gone: nothing answers on its port
    with trio.fail_after(20):
        with pytest.raises(NetworkError, match=r"cannot look up the TXT records of '_dnsaddr\.x"):
            await dnsaddr.txt_via(silent, "_dnsaddr.x.test")


def lookups(records: dict[str, list[str]], asked: list[str] | None = None) -> dnsaddr.TxtLookup:
    async def lookup(qname: str) -> list[str]:
        if asked is not None:
            asked.append(qname)
        return records.get(qname, [])

    return lookup


async def test_expand_keeps_the_pinned_peers_tcp_addresses_and_says_what_it_skipped() -> None:
    tail = f"/tcp/4001/p2p/{PEER}"
    records = {
        "_dnsaddr.boot.test": [
            f"dnsaddr=/ip4/10.0.0.1{tail}",
            f"dnsaddr=/ip4/10.0.0.1{tail}",  # a duplicate
            f"dnsaddr=/dns4/b.example.org{tail}",
            f"dnsaddr=/ip4/10.0.0.2/tcp/4001/p2p/{OTHER}",
            f"dnsaddr=/ip4/10.0.0.3/udp/4001/quic-v1/p2p/{PEER}",
            f"dnsaddr=/ip4/10.0.0.4/tcp/4001/p2p/{PEER}/",  # not in normal form
            "dnsaddr=garbage",
            "google-site-verification=abc",
        ]
    }
    got = await dnsaddr.expand("boot.test", PEER, lookups(records))
    assert got == [f"/ip4/10.0.0.1{tail}", f"/dns4/b.example.org{tail}"]

    records["_dnsaddr.boot.test"] = records["_dnsaddr.boot.test"][3:]
    with pytest.raises(NetworkError) as caught:
        await dnsaddr.expand("boot.test", PEER, lookups(records))
    said = str(caught.value)
    assert f"_dnsaddr.boot.test lists no TCP address of {PEER}" in said
    assert "1 for other peers" in said and "1 for not TCP" in said and "2 for unreadable" in said

    with pytest.raises(NetworkError, match=r"\(no records\)"):
        await dnsaddr.expand("empty.test", PEER, lookups({}))


async def test_nested_lists_are_followed_bounded_in_depth_and_lookups_and_cycles_end() -> None:
    tail = f"/tcp/4001/p2p/{PEER}"

    def chain(n: int) -> dict[str, list[str]]:
        out = {
            f"_dnsaddr.l{i}.test": [f"dnsaddr=/dnsaddr/l{i + 1}.test/p2p/{PEER}"] for i in range(n)
        }
        out[f"_dnsaddr.l{n}.test"] = [f"dnsaddr=/ip4/10.0.0.{n}{tail}"]
        return out

    assert await dnsaddr.expand("l0.test", PEER, lookups(chain(dnsaddr.MAX_DEPTH))) == [
        f"/ip4/10.0.0.{dnsaddr.MAX_DEPTH}{tail}"
    ]
    with pytest.raises(NetworkError, match="1 for too deep"):
        await dnsaddr.expand("l0.test", PEER, lookups(chain(dnsaddr.MAX_DEPTH + 1)))

    cycle = {
        "_dnsaddr.a.test": [f"dnsaddr=/dnsaddr/b.test/p2p/{PEER}", f"dnsaddr=/ip4/10.0.0.1{tail}"],
        "_dnsaddr.b.test": [f"dnsaddr=/dnsaddr/A.test./p2p/{PEER}"],
    }
    asked: list[str] = []
    assert await dnsaddr.expand("a.test", PEER, lookups(cycle, asked)) == [f"/ip4/10.0.0.1{tail}"]
    assert asked == ["_dnsaddr.a.test", "_dnsaddr.b.test"]

    wide = {"_dnsaddr.w.test": [f"dnsaddr=/dnsaddr/n{i}.test/p2p/{PEER}" for i in range(40)]}
    wide["_dnsaddr.n39.test"] = [f"dnsaddr=/ip4/10.0.0.39{tail}"]
    asked = []
    with pytest.raises(NetworkError, match="for too deep"):
        await dnsaddr.expand("w.test", PEER, lookups(wide, asked))
    assert len(asked) == dnsaddr.MAX_LOOKUPS


async def test_a_lookup_that_hangs_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    async def hangs(_qname: str) -> list[str]:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    monkeypatch.setattr(dnsaddr, "LOOKUP_TIMEOUT", 0.1)
    with pytest.raises(NetworkError, match=r"looking up '_dnsaddr\.boot\.test' timed out"):
        await dnsaddr.expand("boot.test", PEER, hangs)


async def test_resolve_tries_each_listed_address_and_skips_names_that_do_not_resolve() -> None:
    tail = f"/tcp/4001/p2p/{PEER}"
    records = {
        "_dnsaddr.boot.test": [
            f"dnsaddr=/dns4/gone.example.org{tail}",
            f"dnsaddr=/dns4/here.example.org{tail}",
            *(f"dnsaddr=/ip4/10.0.1.{i}{tail}" for i in range(6)),
        ]
    }

    async def system(name: str, port: int, *_rest: Any) -> list[Any]:
        if name == "gone.example.org":
            raise OSError("Name or service not known")
        return [(2, 1, 6, "", ("10.9.9.9", port))]

    got = await resolve.resolve(f"/dnsaddr/boot.test/p2p/{PEER}", system, lookups(records))
    assert got == [f"/ip4/10.9.9.9{tail}", *(f"/ip4/10.0.1.{i}{tail}" for i in range(3))]
    assert len(got) == resolve.MAX_RESOLVED

    records["_dnsaddr.boot.test"] = records["_dnsaddr.boot.test"][:1]
    with pytest.raises(NetworkError, match=r"no address that _dnsaddr\.boot\.test lists resolves"):
        await resolve.resolve(f"/dnsaddr/boot.test/p2p/{PEER}", system, lookups(records))


async def test_no_dns_server_configured_is_a_network_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unconfigured(*_args: Any, **_kwargs: Any) -> Any:
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    monkeypatch.setattr(dns.asyncresolver, "Resolver", unconfigured)
    with pytest.raises(NetworkError, match="no DNS server is configured on this host"):
        await dnsaddr.system_txt("_dnsaddr.boot.test")


@pytest.mark.parametrize(
    ("addr", "why"),
    [
        (f"/dnsaddr/boot.example.org/p2p/{PEER}", None),
        (f"/dnsaddr/boot.example.org./p2p/{PEER}", None),
        ("/dnsaddr/boot.example.org", "must have the form"),
        (f"/dnsaddr/boot.example.org/tcp/4001/p2p/{PEER}", "must have the form"),
        (f"/dnsaddr/-bad/p2p/{PEER}", "hyphen"),
        (f"/dnsaddr/10.0.0.1/p2p/{PEER}", "is an IP address"),
        (f"/dnsaddr/boot.example.org/p2p/{PEER}/", "write it as"),
    ],
)
def test_which_dnsaddr_bootstrap_addresses_are_taken(addr: str, why: str | None) -> None:
    problem = resolve.bootstrap_problem(addr)
    if why is None:
        assert problem is None
    else:
        assert problem is not None and why in problem, problem


async def test_a_nested_list_that_cannot_be_read_leaves_what_the_others_give() -> None:
    """A nested list whose lookup fails (SERVFAIL, a timeout) is skipped; the list
    the operator named failing is still an error."""
    tail = f"/tcp/4001/p2p/{PEER}"

    async def lookup(qname: str) -> list[str]:
        if qname == "_dnsaddr.boot.test":
            return [f"dnsaddr=/dnsaddr/broken.test/p2p/{PEER}", f"dnsaddr=/ip4/192.0.2.1{tail}"]
        raise NetworkError(f"cannot look up the TXT records of {qname!r}: SERVFAIL")

    assert await dnsaddr.expand("boot.test", PEER, lookup) == [f"/ip4/192.0.2.1{tail}"]
    with pytest.raises(NetworkError, match="SERVFAIL"):
        await dnsaddr.expand("broken.test", PEER, lookup)

    async def only_nested(qname: str) -> list[str]:
        if qname == "_dnsaddr.boot.test":
            return [f"dnsaddr=/dnsaddr/broken.test/p2p/{PEER}"]
        raise NetworkError("SERVFAIL")

    with pytest.raises(NetworkError, match=r"\(1 for failed\)"):
        await dnsaddr.expand("boot.test", PEER, only_nested)


async def test_a_whole_resolution_is_bounded_in_addresses_and_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A list of many names that each take a resolver's whole timeout: at most
    MAX_FOUND are kept, and the resolution gives up after BUDGET seconds (on a
    virtual clock), where it took over 40 minutes of dials held up."""
    tail = f"/tcp/4001/p2p/{PEER}"
    many = [f"dnsaddr=/dns4/n{i}.example.org{tail}" for i in range(60)]
    got = await dnsaddr.expand("boot.test", PEER, lookups({"_dnsaddr.boot.test": many}))
    assert len(got) == dnsaddr.MAX_FOUND

    async def slow(*_args: Any) -> list[Any]:
        await trio.sleep(resolve.RESOLVE_TIMEOUT + 1)
        raise AssertionError  # pragma: no cover

    start = trio.current_time()
    with pytest.raises(NetworkError, match=r"took over 10 s"):
        await resolve.resolve(
            f"/dnsaddr/boot.test/p2p/{PEER}", slow, lookups({"_dnsaddr.boot.test": many})
        )
    assert trio.current_time() - start <= dnsaddr.BUDGET + 0.01
