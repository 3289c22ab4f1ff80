"""fastpath.dnsfilter's engine in process, on loopback: per-group special-name settings against a real
unbound, the block-event ring when nobody drains it, arbitrary input (never forwarded unparsed, a
blocked name never forwarded however the message is mangled), and policy swaps while the UDP loop
is answering real traffic."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpath import dnsfilter, verdict
from fastpath.table import DomainTable, TableBuilder

KEY = bytes(range(16))
GAMBLING = 1 << 3
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
TARGETS = ["restrict.youtube.com", "restrictmoderate.youtube.com"]
SPECIAL = {"www.youtube.com": 0, "use-application-dns.net": 1}
STRICT, MODERATE, OFF = 0, 1, 2  # groups


@dataclass
class Unbound:
    port: int


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    work = tmp_path_factory.mktemp("unbound")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (work / "unbound.conf").write_text(
        f"""server:
  interface: 127.0.0.1@{port}
  do-ip6: no
  chroot: ""
  username: ""
  directory: "{work}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  do-daemonize: no
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "lab." static
  local-data: "lab. 300 IN SOA ns.lab. admin.lab. 1 3600 600 86400 60"
  local-data: "www.allowed.lab. 300 IN A 192.0.2.10"
  local-data: "www.casino.lab. 300 IN A 192.0.2.20"
  local-zone: "youtube.com." static
  local-data: "www.youtube.com. 300 IN A 192.0.2.60"
  local-data: "restrict.youtube.com. 300 IN A 192.0.2.61"
  local-data: "restrictmoderate.youtube.com. 300 IN A 192.0.2.62"
  local-zone: "use-application-dns.net." static
  local-data: "use-application-dns.net. 300 IN A 192.0.2.80"
remote-control:
  control-enable: no
