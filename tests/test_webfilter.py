"""The NFQUEUE consumer's packet path (fastpath.nfqueue), sans-IO: real ClientHellos (OpenSSL), QUIC
Initials (aioquic) and HTTP requests in real IPv4/IPv6 packets, fed to Consumer.handle_packet, the
function the queue loop runs for every packet. tests/test_webfilter_netns.py runs the same consumer
on real queues behind the real ruleset."""

from __future__ import annotations

import importlib.util
import ipaddress
import itertools
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.blockpage import inject
from appliance.dataplane import marks
from appliance.lists.entries import page_hash
from appliance.policy import pages
from fastpath.nfqueue import Consumer, PacketVerdict, Policy
from fastpath.table import DomainTable, TableBuilder
from fastpath.verdict import Action, GroupPolicy


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", Path(__file__).parents[1] / "bench" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The benchmark's packet builders, so tests and benchmark feed the consumer the same kind of packets.
packets = _load("common")
ip = _load("bench_nfqueue")

KEY = bytes(range(16))
GAMBLING, IWF, PAGES, SCHOOL_ALLOW = 1, 2, 4, 8
CLOSED, OPEN, EXAMS = 1, 2, 3  # group ids: students (fail closed), staff (fail open), exams
CLIENT, CLIENT6, SERVER, SERVER6 = "10.10.0.2", "fd00:10::2", "203.0.113.80", "2001:db8:ff::80"
SYN, ACK, PSH, RST = 0x02, 0x10, 0x08, 0x04
MAC = bytes.fromhex("02aabbccddee")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> DomainTable:
    builder = TableBuilder(KEY)
    builder.add("blocked.test", GAMBLING)
    builder.add("iwf.test", IWF)
    builder.add("pages.test", PAGES, exact=True)
    builder.add("school.pages.test", PAGES | SCHOOL_ALLOW, exact=True)
    builder.add("exam-board.test", SCHOOL_ALLOW)
    path = tmp_path_factory.mktemp("table") / "table.bin"
    builder.build(path)
    return DomainTable.open(path, KEY)


@pytest.fixture(scope="module")
def page_table(tmp_path_factory: pytest.TempPathFactory) -> pages.PageTable:
    entries = [
        ("pages.test", "/iwf/page.html", IWF),
        ("pages.test", "/bet/now?x=1", GAMBLING),
        ("school.pages.test", "/bet/now?x=1", GAMBLING),
        ("school.pages.test", "/iwf/page.html", IWF),
    ]
    path = tmp_path_factory.mktemp("pages") / "pages.bin"
    hashes = np.array([page_hash(KEY, host, p) for host, p, _ in entries], np.uint64)
    pages.write(path, hashes, np.array([mask for *_, mask in entries], np.uint64))
    return pages.PageTable(path, KEY)


def policies() -> dict[int, GroupPolicy]:
    common = {"blocked": GAMBLING, "padlocked": IWF, "allow": SCHOOL_ALLOW}
    return {
        CLOSED: GroupPolicy(**common),
        OPEN: GroupPolicy(**common),
        EXAMS: GroupPolicy(**common, default_action=Action.BLOCK),
    }


def consumer(table: DomainTable | None, page_table: pages.PageTable | None = None, **kw: Any) -> Consumer:
    c = Consumer(
        0,
        [(CLOSED, True), (OPEN, False), (EXAMS, True)],
        kw.pop("packets_per_flow", 6),
        group_mask=marks.GROUP_MASK,
        allow_bit=marks.VERDICT_ALLOW,
        block_bit=marks.VERDICT_BLOCK,
        **kw,
    )
    if table is not None:
        c.set_policy(Policy(table, policies(), PAGES, page_table.lookup if page_table else None))
    return c


def mark(group: int) -> int:
    return group | (marks.QUEUE_FAIL_CLOSED if group != OPEN else marks.QUEUE_FAIL_OPEN)


