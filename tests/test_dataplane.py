"""`appliance run` in a real gateway namespace, driven by real clients in one namespace per group.

    students (lan_st, fail closed) --\
    staff    (lan_sf, fail open)   ---  gateway (appliance run) -- wan0 -- internet (web + DNS servers)
    exams    (lan_ex, allowlist)   --/

`appliance run` starts only its resolver here (--skip the DNS filter and the NFQUEUE consumer), so the
data plane is tested on its own: with no consumer, the queue's fail modes decide the web ports, and a
dnsmasq on the gateway's port 53 stands in for the DNS filter, answering blocked.test itself and
asking the appliance's unbound for everything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netns import THREE_GROUPS, Netns, netns_lab

pytestmark = pytest.mark.netns

WAN_GW4, WAN_GW6 = "203.0.113.1", "2001:db8:ff::1"
WEB4, WEB6 = "203.0.113.80", "2001:db8:ff::80"
FOREIGN_DNS4, FOREIGN_DNS6 = "203.0.113.53", "2001:db8:ff::53"
FOREIGN_ANSWER = "198.51.100.99"
GATEWAY_BLOCK_ANSWER = "192.0.2.1"

# One HTTP server on several ports that answers GET and POST with the client address it sees.
WEB_SERVER = """
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = self.client_address[0].removeprefix("::ffff:").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
for port in sys.argv[1:]:
    threading.Thread(target=Server(("::", int(port)), Handler).serve_forever).start()
"""

CONFIG = """
[appliance]
name = "Test Academy"
state_dir = "{state}"

[wan]
interface = "wan0"

[dns]
forwarders = ["{foreign}"]
dnssec = false

[fastpath]
packets_per_flow = 4