"""
    )
    proc = subprocess.Popen(["unbound", "-d", "-c", str(work / "unbound.conf")], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                ask_udp(port, dns.message.make_query("www.allowed.lab", "A").to_wire(), timeout=0.2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "unbound did not start"
        yield Unbound(port)
    finally:
        proc.terminate()
        proc.wait(5)


def ask_udp(port: int, wire: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(wire, ("127.0.0.1", port))
        return s.recv(65535)


def ask_tcp(port: int, wire: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(struct.pack("!H", len(wire)) + wire)
        (n,) = struct.unpack("!H", s.recv(2))
        data = b""
        while len(data) < n:
            data += s.recv(n - len(data))
        return data


def make_table(tmp_path: Path, name: str, *blocked: str) -> DomainTable:
    builder = TableBuilder(KEY)
    for entry in blocked:
        builder.add(entry, GAMBLING)
    builder.build(tmp_path / name)
    return DomainTable.open(tmp_path / name, KEY)


def new_engine(events: int = 16384, timeout: float = 2.0) -> dnsfilter.Engine:
    off = dnsfilter.FEATURE_OFF
    nx = dnsfilter.FEATURE_NXDOMAIN
    return dnsfilter.Engine(
        3,
        block_ipv4="192.0.2.99",
        block_ipv6="2001:db8::99",
        nxdomain=False,
        ttl=30,
        special_names=SPECIAL,
        targets=TARGETS,
        actions=[[0, nx], [1, nx], [off, off]],
        strip_ech=[True, True, False],
        upstream_timeout=timeout,
        events=events,
    )


def policies() -> list[verdict.GroupPolicy]:
    return [verdict.GroupPolicy(blocked=GAMBLING) for _ in range(3)]


def subnets(group: int) -> list[tuple[ipaddress.IPv4Network, int]]:
    return [(LOOPBACK, group)]


def resolve(engine: dnsfilter.Engine, unbound: Unbound, wire: bytes) -> dns.message.Message | None:
    """One query the way the TCP path runs it, with unbound as the resolver."""
    result = engine.query(wire, "127.0.0.1", "127.0.0.1", 0)
    if isinstance(result, dnsfilter.Forward):
        result = engine.answer(result, ask_tcp(unbound.port, result.message))
    return None if result is None else dns.message.from_wire(result)


@pytest.mark.parametrize(
    ("group", "answer"),
    [
        (
            STRICT,
            [
                ("www.youtube.com.", "CNAME", "restrict.youtube.com."),
                ("restrict.youtube.com.", "A", "192.0.2.61"),
            ],
        ),
        (
            MODERATE,
            [
                ("www.youtube.com.", "CNAME", "restrictmoderate.youtube.com."),
                ("restrictmoderate.youtube.com.", "A", "192.0.2.62"),
            ],
        ),
        (OFF, [("www.youtube.com.", "A", "192.0.2.60")]),
    ],
)
def test_special_names_follow_the_group(
    tmp_path: Path, unbound: Unbound, group: int, answer: list[tuple[str, str, str]]
) -> None:
    engine = new_engine()
    engine.set_state(make_table(tmp_path, "t.bin"), policies(), 1, [], subnets(group))
    reply = resolve(engine, unbound, dns.message.make_query("www.youtube.com", "A").to_wire())
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    got = [(str(r.name), dns.rdatatype.to_text(r.rdtype), str(rd)) for r in reply.answer for rd in r]
    assert got == answer
    canary = resolve(engine, unbound, dns.message.make_query("use-application-dns.net", "A").to_wire())
    assert canary is not None
    assert canary.rcode() == (dns.rcode.NOERROR if group == OFF else dns.rcode.NXDOMAIN)


def test_canary_stays_negative_where_the_policy_blocks_everything(tmp_path: Path, unbound: Unbound) -> None:
    """An allowlist group (exams) blocks every name by default; the canary must still be NXDOMAIN, not
    the block page's address, or Firefox keeps its own DNS over HTTPS."""
    engine = new_engine()
    closed = [verdict.GroupPolicy(default_action=verdict.Action.BLOCK) for _ in range(3)]
    engine.set_state(make_table(tmp_path, "t.bin"), closed, 1, [], subnets(STRICT))
    canary = resolve(engine, unbound, dns.message.make_query("use-application-dns.net", "A").to_wire())
    assert canary is not None and canary.rcode() == dns.rcode.NXDOMAIN and not canary.answer
    other = resolve(engine, unbound, dns.message.make_query("www.allowed.lab", "A").to_wire())
    assert other is not None and [str(rd) for r in other.answer for rd in r] == ["192.0.2.99"]


def test_answers_that_do_not_repeat_the_question_are_refused(tmp_path: Path, unbound: Unbound) -> None:
    engine = new_engine()
    engine.set_state(make_table(tmp_path, "t.bin"), policies(), 1, [], subnets(STRICT))
    forward = engine.query(
        dns.message.make_query("www.allowed.lab", "A").to_wire(), "127.0.0.1", "127.0.0.1", 0
    )
    assert isinstance(forward, dnsfilter.Forward)
    real = ask_tcp(unbound.port, forward.message)
    other = dns.message.make_query("www.casino.lab", "A")
    other.id = dns.message.from_wire(forward.message).id
    wrong_name = ask_tcp(unbound.port, other.to_wire())
    wrong_id = bytes([real[0] ^ 1]) + real[1:]
    assert engine.answer(forward, wrong_name) is None
    assert engine.answer(forward, wrong_id) is None
    assert engine.answer(forward, forward.message) is None  # a query, not an answer
    reply = engine.answer(forward, real)
    assert reply is not None and dns.message.from_wire(reply).answer[0][0].address == "192.0.2.10"
    assert engine.stats()["stray"] == 3
    failed = engine.servfail(forward)
    assert failed is not None and dns.message.from_wire(failed).rcode() == dns.rcode.SERVFAIL


