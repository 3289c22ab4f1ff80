"""The HTTP block-page redirect (appliance.blockpage.inject): the packets it builds, checked field by
field and by tcpdump's own checksum verification, and then sent by a gateway namespace to a real curl.

    client (curl) -- lan0 -- gateway (nftables, the injector) -- wan0 -- server (TCP 80)

The gateway stands in for the data plane around the NFQUEUE consumer: it drops the client's request
segment and marks the flow blocked (so every later packet of it is answered with a reset, as the
ruleset does), while a packet socket hands the request to the injector, as the consumer will.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from netns import Netns, netns_lab

from appliance.blockpage import inject

BLOCK4, BLOCK6 = ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv6Address("2001:db8::1")
CLIENT4, CLIENT6 = ipaddress.ip_address("10.10.0.2"), ipaddress.ip_address("fd00:10::2")
WEB4, WEB6 = ipaddress.ip_address("203.0.113.80"), ipaddress.ip_address("2001:db8:ff::80")


def request_packet(src: inject.IPAddress, dst: inject.IPAddress, payload: bytes, flags: int) -> bytes:
    """A client's request segment as a kernel would send it, with a timestamp option (12 bytes)."""
    options = b"\x01\x01\x08\x0a" + struct.pack("!II", 1234, 5678)
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1000, 555_000, (5 + 3) << 4, flags, 502, 0, 0)
    tcp += options + payload
    if src.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 7, 0x4000, 64, 6, 0, src.packed, dst.packed)
        return ip + tcp
    return struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src.packed, dst.packed) + tcp


def fields(packet: bytes) -> dict[str, object]:
    seg = inject.parse(packet)
    ip_header = 20 if seg.version == 4 else 40
    return {
        "src": seg.client,
        "dst": seg.server,
        "sport": seg.client_port,
        "dport": seg.server_port,
        "seq": seg.seq,
        "ack": seg.ack,
        "flags": seg.flags,
        "payload": packet[ip_header + 20 :],
    }


@pytest.mark.parametrize(("client", "server"), [(CLIENT4, WEB4), (CLIENT6, WEB6)])
def test_the_redirect_answers_the_request_as_the_server(client, server) -> None:
    payload = b"GET / HTTP/1.1\r\nHost: casino.test\r\n\r\n"
    request = inject.parse(request_packet(client, server, payload, inject.ACK | inject.PSH))
    assert request.payload_len == len(payload)
    url = inject.block_page_url(BLOCK4 if client.version == 4 else BLOCK6, "casino.test")
    answer = inject.answer(request, url)

    assert len(answer.client) == 1
    sent = fields(answer.client[0])
    assert (sent["src"], sent["dst"], sent["sport"], sent["dport"]) == (server, client, 80, 40000)
    assert sent["seq"] == 555_000  # where the server's data would start
    assert sent["ack"] == 1000 + len(payload)  # the whole request acknowledged
    assert sent["flags"] == inject.ACK | inject.PSH | inject.FIN
    head, body = sent["payload"].split(b"\r\n\r\n", 1)  # type: ignore[union-attr]
    lines = head.decode("ascii").split("\r\n")
    assert lines[0] == "HTTP/1.1 302 Found"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Location"] == url
    assert int(headers["Content-Length"]) == len(body)
    assert url.replace("&", "&amp;").encode() in body

    reset = fields(answer.server)
    assert (reset["src"], reset["dst"], reset["sport"], reset["dport"]) == (client, server, 40000, 80)
    assert (reset["seq"], reset["flags"], reset["payload"]) == (1000, inject.RST | inject.ACK, b"")


def test_urls_carry_the_site_and_only_a_blocked_page_s_path() -> None:
    assert inject.block_page_url(BLOCK4, "casino.test") == "http://192.0.2.1/?site=casino.test"
    url = inject.block_page_url(BLOCK6, "pages.test", b"/bad/p\xe9ge.html?a=1&b=2")
    parts = urlsplit(url)
    assert parts.hostname == "2001:db8::1"
    query = dict(parse_qsl(parts.query, encoding="latin-1"))
    assert query["site"] == "pages.test"
    assert query["path"].encode("latin-1") == b"/bad/p\xe9ge.html?a=1&b=2"


def test_a_long_redirect_is_cut_into_segments_in_sequence() -> None:
    path = b"/" + b"x" * 3000
    request = inject.parse(request_packet(CLIENT4, WEB4, b"GET " + path + b" HTTP/1.1\r\n\r\n", inject.ACK))
    answer = inject.answer(request, inject.block_page_url(BLOCK4, "pages.test", path))
    assert len(answer.client) > 2
    seq, data = 555_000, b""
    for i, packet in enumerate(answer.client):
        sent = fields(packet)
        assert sent["seq"] == seq
        assert len(packet) <= 1280  # the IPv6 minimum MTU: never needs fragmenting
        last = i == len(answer.client) - 1
        assert bool(sent["flags"] & inject.FIN) == last  # type: ignore[operator]
        seq += len(sent["payload"])  # type: ignore[arg-type]
        data += sent["payload"]  # type: ignore[operator]
    assert data.startswith(b"HTTP/1.1 302 Found\r\n")
    assert data.count(b"x" * 3000) == 2  # in the Location and in the link


