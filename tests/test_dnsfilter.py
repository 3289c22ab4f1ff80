"""The DNS filter process, for real: `appliance dnsfilter` in a gateway namespace in front of the
appliance's own unbound (`appliance resolver`), which recurses from a lab root served by another
unbound. Clients in their own namespaces on two LAN interfaces (students, staff) ask with dig over UDP
and TCP, IPv4 and IPv6, directly and through the appliance's nftables redirect; dnsperf loads it
while a new policy is applied; block events are read back from SQLite."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from netns import Netns, NetnsLab, netns_lab

from appliance import audit, config, events
from appliance.dataplane import ruleset
from appliance.lab import unbound as lab_unbound
from appliance.lists import catalogue, importer
from appliance.policy import generations, inputs, rules
from appliance.policy.rules import Rule
from appliance.store import Store

pytestmark = pytest.mark.netns

ROOT_ADDR = "10.53.0.1"
BLOCK_V4, BLOCK_V6 = "192.0.2.99", "2001:db8::99"
# A real ECHConfigList (Cloudflare's, public name cloudflare-ech.com), as published in HTTPS records.
ECH = "AEX+DQBBpQAgACBCQoNYHpNZSBVaQvScK1ZnB1IjNVSt6p2Bv/NGFObVEgAEAAEAAQASY2xvdWRmbGFyZS1lY2guY29tAAA="
ROOT_ZONE = f"""\
$TTL 300
.                             IN SOA a.root.lab. admin.lab. 1 3600 600 86400 300
.                             IN NS a.root.lab.
a.root.lab.                   IN A 10.53.0.1
www.allowed.lab.             IN A 192.0.2.10
www.allowed.lab.             IN AAAA 2001:db8::10
www.reload.lab.              IN A 192.0.2.11
casino.lab.                  IN A 192.0.2.20
www.casino.lab.              IN A 192.0.2.20
chat.social.lab.             IN A 192.0.2.30
www.google.com.               IN A 192.0.2.50
www.google.co.uk.             IN A 192.0.2.50
forcesafesearch.google.com.   IN A 216.239.38.120
forcesafesearch.google.com.   IN AAAA 2001:4860:4802:32::78
www.youtube.com.              IN A 192.0.2.60
restrict.youtube.com.         IN A 192.0.2.61
www.bing.com.                 IN A 192.0.2.70
strict.bing.com.              IN A 192.0.2.71
duckduckgo.com.               IN A 192.0.2.72
safe.duckduckgo.com.          IN A 192.0.2.73
ech.lab.                     IN HTTPS 1 . alpn="h2,h3" ech="{ECH}" ipv4hint=192.0.2.90
use-application-dns.net.      IN A 192.0.2.80
mask.icloud.com.              IN A 192.0.2.81
mask-h2.icloud.com.           IN A 192.0.2.81
"""
CONFIG = """\
[appliance]
name = "DNS filter test"
state_dir = "state"

[wan]
interface = "wan0"

[dns]
upstream = "{upstream}"
root_hints = "root.hints"
block_ipv4 = "{block4}"
block_ipv6 = "{block6}"
block_ttl = 30

# Staff first: where subnets overlap, the subnet fallback would pick staff, the interface students.
[[lan]]
interface = "lan1"
group = "staff"
subnets = ["10.20.0.0/24", "fd00:20::/64", "10.20.5.0/24", "10.10.0.200/32"]

[[lan]]
interface = "lan0"
group = "students"
subnets = ["10.10.0.0/24", "fd00:10::/64"]

[groups.students]
fail = "open"

