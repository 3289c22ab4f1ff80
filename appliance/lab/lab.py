"""`lab up`, `lab down` and `lab status`: build the whole school in network namespaces, take it away
again, and say what is running."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass

from appliance.lab import gateway, netns, pki, processes, service, unbound, zones
from appliance.lab.sites import HTTP_PORT, HTTPS_PORT, Internet, load_internet
from appliance.lab.topology import (
    CLIENT_IF,
    UPLINK_IF,
    WAN_GATEWAY_IPV4,
    WAN_GATEWAY_IPV6,
    WAN_IF,
    WAN_PREFIX4,
    WAN_PREFIX6,
    WAN_UPSTREAM_IPV4,
    WAN_UPSTREAM_IPV6,
    Lab,
)

START_TIMEOUT = 20.0
RESOLV_OPTIONS = "options timeout:2 attempts:1\n"


class LabError(RuntimeError):
    pass


def leftovers(lab: Lab) -> list[str]:
    """Whatever of this lab exists: namespaces and its state directory."""
    found = [ns for ns in lab.namespaces if netns.exists(ns)]
    return found + ([str(lab.state_dir)] if lab.state_dir.exists() else [])


def up(lab: Lab, gateway_mode: str = "auto") -> None:
    """Builds the lab and starts its servers and gateway. Refuses if any part of it exists already,
    and takes away whatever it made if a step fails."""
    existing = leftovers(lab)
    if existing:
        raise LabError(
            f"lab {lab.name!r} is already up (found {', '.join(existing)}): "
            f"run `appliance lab down{_name_option(lab)}` first"
        )
    mode = gateway.choose(gateway_mode)
    internet = load_internet()
    try:
        lab.state_dir.mkdir(parents=True)
        _network(lab, internet)
        _files(lab, internet)
        _internet_servers(lab, internet)
        gateway.start(lab, mode, internet)
    except BaseException:
        down(lab)
        raise


@dataclass(frozen=True)
class Removal:
    removed: list[str]  # namespaces and the state directory
    # nftables tables the appliance left in the gateway once stopped (removed with the namespace): it
    # should take its own away on SIGTERM.
    left_behind: list[str]


def down(lab: Lab) -> Removal:
    """Ends every process in the lab's namespaces (and its web UI), deletes the namespaces (their veths
    go with them), their /etc/netns files and the state directory. Safe to run again."""
    removed = leftovers(lab)
    appliance = gateway.current_mode(lab) == "appliance"
    # The lab's own servers first, so that the appliance shuts down in order (it stops its children).
    processes.end([pid for _, ns, pid in processes.recorded(lab.state_dir) if processes.running(pid, ns)])
    left_behind = []
    if appliance and netns.exists(lab.gateway_ns):
        out = netns.run(netns.in_ns(lab.gateway_ns, ["nft", "list", "tables"]))
        left_behind = [line.removeprefix("table ") for line in out.splitlines() if line.strip()]
    for ns in lab.namespaces:
        if netns.exists(ns):
            processes.end(netns.pids(ns))
    for ns in lab.namespaces:
        netns.delete(ns)
    shutil.rmtree(lab.state_dir, ignore_errors=True)
    return Removal(removed, left_behind)


def _name_option(lab: Lab) -> str:
    return "" if lab.name == Lab().name else f" --name {lab.name}"


def _network(lab: Lab, internet: Internet) -> None:
    gw, inet = lab.gateway_ns, lab.internet_ns
    for ns in lab.namespaces:
        netns.add(ns)
    netns.link(gw, WAN_IF, inet, UPLINK_IF)
    netns.add_address(gw, WAN_IF, f"{WAN_GATEWAY_IPV4}/{WAN_PREFIX4}")
    netns.add_address(gw, WAN_IF, f"{WAN_GATEWAY_IPV6}/{WAN_PREFIX6}")
    netns.add_address(inet, UPLINK_IF, f"{WAN_UPSTREAM_IPV4}/{WAN_PREFIX4}")
    netns.add_address(inet, UPLINK_IF, f"{WAN_UPSTREAM_IPV6}/{WAN_PREFIX6}")
    netns.add_route(gw, "default", WAN_UPSTREAM_IPV4)
    netns.add_route(gw, "default", WAN_UPSTREAM_IPV6)
    netns.sysctl(gw, "net.ipv4.ip_forward", "1")
    netns.sysctl(gw, "net.ipv6.conf.all.forwarding", "1")
    # The gateway refuses connections to the block addresses with ICMP port unreachable. `lab check` and
    # the tests send dozens such at once from one client, where a real pupil's device sends a few: no
    # per-client ICMP rate limit, so each refusal is seen at once rather than as a timeout.
    netns.sysctl(gw, "net.ipv4.icmp_ratelimit", "0")
    netns.sysctl(gw, "net.ipv6.icmp.ratelimit", "0")
    # The servers' addresses live on the internet namespace's loopback, one host address each.
    ns_host = internet.nameserver
    for addr in {ns_host.ipv4, ns_host.ipv6, *internet.addresses("web"), *internet.addresses("resolver")}:
        netns.add_address(inet, "lo", f"{addr}/{32 if ':' not in addr else 128}")
    for client in lab.clients:
        netns.link(gw, client.gateway_if, client.netns, CLIENT_IF)
        for family in (4, 6):
            prefix = client.prefix(family)
            netns.add_address(gw, client.gateway_if, f"{client.gateway_address(family)}/{prefix}")
            netns.add_address(client.netns, CLIENT_IF, f"{client.address(family)}/{prefix}")
            netns.add_route(client.netns, "default", client.gateway_address(family))
        netns.segment_like_a_lan(client.netns, CLIENT_IF)
        # The school's IPv6 prefixes are routed to it, as an ISP would; IPv4 leaves masqueraded.
        netns.add_route(inet, client.subnet(6), WAN_GATEWAY_IPV6)
        # Short timeouts, so that a probe of a name the gateway drops fails in seconds, not half a minute.
        resolvers = "".join(f"nameserver {client.gateway_address(f)}\n" for f in (4, 6))
        netns.write_etc(client.netns, "resolv.conf", resolvers + RESOLV_OPTIONS)
    # Tools run in the internet namespace ask the lab's public resolver, never the host's.
    resolver = next(s for s in internet.sites if s.server == "resolver")
    netns.write_etc(inet, "resolv.conf", f"nameserver {resolver.ipv4}\n")


def _files(lab: Lab, internet: Internet) -> None:
    names = internet.names()
    pki.write_ca_and_server_cert(
        lab.name, names, internet.addresses("resolver"), lab.ca_cert, lab.server_cert, lab.server_key
    )
    lab.root_hints.write_text(zones.root_hints(internet))
    (lab.state_dir / "conf").mkdir()


def _internet_servers(lab: Lab, internet: Internet) -> None:
    """The nameserver, the public resolver and the web server, started together, then waited for."""
    conf = lab.state_dir / "conf"
    ns_host = internet.nameserver
    zone_files = zones.write_zones(internet, lab.state_dir / "zones")
    (conf / "nameserver.conf").write_text(
        unbound.nameserver(lab.state_dir, [ns_host.ipv4, ns_host.ipv6], zone_files)
    )
    resolver_addrs = internet.addresses("resolver")
    (conf / "resolver.conf").write_text(
        unbound.recursive(
            lab.state_dir,
            resolver_addrs,
            ["0.0.0.0/0", "::/0"],
            lab.root_hints,
            identity="lab public resolver",
            tls=(lab.server_cert, lab.server_key),
        )
    )
    web_addrs = internet.addresses("web")
    servers = {
        "nameserver": (
            ["unbound", "-d", "-c", str(conf / "nameserver.conf")],
            [
                processes.Socket(p, a, unbound.DNS_PORT)
                for a in (ns_host.ipv4, ns_host.ipv6)
                for p in ("udp", "tcp")
            ],
        ),
        "resolver": (
            ["unbound", "-d", "-c", str(conf / "resolver.conf")],
            [
                processes.Socket(proto, a, port)
                for a in resolver_addrs
                for proto, port in (
                    ("udp", unbound.DNS_PORT),
                    ("tcp", unbound.DNS_PORT),
                    ("tcp", unbound.DOT_PORT),
                    ("tcp", unbound.DOH_PORT),
                )
            ],
        ),
        "web": (
            [
                sys.executable,
                "-m",
                "appliance.lab.webserver",
                "--cert",
                str(lab.server_cert),
                "--key",
                str(lab.server_key),
                *web_addrs,
            ],
            [
                processes.Socket(proto, a, port)
                for a in web_addrs
                for proto, port in (("tcp", HTTP_PORT), ("tcp", HTTPS_PORT), ("udp", HTTPS_PORT))
            ],
        ),
    }
    pids = {
        name: processes.start(lab.state_dir, name, lab.internet_ns, argv)
        for name, (argv, _) in servers.items()
    }
    for name, (_, sockets) in servers.items():
        processes.wait_listening(lab.state_dir, name, lab.internet_ns, pids[name], sockets, START_TIMEOUT)


def status(lab: Lab) -> tuple[bool, str]:
    """(healthy, report): healthy when every namespace exists and every server is running."""
    present = [ns for ns in lab.namespaces if netns.exists(ns)]
    if not present and not lab.state_dir.exists():
        return False, f"lab {lab.name!r} is down"
    lines = []
    healthy = len(present) == len(lab.namespaces)
    mode = gateway.current_mode(lab)
    what = {"appliance": "the appliance (appliance run)", "plain": "a plain router (no filtering)"}
    lines.append(f"lab {lab.name!r}: gateway runs {what.get(mode or '', 'nothing')}")
    lines.append(f"state directory: {lab.state_dir}")
    lines.append(f"lab CA certificate: {lab.ca_cert}  (curl --cacert {lab.ca_cert})")
    if mode == "appliance":
        notified = service.read_state(gateway.notify_state_file(lab))
        lines.append(f"appliance config: {lab.appliance_config}")
        lines.append(f"appliance status: {notified.get('STATUS', '(none reported)')}")
    lines.append("namespaces:")
    for ns in lab.namespaces:
        if not netns.exists(ns):
            lines.append(f"  {ns:<16} missing")
            continue
        by_if: dict[str, list[str]] = {}
        for ifname, cidr in netns.addresses(ns):
            by_if.setdefault(ifname, []).append(cidr)
        shown = [f"{i} {' '.join(a)}" for i, a in by_if.items() if i != "lo"]
        if "lo" in by_if:
            shown.append(f"lo: {len(by_if['lo'])} server addresses")
        role = _role(lab, ns)
        lines.append(f"  {ns:<16} {role:<34} {'; '.join(shown)}")
    lines.append("servers:")
    recorded = processes.recorded(lab.state_dir)
    for name, ns, pid in recorded:
        running = processes.running(pid, ns)
        healthy = healthy and running
        state = "running" if running else "NOT RUNNING"
        log = processes.log_file(lab.state_dir, name)
        lines.append(f"  {name:<11} pid {pid:<8} {state:<12} in {ns:<14} log {log}")
    if not recorded:
        healthy = False
        lines.append("  (none)")
    return healthy, "\n".join(lines)


def _role(lab: Lab, ns: str) -> str:
    if ns == lab.gateway_ns:
        return "gateway"
    if ns == lab.internet_ns:
        return "internet"
    client = next(c for c in lab.clients if c.netns == ns)
    return f"group {client.group}, VLAN {client.vlan} ({client.gateway_if})"