def test_a_syn_with_data_is_acknowledged_past_the_syn() -> None:
    """TCP Fast Open: the request rides on the SYN, which takes a sequence number of its own."""
    payload = b"GET / HTTP/1.1\r\nHost: casino.test\r\n\r\n"
    request = inject.parse(request_packet(CLIENT4, WEB4, payload, inject.SYN))
    assert request.end == 1000 + 1 + len(payload)


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45" + b"\0" * 10,
        request_packet(CLIENT4, WEB4, b"x", inject.ACK)[:30],  # TCP header cut short
        bytes([0x45, 0, 0, 40, 0, 0, 0x20, 0, 64, 6]) + b"\0" * 30,  # more fragments
        bytes([0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17]) + b"\0" * 18,  # UDP
        bytes([0x60, 0, 0, 0, 0, 8, 44, 64]) + b"\0" * 40,  # IPv6 fragment header
        bytes([0x70]) + b"\0" * 60,  # no such IP version
    ],
)
def test_what_is_not_a_tcp_segment_is_refused(packet: bytes) -> None:
    with pytest.raises(ValueError):
        inject.parse(packet)


def test_tcpdump_finds_every_checksum_correct(tmp_path: Path) -> None:
    """tcpdump verifies IP and TCP checksums itself: an independent check of ours."""
    pcap = tmp_path / "answer.pcap"
    packets = []
    for client, server in ((CLIENT4, WEB4), (CLIENT6, WEB6)):
        request = inject.parse(request_packet(client, server, b"GET /x HTTP/1.1\r\n\r\n", inject.ACK))
        answer = inject.answer(request, inject.block_page_url(BLOCK4, "casino.test", b"/" + b"y" * 1500))
        packets += [*answer.client, answer.server]
    with pcap.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))  # LINKTYPE_RAW
        for packet in packets:
            f.write(struct.pack("<IIII", 0, 0, len(packet), len(packet)) + packet)
    out = subprocess.run(["tcpdump", "-nn", "-vv", "-r", str(pcap)], capture_output=True, text=True).stdout
    assert out.count("cksum") >= len(packets), out
    assert "incorrect" not in out and "bad" not in out, out
    assert out.count("(correct)") >= len(packets), out


# --- in namespaces, with curl ---------------------------------------------------------------------

# The consumer's stand-in in the gateway: every request segment (TCP to port 80 with data) coming in
# on the LAN goes to the injector, as the NFQUEUE consumer hands over the segment it blocks.
INJECTOR = r"""
import ipaddress, socket, sys
from appliance.blockpage.inject import Injector, parse
from appliance.blockpage.inject import RST, tcp_packet
iface, site, path = sys.argv[1], sys.argv[2], sys.argv[3].encode() or None
sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))
sniffer.bind((iface, 0))
injector = Injector(ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv6Address("2001:db8::1"))
print("ready", flush=True)
while True:
    packet, address = sniffer.recvfrom(65535)
    if address[2] == socket.PACKET_OUTGOING:
        continue
    try:
        request = parse(packet)
    except ValueError:
        continue
    if request.server_port == 80 and request.payload_len:
        injector.redirect(packet, site, path)
        # Then what the ruleset's `reject with tcp reset` sends for the dropped request once the
        # consumer's verdict comes: a RST whose sequence number is the request's acknowledgement.
        rst = tcp_packet(request.server, request.client, 80, request.client_port, request.ack, 0, RST, b"")
        injector.sockets[request.version].sendto(rst, (str(request.client), 0))
        print("injected", request.client, flush=True)
"""

# The server: accepts, then reports what the connection brought (a request would mean the block
# leaked; a reset means the injector's RST arrived).
SERVER = r"""
import socket, sys, threading
def serve(conn):
    conn.settimeout(10)
    try:
        data = conn.recv(65535)
        print("received", len(data), flush=True)
    except ConnectionResetError:
        print("reset", flush=True)
    except TimeoutError:
        print("timeout", flush=True)
for address in sys.argv[1:]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, 80))
    listener.listen()
    def accept(listener=listener):
        while True:
            threading.Thread(target=serve, args=(listener.accept()[0],)).start()
    threading.Thread(target=accept).start()
print("ready", flush=True)
"""

# What the ruleset does around the consumer's verdict: the request segment is dropped and its flow
# marked blocked; later packets of the flow are dropped as invalid (after the injector's reset the
# flow is closed) or answered with a reset.
GATEWAY_RULES = """
table inet blockpage_test {
    counter refused {}
    chain forward {
        type filter hook forward priority 0; policy accept;
        ct state invalid counter name refused drop
        ct mark 2 counter name refused reject with tcp reset
        iifname "lan0" tcp dport 80 meta length > 100 ct mark set 2 drop
    }
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        oifname "wan0" masquerade
    }
}
"""


