"""The lab's long-running servers: each started detached inside a namespace, with one pid file and one
log under the lab's state directory, so `status` and `down` find them after `up` has exited."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.lab import netns


@dataclass(frozen=True)
class Socket:
    """A listening socket a server must have before it counts as started."""

    proto: str  # "tcp" or "udp"
    addr: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{self.proto} {host}:{self.port}"


class StartError(RuntimeError):
    pass


def pid_dir(state_dir: Path) -> Path:
    return state_dir / "pids"


def log_file(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


def start(
    state_dir: Path,
    name: str,
    ns: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> int:
    """Starts argv in namespace ns (netns.HOST: this one) in its own session (it outlives this
    process), with the file descriptors pass_fds open; returns its pid."""
    log = log_file(state_dir, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # `ip netns exec` execs argv in place, so the pid we get is the server's own.
        proc = subprocess.Popen(
            netns.in_ns(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            pass_fds=pass_fds,
        )
    # pids/NAMESPACE/NAME.pid, so that status knows where to look for each one.
    pid_file = pid_dir(state_dir) / ns / f"{name}.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def recorded(state_dir: Path) -> list[tuple[str, str, int]]:
    """(name, namespace, pid) for every server with a pid file; it may have exited since."""
    found = []
    for path in sorted(pid_dir(state_dir).glob("*/*.pid")):
        try:
            found.append((path.stem, path.parent.name, int(path.read_text())))
        except ValueError:
            continue
    return found


def running(pid: int, ns: str) -> bool:
    """True if pid is alive and still in namespace ns (so a reused pid is not mistaken for ours)."""
    ino = netns.inode(ns)
    try:
        return alive(pid) and ino is not None and os.stat(f"/proc/{pid}/ns/net").st_ino == ino
    except OSError:
        return False


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def end(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL for whatever is still alive after grace seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if alive(p)]
            time.sleep(0.05)
        if not pids:
            return


def listening(ns: str) -> set[str]:
    """Listening sockets in ns, formatted like Socket.__str__ (interface suffixes dropped)."""
    out = netns.run(netns.in_ns(ns, ["ss", "-H", "-l", "-n", "-t", "-u"]))
    found = set()
    for fields in (line.split() for line in out.splitlines()):
        host, _, port = fields[4].rpartition(":")
        found.add(f"{fields[0]} {host.split('%')[0]}:{port}")
    return found


def wait_listening(
    state_dir: Path, name: str, ns: str, pid: int, sockets: list[Socket], timeout: float
) -> None:
    """Waits until the server listens on every socket; raises with its log's tail if it exits or is late."""
    want = {str(s) for s in sockets}
    deadline = time.monotonic() + timeout
    while True:
        if not alive(pid):
            raise StartError(f"{name} exited during start-up:\n{log_tail(state_dir, name)}")
        missing = want - listening(ns)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise StartError(
                f"{name} not listening on {', '.join(sorted(missing))} after {timeout:.0f}s:\n"
                f"{log_tail(state_dir, name)}"
            )
        time.sleep(0.1)


def log_tail(state_dir: Path, name: str, lines: int = 20) -> str:
    try:
        return "\n".join(log_file(state_dir, name).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