class Flow:
    """One client connection's packets, client to server."""

    def __init__(self, c: Consumer, group: int, sport: int, dport: int = 443, v6: bool = False) -> None:
        self.c, self.group, self.sport, self.dport = c, group, sport, dport
        self.src, self.dst = (CLIENT6, SERVER6) if v6 else (CLIENT, SERVER)
        self.isn = random.Random(sport).randrange(1 << 32)

    def send(self, packet: bytes) -> PacketVerdict:
        verdict, new_mark = self.c.handle_packet(packet, mark(self.group), MAC)
        bits = new_mark & marks.VERDICT_MASK
        expected = {
            PacketVerdict.ALLOW: marks.VERDICT_ALLOW,
            PacketVerdict.BLOCK: marks.VERDICT_BLOCK,
        }.get(verdict, 0)
        assert bits == expected and new_mark & ~marks.VERDICT_MASK == mark(self.group)
        return verdict

    def tcp(self, offset: int, payload: bytes = b"", flags: int = ACK | PSH) -> PacketVerdict:
        seq = (self.isn + (0 if flags & SYN else 1 + offset)) % (1 << 32)
        return self.send(
            ip.ip_packet(self.src, self.dst, ip.tcp(self.sport, self.dport, seq, flags, payload))
        )

    def syn(self) -> PacketVerdict:
        return self.tcp(0, flags=SYN)

    def udp(self, payload: bytes) -> PacketVerdict:
        return self.send(ip.ip_packet(self.src, self.dst, ip.udp(self.sport, self.dport, payload)))


def connect(c: Consumer, group: int, sport: int, payload: bytes, dport: int = 443, v6: bool = False):
    flow = Flow(c, group, sport, dport, v6)
    assert flow.syn() == PacketVerdict.PASS
    assert flow.tcp(0, flags=ACK) == PacketVerdict.PASS
    return flow, flow.tcp(0, payload)


def http_get(host: str, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n".encode()


def quic_datagrams(name: str, alpn: list[str] | None = None) -> list[bytes]:
    """An aioquic client's first flight: several Initials when its ClientHello is big."""
    config = QuicConfiguration(is_client=True, alpn_protocols=alpn or ["h3"], server_name=name)
    conn = QuicConnection(configuration=config)
    conn.connect((SERVER, 443), now=0.0)
    return [d for d, _ in conn.datagrams_to_send(now=0.0)]


def with_sni(name: str) -> bytes:
    """An OpenSSL ClientHello whose server_name is name, which may be anything of the same length as
    a valid host name (Python's ssl will not send an IP literal itself)."""
    placeholder = "x" * (len(name) - 2) + ".t"
    hello = packets.client_hello(placeholder)
    assert hello.count(placeholder.encode()) == 1
    return hello.replace(placeholder.encode(), name.encode())


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize(
    ("group", "name", "verdict"),
    [
        (CLOSED, "www.blocked.test", PacketVerdict.BLOCK),
        (CLOSED, "allowed.test", PacketVerdict.ALLOW),
        (OPEN, "blocked.test", PacketVerdict.BLOCK),
        (CLOSED, "a.iwf.test", PacketVerdict.BLOCK),
        (EXAMS, "allowed.test", PacketVerdict.BLOCK),
        (EXAMS, "www.exam-board.test", PacketVerdict.ALLOW),
    ],
)
def test_tls_flows_are_decided_by_the_groups_policy(table, group, name, verdict, v6) -> None:
    c = consumer(table)
    _, decided = connect(c, group, 40000, packets.client_hello(name), v6=v6)
    assert decided == verdict
    assert (c.flows_blocked, c.flows_allowed) == ((1, 0) if verdict == PacketVerdict.BLOCK else (0, 1))
    assert c.flows_pending == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, 500), min_size=1, max_size=4, unique=True), order=st.randoms())
def test_a_hello_in_segments_in_any_order_is_decided_when_complete(table, cuts, order) -> None:
    hello = packets.client_hello("www.blocked.test")
    bounds = [0, *sorted(c for c in cuts if c < len(hello)), len(hello)]
    segments = [(a, hello[a:b]) for a, b in itertools.pairwise(bounds)]
    order.shuffle(segments)
    c = consumer(table, packets_per_flow=20)
    flow = Flow(c, CLOSED, 40001)
    flow.syn()
    verdicts = [flow.tcp(offset, data) for offset, data in segments]
    assert verdicts == [PacketVerdict.PASS] * (len(segments) - 1) + [PacketVerdict.BLOCK]


