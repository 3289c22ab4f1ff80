"""The appliance's own recursive, caching resolver: unbound, configured from [dns].

It listens only on 127.0.0.1 and ::1 at the port of dns.upstream, where the DNS filter forwards what
it allows. In production it has its own systemd unit (`appliance resolver`, which writes the
configuration and becomes unbound); in the lab and tests `appliance run` supervises it as a child.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import socket
import struct
import sys
from pathlib import Path

from appliance import config as config_module
from appliance.config import Config
from appliance.dataplane.supervisor import Service

UNBOUND = "/usr/sbin/unbound"
# Debian's dns-root-data: the IANA root trust anchor, seed for unbound's RFC 5011 tracking.
ROOT_TRUST_ANCHOR = Path("/usr/share/dns/root.key")
TYPE_A, TYPE_AAAA = 1, 28


def directory(config: Config) -> Path:
    return config.appliance.state_dir / "resolver"


def unbound_conf(config: Config) -> str:
    dns = config.dns
    port = dns.upstream.port
    workdir = directory(config)
    lines = [
        "server:",
        f"    interface: 127.0.0.1@{port}",
        f"    interface: ::1@{port}",
        f'    directory: "{workdir}"',
        # Runs in the foreground under a supervisor (systemd or `appliance run`), which sets the user.
        '    username: ""',
        '    chroot: ""',
        '    pidfile: ""',
        "    use-syslog: no",
        '    logfile: ""',
        "    verbosity: 1",
        # Sized for a Raspberry Pi: about 100 MB in all with the key cache, one thread.
        "    num-threads: 1",
        "    msg-cache-size: 24m",
        "    rrset-cache-size: 48m",
        "    key-cache-size: 8m",
        "    neg-cache-size: 4m",
        "    prefetch: yes",
        "    qname-minimisation: yes",
        "    hide-identity: yes",
        "    hide-version: yes",
    ]
    if dns.root_hints is not None:
        lines.append(f'    root-hints: "{dns.root_hints}"')
    if dns.dnssec:
        lines.append(f'    auto-trust-anchor-file: "{workdir / "root.key"}"')
    else:
        lines.append('    module-config: "iterator"')
    lines += ["", "remote-control:", "    control-enable: no"]
    if dns.forwarders:
        lines += ["", "forward-zone:", '    name: "."']
        lines += [f"    forward-addr: {f.address}@{f.port}" for f in dns.forwarders]
    return "\n".join(lines) + "\n"


def write_conf(config: Config) -> Path:
    """Writes unbound.conf (and, for DNSSEC, seeds the trust anchor unbound then keeps up to date)."""
    workdir = directory(config)
    workdir.mkdir(parents=True, exist_ok=True)
    if config.dns.dnssec and not (workdir / "root.key").exists():
        if not ROOT_TRUST_ANCHOR.exists():
            raise FileNotFoundError(f"{ROOT_TRUST_ANCHOR} is missing: install Debian's dns-root-data")
        shutil.copyfile(ROOT_TRUST_ANCHOR, workdir / "root.key")
    conf = workdir / "unbound.conf"
    conf.write_text(unbound_conf(config))
    return conf


def argv(config: Config) -> list[str]:
    return [UNBOUND, "-d", "-p", "-c", str(directory(config) / "unbound.conf")]


def answers(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a DNS server answers there: an A query for localhost, which unbound answers from its
    built-in local zone, without recursing or forwarding."""
    query_id = secrets.randbits(16)
    query = _question("localhost", TYPE_A, query_id)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(query, (host, port))
            reply = sock.recv(512)
        except OSError:
            return False
    return len(reply) >= 12 and struct.unpack("!H", reply[:2])[0] == query_id


def _question(name: str, qtype: int, query_id: int) -> bytes:
    """A recursive query (RD) for name's qtype records, class IN."""
    labels = b"".join(bytes([len(label)]) + label for label in name.encode("ascii").split(b"."))
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    return header + labels + b"\0" + struct.pack("!HH", qtype, 1)


def _skip_name(message: bytes, pos: int) -> int:
    while message[pos] & 0xC0 != 0xC0 and message[pos] != 0:
        pos += 1 + message[pos]
    return pos + (2 if message[pos] & 0xC0 == 0xC0 else 1)


def _addresses(message: bytes, query_id: int, qtype: int) -> list[str]:
    """The qtype records of a NOERROR answer (a CNAME chain's included), [] for anything else."""
    size = 4 if qtype == TYPE_A else 16
    try:
        got_id, flags, questions, answers = struct.unpack_from("!HHHH", message)
        if got_id != query_id or flags & 0x800F != 0x8000:  # a response, RCODE 0
            return []
        pos = 12
        for _ in range(questions):
            pos = _skip_name(message, pos) + 4
        found = []
        for _ in range(answers):
            pos = _skip_name(message, pos)
            rtype, rclass, _ttl, length = struct.unpack_from("!HHIH", message, pos)
            pos += 10
            if rtype == qtype and rclass == 1 and length == size:
                found.append(str(ipaddress.ip_address(message[pos : pos + length])))
            pos += length
        return found
    except (IndexError, struct.error):
        return []


def lookup(server: config_module.Endpoint, name: str, timeout: float = 2.0) -> list[str]:
    """The IPv4 and IPv6 addresses of name (normalised) from the DNS server at server (the appliance's
    own unbound, which recurses unfiltered), IPv4 first; what it cannot find in time is left out.
    For the control plane's own look-ups, never for clients' queries."""
    family = socket.AF_INET6 if server.address.version == 6 else socket.AF_INET
    found: list[str] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((str(server.address), server.port))
        for qtype in (TYPE_A, TYPE_AAAA):
            query_id = secrets.randbits(16)
            try:
                sock.send(_question(name, qtype, query_id))
                found += _addresses(sock.recv(4096), query_id, qtype)
            except OSError:
                continue
    return found


def service(config: Config) -> Service:
    upstream = config.dns.upstream
    return Service(
        name="resolver",
        argv=argv(config),
        prepare=lambda: write_conf(config),
        ready=lambda: answers(str(upstream.address), upstream.port),
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "resolver", help="write the resolver's configuration and become unbound (its systemd unit)"
    )
    parser.add_argument("--config", required=True, help="the appliance's TOML configuration")
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    try:
        config = config_module.load(args.config)
        write_conf(config)
    except (config_module.ConfigError, OSError) as e:
        print(e, file=sys.stderr)
        return 2
    # Becoming unbound keeps the PID, so systemd's Type=notify sees unbound's own READY=1.
    os.execv(UNBOUND, argv(config))
