"""Where the probes run: one network namespace per group, on that group's VLAN, so that its traffic
crosses the same DNS filter and fast path as a pupil's.

- In the lab, the group's client namespace (`<lab>-students` ...), as it is.
- On the appliance, a namespace made for the run (`cmp-GROUP`) behind a veth pair whose appliance
  end is spliced into the group's LAN interface with tc: what the probe sends is injected into the
  LAN interface's ingress (so nftables sees `iifname eth0.10`, as for a pupil), and what the
  appliance sends to the probe's MAC leaves that interface's egress into the veth. The probe uses an
  address reserved for it on the VLAN (compliance.toml [probes]). A macvlan or a second VLAN device
  cannot do this: neither can reach its parent's own addresses, which is where the gateway is.
  Everything made is removed afterwards, whatever happened.

The reference view is the one from outside the filter: what a name really resolves to and whether
its site answers. On the appliance it is the appliance's own resolver and network namespace (its own
traffic is not filtered); in the lab, the lab's internet namespace and its public resolver."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import Config, Lan
from appliance.lab import netns
from appliance.lab.topology import Lab

PROBE_PREFIX = "cmp-"
# tc filter preference of the egress filter on the LAN interface: ours alone, so removal is exact.
TC_PREF_BASE = 4600


@dataclass(frozen=True)
class Vantage:
    """A group's probe: the namespace its clients run in and its own addresses."""

    group: str
    netns: str
    addresses: tuple[str, ...]

    @property
    def families(self) -> tuple[int, ...]:
        return tuple(sorted({ipaddress.ip_address(a).version for a in self.addresses}))


@dataclass(frozen=True)
class Reference:
    """The view from outside the filter: where to run a command (None: here) and which resolver
    dig asks (options such as @127.0.0.1 -p 5353; none: the namespace's own)."""

    netns: str | None
    dig_server: tuple[str, ...] = ()

    def argv(self, argv: list[str]) -> list[str]:
        return netns.in_ns(self.netns, argv) if self.netns else argv


@dataclass
class Site:
    """Everything a run needs to know about where it runs."""

    description: str
    reference: Reference
    cacert: str | None  # CA bundle for the clients; None: the system's
    block_addresses: frozenset[str]
    vantages: dict[str, Vantage] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # group -> why it cannot be probed


def lab_site(lab: Lab, config: Config | None, groups: list[str]) -> Site:
    """The lab's client namespaces: nothing to make, so nothing to remove."""
    site = Site(
        description=f"lab {lab.name!r}",
        reference=Reference(lab.internet_ns),
        cacert=str(lab.ca_cert),
        block_addresses=_block_addresses(config),
    )
    for group in groups:
        try:
            client = lab.client(group)
        except KeyError:
            site.unavailable[group] = f"the lab has no VLAN for group {group}"
            continue
        if not netns.exists(client.netns):
            site.unavailable[group] = f"namespace {client.netns} does not exist (is the lab up?)"
            continue
        site.vantages[group] = Vantage(group, client.netns, (client.address(4), client.address(6)))
    return site


def _block_addresses(config: Config | None) -> frozenset[str]:
    if config is None:
        return frozenset()
    return frozenset({str(config.dns.block_ipv4), str(config.dns.block_ipv6)})


@contextlib.contextmanager
def appliance_site(
    config: Config,
    probes: dict[str, tuple[str, ...]],
    groups: list[str],
    appliance_ns: str | None = None,
    cacert: str | None = None,
) -> Iterator[Site]:
    """Probe namespaces spliced into each group's LAN interface on the appliance (appliance_ns is the
    namespace the appliance runs in: None in production, the lab's gateway in tests)."""
    upstream = config.dns.upstream
    site = Site(
        description="the appliance",
        reference=Reference(appliance_ns, (f"@{upstream.address}", "-p", str(upstream.port))),
        cacert=cacert,
        block_addresses=_block_addresses(config),
    )
    with contextlib.ExitStack() as stack:
        for group in groups:
            lan = next((lan for lan in config.lans if lan.group == group), None)
            if lan is None:
                site.unavailable[group] = f"no [[lan]] in the configuration is for group {group}"
                continue
            if not probes.get(group):
                site.unavailable[group] = (
                    f"no probe address reserved for {group} (compliance.toml [probes] {group})"
                )
                continue
            probe = TapProbe(appliance_ns, lan, config.group(group).id, probes[group])
            try:
                site.vantages[group] = stack.enter_context(probe.attached())
            except (netns.CommandError, ValueError) as e:
                site.unavailable[group] = f"cannot attach a probe to {lan.interface}: {e}"
        yield site


def _ip(ns: str | None, *args: str) -> str:
    return netns.run(["ip", *(["-n", ns] if ns else []), *args])


def _tc(ns: str | None, *args: str) -> str:
    return netns.run(["tc", *(["-n", ns] if ns else []), *args])


def _mac(ns: str | None, ifname: str) -> str:
    return str(json.loads(_ip(ns, "-j", "link", "show", "dev", ifname))[0]["address"])


