"""Every unit in systemd/ (data plane, resolver, web UI, compliance, timers): valid to systemd
itself, and hardened.

`systemd-analyze verify` checks that each ExecStart binary exists, so it runs against a scratch root
holding systemd's own units, ours in /etc/systemd/system and the installed `appliance` entry point at
the path the units use.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNITS = sorted(p.name for p in UNIT_DIR.glob("*.service"))
TIMERS = sorted(p.name for p in UNIT_DIR.glob("*.timer"))
# Where a unit needs more than the common profile, and why.
ALLOWANCES: dict[str, dict[str, list[str]]] = {
    # Each compliance probe is a network namespace joined to its VLAN (ip netns add: CAP_SYS_ADMIN,
    # a bind mount under /run/netns, and /etc/netns for its resolv.conf).
    "appliance-compliance.service": {
        "RestrictNamespaces": ["net"],
        "SystemCallFilter": ["@system-service @mount"],
        "ReadWritePaths": ["/var/lib/appliance /run/netns /etc/netns"],
        "CapabilityBoundingSet": ["CAP_NET_ADMIN CAP_SYS_ADMIN CAP_NET_RAW"],
    },
}
# systemd-analyze security's scale: 0 safest, 10 unprotected. CAP_SYS_ADMIN costs the probes some.
MAX_EXPOSURE = {"appliance-compliance.service": 3.5}
ENTRY_POINT = Path(sys.executable).parent / "appliance"  # what `pip install` made for the project


def settings(unit: str) -> dict[str, list[str]]:
    """Each key's values in the [Service] section (systemd allows repeated keys)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in (UNIT_DIR / unit).read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and section == "Service":
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS + TIMERS:
        shutil.copy(UNIT_DIR / unit, root / "etc/systemd/system" / unit)
    (root / "usr/local/bin").mkdir(parents=True)
    shutil.copy(ENTRY_POINT, root / "usr/local/bin/appliance")
    return root


@pytest.mark.parametrize("unit", UNITS + TIMERS)
def test_systemd_analyze_verify_passes(root: Path, unit: str) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{unit}"],
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_hardened(root: Path, unit: str) -> None:
    s = settings(unit)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictNamespaces": "yes",
        "SystemCallFilter": "@system-service",
        "SystemCallArchitectures": "native",
        "MemoryDenyWriteExecute": "yes",
    }.items():
        assert s.get(key) == ALLOWANCES.get(unit, {}).get(key, [value]), key
    assert s["ExecStart"][0].startswith("/usr/local/bin/appliance ")
    families = set(s["RestrictAddressFamilies"][0].split())
    assert families <= {"AF_NETLINK", "AF_INET", "AF_INET6", "AF_UNIX"}
    allowed = {"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}
    allowed |= set(ALLOWANCES.get(unit, {}).get("CapabilityBoundingSet", [""])[0].split())
    assert set(s["CapabilityBoundingSet"][0].split()) <= allowed
    # What it may write: its state directory, nothing else (unless allowed above).
    writable = ALLOWANCES.get(unit, {}).get("ReadWritePaths", ["/var/lib/appliance"])
    assert s.get("ReadWritePaths", ["/var/lib/appliance"]) == writable
    assert s["StateDirectory"][0].startswith("appliance")

    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", f"/etc/systemd/system/{unit}"],
        capture_output=True,
        text=True,
    )
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert exposure, result.stdout + result.stderr
    assert float(exposure.group(1)) <= MAX_EXPOSURE.get(unit, 3.0)


def test_data_plane_unit_is_notify_with_watchdog() -> None:
    s = settings("appliance.service")
    assert s["Type"] == ["notify"]
    assert int(s["WatchdogSec"][0]) > 0
    assert s["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW"]
    assert "AF_NETLINK" in s["RestrictAddressFamilies"][0]  # nftables, NFQUEUE
    assert s["ExecStart"][0].endswith("--skip resolver")  # appliance-resolver.service runs it


def test_resolver_runs_as_unbound_without_root() -> None:
    s = settings("appliance-resolver.service")
    assert s["User"] == ["unbound"]
    assert s["Type"] == ["notify"]  # unbound, exec'd in place, sends READY=1 itself
    assert s["StateDirectory"] == ["appliance/resolver"]
    assert "AF_NETLINK" not in s["RestrictAddressFamilies"][0]


def test_web_ui_has_no_network_admin() -> None:
    s = settings("appliance-webui.service")
    assert s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert s["ExecStart"][0].startswith("/usr/local/bin/appliance webui serve --config ")


def test_long_running_units_use_the_config() -> None:
    for unit in ("appliance.service", "appliance-webui.service", "appliance-compliance.service"):
        assert "--config /etc/appliance/appliance.toml" in settings(unit)["ExecStart"][0], unit


@pytest.mark.parametrize("timer", TIMERS)
def test_every_timer_has_its_service(timer: str) -> None:
    assert (UNIT_DIR / timer.replace(".timer", ".service")).exists()
    assert "Persistent=true" in (UNIT_DIR / timer).read_text()  # a run missed while off happens at boot