[groups.staff]
fail = "open"
"""


@dataclass
class Answer:
    status: str
    flags: list[str]
    records: list[tuple[str, str, str]]  # (owner, type, data) of the answer section

    def data(self, rtype: str) -> list[str]:
        return [d for _, t, d in self.records if t == rtype]


def dig(ns: Netns, server: str, name: str, qtype: str = "A", *extra: str) -> Answer:
    out = ns.run("dig", "+time=3", "+tries=1", "+nocookie", f"@{server}", name, qtype, *extra, check=False)
    header = re.findall(r"->>HEADER<<- opcode: \w+, status: (\w+)", out.stdout)
    assert out.returncode == 0 and header, out.stdout + out.stderr
    flags = re.findall(r";; flags:([^;]*);", out.stdout)[-1].split()
    records = []
    section = out.stdout[out.stdout.rfind(";; ANSWER SECTION:") :] if "ANSWER SECTION" in out.stdout else ""
    for line in section.splitlines()[1:]:
        if not line.strip():
            break
        owner, _ttl, _cls, rtype, data = line.split(None, 4)
        records.append((owner.rstrip("."), rtype, data))
    return Answer(header[-1], flags, records)


def exchange(ns: Netns, server: str, payload: bytes, tcp: bool = False) -> bytes | None:
    """Sends raw bytes (one UDP datagram, or one TCP-framed message) and returns the reply, or None."""
    code = f"""
import socket, struct, sys
family = socket.AF_INET6 if ":" in {server!r} else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM if {tcp} else socket.SOCK_DGRAM)
s.settimeout(1.5)
data = bytes.fromhex({payload.hex()!r})
try:
    if {tcp}:
        s.connect(({server!r}, 53))
        s.sendall(struct.pack("!H", len(data)) + data)
        n = struct.unpack("!H", s.recv(2))[0]
        reply = b""
        while len(reply) < n:
            reply += s.recv(n - len(reply))
    else:
        s.sendto(data, ({server!r}, 53))
        reply = s.recv(65535)
    print(reply.hex())
except (TimeoutError, ConnectionError, struct.error):
    print("none")
