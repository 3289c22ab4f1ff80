"""Network namespaces and veth links for tests that need real networking (root only).

Every namespace made here gets a unique name, so parallel test runs never collide, and is removed
(with its links and every process started through it) when its `netns_lab()` block ends, even on
failure:

    with netns_lab() as lab:
        gw, client = lab.namespace("gw"), lab.namespace("client")
        lab.link(gw, "lan0", client, "eth0")
        gw.addr("lan0", "10.10.0.1/24", "fd00:10::1/64")
        client.addr("eth0", "10.10.0.2/24", "fd00:10::2/64")
        client.route_default("10.10.0.1", "fd00:10::1")
        client.run("ping", "-c1", "10.10.0.1")
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator

from appliance.lab import netns as plumbing

_counter = itertools.count()

# A gateway config's LANs for tests with three client namespaces (students fail closed, staff fail
# open, exams on an allowlist), each VLAN a veth named like the gateway side of its link.
THREE_GROUPS = """[[lan]]
interface = "lan_st"
group = "students"
subnets = ["10.10.0.0/24", "fd00:10::/64"]

[[lan]]
interface = "lan_sf"
group = "staff"
subnets = ["10.20.0.0/24", "fd00:20::/64"]

[[lan]]
interface = "lan_ex"
group = "exams"
subnets = ["10.30.0.0/24", "fd00:30::/64"]

[groups.students]
fail = "closed"

[groups.staff]
fail = "open"

[groups.exams]
internet = "allowlist"
"""


class Netns:
    """One network namespace; commands run inside it through `ip netns exec`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._procs: list[subprocess.Popen[str]] = []
        plumbing.add(name)

    def exec_argv(self, *argv: str) -> list[str]:
        return plumbing.in_ns(self.name, list(argv))

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Runs a command to completion; with check, a failure raises with its output in the message."""
        result = subprocess.run(
            self.exec_argv(*argv), capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} in {self.name} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def popen(self, *argv: str, **kwargs: object) -> subprocess.Popen[str]:
        """Starts a background process, stopped when the namespace is destroyed."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        proc: subprocess.Popen[str] = subprocess.Popen(self.exec_argv(*argv), text=True, **kwargs)  # type: ignore[call-overload]
        self._procs.append(proc)
        return proc

    def ip(self, *args: str) -> None:
        self.run("ip", *args)

    def addr(self, ifname: str, *cidrs: str) -> None:
        """Adds addresses and brings the link up (IPv6 usable at once, without duplicate detection)."""
        for cidr in cidrs:
            plumbing.add_address(self.name, ifname, cidr)
        self.ip("link", "set", ifname, "up")

    def route_default(self, *gateways: str) -> None:
        for gateway in gateways:
            family = "-6" if ipaddress.ip_address(gateway).version == 6 else "-4"
            self.ip(family, "route", "add", "default", "via", gateway)

    def sysctl(self, key: str, value: str) -> None:
        plumbing.sysctl(self.name, key, value)

    def wait_for_port(self, port: int, proto: str = "tcp", timeout: float = 10) -> None:
        """Waits until something in this namespace listens on the port (ss reads the namespace's sockets)."""
        flag = "-ltn" if proto == "tcp" else "-lun"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run("ss", "-H", flag, f"sport = :{port}").stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise AssertionError(f"nothing listens on {proto}/{port} in {self.name} after {timeout}s")

    def stop_processes(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        self._procs.clear()

    def destroy(self) -> None:
        self.stop_processes()
        # Processes started other ways (e.g. daemons that forked) would keep the namespace alive.
        if plumbing.exists(self.name):
            for pid in plumbing.pids(self.name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        plumbing.delete(self.name)


class NetnsLab:
    """The namespaces of one test; see `netns_lab`."""

    def __init__(self) -> None:
        self.namespaces: list[Netns] = []
        self._tag = f"t{os.getpid()}x{next(_counter)}"

    def namespace(self, role: str) -> Netns:
        ns = Netns(f"{self._tag}-{role}")
        self.namespaces.append(ns)
        return ns

    def link(self, a: Netns, a_ifname: str, b: Netns, b_ifname: str) -> None:
        """A veth pair from a to b, each end made in its namespace (no name ever exists in the host's)."""
        plumbing.link(a.name, a_ifname, b.name, b_ifname)

    def three_group_clients(self, gw: Netns) -> dict[str, Netns]:
        """A client namespace per LAN of THREE_GROUPS, linked to gw: the gateway is .1 and ::1 of each
        group's subnets, the client .2 and ::2 with its default routes through the gateway."""
        clients = {}
        for group, link, net in (
            ("students", "lan_st", 10),
            ("staff", "lan_sf", 20),
            ("exams", "lan_ex", 30),
        ):
            client = clients[group] = self.namespace(group[:5])
            self.link(gw, link, client, "eth0")
            gw.addr(link, f"10.{net}.0.1/24", f"fd00:{net}::1/64")
            client.addr("eth0", f"10.{net}.0.2/24", f"fd00:{net}::2/64")
            client.route_default(f"10.{net}.0.1", f"fd00:{net}::1")
        return clients

    def destroy(self) -> None:
        for ns in reversed(self.namespaces):
            ns.destroy()
        self.namespaces.clear()


@contextlib.contextmanager
def netns_lab() -> Iterator[NetnsLab]:
    lab = NetnsLab()
    try:
        yield lab
    finally:
        lab.destroy()
