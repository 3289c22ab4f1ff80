"""fastpath.dns against real clients and servers: dig, dnspython and unbound on 127.0.0.1.

Queries are captured from real clients by a small UDP/TCP server in the test; every built response is
decoded by dnspython and served back to dig (and to dnspython's resolver, and through unbound, which
uses 0x20 case randomisation); ECH stripping is checked on dnspython's and unbound's compressed answers."""

from __future__ import annotations

import base64
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.tsig
import pytest
import realclients
from dns.rdtypes.svcbbase import MandatoryParam, ParamKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpath import dns as fd
from fastpath.names import ParseStatus, normalise

OK, MALFORMED, NOT_HANDLED = ParseStatus.OK, ParseStatus.MALFORMED, ParseStatus.NOT_HANDLED
BLOCK_V4, BLOCK_V6 = "192.0.2.80", "2001:db8::80"
# A real ECHConfigList (Cloudflare's public name cloudflare-ech.com), as published in HTTPS records.
ECH = base64.b64decode(
    "AEX+DQBBpQAgACBCQoNYHpNZSBVaQvScK1ZnB1IjNVSt6p2Bv/NGFObVEgAEAAEAAQASY2xvdWRmbGFyZS1lY2guY29tAAA="
)
ECH_TEXT = base64.b64encode(ECH).decode()
HTTPS, SVCB = dns.rdatatype.HTTPS, dns.rdatatype.SVCB

Handler = Callable[[bytes, bool], bytes | None]


# ---------------------------------------------------------------------------------------------------
# A tiny DNS server on 127.0.0.1 (UDP and TCP on one port) that records what real clients send


@dataclass
class Received:
    tcp: bool
    message: bytes


@dataclass
class DnsServer:
    """Records every query message and answers with handler(message, tcp); handler errors are kept for
    the test to raise (a silent server would only show up as a client timeout)."""

    handler: Handler
    received: list[Received] = field(default_factory=list)
    streams: list[bytes] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        for _ in range(20):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen(8)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._serve_udp, self._serve_tcp)]
        for t in self._threads:
            t.start()

    def _answer(self, message: bytes, tcp: bool) -> bytes | None:
        self.received.append(Received(tcp, message))
        try:
            return self.handler(message, tcp)
        except BaseException as e:
            self.errors.append(e)
            return None

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            if select.select([self.udp], [], [], 0.05)[0]:
                data, addr = self.udp.recvfrom(65535)
                reply = self._answer(data, False)
                if reply is not None:
                    self.udp.sendto(reply, addr)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            if select.select([self.tcp], [], [], 0.05)[0]:
                conn, _ = self.tcp.accept()
                threading.Thread(target=self._serve_stream, args=(conn,), daemon=True).start()

    def _serve_stream(self, conn: socket.socket) -> None:
        stream = b""
        buf = b""
        with conn:
            conn.settimeout(3)
            while chunk := self._recv(conn):
                stream += chunk
                buf += chunk
                while (length := fd.frame_length(buf)) is not None:
                    message, buf = buf[2 : 2 + length], buf[2 + length :]
                    reply = self._answer(message, True)
                    if reply is not None:
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
        self.streams.append(stream)

    @staticmethod
    def _recv(conn: socket.socket) -> bytes:
        try:
            return conn.recv(65535)
        except OSError:
            return b""

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def server() -> Iterator[DnsServer]:
    s = DnsServer(lambda message, tcp: fd.refused(fd.parse_query(message)))
    yield s
    s.close()
    if s.errors:
        raise s.errors[0]