"""
    out = ns.run(sys.executable, "-c", code).stdout.strip()
    return None if out == "none" else bytes.fromhex(out)


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


def _mac(ns: Netns, ifname: str) -> str:
    return json.loads(ns.run("ip", "-j", "link", "show", ifname).stdout)[0]["address"]


def _answers(ns: Netns, server: str) -> bool:
    out = ns.run("dig", "+time=1", "+tries=1", f"@{server}", "www.allowed.lab", check=False).stdout
    return "192.0.2.10" in out


@dataclass
class World:
    lab: NetnsLab
    gw: Netns
    students: Netns
    staff: Netns
    routed: Netns
    dir: Path
    config_path: Path

    @property
    def state(self) -> Path:
        return self.dir / "state"


def write_policy(state: Path, lists_dir: Path) -> None:
    """A real policy: two lists imported and compiled. The trust defaults block gambling for both
    groups and social media for students only."""
    (lists_dir / "casinos.txt").write_text("casino.lab\n")
    (lists_dir / "social.txt").write_text("social.lab\n")
    with Store(state) as store:
        with audit.change(store, "test", "setup") as ch:
            catalogue.add(ch, "casinos", "plain", "gambling", str(lists_dir / "casinos.txt"), None)
            catalogue.add(ch, "social", "plain", "social_media", str(lists_dir / "social.txt"), None)
        for name in ("casinos", "social"):
            assert importer.update(store, name, "test", "setup").error is None
        generations.apply(store, inputs.from_store(store, datetime.now(UTC)), "test", "setup")


def start_filter(ns: Netns, config_path: Path, log: Path, *args: str) -> subprocess.Popen[str]:
    return ns.popen(
        sys.executable, "-m", "appliance.cli", "dnsfilter", "--config", str(config_path), *args,
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("dnsfilter")
    with netns_lab() as lab:
        names = ("internet", "gw", "students", "staff", "routed")
        internet, gw, students, staff, routed = (lab.namespace(n) for n in names)
        lab.link(gw, "wan0", internet, "eth0")
        lab.link(gw, "lan0", students, "eth0")
        lab.link(gw, "lan1", staff, "eth0")
        lab.link(gw, "core0", routed, "eth0")
        internet.addr("eth0", f"{ROOT_ADDR}/24")
        gw.addr("wan0", "10.53.0.2/24")
        gw.addr("lan0", "10.10.0.1/24", "fd00:10::1/64")
        gw.addr("lan1", "10.20.0.1/24", "fd00:20::1/64")
        gw.addr("core0", "10.99.0.1/24")
        students.addr("eth0", "10.10.0.2/24", "fd00:10::2/64", "10.10.0.200/24")
        staff.addr("eth0", "10.20.0.2/24", "fd00:20::2/64")
        # A routed staff subnet behind a router on core0, which is no [[lan]] interface.
        routed.addr("eth0", "10.99.0.2/24")
        routed.ip("addr", "add", "10.20.5.7/32", "dev", "lo")
        gw.ip("route", "add", "10.20.5.0/24", "via", "10.99.0.2")
        for client, gateways in (
            (students, ("10.10.0.1", "fd00:10::1")),
            (staff, ("10.20.0.1", "fd00:20::1")),
        ):
            client.route_default(*gateways)
        routed.route_default("10.99.0.1")

        (work / "root.zone").write_text(ROOT_ZONE)
        (work / "root.conf").write_text(lab_unbound.nameserver(work, [ROOT_ADDR], {".": work / "root.zone"}))
        internet.popen("unbound", "-d", "-c", str(work / "root.conf"))
        internet.wait_for_port(53, "udp")
        (work / "root.hints").write_text(
            f".  3600000 IN NS a.root.lab.\na.root.lab. 3600000 IN A {ROOT_ADDR}\n"
        )
        config_path = work / "appliance.toml"
        config_path.write_text(CONFIG.format(upstream="127.0.0.1:5353", block4=BLOCK_V4, block6=BLOCK_V6))
        gw.popen(sys.executable, "-m", "appliance.cli", "resolver", "--config", str(config_path))
        gw.wait_for_port(5353, "udp")
        (work / "lists").mkdir()
        write_policy(work / "state", work / "lists")
        start_filter(gw, config_path, work / "filter.log")
        wait_until(lambda: _answers(students, "10.10.0.1"), what="the filter to answer")
        yield World(lab, gw, students, staff, routed, work, config_path)
        gw.stop_processes()
        log = (work / "filter.log").read_text()
        assert "Traceback" not in log, log


def test_allowed_names_resolve_through_unbound(world: World) -> None:
    for server in ("10.10.0.1", "fd00:10::1"):
        for transport in ((), ("+tcp",)):
            answer = dig(world.students, server, "www.allowed.lab", "A", *transport)
            assert (answer.status, answer.data("A")) == ("NOERROR", ["192.0.2.10"]), (server, transport)
            answer = dig(world.students, server, "www.allowed.lab", "AAAA", *transport)
            assert answer.data("AAAA") == ["2001:db8::10"], (server, transport)
            assert "ra" in answer.flags and "aa" not in answer.flags


def test_blocked_names_get_the_block_page(world: World) -> None:
    for server in ("10.20.0.1", "fd00:20::1"):
        for transport in ((), ("+tcp",)):
            answer = dig(world.staff, server, "www.casino.lab", "A", *transport)
            assert (answer.status, answer.data("A")) == ("NOERROR", [BLOCK_V4]), (server, transport)
            assert dig(world.staff, server, "casino.lab", "AAAA", *transport).data("AAAA") == [BLOCK_V6]
            # other types: NODATA, never the real records
            nodata = dig(world.staff, server, "casino.lab", "TXT", *transport)
            assert (nodata.status, nodata.records) == ("NOERROR", [])
    # the resolver itself knows the real address: the filter made the difference
    assert dig(world.gw, "127.0.0.1", "casino.lab", "A", "-p", "5353").data("A") == ["192.0.2.20"]


def test_group_comes_from_the_interface_then_the_subnet(world: World) -> None:
    """Social media is blocked for students, not staff; each client gets its own group's answer."""
    for server, transport in (("10.10.0.1", ()), ("fd00:10::1", ()), ("10.10.0.1", ("+tcp",))):
        assert dig(world.students, server, "chat.social.lab", "A", *transport).data("A") == [BLOCK_V4]
    for server, transport in (("10.20.0.1", ()), ("fd00:20::1", ("+tcp",))):
        assert dig(world.staff, server, "chat.social.lab", "A", *transport).data("A") == ["192.0.2.30"]
    # 10.10.0.200 is listed under staff too, but it asks on lan0: the students' interface decides
    for transport in ((), ("+tcp",)):
        answer = dig(world.students, "10.10.0.1", "chat.social.lab", "A", "-b", "10.10.0.200", *transport)
        assert answer.data("A") == [BLOCK_V4]
    # a routed staff client arrives on core0, no LAN interface: its subnet places it with staff
    for transport in ((), ("+tcp",)):
        answer = dig(world.routed, "10.99.0.1", "chat.social.lab", "A", "-b", "10.20.5.7", *transport)
        assert answer.data("A") == ["192.0.2.30"]
    # anyone else (the appliance itself on loopback) is refused: no open resolver
    assert dig(world.gw, "127.0.0.1", "www.allowed.lab").status == "REFUSED"


