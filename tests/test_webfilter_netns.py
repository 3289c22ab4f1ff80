"""The web filter (`appliance webfilter`) on a real gateway: `appliance run` applies the ruleset in a
gateway namespace, the consumer serves its NFQUEUEs, and real clients (curl, openssl, chromium,
aioquic) in one namespace per group talk to real servers (Python ssl and asyncio, aioquic) behind it.

    students (lan_st, fail closed) --\
    staff    (lan_sf, fail open)   ---  gateway -- wan0 -- inet (HTTP, HTTPS and HTTP/3 on WEB4, WEB6)
    exams    (lan_ex, allowlist)   --/

The policy: blocked.test is on a gambling list (blocked for every group here), pages.test has a page on
the IWF list, exam-board.test is allowed for exams by a school rule. Clients have segmentation offloads
off, so a post-quantum ClientHello crosses the gateway as several TCP segments, as on a real LAN.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import realclients as rc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from netns import THREE_GROUPS, Netns, netns_lab

from appliance import audit, events, webfilter
from appliance.dataplane import run as dataplane_run
from appliance.lab import pki
from appliance.lists import catalogue, importer
from appliance.policy import generations, inputs, rules
from appliance.policy.rules import Rule
from appliance.store import Store

pytestmark = pytest.mark.netns

WEB4, WEB6 = "203.0.113.80", "2001:db8:ff::80"
NAMES = ("allowed.test", "www.allowed.test", "blocked.test", "pages.test", "exam-board.test")
PACKETS_PER_FLOW = 6
QUEUES = (0, 1)
RESTART_LIMIT = 2.0  # seconds from restarting the consumer until service is back

CONFIG = """
[appliance]
name = "Web Filter Test Academy"
state_dir = "{state}"

[wan]
interface = "wan0"

[dns]
forwarders = ["203.0.113.53"]
dnssec = false

[fastpath]
queue = 0
queue_count = 2
packets_per_flow = {packets}

{lans}"""

# HTTP (80), HTTPS (443, Python ssl with the lab's SNI-recording context) and HTTP/3 (UDP 443, the
# lab's aioquic server) on each address. Each request is logged as "PROTOCOL CLIENT -> SERVER
# host=HOST/PATH status=200"; a request body is read and its length answered.
SERVER = r"""
import asyncio, sys
from functools import partial
from aioquic.asyncio import serve
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from appliance.lab.webserver import H3Server, log, tls_context

async def handle(protocol, reader, writer):
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    fields = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    host = fields.get("host", "")
    received = len(await reader.readexactly(int(fields.get("content-length", 0))))
    ssl_object = writer.get_extra_info("ssl_object")
    sni = getattr(ssl_object, "lab_sni", "") if ssl_object else ""
    body = f"site {host}{path} {protocol} sni={sni} received={received}\n".encode()
    client, server = writer.get_extra_info("peername")[0], writer.get_extra_info("sockname")[0]
    log(protocol, client, server, host + path, 200)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    try:
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    except ConnectionError:
        pass

async def main(cert, key, names, *addresses):
    ctx = tls_context(cert, key)
    quic = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    quic.load_cert_chain(cert, key)
    for addr in addresses:
        await asyncio.start_server(partial(handle, "http"), addr, 80)
        await asyncio.start_server(partial(handle, "https"), addr, 443, ssl=ctx)
        h3 = partial(H3Server, names=frozenset(names.split(",")), server=addr)
        await serve(addr, 443, configuration=quic, create_protocol=h3)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""

# One HTTP/3 GET with aioquic (the lab's client protocol), to an address with a chosen SNI.
H3_GET = r"""
import asyncio, ssl, sys
from aioquic.asyncio import connect
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from appliance.lab.h3client import H3Client

async def main(name, address):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=name, idle_timeout=3)
    config.verify_mode = ssl.CERT_NONE
    async with asyncio.timeout(3):
        async with connect(address, 443, configuration=config, create_protocol=H3Client) as proto:
            status, body = await proto.get(name)
    print(status, body.decode())

asyncio.run(main(*sys.argv[1:]))
"""