{lans}"""


@dataclass
class Gateway:
    gw: Netns
    wan: Netns
    clients: dict[str, Netns]
    process: subprocess.Popen[str]
    notifications: list[str]  # sd_notify messages from appliance run, as they come

    def notified(self, message: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while message not in self.notifications:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {message} from appliance run; its output:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stdout is not None
        return self.process.stdout.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


def receive(sock: socket.socket, messages: list[str]) -> None:
    with contextlib.suppress(OSError):  # closed at the end of the test
        while True:
            messages.append(sock.recv(4096).decode())


def curl(client: Netns, url: str, timeout: float = 2) -> subprocess.CompletedProcess[str]:
    return client.run("curl", "-sS", "--max-time", str(timeout), "-g", url, check=False)


def dig(client: Netns, server: str, name: str, *options: str) -> str:
    rtype = "AAAA" if ":" in server else "A"
    return client.run(
        "dig", "+short", "+time=2", "+tries=1", f"@{server}", name, rtype, *options
    ).stdout.strip()


def processes_in(ns: Netns) -> list[tuple[int, str]]:
    """(pid, command name) of each process in the namespace."""
    found = []
    pids = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True).stdout
    for pid in pids.split():
        with contextlib.suppress(FileNotFoundError):  # exited meanwhile
            found.append((int(pid), Path(f"/proc/{pid}/comm").read_text().strip()))
    return found


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("dataplane")
    with netns_lab() as lab:
        gw, wan = lab.namespace("gw"), lab.namespace("wan")
        lab.link(gw, "wan0", wan, "eth0")
        gw.addr("wan0", f"{WAN_GW4}/24", f"{WAN_GW6}/64")
        wan.addr("eth0", "203.0.113.2/24", "2001:db8:ff::2/64", f"{WEB4}/24", f"{WEB6}/64")
        wan.addr("eth0", f"{FOREIGN_DNS4}/24", f"{FOREIGN_DNS6}/64")
        clients = lab.three_group_clients(gw)

        wan.popen(sys.executable, "-c", WEB_SERVER, "8080", "443", "853")
        dnsmasq = ["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"]
        dnsmasq += ["--pid-file=", "--user=root"]
        wan.popen(
            *dnsmasq,
            f"--listen-address={FOREIGN_DNS4},{FOREIGN_DNS6}",
            f"--address=/#/{FOREIGN_ANSWER}",
            "--address=/#/2001:db8:bad::99",
        )
        config = tmp / "appliance.toml"
        config.write_text(CONFIG.format(state=tmp / "state", foreign=FOREIGN_DNS4, lans=THREE_GROUPS))

        notify_path = tmp / "notify.sock"
        notify_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_socket.bind(str(notify_path))
        notifications: list[str] = []
        threading.Thread(target=receive, args=(notify_socket, notifications), daemon=True).start()
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
        env.pop("WATCHDOG_PID", None)
        run = ["appliance.cli", "run", "--config", str(config), "--skip", "dnsfilter", "--skip", "webfilter"]
        process = gw.popen(sys.executable, "-m", *run, env=env)
        gateway = Gateway(gw, wan, clients, process, notifications)
        try:
            gateway.notified("READY=1")
            # Stands in for the DNS filter: answers blocked.test, asks the appliance's unbound for the rest.
            gw.popen(
                *dnsmasq,
                "--listen-address=10.10.0.1,fd00:10::1,10.20.0.1,fd00:20::1,10.30.0.1,fd00:30::1",
                f"--address=/blocked.test/{GATEWAY_BLOCK_ANSWER}",
                "--address=/blocked.test/2001:db8::1",
                "--server=127.0.0.1#5353",
            )
            gw.wait_for_port(53, "udp")
            wan.wait_for_port(8080)
            yield gateway
        finally:
            gateway.stop()
            notify_socket.close()


def test_lan_to_wan_is_forwarded_and_masqueraded(gateway: Gateway) -> None:
    for group in ("students", "staff"):
        client = gateway.clients[group]
        assert curl(client, f"http://{WEB4}:8080/").stdout == WAN_GW4
        assert curl(client, f"http://[{WEB6}]:8080/").stdout == WAN_GW6


def test_dns_to_any_resolver_is_answered_by_the_gateway(gateway: Gateway) -> None:
    students = gateway.clients["students"]
    # Asked directly, the foreign resolver gives its own answer for every name.
    assert dig(gateway.gw, FOREIGN_DNS4, "blocked.test") == FOREIGN_ANSWER
    for server in (FOREIGN_DNS4, FOREIGN_DNS6, "192.0.2.200"):
        answer = dig(students, server, "blocked.test")
        assert answer == (GATEWAY_BLOCK_ANSWER if ":" not in server else "2001:db8::1"), server
        assert dig(students, server, "blocked.test", "+tcp") == answer
    # Other names go through the appliance's own unbound, which forwards to its configured forwarder.
    assert dig(students, "192.0.2.200", "www.example.com") == FOREIGN_ANSWER


def test_dot_and_doq_are_refused(gateway: Gateway) -> None:
    assert curl(gateway.gw, f"http://{WEB4}:853/").stdout == WAN_GW4  # the port is open on the server
    for group in ("students", "staff"):
        result = curl(gateway.clients[group], f"http://{WEB4}:853/")
        assert result.returncode == 7, result.stderr  # refused at once: a TCP reset, not a timeout
        result = curl(gateway.clients[group], f"http://[{WEB6}]:853/")
        assert result.returncode == 7, result.stderr
    dig_doq = gateway.clients["staff"].run(
        "dig", "+short", "+time=1", "+tries=1", "-p", "853", f"@{FOREIGN_DNS4}", "x.test", check=False
    )
    assert dig_doq.returncode != 0 and FOREIGN_ANSWER not in dig_doq.stdout


def test_doh_endpoint_set_blocks_https_to_its_addresses(gateway: Gateway) -> None:
    staff = gateway.clients["staff"]
    assert curl(staff, f"http://{WEB4}:443/").stdout == WAN_GW4
    gateway.gw.run("nft", "add", "element", "inet", "school_gateway", "doh_ipv4", f"{{ {WEB4} timeout 30s }}")
    try:
        assert curl(staff, f"http://{WEB4}:443/").returncode == 7
        assert curl(staff, f"http://{WEB4}:8080/").stdout == WAN_GW4  # other ports are not DoH
    finally:
        gateway.gw.run("nft", "delete", "element", "inet", "school_gateway", "doh_ipv4", f"{{ {WEB4} }}")


def test_web_ports_fail_closed_or_open_per_group_without_a_consumer(gateway: Gateway) -> None:
    for url in (f"http://{WEB4}:443/", f"http://[{WEB6}]:443/", f"http://{WEB4}:80/"):
        assert curl(gateway.clients["students"], url).returncode == 28, url  # dropped: a timeout
    assert curl(gateway.clients["staff"], f"http://{WEB4}:443/").stdout == WAN_GW4
    assert curl(gateway.clients["staff"], f"http://[{WEB6}]:443/").stdout == WAN_GW6


def test_exams_reach_nothing_but_dns_and_the_fast_path(gateway: Gateway) -> None:
    exams = gateway.clients["exams"]
    assert curl(exams, f"http://{WEB4}:8080/").returncode == 28
    assert curl(exams, f"http://[{WEB6}]:8080/").returncode == 28
    assert curl(exams, f"http://{WEB4}:443/").returncode == 28
    assert exams.run("ping", "-c1", "-W1", WEB4, check=False).returncode != 0
    assert dig(exams, FOREIGN_DNS4, "blocked.test") == GATEWAY_BLOCK_ANSWER


def test_group_comes_from_interface_and_subnet(gateway: Gateway) -> None:
    def counters() -> dict[str, int]:
        out = gateway.gw.run("nft", "-j", "list", "counters", "table", "inet", "school_gateway").stdout
        found = [item["counter"] for item in json.loads(out)["nftables"] if "counter" in item]
        return {counter["name"]: counter["packets"] for counter in found}

    before = counters()
    assert curl(gateway.clients["staff"], f"http://{WEB4}:8080/").stdout == WAN_GW4
    after = counters()
    assert after["group_staff"] > before["group_staff"]
    assert after["group_students"] == before["group_students"]
    assert after["group_exams"] == before["group_exams"]
    # A source outside the interface's subnets gets no group, so it is not forwarded.
    staff = gateway.clients["staff"]
    staff.ip("addr", "add", "10.99.0.2/32", "dev", "eth0")
    try:
        url = f"http://{WEB4}:8080/"
        result = staff.run("curl", "-sS", "--max-time", "2", "--interface", "10.99.0.2", url, check=False)
        assert result.returncode == 28
    finally:
        staff.ip("addr", "del", "10.99.0.2/32", "dev", "eth0")


def test_a_child_that_dies_is_restarted(gateway: Gateway) -> None:
    unbound = [pid for pid, name in processes_in(gateway.gw) if name == "unbound"]
    assert len(unbound) == 1
    os.kill(unbound[0], signal.SIGKILL)
    time.sleep(2.5)  # one second of back-off, then unbound starts again
    assert [name for _, name in processes_in(gateway.gw)].count("unbound") == 1, gateway.output()
    assert dig(gateway.clients["students"], "192.0.2.200", "www.example.com") == FOREIGN_ANSWER


def test_watchdog_is_fed(gateway: Gateway) -> None:
    count = gateway.notifications.count("WATCHDOG=1")
    time.sleep(1)
    assert gateway.notifications.count("WATCHDOG=1") >= count + 3  # every 0.2 s: half of WATCHDOG_USEC


def test_stop_removes_everything(gateway: Gateway) -> None:
    gw = gateway.gw
    assert gw.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert gateway.stop() == 0
    gateway.notified("STOPPING=1", timeout=1)
    assert gw.run("nft", "list", "tables").stdout == ""
    for binary in ("iptables-nft-save", "ip6tables-nft-save"):
        assert "-A" not in gw.run(binary).stdout
    assert gw.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "0"
    assert gw.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == "0"
    assert "unbound" not in [name for _, name in processes_in(gw)]
    assert curl(gateway.clients["staff"], f"http://{WEB4}:8080/").returncode != 0


def test_bad_config_applies_nothing(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    text = CONFIG.format(state=tmp_path, foreign=FOREIGN_DNS4, lans=THREE_GROUPS)
    config.write_text(text.replace('fail = "open"', 'fail = "ajar"'))
    with netns_lab() as lab:
        gw = lab.namespace("gw")
        result = gw.run(sys.executable, "-m", "appliance.cli", "run", "--config", str(config), check=False)
        assert result.returncode == 2
        assert f"{config}:35: groups.staff.fail: must be one of 'closed', 'open', not 'ajar'" in result.stderr
        assert gw.run("nft", "list", "ruleset").stdout == ""