def test_packets_already_queued_get_the_flows_verdict_and_a_syn_starts_afresh(table) -> None:
    c = consumer(table)
    flow, verdict = connect(c, CLOSED, 40002, packets.client_hello("blocked.test"))
    assert verdict == PacketVerdict.BLOCK
    # Queued before the conntrack mark took effect: answered the same, with no new decision.
    assert flow.tcp(5000, b"more") == PacketVerdict.BLOCK
    assert flow.tcp(5000, flags=ACK | RST) == PacketVerdict.BLOCK
    assert c.flows_blocked == 1
    # The same ports, a new connection: decided on its own ClientHello.
    flow.isn += 12345
    assert flow.syn() == PacketVerdict.PASS
    assert flow.tcp(0, packets.client_hello("allowed.test")) == PacketVerdict.ALLOW


@pytest.mark.parametrize(
    ("group", "hello", "rule"),
    [
        (CLOSED, packets.client_hello(None), "NO_NAME"),
        (CLOSED, with_sni("10.1.2.3"), "NO_NAME"),
        (OPEN, with_sni("10.1.2.3"), "NO_NAME"),
        (CLOSED, b"SSH-2.0-OpenSSH_9.2\r\n", "NOT_HANDLED"),
        (OPEN, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\xff", "MALFORMED"),
    ],
)
def test_flows_without_a_name_are_decided_by_the_fail_setting(table, group, hello, rule) -> None:
    c = consumer(table)
    _, verdict = connect(c, group, 40003, hello)
    assert verdict == (PacketVerdict.BLOCK if group == CLOSED else PacketVerdict.ALLOW)
    if group == CLOSED:
        [event] = c.drain_events()
        assert (event[5], event[7]) == (None, rule)


@pytest.mark.parametrize("group", [CLOSED, OPEN])
def test_a_flow_over_its_packet_budget_is_decided_by_the_fail_setting(table, group) -> None:
    c = consumer(table, packets_per_flow=4)
    flow = Flow(c, group, 40004)
    hello = packets.client_hello("allowed.test")
    # Bytes that never complete the ClientHello: the ruleset stops queueing after 4 packets.
    verdicts = [flow.syn(), flow.tcp(0, hello[:10]), flow.tcp(10, hello[10:20]), flow.tcp(20, hello[20:30])]
    assert verdicts[:3] == [PacketVerdict.PASS] * 3
    assert verdicts[3] == (PacketVerdict.BLOCK if group == CLOSED else PacketVerdict.ALLOW)


def test_without_a_policy_the_fail_setting_decides(table) -> None:
    c = consumer(None)
    assert connect(c, CLOSED, 40005, packets.client_hello("allowed.test"))[1] == PacketVerdict.BLOCK
    assert connect(c, OPEN, 40006, packets.client_hello("blocked.test"))[1] == PacketVerdict.ALLOW
    # A group id the policy does not know, and one the config does not know (fail closed).
    c.set_policy(Policy(table, {OPEN: policies()[OPEN]}))
    assert connect(c, CLOSED, 40007, packets.client_hello("allowed.test"))[1] == PacketVerdict.BLOCK
    assert connect(c, 77, 40008, packets.client_hello("allowed.test"))[1] == PacketVerdict.BLOCK
    assert [e[7] for e in c.drain_events()] == ["NO_POLICY"] * 3


def test_a_new_policy_applies_to_the_next_flow(table, tmp_path) -> None:
    c = consumer(table)
    assert connect(c, CLOSED, 40009, packets.client_hello("news.test"))[1] == PacketVerdict.ALLOW
    builder = TableBuilder(KEY)
    builder.add("news.test", GAMBLING)
    builder.build(tmp_path / "new.bin")
    c.set_policy(Policy(DomainTable.open(tmp_path / "new.bin", KEY), policies()))
    assert connect(c, CLOSED, 40010, packets.client_hello("news.test"))[1] == PacketVerdict.BLOCK


class BlockPages:
    """The consumer's block_page, sans-IO: what Injector.redirect is handed, the packet read by the
    injector's own parser. (tests/test_webfilter_netns.py has the real injector answer real curl.)"""

    def __init__(self) -> None:
        self.calls: list[tuple[inject.Segment, str, bytes | None]] = []

    def __call__(self, packet: bytes, site: str, path: bytes | None) -> None:
        self.calls.append((inject.parse(packet), site, path))

    def answered(self) -> list[tuple[str, bytes | None]]:
        return [(site, path) for _, site, path in self.calls]


# What the block page is told: the site only (None), the site and its blocked page (the path), or
# nothing, the flow being reset without a redirect (False).
@pytest.mark.parametrize(
    ("host", "path", "group", "verdict", "rule", "redirect"),
    [
        ("blocked.test", "/", CLOSED, PacketVerdict.BLOCK, "CATEGORY", None),
        ("allowed.test", "/", CLOSED, PacketVerdict.ALLOW, None, False),
        ("pages.test", "/iwf/page.html", OPEN, PacketVerdict.BLOCK, "PADLOCKED", b"/iwf/page.html"),
        ("pages.test", "/iwf/page.html#part", OPEN, PacketVerdict.BLOCK, "PADLOCKED", b"/iwf/page.html"),
        ("pages.test", "/iwf/other.html", OPEN, PacketVerdict.ALLOW, None, False),
        ("pages.test", "/bet/now?x=1", CLOSED, PacketVerdict.BLOCK, "CATEGORY", b"/bet/now?x=1"),
        ("pages.test", "/bet/now?x=2", CLOSED, PacketVerdict.ALLOW, None, False),
        # The school allowed the host: its category pages open, its padlocked ones never.
        ("school.pages.test", "/bet/now?x=1", CLOSED, PacketVerdict.ALLOW, None, False),
        ("school.pages.test", "/iwf/page.html", CLOSED, PacketVerdict.BLOCK, "PADLOCKED", b"/iwf/page.html"),
        # Decided by the fail setting: there is no site to explain.
        ("10.1.2.3", "/", CLOSED, PacketVerdict.BLOCK, "NO_NAME", False),
        # Absolute-form: the path as the page table keys it.
        ("pages.test", "http://pages.test/iwf/page.html", OPEN, PacketVerdict.BLOCK, "PADLOCKED",
         b"/iwf/page.html"),
    ],
)  # fmt: skip
def test_http_host_and_page_level_entries(
    table, page_table, host, path, group, verdict, rule, redirect
) -> None:
    block_pages = BlockPages()
    c = consumer(table, page_table, block_page=block_pages)
    request = http_get(host, path)
    _, decided = connect(c, group, 40011, request, dport=80)
    assert decided == verdict
    assert [(e[6], e[7]) for e in c.drain_events()] == ([("http", rule)] if rule else [])
    assert block_pages.answered() == ([] if redirect is False else [(host, redirect)])
    # The whole packet, from its IP header, as the injector must have it.
    for segment, _, _ in block_pages.calls:
        assert (str(segment.client), segment.client_port, segment.server_port) == (CLIENT, 40011, 80)
        assert segment.payload_len == len(request)


@pytest.mark.parametrize("v6", [False, True])
def test_http_request_head_over_several_segments(table, v6) -> None:
    block_pages = BlockPages()
    c = consumer(table, block_page=block_pages)
    request = http_get("www.blocked.test", "/x")
    flow = Flow(c, CLOSED, 40012, 80, v6)
    flow.syn()
    assert flow.tcp(0, request[:20]) == PacketVerdict.PASS
    assert flow.tcp(20, request[20:]) == PacketVerdict.BLOCK
    # The segment that completed the request is the one answered; those queued behind it get the
    # flow's verdict without another redirect.
    assert flow.tcp(len(request), b"more") == PacketVerdict.BLOCK
    [(segment, site, path)] = block_pages.calls
    assert (site, path, segment.version) == ("www.blocked.test", None, 6 if v6 else 4)
    assert (segment.seq, segment.payload_len) == ((flow.isn + 1 + 20) % (1 << 32), len(request) - 20)


def test_only_plain_http_blocked_by_name_or_page_is_redirected(table) -> None:
    """TLS and QUIC blocks are resets only; so are plain-HTTP flows decided by the fail setting."""
    block_pages = BlockPages()
    c = consumer(table, packets_per_flow=3, block_page=block_pages)
    assert connect(c, CLOSED, 40015, packets.client_hello("blocked.test"))[1] == PacketVerdict.BLOCK
    assert Flow(c, CLOSED, 40016).udp(quic_datagrams("blocked.test")[0]) == PacketVerdict.BLOCK
    no_host = b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"
    assert connect(c, CLOSED, 40017, no_host, dport=80)[1] == PacketVerdict.BLOCK
    over_budget = Flow(c, CLOSED, 40018, 80)
    over_budget.syn()
    over_budget.tcp(0, b"GET / HT")
    assert over_budget.tcp(8, b"TP/1.1\r\n") == PacketVerdict.BLOCK
    without_policy = consumer(None, block_page=block_pages)
    _, verdict = connect(without_policy, CLOSED, 40019, http_get("blocked.test"), dport=80)
    assert verdict == PacketVerdict.BLOCK
    assert block_pages.calls == []
    assert c.flows_blocked == 4 and without_policy.flows_blocked == 1


def test_a_redirect_that_fails_is_counted_and_the_flow_still_blocked(table) -> None:
    injector = inject.Injector(ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv6Address("2001:db8::1"))
    injector.close()  # its sockets refuse to send, as a kernel may (nothing leaves this test)
    c = consumer(table, block_page=injector.redirect)
    assert connect(c, CLOSED, 40020, http_get("blocked.test"), dport=80)[1] == PacketVerdict.BLOCK
    assert connect(c, CLOSED, 40021, http_get("blocked.test"), dport=80)[1] == PacketVerdict.BLOCK
    assert (c.redirect_errors, c.flows_blocked) == (2, 2)


@pytest.mark.parametrize("v6", [False, True])
def test_quic_flows_are_decided_on_their_initials(table, v6) -> None:
    c = consumer(table)
    assert Flow(c, CLOSED, 40013, v6=v6).udp(quic_datagrams("blocked.test")[0]) == PacketVerdict.BLOCK
    assert Flow(c, CLOSED, 40014, v6=v6).udp(quic_datagrams("allowed.test")[0]) == PacketVerdict.ALLOW
    [event] = c.drain_events()
    assert event[5:8] == ("blocked.test", "quic", "CATEGORY")


def test_a_quic_hello_over_several_initials_with_a_forgery_between(table) -> None:
    alpn = [f"protocol-{i:03d}-" + "x" * 20 for i in range(60)]  # a ClientHello too big for one Initial
    *head, last = quic_datagrams("www.blocked.test", alpn)
    assert head
    for group, unvetted in ((CLOSED, PacketVerdict.DROP), (OPEN, PacketVerdict.PASS)):
        c = consumer(table)
        flow = Flow(c, group, 40015)
        assert [flow.udp(d) for d in head] == [PacketVerdict.PASS] * len(head)
        forged = bytearray(last)
        forged[100] ^= 0x40  # in the ciphertext: fails authentication, so not the client's
        assert flow.udp(bytes(forged)) == unvetted
        assert flow.udp(last) == PacketVerdict.BLOCK


@pytest.mark.parametrize(
    ("payload", "rule"), [(b"\x40" + b"\0" * 40, "NOT_HANDLED"), (b"\xc0\x00\x00\x00\x01\x30", "MALFORMED")]
)
def test_a_udp_flow_that_does_not_start_with_an_initial(table, payload, rule) -> None:
    c = consumer(table)
    assert Flow(c, CLOSED, 40016).udp(payload) == PacketVerdict.BLOCK
    assert Flow(c, OPEN, 40017).udp(payload) == PacketVerdict.ALLOW
    assert [e[7] for e in c.drain_events()] == [rule]


def test_quic_state_is_bounded(table) -> None:
    alpn = [f"protocol-{i:03d}-" + "x" * 20 for i in range(60)]
    first = quic_datagrams("allowed.test", alpn)[0]
    c = consumer(table, max_quic=8)
    for port in range(20):
        assert Flow(c, CLOSED, 41000 + port).udp(first) == PacketVerdict.PASS
    assert c.flows_pending == 8 and c.evictions == 12


def test_block_events_carry_the_client_and_its_mac(table) -> None:
    c = consumer(table)
    connect(c, CLOSED, 40018, packets.client_hello("blocked.test"), v6=True)
    [(when, client, server, mac, group, name, layer, rule, bits)] = c.drain_events()
    assert (client, server, mac, group) == (CLIENT6, SERVER6, "02:aa:bb:cc:dd:ee", CLOSED)
    assert (name, layer, rule, bits) == ("blocked.test", "tls", "CATEGORY", GAMBLING)
    assert when > 1.7e9 and c.drain_events() == []


def ipv6_with_extensions(l4: tuple[int, bytes], fragment: bytes | None = None) -> bytes:
    """An IPv6 packet with hop-by-hop and destination options (and a fragment header) before TCP."""
    plain = ip.ip_packet(CLIENT6, SERVER6, l4)  # with the transport checksum
    body = plain[40:]
    chain = b""
    headers = [(0, b"\x01\x04\0\0\0\0"), (60, b"\x01\x04\0\0\0\0")]
    if fragment is not None:
        headers.append((44, fragment))
    for i, (_kind, data) in enumerate(headers):
        following = headers[i + 1][0] if i + 1 < len(headers) else l4[0]
        chain += bytes([following, 0]) + data
    first = headers[0][0]
    return struct.pack("!IHBB", 6 << 28, len(chain) + len(body), first, 64) + plain[8:40] + chain + body


def test_ipv6_extension_headers_are_walked_and_fragments_refused(table) -> None:
    hello = packets.client_hello("blocked.test")
    c = consumer(table)
    flow = Flow(c, CLOSED, 40019, v6=True)
    segment = ip.tcp(40019, 443, (flow.isn + 1) % (1 << 32), ACK | PSH, hello)
    assert flow.send(ipv6_with_extensions(segment)) == PacketVerdict.BLOCK
    # A non-first fragment cannot reach the forward hook whole: refused where the group fails closed.
    fragment = struct.pack("!HI", 8 << 3, 1)
    assert Flow(c, CLOSED, 40020, v6=True).send(ipv6_with_extensions(segment, fragment)) == PacketVerdict.DROP
    assert Flow(c, OPEN, 40021, v6=True).send(ipv6_with_extensions(segment, fragment)) == PacketVerdict.PASS


def test_ipv4_fragments_and_other_protocols_are_not_passed_for_fail_closed_groups(table) -> None:
    c = consumer(table)
    packet = bytearray(ip.ip_packet(CLIENT, SERVER, ip.tcp(1, 443, 1, SYN)))
    packet[6] |= 0x20  # more fragments
    assert c.handle_packet(bytes(packet), mark(CLOSED)) == (PacketVerdict.DROP, mark(CLOSED))
    ssh = ip.ip_packet(CLIENT, SERVER, ip.tcp(1, 22, 1, SYN))
    assert c.handle_packet(ssh, mark(CLOSED))[0] == PacketVerdict.DROP
    assert c.handle_packet(ssh, mark(OPEN))[0] == PacketVerdict.PASS
    assert c.malformed == 3


VALID = [
    ip.ip_packet(CLIENT, SERVER, ip.tcp(40100, 443, 7, ACK | PSH, packets.client_hello("allowed.test"))),
    ip.ip_packet(CLIENT6, SERVER6, ip.tcp(40101, 80, 7, ACK | PSH, http_get("allowed.test"))),
    ip.ip_packet(CLIENT, SERVER, ip.udp(40102, 443, quic_datagrams("allowed.test")[0])),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    base=st.sampled_from(VALID),
    cut=st.integers(0, 1400),
    flips=st.lists(st.tuples(st.integers(0, 1399), st.integers(1, 255)), max_size=6),
    junk=st.binary(max_size=80),
)
def test_damaged_packets_never_crash_nor_open_a_fail_closed_group(table, base, cut, flips, junk) -> None:
    """A damaged packet is never allowed for a group whose policy blocks by default (exams), and one
    that cannot be read at all is dropped, not passed unread."""
    packet = bytearray(base[:cut] + junk if cut < len(base) else base)
    for at, value in flips:
        if at < len(packet):
            packet[at] ^= value
    exams = consumer(table)
    verdict, _ = exams.handle_packet(bytes(packet), mark(EXAMS))
    assert verdict != PacketVerdict.ALLOW
    if exams.malformed:
        assert verdict == PacketVerdict.DROP