@dataclass
class Gateway:
    gw: Netns
    clients: dict[str, Netns]
    state: Path
    config: Path
    run: subprocess.Popen[str]
    server_log: list[str]
    consumer: subprocess.Popen[str] | None  # ours, when `appliance run` does not supervise it
    mac: dict[str, str] = field(default_factory=dict)
    spki: str = ""

    def served(self, needle: str) -> bool:
        return any(needle in line for line in list(self.server_log))

    def consumer_pids(self) -> list[int]:
        pids = subprocess.run(["ip", "netns", "pids", self.gw.name], capture_output=True, text=True).stdout
        found = []
        for pid in pids.split():
            with contextlib.suppress(FileNotFoundError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"webfilter" in argv and b"appliance.cli" in argv:
                    found.append(int(pid))
        return found

    def queues(self) -> dict[int, dict[str, int]]:
        """Per bound queue: packets waiting, dropped when full, and queued so far (id_sequence)."""
        out = {}
        for line in self.gw.run("cat", webfilter.PROC_QUEUES.as_posix()).stdout.splitlines():
            f = line.split()
            out[int(f[0])] = {"waiting": int(f[2]), "dropped": int(f[5]), "queued": int(f[7])}
        return out

    def queued(self) -> int:
        return sum(q["queued"] for q in self.queues().values())

    def wait_bound(self, timeout: float = 15) -> None:
        """Waits as `appliance run` would for its child: the readiness test of webfilter.service, on the
        gateway's queues (the /proc/net view of a process inside its namespace)."""
        proc = Path(f"/proc/{self.run.pid}/net/netfilter/nfnetlink_queue")
        deadline = time.monotonic() + timeout
        while not set(QUEUES) <= webfilter.bound_queues(proc):
            assert time.monotonic() < deadline, "the web filter did not bind its queues"
            time.sleep(0.02)


def curl(client: Netns, url: str, name: str, address: str, *extra: str, timeout: float = 4):
    port = 443 if url.startswith("https") else 80
    return rc.curl(client.name, url, name, address, port, *extra, timeout=timeout)


def h3_get(client: Netns, name: str, address: str) -> subprocess.CompletedProcess[str]:
    return client.run(sys.executable, "-c", H3_GET, name, address, check=False, timeout=15)


def spki_pin(cert: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what chromium pins a certificate by."""
    pem = x509.load_pem_x509_certificate(cert.read_bytes())
    spki = pem.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def timed(fn, *args, **kwargs):
    start = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - start


def add_rule(store: Store, group: str, action: str, target: str) -> Rule:
    with audit.change(store, "it", "test") as ch:
        return rules.add(ch, Rule(group, action, "name", target, "test", "it", ch.now))


def apply_policy(store: Store) -> None:
    now = datetime.now(UTC)
    generations.apply(store, inputs.from_store(store, now), "it", "test", now)


def make_policy(state: Path, tmp: Path) -> None:
    gambling, iwf = tmp / "gambling.txt", tmp / "iwf.txt"
    gambling.write_text("blocked.test\n")
    iwf.write_text("http://pages.test/bad/page.html\n")
    with Store(state) as store:
        with audit.change(store, "it", "setup") as ch:
            catalogue.add(ch, "casinos", "plain", "gambling", str(gambling), None)
            catalogue.add(ch, "iwf", "iwf", None, str(iwf), None)
        for name in ("casinos", "iwf"):
            importer.update(store, name, "it", "setup")
        add_rule(store, "exams", "allow", "exam-board.test")
        apply_policy(store)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("webfilter")
    state = tmp / "state"
    make_policy(state, tmp)
    cert, key, ca = tmp / "server.pem", tmp / "server.key", tmp / "ca.pem"
    pki.write_ca_and_server_cert("webfilter test", list(NAMES), [WEB4, WEB6], ca, cert, key)
    with netns_lab() as lab:
        gw, inet = lab.namespace("gw"), lab.namespace("inet")
        lab.link(gw, "wan0", inet, "eth0")
        gw.addr("wan0", "203.0.113.1/24", "2001:db8:ff::1/64")
        inet.addr("eth0", "203.0.113.2/24", "2001:db8:ff::2/64", f"{WEB4}/24", f"{WEB6}/64")
        clients, macs = lab.three_group_clients(gw), {}
        for group, client in clients.items():
            # As on a real LAN: the kernel cuts a large ClientHello into MTU-sized segments.
            client.run("ethtool", "-K", "eth0", "tso", "off", "gso", "off")
            macs[group] = json.loads(client.run("ip", "-j", "link", "show", "eth0").stdout)[0]["address"]
        server = inet.popen(sys.executable, "-c", SERVER, str(cert), str(key), ",".join(NAMES), WEB4, WEB6)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        server_log: list[str] = []
        threading.Thread(target=lambda: server_log.extend(server.stdout), daemon=True).start()  # type: ignore[arg-type]

        config = tmp / "appliance.toml"
        config.write_text(CONFIG.format(state=state, packets=PACKETS_PER_FLOW, lans=THREE_GROUPS))
        run = gw.popen(sys.executable, "-m", "appliance.cli", "run", "--config", str(config))
        gateway = Gateway(gw, clients, state, config, run, server_log, None, macs, spki_pin(cert))
        try:
            deadline = time.monotonic() + 30
            while "school_gateway" not in gw.run("nft", "list", "tables").stdout:
                assert run.poll() is None and time.monotonic() < deadline, "appliance run did not start"
                time.sleep(0.1)
            if "webfilter" not in dataplane_run.SERVICE_NAMES:
                gateway.consumer = start_consumer(gateway)
            gateway.wait_bound()
            yield gateway
        finally:
            if gateway.consumer is not None:
                gateway.consumer.terminate()
                gateway.consumer.wait(10)
            run.terminate()
            run.wait(20)


def start_consumer(gateway: Gateway) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "appliance.cli", "webfilter", "--config", str(gateway.config)]
    return gateway.gw.popen(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_allowed_name_works_over_https_http_and_http3(gateway: Gateway) -> None:
    students = gateway.clients["students"]
    for address in (WEB4, WEB6):
        result = curl(students, "https://allowed.test/", "allowed.test", address)
        assert result.stdout == "site allowed.test/ https sni=allowed.test received=0\n", result.stderr
    assert curl(students, "http://allowed.test/a", "allowed.test", WEB4).stdout.startswith(
        "site allowed.test/a http"
    )
    result = h3_get(students, "www.allowed.test", WEB4)
    assert result.stdout.startswith("200 lab site www.allowed.test"), result.stderr
    assert gateway.served("h3 - -> 203.0.113.80 host=www.allowed.test status=200")


def test_blocked_name_is_reset_at_once_even_by_address(gateway: Gateway) -> None:
    students = gateway.clients["students"]
    for address in (WEB4, WEB6):
        result, took = timed(curl, students, "https://blocked.test/", "blocked.test", address)
        # A TCP reset: curl gives up at once (35 in the handshake, 56 on a reset read), not by timeout.
        assert result.returncode in (35, 56), result.stderr
        assert took < 1.5
    # Straight to the address, naming the blocked site only in the SNI.
    hello = rc.openssl_hello(students.name, "blocked.test", WEB4)
    assert "BEGIN CERTIFICATE" not in hello.stdout and hello.returncode != 0
    assert not gateway.served("host=blocked.test")


def redirect(client: Netns, url: str, name: str, address: str) -> str:
    """What a plain-HTTP request gets: the status and where it is redirected."""
    result = curl(client, url, name, address, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_blocked_name_over_plain_http_is_redirected_to_the_block_page(gateway: Gateway) -> None:
    """Straight to the site's address, naming it only in the Host header: the web filter answers as
    the server, and the request never reaches it."""
    students = gateway.clients["students"]
    for address, block in ((WEB4, "192.0.2.1"), (WEB6, "[2001:db8::1]")):
        answer, took = timed(redirect, students, "http://blocked.test/x", "blocked.test", address)
        assert answer == f"302 http://{block}/?site=blocked.test" and took < 1.5
    assert not gateway.served("host=blocked.test")
    # Followed, the redirect leads to the block page (appliance run's child `blockpage`).
    deadline = time.monotonic() + 10
    while "LISTEN" not in gateway.gw.run("ss", "-Htln", "sport = 8008").stdout:
        assert time.monotonic() < deadline, "the block-page server did not start"
        time.sleep(0.1)
    page = curl(students, "http://blocked.test/", "blocked.test", WEB4, "-L", "-w", "%{http_code}")
    assert page.stdout.endswith("403"), page.stdout[-2000:]
    text = re.sub(r"<[^>]+>", "", page.stdout)
    assert "Web Filter Test Academy" in text and "You can't open blocked.test on the school network" in text
    assert not gateway.served("host=blocked.test")


def test_blocked_name_is_refused_over_quic(gateway: Gateway) -> None:
    students = gateway.clients["students"]
    assert h3_get(students, "allowed.test", WEB6).stdout.startswith("200 lab site allowed.test")
    for address in (WEB4, WEB6):
        assert h3_get(students, "blocked.test", address).returncode != 0
    assert not gateway.served("host=blocked.test")


def test_chromium_post_quantum_hello_split_over_segments(gateway: Gateway, tmp_path: Path) -> None:
    students = gateway.clients["students"]
    capture = tmp_path / "lan.pcap"
    dump = gateway.gw.popen("tcpdump", "-i", "lan_st", "-U", "-s", "0", "-w", str(capture), "tcp port 443")
    time.sleep(1.0)  # tcpdump has no ready signal
    try:
        allowed = rc.chromium(students.name, "https://allowed.test/chromium", WEB4)
        blocked = rc.chromium(students.name, "https://blocked.test/chromium", WEB4)
    finally:
        time.sleep(1.0)  # tcpdump writes what it has taken in, but stops taking in at SIGINT
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    assert "site allowed.test/chromium https sni=allowed.test" in allowed.stdout, allowed.stderr[-2000:]
    assert "site blocked.test" not in blocked.stdout, blocked.stderr[-3000:]
    assert gateway.served("host=allowed.test/chromium") and not gateway.served("host=blocked.test")
    # What reached the gateway: chromium's ClientHellos, each in more than one TCP segment.
    fields = ["-T", "fields", "-e", "tls.handshake.extensions_server_name", "-e", "tcp.segment.count"]
    hellos = subprocess.run(
        ["tshark", "-r", str(capture), "-Y", "tls.handshake.type == 1", *fields],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    segments = {line.split("\t")[0]: line.split("\t")[1] for line in hellos if "\t" in line}
    assert int(segments["allowed.test"] or 1) >= 2 and int(segments["blocked.test"] or 1) >= 2, segments


def test_chromium_over_quic(gateway: Gateway) -> None:
    students = gateway.clients["students"]
    pin = f"--ignore-certificate-errors-spki-list={gateway.spki}"
    allowed = rc.chromium(students.name, "https://allowed.test/", WEB4, pin, quic=True)
    page = allowed.stdout
    assert "lab site allowed.test" in page and "protocol h3" in page, allowed.stderr[-2000:]
    blocked = rc.chromium(students.name, "https://blocked.test/", WEB4, pin, quic=True)
    assert "lab site blocked.test" not in blocked.stdout
    assert not gateway.served("host=blocked.test")


def test_page_level_entries_on_plain_http(gateway: Gateway) -> None:
    staff = gateway.clients["staff"]
    result = curl(staff, "http://pages.test/good/page.html", "pages.test", WEB4)
    assert result.stdout.startswith("site pages.test/good/page.html http"), result.stderr
    # The redirect carries the blocked page, so the block page can say why only that page is blocked.
    answer = redirect(staff, "http://pages.test/bad/page.html#top", "pages.test", WEB4)
    assert answer == "302 http://192.0.2.1/?site=pages.test&path=%2Fbad%2Fpage.html"
    assert not gateway.served("pages.test/bad/page.html")
    # Over HTTPS the path is hidden; the host itself is not blocked.
    result = curl(staff, "https://pages.test/bad/page.html", "pages.test", WEB4)
    assert result.stdout.startswith("site pages.test/bad/page.html https")


def test_decided_flows_are_not_queued_again(gateway: Gateway, tmp_path: Path) -> None:
    students = gateway.clients["students"]
    before = gateway.queued()
    (tmp_path / "upload").write_bytes(b"u" * (2 << 20))
    result = curl(
        students, "https://allowed.test/up", "allowed.test", WEB4, "--data-binary", f"@{tmp_path}/upload"
    )
    assert result.stdout.endswith(f"received={2 << 20}\n"), result.stderr
    queued = gateway.queued() - before
    # The client sent some 1500 segments (2 MiB at MTU 1500); only the first few were queued.
    flows = gateway.gw.run("conntrack", "-L", "-p", "tcp", "--orig-dst", WEB4, "--dport", "443").stdout
    sent = max(int(line.split("packets=")[1].split()[0]) for line in flows.splitlines() if "packets=" in line)
    assert sent > 1000 and 3 <= queued <= PACKETS_PER_FLOW, (sent, queued)
    before = gateway.queued()
    assert curl(students, "https://blocked.test/", "blocked.test", WEB4).returncode != 0
    assert gateway.queued() - before <= PACKETS_PER_FLOW


def test_groups_without_a_name_follow_their_fail_setting(gateway: Gateway) -> None:
    # An IP literal has no name: fail-closed groups block it, fail-open ones allow it.
    assert curl(gateway.clients["students"], f"https://{WEB4}/", WEB4, WEB4).returncode != 0
    # Reset without a block page: there is no site to explain.
    assert curl(gateway.clients["students"], f"http://{WEB4}/", WEB4, WEB4).returncode in (52, 56)
    assert curl(gateway.clients["staff"], f"https://{WEB4}/", WEB4, WEB4).stdout.startswith(f"site {WEB4}/")
    # Exams: only what the school allows them.
    exams = gateway.clients["exams"]
    assert curl(exams, "https://exam-board.test/", "exam-board.test", WEB4).stdout.startswith(
        "site exam-board"
    )
    assert curl(exams, "https://allowed.test/", "allowed.test", WEB4).returncode != 0
    assert h3_get(exams, "exam-board.test", WEB4).stdout.startswith("200 lab site exam-board.test")
    # Fail open is not unfiltered while the filter runs.
    assert curl(gateway.clients["staff"], "https://blocked.test/", "blocked.test", WEB4).returncode != 0


def test_blocks_are_recorded_as_events(gateway: Gateway) -> None:
    students = gateway.clients["students"]
    started = datetime.now(UTC)
    curl(students, "https://blocked.test/", "blocked.test", WEB4)
    curl(students, "http://blocked.test/", "blocked.test", WEB4)
    h3_get(students, "blocked.test", WEB4)
    deadline = time.monotonic() + 5
    with Store(gateway.state) as store:
        while time.monotonic() < deadline:
            found = events.search(store, events.Query(name="blocked.test", start=started))
            if {e.layer for e in found} == {"tls", "http", "quic"}:
                break
            time.sleep(0.2)
    assert {e.layer for e in found} == {"tls", "http", "quic"}, found
    for event in found:
        assert (event.client_ip, event.group, event.name) == ("10.10.0.2", "students", "blocked.test")
        assert (event.category, event.rule, event.mac) == ("gambling", "CATEGORY", gateway.mac["students"])


def test_a_new_policy_is_picked_up(gateway: Gateway) -> None:
    students = gateway.clients["students"]
    assert curl(students, "https://www.allowed.test/", "www.allowed.test", WEB4).returncode == 0
    with Store(gateway.state) as store:
        add_rule(store, "students", "deny", "allowed.test")
        apply_policy(store)
        for pid in gateway.consumer_pids():
            os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 3
        while curl(students, "https://www.allowed.test/", "www.allowed.test", WEB4).returncode == 0:
            assert time.monotonic() < deadline, "the new policy was not picked up"
            time.sleep(0.2)
        assert (
            curl(gateway.clients["staff"], "https://www.allowed.test/", "www.allowed.test", WEB4).returncode
            == 0
        )
        generations.rollback(store, "it", "test over")
    deadline = time.monotonic() + 3
    while curl(students, "https://www.allowed.test/", "www.allowed.test", WEB4).returncode != 0:
        assert time.monotonic() < deadline, "the rollback was not picked up"
        time.sleep(0.2)


def test_flows_are_spread_over_the_queues(gateway: Gateway) -> None:
    assert set(gateway.queues()) == set(QUEUES)
    before = {q: c["queued"] for q, c in gateway.queues().items()}
    students = gateway.clients["students"]
    # The kernel balances by addresses (so a flow, both ways, stays with one queue): use 16 clients.
    for i in range(16):
        address = f"10.10.0.{100 + i}"
        students.ip("addr", "add", f"{address}/32", "dev", "eth0")
        curl(students, f"http://allowed.test/{i}", "allowed.test", WEB4, "--interface", address)
    after = gateway.queues()
    assert all(after[q]["queued"] > before[q] for q in QUEUES), (before, after)


def test_the_process_speaks_sd_notify_and_refuses_a_taken_queue(gateway: Gateway, tmp_path: Path) -> None:
    """A second instance on its own queue (nothing is sent to it), run as systemd would run it."""
    config = tmp_path / "spare.toml"
    config.write_text(gateway.config.read_text().replace("queue = 0\nqueue_count = 2", "queue = 7"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(10)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    argv = [sys.executable, "-m", "appliance.cli", "webfilter", "--config", str(config)]
    spare = gateway.gw.popen(*argv, env=env)

    def notified(message: bytes) -> bool:
        """Reads notifications until message (True) or a 10 s silence (False)."""
        with contextlib.suppress(TimeoutError):
            while sock.recv(100) != message:
                pass
            return True
        return False

    try:
        assert notified(b"READY=1") and 7 in gateway.queues()
        assert notified(b"WATCHDOG=1")
        # The queue is taken: another instance says so and exits at once.
        again = gateway.gw.run(*argv, check=False, timeout=20)
        assert again.returncode == 1 and "cannot bind NFQUEUE 7: another program serves it" in again.stderr
        spare.send_signal(signal.SIGTERM)
        assert spare.wait(10) == 0
        assert notified(b"STOPPING=1")
        assert 7 not in gateway.queues()
    finally:
        spare.kill()
        sock.close()


def test_kill_9_fails_closed_and_service_returns_within_2s(gateway: Gateway) -> None:
    """Last: it kills the consumer."""
    students, staff = gateway.clients["students"], gateway.clients["staff"]
    [pid] = gateway.consumer_pids()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while gateway.queues():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # While it is down (at least a second when `appliance run` restarts it): nothing new passes for
    # the fail-closed group, everything for the fail-open one.
    result = curl(students, "https://allowed.test/", "allowed.test", WEB4, timeout=0.6)
    assert result.returncode == 28, result.stderr
    assert curl(staff, "https://blocked.test/", "blocked.test", WEB4).stdout.startswith("site blocked.test/")
    if gateway.consumer is not None:
        gateway.consumer.wait(5)
        restarted = time.monotonic()
        gateway.consumer = start_consumer(gateway)
    else:  # `appliance run` restarts it
        while not gateway.consumer_pids():
            time.sleep(0.01)
        restarted = time.monotonic()
    while curl(students, "https://allowed.test/", "allowed.test", WEB4, timeout=0.5).returncode != 0:
        assert time.monotonic() - restarted < RESTART_LIMIT, "no service 2 s after the restart"
    assert time.monotonic() - restarted < RESTART_LIMIT
    assert curl(staff, "https://blocked.test/", "blocked.test", WEB4).returncode != 0