def ask(port: int, wire: bytes, timeout: float = 2.0) -> bytes:
    """One UDP exchange with a server on 127.0.0.1 (the role of the filter's upstream client)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(wire, ("127.0.0.1", port))
        return s.recv(65535)


# ---------------------------------------------------------------------------------------------------
# dig, run for real, and its output read back


@dataclass
class Dig:
    text: str
    status: str
    opcode: str
    id: int
    flags: set[str]
    edns: str | None
    sections: dict[str, list[list[str]]]

    def rrs(self, section: str) -> list[list[str]]:
        return self.sections.get(section, [])


def dig(port: int, name: str, qtype: str = "A", *args: str) -> Dig:
    p = realclients.dig(None, "127.0.0.1", name, qtype, "-p", str(port), *args)
    header = re.findall(r"->>HEADER<<- opcode: (\w+), status: (\w+), id: (\d+)", p.stdout)
    assert p.returncode == 0 and header, p.stdout + p.stderr
    opcode, status, qid = header[-1]
    flags = re.findall(r";; flags:([^;]*);", p.stdout)[-1].split()
    edns = re.findall(r"; EDNS: (.*)", p.stdout)
    sections: dict[str, list[list[str]]] = {}
    current = None
    # the last answer printed (after a TC retry over TCP, or a BADVERS retry) is the one that counts
    for line in p.stdout[p.stdout.rfind("->>HEADER<<-") :].splitlines():
        if m := re.match(r";; (\w+) SECTION:", line):
            current = sections.setdefault(m.group(1), [])
        elif not line.strip():
            current = None
        elif current is not None and not line.startswith(";;"):
            current.append(line.lstrip(";").split())
    return Dig(p.stdout, status, opcode, int(qid), set(flags), edns[-1] if edns else None, sections)


# ---------------------------------------------------------------------------------------------------
# Parsing queries sent by real clients


@pytest.mark.parametrize(
    ("name", "qtype", "args", "expect"),
    [
        ("www.example.com", "A", [], dict(qtype=1, has_edns=True, udp_size=1232, dnssec_ok=False, rd=True)),
        ("WwW.ExAmPlE.CoM", "AAAA", [], dict(name="www.example.com", qtype=28)),
        ("example.org", "A", ["+noedns"], dict(has_edns=False, udp_size=0, max_udp_response=512)),
        ("example.org", "DNSKEY", ["+dnssec"], dict(qtype=48, dnssec_ok=True, has_edns=True)),
        ("example.org", "MX", ["+bufsize=4096"], dict(qtype=15, udp_size=4096, max_udp_response=1232)),
        ("example.org", "TXT", ["+bufsize=600"], dict(qtype=16, max_udp_response=600)),
        ("example.org", "HTTPS", ["+norecurse"], dict(qtype=65, rd=False)),
        ("_dns.resolver.arpa", "SVCB", ["+cdflag"], dict(qtype=64, cd=True)),
        ("_dmarc.Example.ORG", "TXT", ["+subnet=192.0.2.0/24", "+nsid", "+padding=128"], dict(qtype=16)),
        ("example.org", "CAA", ["+nocookie", "+edns=0"], dict(qtype=257)),
        ("example.org", "ANY", ["+edns=1"], dict(qtype=255, edns_version=1)),
        (".", "NS", [], dict(name="", qtype=2)),
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61, "A", [], dict(qtype=1)),
        ("tcp.example.net", "A", ["+tcp"], dict(qtype=1)),
    ],
)
def test_parses_dig_queries(server: DnsServer, name: str, qtype: str, args: list[str], expect: dict) -> None:
    out = dig(server.port, name, qtype, *args)
    assert out.status == "REFUSED"  # dig accepted our answer: ID and question matched
    [got] = server.received
    q = fd.parse_query(got.message)
    assert q.status is OK and got.tcp == ("+tcp" in args or qtype == "ANY")  # dig sends ANY over TCP
    assert q.id == out.id and q.opcode == 0 and q.qdcount == 1 and q.qclass == 1
    assert q.name == expect.get("name", normalise(name))
    assert q.question_end == 12 + len(dns.name.from_text(name).to_wire()) + 4
    assert got.message[q.question_end - 4 : q.question_end] == struct.pack("!HH", q.qtype, 1)
    for attr, value in expect.items():
        assert getattr(q, attr) == value, attr


def test_parses_reverse_and_notify_queries(server: DnsServer) -> None:
    server.handler = lambda message, tcp: fd.notimp(fd.parse_query(message))
    out = dig(server.port, "1.2.0.192.IN-ADDR.ARPA", "PTR")
    q = fd.parse_query(server.received[-1].message)
    assert q.status is OK and q.name == "1.2.0.192.in-addr.arpa" and q.qtype == 12
    assert out.status == "NOTIMP"
    out = dig(server.port, "example.com", "SOA", "+opcode=notify", "+norecurse")
    q = fd.parse_query(server.received[-1].message)
    assert q.status is NOT_HANDLED and q.opcode == 4 and q.name == "example.com"
    assert (out.opcode, out.status) == ("NOTIFY", "NOTIMP")
    r = check_response(server.received[-1].message, fd.notimp(q))
    assert r.opcode() == dns.opcode.NOTIFY and r.rcode() == dns.rcode.NOTIMP


def test_parses_dnspython_queries(server: DnsServer) -> None:
    """dnspython as a second real client, over UDP and TCP, with EDNS options of its own."""
    server.handler = lambda message, tcp: fd.nodata(fd.parse_query(message))
    opts = [
        dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8),
        dns.edns.ECSOption("192.0.2.0", 24),
    ]
    q = dns.message.make_query(
        "Mail.Example.NET", "MX", use_edns=0, payload=1400, options=opts, want_dnssec=True
    )
    r = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2)
    assert r.rcode() == dns.rcode.NOERROR and r.question == q.question
    r = dns.query.tcp(
        dns.message.make_query("tcp.example.net", "TXT"), "127.0.0.1", port=server.port, timeout=2
    )
    assert r.rcode() == dns.rcode.NOERROR
    udp, tcp = (fd.parse_query(r.message) for r in server.received)
    assert (udp.name, udp.qtype, udp.udp_size, udp.dnssec_ok, udp.has_edns) == (
        "mail.example.net",
        15,
        1400,
        True,
        True,
    )
    assert (tcp.name, tcp.qtype, tcp.has_edns) == ("tcp.example.net", 16, False)


def test_frame_length_splits_a_real_tcp_stream(server: DnsServer) -> None:
    """dig +keepopen sends several queries on one connection; frame them byte by byte."""
    keep = ("+tcp", "+keepopen")  # dig's options after a name apply to that query only
    dig(server.port, "one.example", "A", *keep, "two.example", "AAAA", *keep, "three.example", "TXT", *keep)
    deadline = time.monotonic() + 3
    while not server.streams and time.monotonic() < deadline:  # the server keeps a stream when it closes
        time.sleep(0.01)
    [stream] = server.streams
    names = []
    buf = b""
    for i in range(len(stream)):
        buf += stream[i : i + 1]
        length = fd.frame_length(buf)
        if length is None:
            continue
        assert len(buf) == 2 + length  # reported as soon as the last byte arrives, not before
        names.append(fd.parse_query(buf[2:]).name)
        buf = b""
    assert names == ["one.example", "two.example", "three.example"] and buf == b""
    assert fd.frame_length(stream) == struct.unpack("!H", stream[:2])[0]
    assert fd.frame_length(b"") is None and fd.frame_length(b"\x00") is None
    assert fd.frame_length(b"\x00\x00") == 0 and fd.frame_length(bytearray(b"\x00\x03abc")) == 3


# ---------------------------------------------------------------------------------------------------
# Built responses, decoded by dnspython and served to dig


def check_response(query_wire: bytes, reply: bytes) -> dns.message.Message:
    """What every response must do: dnspython decodes it as the answer to the query; ID, opcode, RD
    and CD echoed, QR and RA set; the question byte for byte as sent; OPT iff the query had EDNS."""
    query = fd.parse_query(query_wire)
    q = dns.message.from_wire(query_wire)
    r = dns.message.from_wire(reply)
    assert q.is_response(r) and r.id == q.id and r.opcode() == q.opcode()
    assert r.flags & (dns.flags.QR | dns.flags.RA) == dns.flags.QR | dns.flags.RA
    assert r.flags & (dns.flags.RD | dns.flags.CD) == q.flags & (dns.flags.RD | dns.flags.CD)
    assert not r.flags & (dns.flags.AA | dns.flags.AD)
    assert reply[12 : query.question_end] == query_wire[12 : query.question_end]
    assert r.edns == (0 if query.has_edns else -1)
    if query.has_edns:
        assert r.payload == 1232 and bool(r.ednsflags & dns.flags.DO) == query.dnssec_ok
    return r


NEGATIVE_SOA = [".", "60", "IN", "SOA", ".", ".", "1", "0", "0", "0", "60"]


@pytest.mark.parametrize(
    ("build", "qtype", "args", "status", "answer", "authority"),
    [
        (fd.nxdomain, "A", [], "NXDOMAIN", [], [NEGATIVE_SOA]),
        (
            lambda q: fd.nxdomain(q, ttl=5),
            "AAAA",
            ["+noedns"],
            "NXDOMAIN",
            [],
            [[*NEGATIVE_SOA[:1], "5", *NEGATIVE_SOA[2:-1], "5"]],
        ),
        (fd.nodata, "A", ["+dnssec"], "NOERROR", [], [NEGATIVE_SOA]),
        (
            lambda q: fd.block_answer(q, BLOCK_V4, BLOCK_V6),
            "A",
            ["+dnssec", "+cdflag"],
            "NOERROR",
            [["60", "IN", "A", BLOCK_V4]],
            [],
        ),
        (
            lambda q: fd.block_answer(q, BLOCK_V4, BLOCK_V6, ttl=7),
            "AAAA",
            ["+noedns"],
            "NOERROR",
            [["7", "IN", "AAAA", BLOCK_V6]],
            [],
        ),
        (lambda q: fd.block_answer(q, BLOCK_V4, BLOCK_V6), "HTTPS", [], "NOERROR", [], [NEGATIVE_SOA]),
        (lambda q: fd.block_answer(q, None, BLOCK_V6), "A", ["+norecurse"], "NOERROR", [], [NEGATIVE_SOA]),
        (fd.refused, "A", [], "REFUSED", [], []),
        (fd.servfail, "TXT", ["+noedns"], "SERVFAIL", [], []),
        (fd.formerr, "MX", ["+dnssec"], "FORMERR", [], []),
    ],
)
def test_builders_served_to_dig(
    server: DnsServer,
    build: Callable[[fd.Query], bytes],
    qtype: str,
    args: list[str],
    status: str,
    answer: list[list[str]],
    authority: list[list[str]],
) -> None:
    replies: list[tuple[bytes, bytes]] = []

    def handler(message: bytes, tcp: bool) -> bytes:
        replies.append((message, build(fd.parse_query(message))))
        return replies[-1][1]

    server.handler = handler
    name = "BlOcKeD.ExAmPlE.test."  # mixed case must come back exactly as sent
    out = dig(server.port, name, qtype, *args)
    [(message, reply)] = replies
    check_response(message, reply)
    assert out.status == status and out.rrs("QUESTION") == [[name, "IN", qtype]]
    assert {"qr", "ra"} <= out.flags and ("rd" in out.flags) == ("+norecurse" not in args)
    assert ("cd" in out.flags) == ("+cdflag" in args) and "aa" not in out.flags
    assert out.rrs("ANSWER") == [[name, *rr] for rr in answer]
    assert out.rrs("AUTHORITY") == authority
    if "+noedns" in args:
        assert out.edns is None
    else:
        assert out.edns == f"version: 0, flags:{' do' if '+dnssec' in args else ''}; udp: 1232"


def test_badvers_served_to_dig(server: DnsServer) -> None:
    """EDNS version 1 gets BADVERS (RFC 6891), after which dig retries with version 0."""
    server.handler = lambda message, tcp: (
        fd.badvers(q) if (q := fd.parse_query(message)).edns_version else fd.block_answer(q, BLOCK_V4)
    )
    out = dig(server.port, "v1.example", "A", "+edns=1")
    assert "BADVERS" in out.text and out.status == "NOERROR" and out.rrs("ANSWER")[0][-1] == BLOCK_V4
    first = fd.parse_query(server.received[0].message)
    reply = fd.badvers(first)
    assert check_response(server.received[0].message, reply).rcode() == dns.rcode.BADVERS
    with pytest.raises(ValueError):  # BADVERS needs the OPT record to carry its upper bits
        fd.badvers(fd.parse_query(dns.message.make_query("x.example", "A").to_wire()))


def upstream_for(target: str, qtype: int, *rdatas: str, rcode: int = dns.rcode.NOERROR, **kw) -> bytes:
    """An upstream resolver's response for target, encoded (and compressed) by dnspython."""
    r = dns.message.make_response(dns.message.make_query(target, qtype, **kw))
    r.set_rcode(rcode)
    if rdatas:
        r.answer.append(dns.rrset.from_text(target, 300, "IN", qtype, *rdatas))
    return r.to_wire()


