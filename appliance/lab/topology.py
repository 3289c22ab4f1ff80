"""The lab's shape: its namespaces, the veth links between them, every address on them and where its
files live. One `Lab` value answers all of these, so the builder, `status`, `check` and the tests agree.

    clients (one namespace per group)        gateway namespace            internet namespace
    <lab>-students eth0 ── veth ── lan10 ┐
    <lab>-staff    eth0 ── veth ── lan20 ├── <lab>-gw ── wan0 ── veth ── eth0  <lab>-inet (servers on lo)
    ...                                  ┘

Each VLAN is its own veth (no 802.1Q here); the gateway side is named like the VLAN (lan10 for VLAN
10) and the generated appliance config maps it to its group, as production maps eth0.10."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

STATE_ROOT = Path("/run/appliance-lab")
GROUP_VLANS = {"students": 10, "staff": 20, "exams": 30, "specialist": 40, "guests": 50}
# Interface names inside the namespaces.
WAN_IF = "wan0"
CLIENT_IF = "eth0"
UPLINK_IF = "eth0"
# The gateway's uplink, as an ISP would hand it over (documentation ranges).
WAN_GATEWAY_IPV4 = "198.51.100.2"
WAN_UPSTREAM_IPV4 = "198.51.100.1"
WAN_GATEWAY_IPV6 = "2001:db8:100::2"
WAN_UPSTREAM_IPV6 = "2001:db8:100::1"
WAN_PREFIX4 = 24
WAN_PREFIX6 = 64
# Lab names become namespace names and directory names; keep them short and plain.
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")


@dataclass(frozen=True)
class Client:
    """One VLAN: a client namespace behind its own link to the gateway."""

    group: str
    vlan: int
    netns: str

    @property
    def gateway_if(self) -> str:
        return f"lan{self.vlan}"

    def address(self, family: int) -> str:
        return f"10.{self.vlan}.0.100" if family == 4 else f"fd00:{self.vlan}::100"

    def gateway_address(self, family: int) -> str:
        return f"10.{self.vlan}.0.1" if family == 4 else f"fd00:{self.vlan}::1"

    def subnet(self, family: int) -> str:
        return f"10.{self.vlan}.0.0/24" if family == 4 else f"fd00:{self.vlan}::/64"

    @staticmethod
    def prefix(family: int) -> int:
        return 24 if family == 4 else 64


@dataclass(frozen=True)
class Lab:
    name: str = "lab"

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"lab name {self.name!r}: use 1-12 lower-case letters and digits")

    @property
    def gateway_ns(self) -> str:
        return f"{self.name}-gw"

    @property
    def internet_ns(self) -> str:
        return f"{self.name}-inet"

    @property
    def clients(self) -> tuple[Client, ...]:
        return tuple(Client(g, vlan, f"{self.name}-{g}") for g, vlan in GROUP_VLANS.items())

    def client(self, group: str) -> Client:
        for client in self.clients:
            if client.group == group:
                return client
        raise KeyError(group)

    @property
    def namespaces(self) -> list[str]:
        return [self.gateway_ns, self.internet_ns, *(c.netns for c in self.clients)]

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.name

    @property
    def ca_cert(self) -> Path:
        return self.state_dir / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.state_dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.state_dir / "server.key"

    @property
    def root_hints(self) -> Path:
        return self.state_dir / "root.hints"

    @property
    def appliance_config(self) -> Path:
        return self.state_dir / "appliance.toml"

    @property
    def appliance_state_dir(self) -> Path:
        """The gateway's appliance's state directory (its database, lists and policy)."""
        return self.state_dir / "appliance"

    @property
    def feeds_dir(self) -> Path:
        """The sample policy's list files, as the trust's category feeds would be."""
        return self.state_dir / "feeds"
