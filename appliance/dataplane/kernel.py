"""The sysctls the data plane needs in its network namespace, put back as they were on stop."""

from __future__ import annotations

from pathlib import Path

from appliance.config import Config

PROC_SYS = Path("/proc/sys")


def settings(config: Config) -> dict[str, str]:
    """Call once the table is applied: nf_conntrack_acct exists only once conntrack is loaded."""
    values = {
        "net/ipv4/ip_forward": "1",
        "net/ipv6/conf/all/forwarding": "1",
        # `ct original packets` (how many packets of a flow to queue) needs conntrack accounting.
        "net/netfilter/nf_conntrack_acct": "1",
    }
    wan_ipv6 = f"net/ipv6/conf/{config.wan.interface}"
    if (PROC_SYS / wan_ipv6).exists():
        # A forwarding host ignores router advertisements unless told otherwise, and the WAN may get
        # its IPv6 address and default route from them.
        values[f"{wan_ipv6}/accept_ra"] = "2"
    return values


class Sysctls:
    def __init__(self) -> None:
        self._previous: dict[Path, str] = {}

    def apply(self, values: dict[str, str]) -> None:
        """Sets each sysctl, remembering the value it had."""
        for key, value in values.items():
            path = PROC_SYS / key
            self._previous.setdefault(path, path.read_text().strip())
            path.write_text(value)

    def restore(self) -> None:
        for path, value in self._previous.items():
            path.write_text(value)
        self._previous.clear()