def test_cname_answer_served_to_dig(server: DnsServer) -> None:
    target = "restrict.youtube.com."
    server.handler = lambda message, tcp: fd.cname_answer(
        q := fd.parse_query(message),
        target,
        upstream_for(target, q.qtype, "216.239.38.120", "216.239.38.119"),
    )
    out = dig(server.port, "WWW.YouTube.com", "A", "+dnssec")
    assert out.status == "NOERROR" and out.rrs("QUESTION") == [["WWW.YouTube.com.", "IN", "A"]]
    answer = out.rrs("ANSWER")
    assert answer[0] == ["WWW.YouTube.com.", "60", "IN", "CNAME", target]
    assert sorted(answer[1:]) == [[target, "300", "IN", "A", f"216.239.38.{i}"] for i in (119, 120)]
    reply = fd.cname_answer(
        fd.parse_query(server.received[0].message), target, upstream_for(target, 1, "216.239.38.120")
    )
    r = check_response(server.received[0].message, reply)
    assert [rrset.rdtype for rrset in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]


def test_oversized_answer_truncates_and_dig_retries_over_tcp(server: DnsServer) -> None:
    """40 addresses exceed 512 bytes: without EDNS the UDP answer is cut with TC set, dig retries over
    TCP (where the builder gets tcp=True) and receives all of them; with EDNS 1232 they fit."""
    target = "forcesafesearch.google.com."
    addresses = [f"216.239.38.{i}" for i in range(1, 41)]
    server.handler = lambda message, tcp: fd.cname_answer(
        q := fd.parse_query(message), target, upstream_for(target, q.qtype, *addresses), tcp=tcp
    )
    out = dig(server.port, "www.google.co.uk", "A", "+noedns")
    assert "Truncated, retrying in TCP mode" in out.text and "tc" not in out.flags
    answer = [rr[-1] for rr in out.rrs("ANSWER")]
    assert answer[0] == target and sorted(answer[1:]) == sorted(addresses)
    assert [r.tcp for r in server.received] == [False, True]
    udp = fd.cname_answer(
        fd.parse_query(server.received[0].message), target, upstream_for(target, 1, *addresses)
    )
    r = check_response(server.received[0].message, udp)
    assert r.flags & dns.flags.TC and not r.answer and len(udp) <= 512
    out = dig(server.port, "www.google.co.uk", "A", "+noedns", "+ignore")
    assert "tc" in out.flags and out.rrs("ANSWER") == []
    out = dig(server.port, "www.google.co.uk", "A")
    assert "tc" not in out.flags and len(out.rrs("ANSWER")) == 41 and not server.received[-1].tcp