def test_block_event_ring_counts_what_it_cannot_hold(tmp_path: Path) -> None:
    engine = new_engine(events=16)
    engine.set_state(make_table(tmp_path, "t.bin", "casino.lab"), policies(), 7, [], subnets(MODERATE))
    for i in range(100):
        reply = engine.query(
            dns.message.make_query(f"n{i}.casino.lab", "A").to_wire(), "127.0.0.9", "127.0.0.1", 0
        )
        assert isinstance(reply, bytes) and dns.message.from_wire(reply).answer[0][0].address == "192.0.2.99"
    stats = engine.stats()
    assert (stats["blocked"], stats["events_dropped"], stats["events_waiting"]) == (100, 84, 16)
    drained = engine.drain_events(1000)
    assert [e[4] for e in drained] == [f"n{i}.casino.lab" for i in range(16)]
    ts, generation, group, client, _, reason, bits = drained[0]
    assert (generation, group, client, reason, bits) == (
        7,
        MODERATE,
        "127.0.0.9",
        verdict.Reason.CATEGORY,
        GAMBLING,
    )
    assert abs(ts / 1e6 - time.time()) < 60
    # room again: new events are kept
    engine.query(dns.message.make_query("again.casino.lab", "A").to_wire(), "127.0.0.9", "127.0.0.1", 0)
    assert [e[4] for e in engine.drain_events(10)] == ["again.casino.lab"]


@pytest.fixture(scope="module")
def fuzz_engine(tmp_path_factory: pytest.TempPathFactory) -> dnsfilter.Engine:
    engine = new_engine()
    table = make_table(tmp_path_factory.mktemp("fuzz"), "t.bin", "casino.lab")
    engine.set_state(table, policies(), 1, [], subnets(STRICT))
    return engine


BLOCKED_QUERY = dns.message.make_query("www.casino.lab", "A", use_edns=0).to_wire()


