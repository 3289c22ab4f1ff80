"""`appliance lab webui`: the web UI (`appliance webui serve`) for the lab's appliance, reachable from
this machine at https://127.0.0.1:PORT and from the lab's clients at the gateway's LAN addresses on
443, where the block page's "ask for it to be unblocked" link points.

One process serves both: its listening sockets are made here, those for the LAN addresses inside the
gateway's namespace (a socket keeps the namespace it was made in), and handed to gunicorn as
`--bind fd://N`. It runs in this (the host's) namespace, recorded like the lab's servers, so
`lab status` shows it and `lab down` stops it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

from appliance.lab import netns, processes
from appliance.lab.topology import Lab

NAME = "webui"
PORT = 8443  # on 127.0.0.1 in the host's namespace
LAN_PORT = 443  # on the gateway's LAN addresses
READY_TIMEOUT = 30.0
CLONE_NEWNET = 0x40000000
ADMIN_ROLE = "admin"  # webui.roles.Role.ADMIN, without loading the web UI to read it


class WebUiError(RuntimeError):
    pass


def urls(lab: Lab, port: int = PORT) -> tuple[str, list[str]]:
    """The address for this machine, and those for the lab's clients (the first is the one the block
    page links to)."""
    lan = [f"https://{c.gateway_address(4)}" for c in lab.clients]
    return f"https://127.0.0.1:{port}", lan


def running(lab: Lab) -> int | None:
    for name, ns, pid in processes.recorded(lab.state_dir):
        if name == NAME and processes.running(pid, ns):
            return pid
    return None


@contextlib.contextmanager
def _in_netns(ns: str) -> Iterator[None]:
    """Runs the block with this thread in namespace ns (Python 3.11's os has no setns)."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(netns.NETNS_RUN / ns, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"cannot enter namespace {ns}")
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # never go on in the wrong namespace
                os.write(2, f"lab webui: cannot return from namespace {ns}\n".encode())
                os._exit(1)
    finally:
        os.close(target)
        os.close(own)


def _listener(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def start(lab: Lab, port: int = PORT) -> int:
    """Starts the web UI unless it is running; returns its pid once it answers over HTTPS."""
    pid = running(lab)
    if pid is not None:
        return pid
    if not lab.appliance_config.exists():
        raise WebUiError(f"lab {lab.name!r} runs no appliance: bring it up with `--gateway appliance`")
    sockets = [_listener("127.0.0.1", port)]
    try:
        with _in_netns(lab.gateway_ns):
            sockets += [_listener(c.gateway_address(f), LAN_PORT) for c in lab.clients for f in (4, 6)]
        # The first name is the web address the block page links to: one every client can reach.
        names = [c.gateway_address(f) for c in lab.clients for f in (4, 6)] + ["127.0.0.1"]
        argv = [sys.executable, "-m", "appliance.cli", "webui", "serve"]
        argv += ["--config", str(lab.appliance_config)]
        argv += [a for s in sockets for a in ("--bind", f"fd://{s.fileno()}")]
        argv += [a for n in names for a in ("--hostname", n)]
        fds = tuple(s.fileno() for s in sockets)
        pid = processes.start(lab.state_dir, NAME, netns.HOST, argv, pass_fds=fds)
    finally:
        for sock in sockets:  # the web UI has its own copies now
            sock.close()
    _wait(lab, pid, port)
    return pid


def _answers(port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # its certificate is self-signed; only whether it answers
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return tls.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def _wait(lab: Lab, pid: int, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not _answers(port):
        if not processes.alive(pid):
            raise WebUiError(f"the web UI exited:\n{processes.log_tail(lab.state_dir, NAME)}")
        if time.monotonic() > deadline:
            raise WebUiError(f"the web UI did not answer after {READY_TIMEOUT:.0f}s")
        time.sleep(0.2)


def administrators(lab: Lab) -> int:
    """How many enabled trust administrators the lab's appliance has."""
    with contextlib.closing(sqlite3.connect(lab.appliance_state_dir / "state.db")) as db:
        try:
            row = db.execute(
                "SELECT COUNT(*) FROM web_users WHERE role = ? AND disabled = 0", (ADMIN_ROLE,)
            ).fetchone()
        except sqlite3.OperationalError:  # no web UI table yet
            return 0
    return int(row[0])


def create_admin_argv(lab: Lab) -> list[str]:
    """The command that creates the first administrator (it asks for the password)."""
    return ["appliance", "webui", "create-admin", "--config", str(lab.appliance_config)]


def create_admin(lab: Lab, username: str, email: str) -> int:
    """Runs create-admin on this terminal (it asks for the password twice); its exit status."""
    argv = [sys.executable, "-m", "appliance.cli", *create_admin_argv(lab)[1:]]
    return subprocess.run([*argv, "--username", username, "--email", email], check=False).returncode