def test_dnspython_resolver_follows_our_answers(server: DnsServer) -> None:
    """dnspython's stub resolver (its own ID and question checks, CNAME chasing, negative answers)."""
    target = "strict.bing.com."
    policy: dict[str, Callable[[fd.Query], bytes]] = {
        "blocked.example": lambda q: fd.block_answer(q, BLOCK_V4, BLOCK_V6),
        "missing.example": fd.nxdomain,
        "nodata.example": fd.nodata,
        "www.bing.com": lambda q: fd.cname_answer(q, target, upstream_for(target, q.qtype, "204.79.197.220")),
    }
    server.handler = lambda message, tcp: policy[(q := fd.parse_query(message)).name](q)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port
    resolver.lifetime = 3
    resolver.cache = None
    assert [a.address for a in resolver.resolve("blocked.example", "A")] == [BLOCK_V4]
    assert [a.address for a in resolver.resolve("blocked.example", "AAAA")] == [BLOCK_V6]
    answer = resolver.resolve("www.bing.com", "A")
    assert answer.canonical_name == dns.name.from_text(target) and answer[0].address == "204.79.197.220"
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.example", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("nodata.example", "A")


# ---------------------------------------------------------------------------------------------------
# unbound as a real peer: upstream server for the filter, and a forwarder in front of it using 0x20

SAFE_TARGET = "forcesafesearch.google.com."