def test_redirected_queries_keep_their_interface(world: World) -> None:
    """The appliance's own nftables table redirects DNS to any resolver to the filter; the answer
    comes back from the address the client asked, and the group still follows the interface."""
    cfg = config.load(world.config_path)
    table = {"nftables": ruleset.build(cfg, native_queue=False)}
    world.gw.run("nft", "-j", "-f", "-", input=json.dumps(table))
    try:
        for server in ("9.9.9.9", "2620:fe::fe"):
            for transport in ((), ("+tcp",)):
                students = dig(world.students, server, "chat.social.lab", "A", *transport)
                staff = dig(world.staff, server, "chat.social.lab", "A", *transport)
                assert (students.data("A"), staff.data("A")) == ([BLOCK_V4], ["192.0.2.30"])
                allowed = dig(world.staff, server, "www.allowed.lab", "A", *transport)
                assert allowed.data("A") == ["192.0.2.10"]
    finally:
        world.gw.run("nft", "delete", "table", ruleset.FAMILY, ruleset.TABLE)


@pytest.mark.parametrize(
    ("name", "target", "address"),
    [
        ("www.google.com", "forcesafesearch.google.com", "216.239.38.120"),
        ("www.google.co.uk", "forcesafesearch.google.com", "216.239.38.120"),
        ("www.youtube.com", "restrict.youtube.com", "192.0.2.61"),
        ("www.bing.com", "strict.bing.com", "192.0.2.71"),
        ("duckduckgo.com", "safe.duckduckgo.com", "192.0.2.73"),
    ],
)
def test_safe_search_is_a_cname_and_the_targets_records(
    world: World, name: str, target: str, address: str
) -> None:
    for server, transport in (("10.20.0.1", ()), ("fd00:20::1", ()), ("10.20.0.1", ("+tcp",))):
        answer = dig(world.staff, server, name, "A", *transport)
        assert answer.status == "NOERROR"
        assert answer.records == [(name, "CNAME", f"{target}."), (target, "A", address)], (server, transport)
    aaaa = dig(world.staff, "10.20.0.1", "www.google.com", "AAAA")
    assert aaaa.data("AAAA") == ["2001:4860:4802:32::78"]


def test_ech_is_stripped_from_https_records(world: World) -> None:
    direct = dig(world.gw, "127.0.0.1", "ech.lab", "HTTPS", "-p", "5353")
    assert f"ech={ECH}" in direct.data("HTTPS")[0]  # the zone really serves it
    for server, transport in (("10.10.0.1", ()), ("fd00:10::1", ("+tcp",))):
        answer = dig(world.students, server, "ech.lab", "HTTPS", *transport)
        assert answer.data("HTTPS") == ['1 . alpn="h2,h3" ipv4hint=192.0.2.90'], (server, transport)