@settings(max_examples=3000, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_are_never_forwarded_unparsed(fuzz_engine: dnsfilter.Engine, data: bytes) -> None:
    result = fuzz_engine.query(data, "127.0.0.1", "127.0.0.1", 0)
    if isinstance(result, dnsfilter.Forward):
        # a query (QR clear, opcode QUERY) with one question whose name dnspython reads too
        flags, qdcount = struct.unpack_from("!HH", data, 2)
        assert not flags & 0xF800 and qdcount == 1
        _, used = dns.name.from_wire(data, 12)
        assert len(data) >= 12 + used + 4 and result.message[12:] == data[12:]
    elif result is not None:
        assert len(result) >= 12 and result[:2] == data[:2] and result[2] & 0x80


@settings(max_examples=3000, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, len(BLOCKED_QUERY) - 1), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, len(BLOCKED_QUERY)),
)
def test_a_mangled_blocked_query_never_reaches_upstream(
    fuzz_engine: dnsfilter.Engine, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(BLOCKED_QUERY[:cut])
    for at, value in edits:
        if at < len(data):
            data[at] = value
    result = fuzz_engine.query(bytes(data), "127.0.0.1", "127.0.0.1", 0)
    if isinstance(result, dnsfilter.Forward):
        # the question forwarded, as dnspython reads it (the records after it may be nonsense)
        name = dns.name.from_wire(result.message, 12)[0].to_text(omit_final_dot=True).lower()
        assert name != "casino.lab" and not name.endswith(".casino.lab"), name


@contextlib.contextmanager
def serving(engine: dnsfilter.Engine, unbound: Unbound) -> Iterator[int]:
    """The engine's UDP loop on a loopback port (yielded), forwarding to unbound, until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.connect(("127.0.0.1", unbound.port))
    loop = threading.Thread(target=engine.serve_udp, args=(sock.fileno(), -1, upstream.fileno()))
    loop.start()
    try:
        yield sock.getsockname()[1]
    finally:
        engine.stop()
        loop.join(10)
        sock.close()
        upstream.close()
    assert not loop.is_alive()


def ask_loop(port: int, query: dns.message.Message) -> bytes:
    reply = ask_udp(port, query.to_wire())
    assert reply[:2] == query.to_wire()[:2]
    return reply


def test_cache_answers_again_with_aged_ttls_and_the_clients_spelling(
    tmp_path: Path, unbound: Unbound
) -> None:
    engine = new_engine()
    engine.set_state(make_table(tmp_path, "t.bin", "casino.lab"), policies(), 1, [], subnets(STRICT))
    with serving(engine, unbound) as port:
        first = dns.message.from_wire(ask_loop(port, dns.message.make_query("www.allowed.lab", "A")))
        assert first.answer[0].ttl == 300 and engine.stats()["forwarded"] == 1
        time.sleep(1.1)
        query = dns.message.make_query("WwW.AlLoWeD.LaB", "A")
        raw = ask_loop(port, query)
        assert b"\x03WwW\x07AlLoWeD\x03LaB\x00" in raw  # the question as this client asked it
        again = dns.message.from_wire(raw)
        assert [rd.address for rd in again.answer[0]] == ["192.0.2.10"]
        assert 290 <= again.answer[0].ttl <= 299
        assert (engine.stats()["forwarded"], engine.stats()["cached"]) == (1, 1)
        # what shapes the answer is part of the key: DNSSEC OK, EDNS, another type
        ask_loop(port, dns.message.make_query("www.allowed.lab", "A", want_dnssec=True))
        ask_loop(port, dns.message.make_query("www.allowed.lab", "A", use_edns=0))
        ask_loop(port, dns.message.make_query("www.allowed.lab", "AAAA"))
        assert (engine.stats()["forwarded"], engine.stats()["cached"]) == (4, 1)
        # negative answers are kept too (their SOA says how long)
        for _ in range(2):
            nx = dns.message.from_wire(ask_loop(port, dns.message.make_query("nothing.lab", "A")))
            assert nx.rcode() == dns.rcode.NXDOMAIN
        assert (engine.stats()["forwarded"], engine.stats()["cached"]) == (5, 2)
        # the policy decides before the cache: a cached name that becomes blocked is blocked
        engine.set_state(make_table(tmp_path, "u.bin", "allowed.lab"), policies(), 2, [], subnets(STRICT))
        blocked = dns.message.from_wire(ask_loop(port, dns.message.make_query("www.allowed.lab", "A")))
        assert [rd.address for rd in blocked.answer[0]] == ["192.0.2.99"]


class Client(threading.Thread):
    """Asks the engine's UDP loop one name after another and checks every answer."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.done = threading.Event()
        self.answered = 0
        self.wrong: list[str] = []

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            i = 0
            while not self.done.is_set():
                name, expected = (
                    ("www.allowed.lab", "192.0.2.10") if i % 2 else ("x.casino.lab", "192.0.2.99")
                )
                query = dns.message.make_query(name, "A")
                s.sendto(query.to_wire(), ("127.0.0.1", self.port))
                s.sendto(b"\x00\x01garbage", ("127.0.0.1", self.port))  # dropped, never forwarded
                try:
                    reply = dns.message.from_wire(s.recv(65535))
                except TimeoutError:
                    self.wrong.append(f"{name}: no answer")
                    continue
                got = [rd.address for r in reply.answer for rd in r]
                if reply.id != query.id or got != [expected]:
                    self.wrong.append(f"{name}: {got}")
                self.answered += 1
                i += 1


def test_policy_swaps_under_udp_load_lose_nothing(tmp_path: Path, unbound: Unbound) -> None:
    """The UDP loop answers a stream of queries while tables are swapped in and out 200 times; each
    old table is closed (unmapped) as soon as set_state returns."""
    engine = new_engine()
    current = make_table(tmp_path, "g1.bin", "casino.lab")
    engine.set_state(current, policies(), 1, [], subnets(STRICT))
    with serving(engine, unbound) as port:
        client = Client(port)
        client.start()
        try:
            for generation in range(2, 202):
                previous, current = current, make_table(tmp_path, f"g{generation}.bin", "casino.lab")
                engine.set_state(current, policies(), generation, [], subnets(STRICT))
                previous.close()
        finally:
            client.done.set()
            client.join(10)
    assert client.wrong == []
    assert client.answered > 100
    stats = engine.stats()
    assert stats["dropped"] >= client.answered and stats["in_flight"] == 0
    assert stats["answered"] == stats["forwarded"] + stats["cached"] and stats["cached"] > 0
