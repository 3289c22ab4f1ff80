"""Makes a real capture: real clients in one namespace talk to a sink server in another over a veth
pair at MTU 1500 with segmentation offloads off, so post-quantum ClientHellos really split into
several TCP segments, and tcpdump records what crossed the wire.

Each client run is listed as an Expected flow, so a test can compare what `appliance inspect` finds
with what was sent and with tshark's own decoding of the same file."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import realclients as rc
from netns import Netns, netns_lab

CLIENT_V4, SERVER_V4 = "198.18.0.1", "198.18.0.2"
CLIENT_V6, SERVER_V6 = "fd00:cafe::1", "fd00:cafe::2"
SINK = Path(__file__).with_name("sink_server.py")


@dataclass(frozen=True)
class Expected:
    client: str
    protocol: str  # dns, tls, quic, http
    name: str
    server: str
    transport: str


def _no_offloads(ns: Netns, ifname: str) -> None:
    ns.run("ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off")


def make_capture(pcap: Path, browsers: bool = True) -> list[Expected]:
    """Runs every client once against the sink and returns what each one sent."""
    expected: list[Expected] = []
    with netns_lab() as lab:
        cli, srv = lab.namespace("cli"), lab.namespace("srv")
        lab.link(cli, "eth0", srv, "eth0")
        cli.addr("eth0", f"{CLIENT_V4}/24", f"{CLIENT_V6}/64")
        srv.addr("eth0", f"{SERVER_V4}/24", f"{SERVER_V6}/64")
        for ns in (cli, srv):
            ns.ip("link", "set", "eth0", "mtu", "1500")
            _no_offloads(ns, "eth0")
        dump = srv.popen("tcpdump", "-i", "eth0", "-U", "-s", "0", "-w", str(pcap), "not", "icmp6")
        sink = srv.popen(sys.executable, str(SINK), SERVER_V4, SERVER_V6)
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # tcpdump has no ready signal; it starts within a few hundred ms

        def add(client: str, protocol: str, name: str, server: str, transport: str = "tcp") -> None:
            expected.append(Expected(client, protocol, name, server, transport))

        for server in (SERVER_V4, SERVER_V6):
            v = "6" if ":" in server else "4"
            name = f"curl-h2-v{v}.example.org"
            rc.curl(cli.name, f"https://{name}/", name, server, 443, "--http2", timeout=3)
            add("curl", "tls", name, server)
            name = f"curl-plain-v{v}.example.net"
            rc.curl(cli.name, f"http://{name}/path/page.html?q=1", name, server, 80, timeout=3)
            add("curl", "http", name, server)
            name = f"dig-udp-v{v}.example.com"
            rc.dig(cli.name, server, name, "A")
            add("dig", "dns", name, server, "udp")
            name = f"dig-tcp-v{v}.example.com"
            rc.dig(cli.name, server, name, "AAAA", "+tcp")
            add("dig", "dns", name, server)
            name = f"aioquic-v{v}.example.org"
            rc.aioquic_hello(cli.name, name, server)
            add("aioquic", "quic", name, server, "udp")
        rc.curl(cli.name, "https://curl-h1.example.org/", "curl-h1.example.org", SERVER_V4, 443, "--http1.1")
        add("curl", "tls", "curl-h1.example.org", SERVER_V4)
        rc.openssl_hello(cli.name, "openssl.example.org", SERVER_V4)
        add("openssl", "tls", "openssl.example.org", SERVER_V4)
        rc.gnutls_hello(cli.name, "gnutls.example.org", SERVER_V4)
        add("gnutls-cli", "tls", "gnutls.example.org", SERVER_V4)
        rc.python_tls(cli.name, "python-ssl.example.org", SERVER_V4)
        add("python-ssl", "tls", "python-ssl.example.org", SERVER_V4)
        rc.aioquic_hello(cli.name, "aioquic-quicv2.example.org", SERVER_V4, version=2)
        add("aioquic", "quic", "aioquic-quicv2.example.org", SERVER_V4, "udp")
        rc.dig(cli.name, SERVER_V4, "edns-dnssec.example.com", "HTTPS", "+dnssec")
        add("dig", "dns", "edns-dnssec.example.com", SERVER_V4, "udp")
        if browsers:
            rc.chromium(cli.name, "https://chromium.example.org/", SERVER_V4)
            add("chromium", "tls", "chromium.example.org", SERVER_V4)
            rc.chromium(cli.name, "https://chromium-quic.example.org/", SERVER_V4, quic=True)
            add("chromium", "quic", "chromium-quic.example.org", SERVER_V4, "udp")
            rc.firefox(cli.name, "https://firefox.example.org/", SERVER_V4, timeout=10)
            add("firefox-esr", "tls", "firefox.example.org", SERVER_V4)
        time.sleep(0.5)
        srv.stop_processes()
        assert dump.returncode is not None
    return expected


def tshark_names(pcap: Path) -> set[tuple[str, str]]:
    """(protocol, name) for every name tshark itself decodes from the capture."""
    fields = {
        "tls": "tls.handshake.extensions_server_name",
        "quic": "tls.handshake.extensions_server_name",
        "dns": "dns.qry.name",
        "http": "http.host",
    }
    found: set[tuple[str, str]] = set()
    for proto, field in fields.items():
        flt = {"dns": "dns.flags.response == 0", "quic": "quic", "tls": "tls and tcp", "http": "http.request"}
        out = subprocess.run(
            ["tshark", "-r", str(pcap), "-Y", flt[proto], "-T", "fields", "-e", field],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.split():
            for name in line.split(","):
                if name:
                    found.add((proto, name.lower().split(":")[0]))
    return found