def test_doh_canary_and_private_relay_are_negative(world: World) -> None:
    for name in ("use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"):
        assert dig(world.gw, "127.0.0.1", name, "A", "-p", "5353").data("A")  # they exist upstream
        for server, transport in (("10.10.0.1", ()), ("fd00:20::1", ("+tcp",))):
            client = world.students if server.startswith("10.10") else world.staff
            answer = dig(client, server, name, "A", *transport)
            assert (answer.status, answer.records) == ("NXDOMAIN", []), (name, server)


def _query(name: str, qtype: int = 1, qid: int = 0x1234) -> bytes:
    header = qid.to_bytes(2, "big") + bytes.fromhex("0100 0001 0000 0000 0000")
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return header + labels + b"\x00" + qtype.to_bytes(2, "big") + b"\x00\x01"


def test_malformed_queries_get_formerr_or_nothing(world: World) -> None:
    good = _query("www.allowed.lab")
    cases = {
        "truncated question": good[:-3],
        "label runs past the end": good[:12] + b"\x3fwww" + good[-4:],
        "compression loop": good[:12] + b"\xc0\x0c" + good[-4:],
        "bad name byte": good[:12] + b"\x03w w\x00" + good[-4:],
        "two OPT records": good[:11] + b"\x02" + good[12:] + bytes.fromhex("0000 2904 d000 0000 0000 00") * 2,
    }
    for what, payload in cases.items():
        for tcp in (False, True):
            reply = exchange(world.students, "10.10.0.1", payload, tcp)
            assert reply is not None and reply[:2] == payload[:2], what
            assert reply[2] & 0x80 and reply[3] & 0x0F == 1, f"{what}: not FORMERR"
            assert int.from_bytes(reply[6:12], "big") == 0, f"{what}: records in a FORMERR"
    # no header to answer, or a response (no reflection): nothing at all
    assert exchange(world.students, "10.10.0.1", b"\x12\x34\x01") is None
    response = bytearray(_query("www.allowed.lab"))
    response[2] |= 0x80
    assert exchange(world.students, "10.10.0.1", bytes(response)) is None
    # another opcode (UPDATE) is NOTIMP, never forwarded
    update = bytearray(good)
    update[2] = 0x28
    reply = exchange(world.students, "10.10.0.1", bytes(update))
    assert reply is not None and reply[3] & 0x0F == 4
    # a blocked name stays blocked however it is spelled
    for spelling in ("CASINO.lab", "www.CaSiNo.LAB"):
        reply = exchange(world.staff, "10.20.0.1", _query(spelling))
        assert reply is not None and reply.endswith(bytes(int(x) for x in BLOCK_V4.split(".")))
    # and the filter is still well after all that
    assert dig(world.students, "10.10.0.1", "www.allowed.lab").data("A") == ["192.0.2.10"]


