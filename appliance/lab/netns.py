"""Network namespace plumbing for the lab, done with iproute2 as an administrator would by hand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

NETNS_RUN = Path("/run/netns")
NETNS_ETC = Path("/etc/netns")
# The namespace the lab command itself runs in (the host's), where the lab's web UI runs. No lab
# namespace has this name: theirs all contain a '-'.
HOST = "host"


class CommandError(RuntimeError):
    pass


def run(argv: list[str], input: str | None = None) -> str:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.stdout


def in_ns(ns: str, argv: list[str]) -> list[str]:
    return argv if ns == HOST else ["ip", "netns", "exec", ns, *argv]


def exists(ns: str) -> bool:
    return (NETNS_RUN / ns).exists()


def add(ns: str) -> None:
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])


def link(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair created with each end already in its namespace, so nothing touches the host's."""
    run(["ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b])
    run(["ip", "-n", ns_a, "link", "set", if_a, "up"])
    run(["ip", "-n", ns_b, "link", "set", if_b, "up"])


def add_address(ns: str, ifname: str, cidr: str) -> None:
    # nodad: an IPv6 address is usable at once instead of after duplicate address detection.
    extra = ["nodad"] if ":" in cidr else []
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", ifname, *extra])


def add_route(ns: str, dest: str, via: str) -> None:
    run(["ip", "-n", ns, "route", "add", dest, "via", via])


def segment_like_a_lan(ns: str, ifname: str) -> None:
    """Turns the veth's segmentation offloads off, so that the kernel cuts what a client sends into
    MTU-sized packets as a real LAN does (a browser's post-quantum ClientHello then crosses the
    gateway in two or more TCP segments), instead of handing on one large packet."""
    run(in_ns(ns, ["ethtool", "-K", ifname, "tso", "off", "gso", "off"]))


def sysctl(ns: str, key: str, value: str) -> None:
    run(in_ns(ns, ["sysctl", "-qw", f"{key}={value}"]))


def addresses(ns: str) -> list[tuple[str, str]]:
    """(interface, address/prefix) for every global address in the namespace."""
    out = run(["ip", "-n", ns, "-o", "addr", "show", "scope", "global"])
    return [(f[1], f[3]) for f in (line.split() for line in out.splitlines())]


def pids(ns: str) -> list[int]:
    return [int(p) for p in run(["ip", "netns", "pids", ns]).split()]


def write_etc(ns: str, filename: str, text: str) -> None:
    """A per-namespace /etc file: `ip netns exec` bind-mounts /etc/netns/NS/FILE over /etc/FILE."""
    path = NETNS_ETC / ns / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def delete(ns: str) -> None:
    """Deletes the namespace (its veths go with it) and its /etc/netns directory; a namespace that is
    already gone is fine. End its processes first: a process inside keeps the namespace alive."""
    if exists(ns):
        run(["ip", "netns", "del", ns])
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def inode(ns: str) -> int | None:
    try:
        return Path("/proc/self/ns/net" if ns == HOST else NETNS_RUN / ns).stat().st_ino
    except OSError:
        return None