@dataclass
class Path3:
    client: Netns
    gateway: Netns
    server_log: list[str]

    def refused(self) -> int:
        out = self.gateway.run("nft", "list", "counter", "inet", "blockpage_test", "refused").stdout
        return int(out.split("packets ")[1].split()[0])


def _lines(proc: subprocess.Popen[str], into: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.append(line.strip())


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path3]:
    if os.geteuid() != 0:
        pytest.fail("needs root for network namespaces")
    tmp = tmp_path_factory.mktemp("inject")
    with netns_lab() as lab:
        client, gw, server = lab.namespace("client"), lab.namespace("gw"), lab.namespace("server")
        lab.link(client, "eth0", gw, "lan0")
        lab.link(gw, "wan0", server, "eth0")
        client.addr("eth0", f"{CLIENT4}/24", f"{CLIENT6}/64")
        gw.addr("lan0", "10.10.0.1/24", "fd00:10::1/64")
        gw.addr("wan0", "203.0.113.1/24", "2001:db8:ff::1/64")
        server.addr("eth0", "203.0.113.2/24", "2001:db8:ff::2/64", f"{WEB4}/24", f"{WEB6}/64")
        client.route_default("10.10.0.1", "fd00:10::1")
        server.route_default("203.0.113.1", "2001:db8:ff::1")
        gw.sysctl("net.ipv4.ip_forward", "1")
        gw.sysctl("net.ipv6.conf.all.forwarding", "1")
        # As on a real LAN: one request, one segment of ordinary size.
        client.run("ethtool", "-K", "eth0", "tso", "off", "gso", "off")
        rules = tmp / "rules.nft"
        rules.write_text(GATEWAY_RULES)
        gw.run("nft", "-f", str(rules))
        server_log: list[str] = []
        proc = server.popen(sys.executable, "-u", "-c", SERVER, str(WEB4), str(WEB6))
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        threading.Thread(target=_lines, args=(proc, server_log), daemon=True).start()
        yield Path3(client, gw, server_log)


def start_injector(path3: Path3, site: str, path: str = "") -> tuple[subprocess.Popen[str], list[str]]:
    proc = path3.gateway.popen(sys.executable, "-u", "-c", INJECTOR, "lan0", site, path)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    log: list[str] = []
    threading.Thread(target=_lines, args=(proc, log), daemon=True).start()
    return proc, log


def wait_for(check, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.netns
@pytest.mark.parametrize(("web", "block"), [(WEB4, "192.0.2.1"), (WEB6, "[2001:db8::1]")])
def test_curl_takes_the_injected_redirect(three: Path3, web, block: str) -> None:
    injector, log = start_injector(three, "casino.test")
    try:
        before = len(three.server_log)
        host = f"[{web}]" if web.version == 6 else str(web)
        result = three.client.run(
            "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
            f"http://{host}/", "-H", "Host: casino.test",
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"302 http://{block}/?site=casino.test"
        assert wait_for(lambda: any(line.startswith("injected") for line in log))
        # The server got no request, and its side of the connection was reset.
        assert wait_for(lambda: len(three.server_log) > before), "the server saw nothing"
        assert three.server_log[before:] == ["reset"]
    finally:
        injector.terminate()
        injector.wait()


@pytest.mark.netns
def test_the_redirect_outlives_the_resets_of_the_blocked_flow(three: Path3) -> None:
    """The client reads the whole redirect though the request is answered with a reset after it,
    and the flow's later packets (the ACK of the redirect) are refused."""
    injector, _ = start_injector(three, "pages.test", "/bad/page.html")
    code = (
        "import socket, sys, time\n"
        "s = socket.create_connection((sys.argv[1], 80), timeout=5)\n"
        "s.sendall(b'GET /bad/page.html HTTP/1.1\\r\\nHost: pages.test\\r\\n\\r\\n')\n"
        "time.sleep(1)\n"  # the resets have come and the ACK of the redirect has been refused
        "data = b''\n"
        "try:\n"
        "    while chunk := s.recv(4096):\n"
        "        data += chunk\n"
        "except ConnectionError as e:\n"
        "    print('error after', len(data), e)\n"
        "print(data.hex())\n"
    )
    try:
        refused = three.refused()
        result = three.client.run(sys.executable, "-c", code, str(WEB4), check=False)
        assert result.returncode == 0, result.stderr
        assert three.refused() > refused  # the flow's later packets went nowhere
        assert "error" not in result.stdout
        data = bytes.fromhex(result.stdout.strip()).decode()
        head, body = data.split("\r\n\r\n")
        assert head.startswith("HTTP/1.1 302 Found\r\n"), data
        assert "Location: http://192.0.2.1/?site=pages.test&path=%2Fbad%2Fpage.html" in head
        assert f"Content-Length: {len(body)}" in head  # the whole body too
    finally:
        injector.terminate()
        injector.wait()