def test_block_events_land_in_sqlite(world: World) -> None:
    start = datetime.now(UTC)
    dig(world.students, "10.10.0.1", "www.casino.lab")
    dig(world.students, "fd00:10::1", "chat.social.lab", "AAAA", "+tcp")

    def recorded() -> list[events.BlockEvent]:
        with Store(world.state) as store:
            return events.search(store, events.Query(start=start))

    wait_until(lambda: len(recorded()) >= 2, what="two block events")
    by_name = {e.name: e for e in recorded()}
    casino, social = by_name["www.casino.lab"], by_name["chat.social.lab"]
    assert (casino.client_ip, casino.group, casino.category, casino.layer, casino.rule) == (
        "10.10.0.2", "students", "gambling", "dns", "CATEGORY",
    )  # fmt: skip
    assert casino.mac == _mac(world.students, "eth0")
    assert (social.client_ip, social.group, social.category) == ("fd00:10::2", "students", "social_media")
    assert start <= casino.ts <= datetime.now(UTC)
    with Store(world.state) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_policy_reload_under_load_loses_no_query(world: World) -> None:
    """dnsperf asks for www.reload.lab (among allowed names) while a deny rule for it is applied:
    every query is answered, by the old policy and then the new one."""
    queries = world.dir / "reload.queries"
    queries.write_text("www.reload.lab A\nwww.allowed.lab A\nwww.allowed.lab AAAA\n")
    assert dig(world.students, "10.10.0.1", "www.reload.lab").data("A") == ["192.0.2.11"]
    perf = world.students.popen(
        "dnsperf", "-s", "10.10.0.1", "-d", str(queries), "-c", "4", "-l", "6", "-Q", "3000", "-t", "2",
    )  # fmt: skip
    time.sleep(2)
    with Store(world.state) as store:
        with audit.change(store, "test", "reload") as ch:
            rules.add(ch, Rule("students", "deny", "name", "www.reload.lab", "reload", "test", ch.now))
        generations.apply(store, inputs.from_store(store, datetime.now(UTC)), "test", "reload")
    wait_until(lambda: dig(world.students, "10.10.0.1", "www.reload.lab").data("A") == [BLOCK_V4], 5)
    out, _ = perf.communicate(timeout=30)
    sent = int(re.search(r"Queries sent:\s+(\d+)", out).group(1))
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    assert sent > 10000 and completed == sent, out
    assert re.search(r"Queries lost:\s+0 ", out), out
    assert dig(world.staff, "10.20.0.1", "www.reload.lab").data("A") == ["192.0.2.11"]  # students only


def test_upstream_timeout_gives_servfail(world: World) -> None:
    """A second filter whose resolver takes queries (UDP and TCP) and never answers."""
    dead = world.lab.namespace("dead")
    dead.popen(sys.executable, "-c", (
        "import socket, time\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', 5399))\n"
        "t = socket.socket(); t.bind(('127.0.0.1', 5399)); t.listen(16)\n"
        "time.sleep(3600)\n"
    ))  # fmt: skip
    path = world.dir / "dead.toml"
    text = CONFIG.format(upstream="127.0.0.1:5399", block4=BLOCK_V4, block6=BLOCK_V6)
    # loopback as the staff LAN, so dig on 127.0.0.1 is a client
    path.write_text(text.replace('state_dir = "state"', 'state_dir = "dead-state"').replace('"lan1"', '"lo"'))
    start_filter(dead, path, world.dir / "dead.log", "--upstream-timeout", "1.0")
    dead.wait_for_port(53, "tcp")
    wait_until(lambda: "serving DNS" in (world.dir / "dead.log").read_text(), what="the second filter")
    for transport in ((), ("+tcp",)):
        began = time.monotonic()
        answer = dig(dead, "127.0.0.1", "www.allowed.lab", "A", *transport)
        took = time.monotonic() - began
        assert answer.status == "SERVFAIL", transport
        assert 0.9 < took < 2.5, took
    dead.stop_processes()
    assert "Traceback" not in (world.dir / "dead.log").read_text()


def test_a_flood_of_blocks_is_answered_and_its_excess_counted(world: World) -> None:
    """Far more blocks a second than the event ring holds: every query is still answered, the
    writer records what the ring held, and the rest is counted in the log, not silently lost."""
    queries = world.dir / "flood.queries"
    queries.write_text("".join(f"n{i}.casino.lab A\n" for i in range(20000)))
    start = datetime.now(UTC)
    out = world.students.run("dnsperf", "-s", "10.10.0.1", "-d", str(queries), "-c", "4", "-l", "3").stdout
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    assert re.search(r"Queries lost:\s+0 ", out) and completed > 3 * 4096, out
    log = world.dir / "filter.log"

    def dropped() -> int:
        return sum(int(n) for n in re.findall(r"block event ring full: (\d+) events", log.read_text()))

    def recorded() -> int:
        with Store(world.state) as store:
            return events.count(store, events.Query(name="casino.lab", start=start))

    wait_until(lambda: recorded() + dropped() == completed, what="every block recorded or counted")
    assert recorded() > 0 and dropped() > 0