class TapProbe:
    """One group's probe namespace, spliced into its LAN interface (see the module's docstring)."""

    def __init__(self, appliance_ns: str | None, lan: Lan, group_id: int, addresses: tuple[str, ...]) -> None:
        self.ns = appliance_ns
        self.lan = lan
        self.group = lan.group
        self.probe_ns = f"{PROBE_PREFIX}{lan.group}"
        self.veth = f"cmp{group_id}"
        self.pref = str(TC_PREF_BASE + group_id)
        self.addresses = addresses

    def _interfaces(self) -> list[tuple[str, int, str]]:
        """(probe address, prefix length, gateway address) for each probe address."""
        gateway = [
            ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
            for entry in json.loads(_ip(self.ns, "-j", "addr", "show", "dev", self.lan.interface))
            for a in entry.get("addr_info", [])
            if a.get("scope") == "global"
        ]
        out = []
        for text in self.addresses:
            address = ipaddress.ip_address(text)
            subnet = next((n for n in self.lan.subnets if address in n), None)
            if subnet is None:
                raise ValueError(f"{text} is in none of {self.lan.interface}'s subnets")
            gw = next((g for g in gateway if g.ip in subnet), None)
            if gw is None:
                raise ValueError(f"{self.lan.interface} has no address in {subnet}")
            out.append((text, subnet.prefixlen, str(gw.ip)))
        return out

    def _check_free(self, address: str) -> None:
        shown = json.loads(_ip(self.ns, "-j", "neigh", "show", address, "dev", self.lan.interface) or "[]")
        for entry in shown:
            if entry.get("lladdr") and "FAILED" not in entry.get("state", []):
                raise ValueError(f"{address} is in use on the VLAN (by {entry['lladdr']}): reserve another")

    @contextlib.contextmanager
    def attached(self) -> Iterator[Vantage]:
        interfaces = self._interfaces()
        for address, _, _ in interfaces:
            self._check_free(address)
        made: list[str] = []
        try:
            yield self._attach(interfaces, made)
        finally:
            self._detach(made)

    def _attach(self, interfaces: list[tuple[str, int, str]], made: list[str]) -> Vantage:
        netns.add(self.probe_ns)
        made.append("netns")
        where = ["netns", self.ns] if self.ns else []
        _ip(
            None,
            "link",
            "add",
            self.veth,
            *where,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            self.probe_ns,
        )
        made.append("veth")
        # No addresses on the appliance's end: it only carries frames to and from the LAN interface.
        sysctl = ["sysctl", "-qw", f"net.ipv6.conf.{self.veth}.disable_ipv6=1"]
        netns.run(netns.in_ns(self.ns, sysctl) if self.ns else sysctl)
        _ip(self.ns, "link", "set", self.veth, "up")
        _ip(self.probe_ns, "link", "set", "eth0", "up")
        veth_mac, probe_mac = _mac(self.ns, self.veth), _mac(self.probe_ns, "eth0")
        for address, prefix, gateway in interfaces:
            netns.add_address(self.probe_ns, "eth0", f"{address}/{prefix}")
            _ip(
                self.probe_ns,
                "neigh",
                "replace",
                gateway,
                "lladdr",
                veth_mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            )
            _ip(self.probe_ns, "route", "add", "default", "via", gateway)
            _ip(
                self.ns,
                "neigh",
                "replace",
                address,
                "lladdr",
                probe_mac,
                "dev",
                self.lan.interface,
                "nud",
                "permanent",
            )
            made.append(f"neigh {address}")
        _tc(self.ns, "qdisc", "add", "dev", self.veth, "clsact")
        _tc(
            self.ns,
            "filter",
            "add",
            "dev",
            self.veth,
            "ingress",
            "protocol",
            "all",
            "u32",
            "match",
            "u32",
            "0",
            "0",
            "action",
            "mirred",
            "ingress",
            "redirect",
            "dev",
            self.lan.interface,
        )
        if "clsact" not in _tc(self.ns, "qdisc", "show", "dev", self.lan.interface):
            _tc(self.ns, "qdisc", "add", "dev", self.lan.interface, "clsact")
            made.append("clsact")
        _tc(
            self.ns,
            "filter",
            "add",
            "dev",
            self.lan.interface,
            "egress",
            "pref",
            self.pref,
            "protocol",
            "all",
            "u32",
            "match",
            "ether",
            "dst",
            probe_mac,
            "action",
            "mirred",
            "egress",
            "redirect",
            "dev",
            self.veth,
        )
        made.append("filter")
        resolvers = "".join(f"nameserver {gateway}\n" for _, _, gateway in interfaces)
        netns.write_etc(self.probe_ns, "resolv.conf", resolvers + "options timeout:2 attempts:1\n")
        return Vantage(self.group, self.probe_ns, tuple(a for a, _, _ in interfaces))

    def _detach(self, made: list[str]) -> None:
        """Removes what _attach made, newest first; each step is tried whatever the others did."""
        for item in reversed(made):
            with contextlib.suppress(netns.CommandError):
                self._undo(item)
        shutil.rmtree(Path(netns.NETNS_ETC) / self.probe_ns, ignore_errors=True)

    def _undo(self, item: str) -> None:
        if item.startswith("neigh "):
            _ip(self.ns, "neigh", "del", item.removeprefix("neigh "), "dev", self.lan.interface)
        elif item == "filter":
            _tc(self.ns, "filter", "del", "dev", self.lan.interface, "egress", "pref", self.pref)
        elif item == "clsact":
            _tc(self.ns, "qdisc", "del", "dev", self.lan.interface, "clsact")
        elif item == "veth":
            # Deleted here, at once: a deleted namespace takes its veths with it only when the kernel
            # gets round to freeing it, which may be after the run has ended.
            _ip(self.ns, "link", "del", self.veth)
        else:
            netns.delete(self.probe_ns)