@dataclass
class Unbound:
    port: int
    filter: DnsServer


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    """unbound answers SAFE_TARGET and ech.test from local data (the filter's upstream) and forwards
    every other name to our filter server, randomising the case of each query (use-caps-for-id)."""
    filt = DnsServer(lambda message, tcp: None)
    work = tmp_path_factory.mktemp("unbound")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = work / "unbound.conf"
    conf.write_text(
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
  do-not-query-localhost: no
  use-caps-for-id: yes
  local-zone: "google.com." static
  local-data: "{SAFE_TARGET} 300 IN A 216.239.38.120"
  local-data: "{SAFE_TARGET} 300 IN AAAA 2001:4860:4802:32::78"
  local-zone: "ech.test." static
  local-data: 'ech.test. 300 IN HTTPS 1 . alpn="h2,h3" ech="{ECH_TEXT}" ipv4hint=192.0.2.1'
  local-data: 'ech.test. 300 IN HTTPS 2 svc.ech.test. mandatory=alpn,ech alpn=h2 ech="{ECH_TEXT}" port=8443'
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@{filt.port}
"""
    )
    proc = subprocess.Popen(
        ["unbound", "-d", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        probe = dns.message.make_query(SAFE_TARGET, "A").to_wire()
        for _ in range(100):
            try:
                ask(port, probe, timeout=0.1)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        yield Unbound(port, filt)
    finally:
        proc.terminate()
        proc.wait(5)
        filt.close()
    if filt.errors:
        raise filt.errors[0]


def test_answers_survive_unbound_0x20(unbound: Unbound) -> None:
    """dig -> unbound (0x20) -> a filter built on fastpath.dns -> unbound again for the safe-search
    target. unbound checks each answer's question case against the one it randomised, and chases
    the CNAME itself, which the filter passes upstream as an allowed name."""

    def mini_filter(message: bytes, tcp: bool) -> bytes:
        q = fd.parse_query(message)
        first = q.name.split(".")[0]
        if first == "blocked":
            return fd.block_answer(q, BLOCK_V4, BLOCK_V6)
        if first == "www":
            query = dns.message.make_query(SAFE_TARGET, q.qtype).to_wire()
            return fd.cname_answer(q, SAFE_TARGET, ask(unbound.port, query), tcp=tcp)
        if q.name == SAFE_TARGET.rstrip("."):
            status, answer, _ = fd.strip_ech(ask(unbound.port, message))
            assert status is OK
            return answer
        return fd.nxdomain(q)

    unbound.filter.handler = mini_filter
    run = uuid.uuid4().hex  # fresh names, so unbound's cache does not answer for the filter
    out = dig(unbound.port, f"blocked.{run}.example", "A")
    assert out.status == "NOERROR" and out.rrs("ANSWER")[0][-2:] == ["A", BLOCK_V4]
    out = dig(unbound.port, f"gone.{run}.example", "AAAA")
    assert out.status == "NXDOMAIN" and out.rrs("ANSWER") == []
    out = dig(unbound.port, f"www.{run}.example", "AAAA")
    assert out.status == "NOERROR"
    assert [rr[-2:] for rr in out.rrs("ANSWER")] == [
        ["CNAME", SAFE_TARGET],
        ["AAAA", "2001:4860:4802:32::78"],
    ]
    sent = [r.message for r in unbound.filter.received if run.encode() in r.message.lower()]
    # one query per name (no 0x20 fallback retries), sent in randomised case that we echoed
    assert len(sent) == 3 and all(run.encode() not in m for m in sent)
    assert any(fd.parse_query(r.message).name == SAFE_TARGET.rstrip(".") for r in unbound.filter.received)


def test_strips_ech_from_unbound_answer(server: DnsServer, unbound: Unbound) -> None:
    """The filter forwards dig's HTTPS query to unbound and strips ech from the real answer (two
    HTTPS records, one with ech listed in mandatory) before passing it on."""
    stripped: list[tuple[bytes, bytes]] = []

    def handler(message: bytes, tcp: bool) -> bytes:
        upstream = ask(unbound.port, message)
        status, out, count = fd.strip_ech(upstream)
        assert status is OK and count == 2
        stripped.append((upstream, out))
        return out

    server.handler = handler
    out = dig(server.port, "ech.test", "HTTPS")
    assert out.status == "NOERROR" and sorted(" ".join(rr[4:]) for rr in out.rrs("ANSWER")) == [
        '1 . alpn="h2,h3" ipv4hint=192.0.2.1',
        '2 svc.ech.test. mandatory=alpn alpn="h2" port=8443',
    ]
    [(upstream, out_wire)] = stripped
    assert dns.message.from_wire(out_wire).to_text() == without_ech(upstream).to_text()
    assert len(upstream) - len(out_wire) == 2 * (4 + len(ECH)) + 2


# ---------------------------------------------------------------------------------------------------
# ECH stripping


def strip_params(rd: dns.rdata.Rdata) -> dns.rdata.Rdata:
    params = {k: v for k, v in rd.params.items() if k != ParamKey.ECH}
    if ParamKey.MANDATORY in params:
        keys = tuple(k for k in params[ParamKey.MANDATORY].keys if k != ParamKey.ECH)
        if keys:
            params[ParamKey.MANDATORY] = MandatoryParam(keys)
        else:
            del params[ParamKey.MANDATORY]
    return rd.replace(params=params)


def without_ech(wire: bytes) -> dns.message.Message:
    """What strip_ech should produce, by dnspython: the same message with ech taken out of the
    params of every HTTPS and SVCB record (and out of mandatory)."""
    m = dns.message.from_wire(wire)
    for section in (m.answer, m.authority, m.additional):
        for i, rrset in enumerate(section):
            if rrset.rdtype in (HTTPS, SVCB):
                new = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
                for rd in rrset:
                    new.add(strip_params(rd), rrset.ttl)
                section[i] = new
    return m


def response(
    qname: str, qtype: str, answer: tuple = (), authority: tuple = (), additional: tuple = (), **kw
) -> bytes:
    """A response encoded by dnspython; records are (name, type, rdata, ...) tuples."""
    r = dns.message.make_response(dns.message.make_query(qname, qtype, use_edns=0))
    for section, records in ((r.answer, answer), (r.authority, authority), (r.additional, additional)):
        for name, rtype, *rdatas in records:
            section.append(dns.rrset.from_text(name, 300, "IN", rtype, *rdatas))
    return r.to_wire(**kw)


ECH_PARAM = f'ech="{ECH_TEXT}"'
STRIP_CASES = {
    # Names after the HTTPS record compress into each other (a.b.example.net, then b.example.net as a
    # pointer into it), in owners and in RDATA (CNAME, MX, SOA), in all three sections.
    "compressed-after": (
        response(
            "Example.com.",
            "HTTPS",
            answer=(
                (
                    "example.com.",
                    "HTTPS",
                    f"1 svc.example.net. alpn=h2,h3 {ECH_PARAM} ipv4hint=192.0.2.1 port=8443",
                ),
                ("a.b.example.net.", "A", "192.0.2.1"),
                ("b.example.net.", "AAAA", "2001:db8::1"),
                ("c.example.com.", "CNAME", "x.a.b.example.net."),
                ("example.com.", "MX", "10 mx.b.example.net."),
            ),
            authority=(("example.net.", "SOA", "ns.b.example.net. host.a.b.example.net. 1 2 3 4 5"),),
            additional=(
                ("_dns.resolver.arpa.", "SVCB", f"1 dot.b.example.net. alpn=dot {ECH_PARAM} port=853"),
                ("dot.b.example.net.", "A", "192.0.2.53"),
                ("mx.b.example.net.", "A", "192.0.2.25"),
            ),
        ),
        2,
    ),
    "mandatory": (
        response(
            "example.com.",
            "HTTPS",
            answer=(
                (
                    "example.com.",
                    "HTTPS",
                    f"1 . mandatory=alpn,ech alpn=h2 {ECH_PARAM}",
                    f"2 . mandatory=ech {ECH_PARAM} ipv6hint=2001:db8::1",
                    f"3 . mandatory=ech,ipv4hint {ECH_PARAM} ipv4hint=192.0.2.3",
                    "4 . alpn=h3",
                ),
                ("www.example.com.", "A", "192.0.2.1"),
            ),
        ),
        3,
    ),
    "alias-mode": (
        response("example.com.", "HTTPS", answer=(("example.com.", "HTTPS", "0 pool.example.net."),)),
        0,
    ),
    "no-https": (response("example.com.", "A", answer=(("example.com.", "A", "192.0.2.1"),)), 0),
    "uncompressed": (
        response(
            "example.com.",
            "HTTPS",
            answer=(("example.com.", "HTTPS", f"1 . {ECH_PARAM}"), ("a.example.com.", "A", "192.0.2.1")),
            additional=(("a.example.com.", "SVCB", f"1 . {ECH_PARAM} port=1"),),
            multi=False,
        ),
        2,
    ),
}


@pytest.mark.parametrize("case", STRIP_CASES)
def test_strip_ech(case: str) -> None:
    wire, expected = STRIP_CASES[case]
    status, out, count = fd.strip_ech(wire)
    assert status is OK and count == expected
    assert dns.message.from_wire(out).to_text() == without_ech(wire).to_text()
    if count:
        assert ECH not in out and ECH in wire and len(out) < len(wire)
    else:
        assert out is wire
    assert fd.strip_ech(out) == (OK, out, 0)
    assert fd.strip_ech(bytearray(wire))[1] == out


def test_strip_ech_shifts_pointers_past_the_removed_bytes() -> None:
    """The case above really needs pointer fixing: its later names point past the ech bytes."""
    wire = STRIP_CASES["compressed-after"][0]
    b_example_net = wire.index(b"\x01a\x01b\x07example\x03net") + 2
    assert b_example_net > wire.index(ECH) and struct.pack("!H", 0xC000 | b_example_net) in wire
    out = fd.strip_ech(wire)[1]
    moved = out.index(b"\x01a\x01b\x07example\x03net") + 2
    assert moved == b_example_net - (4 + len(ECH)) and struct.pack("!H", 0xC000 | moved) in out


# ---------------------------------------------------------------------------------------------------
# Hand-made wire messages for what real encoders never send


def labels(*parts: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in parts) + b"\x00"


def ptr(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def rr(owner: bytes, rtype: int, rdata: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, 300, len(rdata)) + rdata


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, qd, an, ns, ar)


def opt(payload: int = 1232, options: bytes = b"") -> bytes:
    return b"\x00" + struct.pack("!HHIH", 41, payload, 0, len(options)) + options


QUESTION = labels("www", "example", "com") + struct.pack("!HH", 1, 1)


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (b"", MALFORMED),
        (header()[:11], MALFORMED),
        (header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", MALFORMED),  # label type 01: > 63
        (header() + labels("a" * 63, "b" * 63, "c" * 63, "d" * 62) + b"\x00\x01\x00\x01", MALFORMED),  # 256
        (header() + labels("a b", "com") + b"\x00\x01\x00\x01", MALFORMED),
        (header() + labels("a.b", "com") + b"\x00\x01\x00\x01", MALFORMED),
        (header() + labels("caf\xe9", "com").replace(b"\xc3\xa9", b"\xe9") + b"\x00\x01\x00\x01", MALFORMED),
        (header() + b"\x03www" + ptr(12) + b"\x00\x01\x00\x01", MALFORMED),  # a pointer loop
        (header() + b"\x03www" + ptr(2) + b"\x00\x01\x00\x01", MALFORMED),  # into the header
        (header() + b"\x03www" + ptr(0x3FFF) + b"\x00\x01\x00\x01", MALFORMED),  # past the end
        (header() + b"\x03www" + b"\xc0", MALFORMED),
        (header() + QUESTION[:-1], MALFORMED),
        (header(ar=2) + QUESTION + opt() + opt(), MALFORMED),  # two OPT records: FORMERR
        (header(ar=1) + QUESTION + opt(options=b"\x00\x0a\x00\x08abc"), MALFORMED),  # option overruns
        (header(ar=1) + QUESTION + labels("x") + struct.pack("!HHIH", 41, 1232, 0, 0), MALFORMED),
        (header(ar=1) + QUESTION, MALFORMED),
        (header(flags=0x8180) + QUESTION, NOT_HANDLED),  # a response
        (header(qd=2) + QUESTION + QUESTION, NOT_HANDLED),
        (header(qd=0, ar=1) + opt(options=b"\x00\x0a\x00\x08abcdefgh"), NOT_HANDLED),  # cookie only
        (header(flags=0x2800) + QUESTION[:-4] + b"\x00\x06\x00\x01", NOT_HANDLED),  # UPDATE, zone SOA
        (header(ar=2) + QUESTION + rr(labels("k"), 250, b"\x00" * 8) + opt(), OK),  # TSIG-like, then OPT
        (header() + QUESTION + b"trailing", OK),
        (header() + labels() + b"\x00\x02\x00\x01", OK),  # the root
    ],
)
def test_parse_query_edge_cases(wire: bytes, status: ParseStatus) -> None:
    q = fd.parse_query(wire)
    assert q.status is status and q.has_header == (len(wire) >= 12)
    if status is OK:
        assert q.name in ("www.example.com", "") and q.has_edns == (b"\x00\x00\x29" in wire)
    if q.has_header:  # FORMERR/NOTIMP can always be sent; with the question only if it was parsed
        r = dns.message.from_wire(fd.formerr(q))
        assert (
            r.id == 0x1234 and r.rcode() == dns.rcode.FORMERR and len(r.question) == int(q.name is not None)
        )
    else:
        with pytest.raises(ValueError):
            fd.formerr(q)
    if status is not OK and q.name is None:
        for build in (fd.nxdomain, fd.nodata, fd.block_answer):
            with pytest.raises(ValueError):
                build(q)


def test_parse_query_with_real_tsig() -> None:
    """A TSIG record (dnspython signs the query) sits after the OPT record and is skipped."""
    q = dns.message.make_query("Signed.Example.", "SOA", use_edns=0, want_dnssec=True)
    q.use_tsig(dns.tsig.Key("key.example.", base64.b64encode(b"k" * 32).decode()))
    wire = q.to_wire()
    parsed = fd.parse_query(wire)
    assert (parsed.status, parsed.name, parsed.dnssec_ok) == (OK, "signed.example", True)
    r = dns.message.from_wire(fd.refused(parsed))  # unsigned: the filter holds no TSIG keys
    assert r.id == q.id and r.question == q.question and r.rcode() == dns.rcode.REFUSED


def test_every_truncation_of_a_real_query_is_malformed() -> None:
    q = dns.message.make_query(
        "www.example.com",
        "A",
        use_edns=0,
        want_dnssec=True,
        options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x07" * 8)],
    )
    wire = q.to_wire()
    assert fd.parse_query(wire).status is OK
    for n in range(len(wire)):
        assert fd.parse_query(wire[:n]).status is MALFORMED, n


def https_message(after: bytes, count: int = 1) -> tuple[bytes, int]:
    """A response: question example.com HTTPS, an HTTPS record whose ech value holds the name
    foo.example.com, then after (count more records). Returns it and the offset of foo in ech."""
    name = b"\x03foo" + ptr(12)
    ech = struct.pack("!H", len(name)) + name  # an ECHConfigList is length-prefixed
    rdata = b"\x00\x01\x00" + struct.pack("!HH", 1, 3) + b"\x02h2" + struct.pack("!HH", 5, len(ech)) + ech
    head = header(an=1 + count, flags=0x8180) + labels("example", "com") + struct.pack("!HH", 65, 1)
    record = rr(ptr(12), 65, rdata)
    return head + record + after, len(head) + len(record) - len(name)


def test_strip_ech_large_tcp_response() -> None:
    """Past offset 0x3FFF names cannot be pointed at; a 30 KB answer still strips correctly."""
    records = [("example.com.", "HTTPS", f"1 . alpn=h2 {ECH_PARAM}")]
    records += [(f"host{i}.zone{i % 7}.example.com.", "A", f"192.0.2.{i % 250}") for i in range(1000)]
    records += [("example.com.", "SVCB", f"2 . {ECH_PARAM} port=8443")]
    wire = response("example.com.", "HTTPS", answer=tuple(records), max_size=65535)
    assert 0x4000 < len(wire) <= 65535
    status, out, count = fd.strip_ech(wire)
    assert (status, count) == (OK, 2)
    assert dns.message.from_wire(out).to_text() == without_ech(wire).to_text()
    assert fd.strip_ech(wire + bytes(70000))[0] is OK  # oversized input: trailing bytes kept, no overrun


def pointer_into(where: str) -> bytes:
    """A response whose last owner name points into something other than a name read before."""
    if where == "ech value":  # bytes that strip_ech removes
        _, foo = https_message(b"")
        return https_message(rr(ptr(foo), 1, b"\x7f\x00\x00\x01"))[0]
    head, _ = https_message(b"")
    svc = len(head)
    first = rr(b"\x03svc" + ptr(12), 1, b"\x7f\x00\x00\x01")
    if where == "opaque RDATA":  # private type 65280, whose RDATA holds a pointer to a name that moves
        blob = svc + len(first) + 2 + 10
        tail = first + rr(ptr(12), 65280, b"\x01x" + ptr(svc)) + rr(ptr(blob), 1, b"\x7f\x00\x00\x02")
        return https_message(tail, count=3)[0]
    # an RR header: RDLENGTH's low byte (4) read as a label whose content includes the CNAME's pointer
    # to svc, which strip_ech rewrites (found by the fuzzer)
    # (then the next record's owner, a pointer to the question, ends that name)
    rdlength = svc + len(first) + 2 + 9
    tail = first + rr(ptr(12), 5, b"\x01x" + ptr(svc)) + rr(ptr(12), 1, b"\x7f\x00\x00\x02")
    return https_message(tail + rr(ptr(rdlength), 1, b"\x7f\x00\x00\x03"), count=4)[0]


@pytest.mark.parametrize("where", ["ech value", "opaque RDATA", "RR header"])
def test_strip_ech_refuses_pointers_into_anything_but_names(where: str) -> None:
    """Decoders follow such pointers (dnspython reads these messages), but once bytes are removed and
    pointers rewritten they could land on different bytes: strip_ech only trusts pointers to names
    it has read, which is all that compressors produce."""
    wire = pointer_into(where)
    assert len(dns.message.from_wire(wire).answer) >= 2
    assert fd.strip_ech(wire) == (MALFORMED, wire, 0)


def test_strip_ech_truncations_and_tc() -> None:
    wire = STRIP_CASES["compressed-after"][0]
    for n in range(len(wire)):
        assert fd.strip_ech(wire[:n])[0] is MALFORMED, n
    assert fd.strip_ech(dns.message.make_query("example.com", "HTTPS").to_wire())[0] is NOT_HANDLED
    # a TC response that stops at a record boundary before its counts are met is passed on stripped
    full = dns.message.from_wire(wire)
    cut = dns.message.from_wire(wire)
    cut.additional = []
    cut.flags |= dns.flags.TC
    partial = bytearray(cut.to_wire())
    partial[10:12] = struct.pack("!H", len(full.additional) + 1)  # the records (and OPT) that did not fit
    status, out, count = fd.strip_ech(bytes(partial))
    assert (status, count) == (OK, 1) and ECH not in out and out[10:12] == partial[10:12]
    out = bytearray(out)
    out[10:12] = partial[10:12] = b"\x00\x01"  # what is there: the OPT record
    assert dns.message.from_wire(bytes(out)).to_text() == without_ech(bytes(partial)).to_text()


def test_cname_answer_copies_chains_and_negative_upstream_answers() -> None:
    client = dns.message.make_query("WWW.Google.CO.UK", "A", use_edns=0)
    query = fd.parse_query(client.to_wire())
    # the target is itself an alias, and upstream compressed the chain against its question
    upstream = dns.message.make_response(dns.message.make_query(SAFE_TARGET, "A"))
    upstream.answer.append(dns.rrset.from_text(SAFE_TARGET, 300, "IN", "CNAME", "safe.l.google.com."))
    upstream.answer.append(dns.rrset.from_text("safe.l.google.com.", 300, "IN", "A", "216.239.38.120"))
    r = check_response(client.to_wire(), fd.cname_answer(query, SAFE_TARGET, upstream.to_wire()))
    assert r.question[0].name.to_text() == "WWW.Google.CO.UK."
    assert r.answer[0] == dns.rrset.from_text("www.google.co.uk.", 60, "IN", "CNAME", SAFE_TARGET)
    assert r.answer[1:] == upstream.answer and r.rcode() == dns.rcode.NOERROR
    # NXDOMAIN and NODATA from upstream: its rcode and its SOA (for negative caching) come through
    for rcode in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR):
        upstream = dns.message.make_response(dns.message.make_query(SAFE_TARGET, "A"))
        upstream.set_rcode(rcode)
        upstream.authority.append(
            dns.rrset.from_text(
                "google.com.", 60, "IN", "SOA", "ns1.google.com. dns-admin.google.com. 1 2 3 4 60"
            )
        )
        r = check_response(client.to_wire(), fd.cname_answer(query, SAFE_TARGET, upstream.to_wire(), ttl=30))
        assert r.rcode() == rcode and r.answer[0].ttl == 30 and len(r.answer) == 1
        assert r.authority == upstream.authority


@pytest.mark.parametrize(
    ("target", "upstream"),
    [
        ("bad name.example", upstream_for(SAFE_TARGET, 1, "192.0.2.1")),
        ("", upstream_for(SAFE_TARGET, 1, "192.0.2.1")),
        ("caf\u00e9.example", upstream_for(SAFE_TARGET, 1, "192.0.2.1")),
        (SAFE_TARGET, upstream_for("other.example.", 1, "192.0.2.1")),  # answers another name
        (SAFE_TARGET, upstream_for(SAFE_TARGET, 28, "2001:db8::1")),  # another type
        (SAFE_TARGET, dns.message.make_query(SAFE_TARGET, "A").to_wire()),  # not a response
        (SAFE_TARGET, upstream_for(SAFE_TARGET, 1, "192.0.2.1")[:-1]),  # truncated
        (SAFE_TARGET, b""),
        (SAFE_TARGET, upstream_for(SAFE_TARGET, 1, rcode=dns.rcode.BADCOOKIE, use_edns=0)),  # no answer
    ],
)
def test_cname_answer_rejects_bad_targets_and_upstreams(target: str, upstream: bytes) -> None:
    query = fd.parse_query(dns.message.make_query("www.google.com", "A").to_wire())
    with pytest.raises(ValueError):
        fd.cname_answer(query, target, upstream)


# ---------------------------------------------------------------------------------------------------
# Properties: any input, and any corruption or truncation of real messages, gives a defined result

COOKIE = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x07" * 8)
QUERY_CORPUS = [
    dns.message.make_query("www.example.com", "A").to_wire(),
    dns.message.make_query(
        "Mixed.Case.Example", "AAAA", use_edns=0, want_dnssec=True, options=[COOKIE]
    ).to_wire(),
    dns.message.make_query(".", "NS", use_edns=None).to_wire(),
    dns.message.make_query(
        "_dmarc.example.org", "TXT", payload=4096, options=[dns.edns.ECSOption("192.0.2.0", 24)]
    ).to_wire(),
    dns.message.make_query("a" * 63 + ".example", "HTTPS").to_wire(),
    header(ar=2) + QUESTION + rr(labels("k"), 250, b"\x00" * 8) + opt(),
]
SAFE_UPSTREAM_CORPUS = [  # an upstream's answers for the safe-search target
    upstream_for(SAFE_TARGET, 1, "216.239.38.120", "216.239.38.119"),
    response(
        SAFE_TARGET,
        "A",
        answer=((SAFE_TARGET, "CNAME", "safe.l.google.com."), ("safe.l.google.com.", "A", "216.239.38.120")),
        authority=(("google.com.", "NS", "ns1.google.com."),),
    ),
    response(SAFE_TARGET, "HTTPS", answer=((SAFE_TARGET, "HTTPS", f"1 . alpn=h2 {ECH_PARAM} port=443"),)),
    response(
        SAFE_TARGET,
        "AAAA",
        answer=(
            (SAFE_TARGET, "AAAA", "2001:4860:4802:32::78"),
            (SAFE_TARGET, "RRSIG", "AAAA 8 3 300 20300101000000 20200101000000 12345 google.com. AAAA"),
        ),
    ),
    response(
        SAFE_TARGET,
        "MX",
        authority=(("google.com.", "SOA", "ns1.google.com. dns-admin.google.com. 1 2 3 4 60"),),
    ),
]
UPSTREAM_CORPUS = [*(wire for wire, _ in STRIP_CASES.values()), *SAFE_UPSTREAM_CORPUS]
# Types whose names strip_ech and cname_answer follow but dnspython keeps opaque (MD, MF, MB, MG, MR,
# MINFO, NXT), and SVCB/HTTPS outside class IN (stripped too): on messages holding them the two are
# not comparable byte for byte.
DNSPYTHON_OPAQUE = {3, 4, 7, 8, 9, 14, 30}


@st.composite
def corrupted(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    wire = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(0, 4))):
        wire[draw(st.integers(0, len(wire) - 1))] = draw(st.integers(0, 255))
    return bytes(wire[: draw(st.integers(0, len(wire)))] if draw(st.booleans()) else wire)


def dnspython_reads(wire: bytes) -> dns.message.Message | None:
    try:
        m = dns.message.from_wire(wire)
    except Exception:
        return None
    types = {rrset.rdtype for section in m.sections for rrset in section}
    svcb_classes = {
        rrset.rdclass for section in m.sections for rrset in section if rrset.rdtype in (HTTPS, SVCB)
    }
    return None if types & DNSPYTHON_OPAQUE or svcb_classes - {dns.rdataclass.IN} else m


def check_query(data: bytes) -> None:
    q = fd.parse_query(data)
    assert q.status in (OK, MALFORMED, NOT_HANDLED) and q.has_header == (len(data) >= 12)
    if q.status is not OK:
        return
    assert q.name is not None and q.name in ("", normalise(q.name)) and 16 < q.question_end <= len(data)
    for build in (fd.nxdomain, fd.nodata, lambda q: fd.block_answer(q, BLOCK_V4, BLOCK_V6), fd.refused):
        reply = build(q)
        assert len(reply) <= q.max_udp_response and reply[:2] == data[:2]
        assert reply[12 : q.question_end] == data[12 : q.question_end]  # the question as sent
        r = dns.message.from_wire(reply)
        assert r.question[0].name == dns.name.from_text(q.name) and r.edns == (0 if q.has_edns else -1)


def check_strip(data: bytes) -> None:
    status, out, count = fd.strip_ech(data)
    assert status in (OK, MALFORMED, NOT_HANDLED)
    if status is not OK or not count:
        assert out == data and count == 0
        return
    assert len(out) < len(data) and fd.strip_ech(out) == (OK, out, 0)
    if dnspython_reads(data):  # whatever dnspython reads in the input, it reads stripped in the output
        assert dns.message.from_wire(out).to_text() == without_ech(data).to_text()


def check_cname(data: bytes) -> None:
    qtype_at = 12 + len(dns.name.from_text(SAFE_TARGET).to_wire())  # the corpus does not compress it
    qtype = struct.unpack("!H", data[qtype_at : qtype_at + 2])[0] if len(data) >= qtype_at + 2 else 1
    client = dns.message.make_query("WWW.Google.com", qtype).to_wire()
    query = fd.parse_query(client)
    try:
        reply = fd.cname_answer(query, SAFE_TARGET, data, tcp=True)
    except ValueError:
        return
    assert reply[:2] == client[:2] and reply[12 : query.question_end] == client[12 : query.question_end]
    upstream = dnspython_reads(data)
    if upstream is None:  # RDATA is copied as it came: what dnspython refuses there, it refuses here
        return
    r = check_response(client, reply)
    assert r.answer[0] == dns.rrset.from_text("www.google.com.", 60, "IN", "CNAME", SAFE_TARGET)
    assert r.answer[1:] == upstream.answer and r.authority == upstream.authority
    assert r.rcode() == upstream.rcode() and bool(r.flags & dns.flags.TC) == bool(
        upstream.flags & dns.flags.TC
    )


FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=600) | corrupted(QUERY_CORPUS))
def test_parse_query_any_input(data: bytes) -> None:
    check_query(data)


@FAST
@given(st.binary(max_size=600) | corrupted(UPSTREAM_CORPUS))
def test_strip_ech_any_input(data: bytes) -> None:
    check_strip(data)


@FAST
@given(corrupted(SAFE_UPSTREAM_CORPUS))
def test_cname_answer_any_upstream(data: bytes) -> None:
    check_cname(data)


def check_frame(data: bytes) -> None:
    length = fd.frame_length(data)
    declared = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
    complete = declared is not None and len(data) >= 2 + declared
    assert (length is not None) == complete and (length is None or length == declared)


@FAST
@given(st.binary(max_size=40))
def test_frame_length_any_input(data: bytes) -> None:
    check_frame(data)


def test_fuzz_harness_runs_clean(tmp_path: Path) -> None:
    """tests/fuzz/fuzz_dns.py, briefly (run it longer by hand: -atheris_runs=20000 or more)."""
    harness = Path(__file__).parent / "fuzz" / "fuzz_dns.py"
    p = subprocess.run(
        [sys.executable, str(harness), "-atheris_runs=1500", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and "Done 1500 in" in p.stderr, p.stderr[-3000:]


def test_trailing_bytes_are_not_part_of_the_message() -> None:
    """A filter forwards only what it parsed: bytes after the last record could smuggle anything."""
    query = dns.message.make_query("trail.example.org", "A", use_edns=0).to_wire()
    parsed = fd.parse_query(query + b"\x00smuggled")
    assert parsed.status == ParseStatus.OK and parsed.message_end == len(query)
