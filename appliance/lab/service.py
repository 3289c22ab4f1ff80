"""Runs one command as systemd runs a Type=notify service, for the appliance in the lab's gateway: it
owns the $NOTIFY_SOCKET the appliance reports READY=1 and STATUS= to, writes what it hears to a state
file for `lab up` and `lab status`, passes SIGTERM on, and exits when the command does (with its
status). It does not restart the command: in the lab a crash should show, not be hidden.

python -m appliance.lab.service --socket PATH --state FILE -- COMMAND...
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from types import FrameType

UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


def read_state(path: Path) -> dict[str, str]:
    """The latest value of each notification key (READY, STATUS, STOPPING...) heard so far."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.lab.service")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    args.socket.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(args.socket))
    # Each message carries its sender's pid, so that (like systemd's NotifyAccess=main) only the main
    # process counts: its children inherit $NOTIFY_SOCKET, and unbound sends READY=1 of its own.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    child = subprocess.Popen(args.command, env={**os.environ, "NOTIFY_SOCKET": str(args.socket)})

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    state: dict[str, str] = {}
    while child.poll() is None:
        if not select.select([sock], [], [], 0.5)[0]:
            continue
        data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
        sender = next(
            (
                UCRED.unpack(d[: UCRED.size])[0]
                for lvl, kind, d in ancillary
                if (lvl, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
            ),
            None,
        )
        text = data.decode(errors="replace")
        if sender != child.pid:
            print(f"notify: ignored {text!r} from pid {sender}, not the main process", flush=True)
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            state[key] = value
            print(f"notify: {line}", flush=True)
        tmp = args.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(args.state)
    args.socket.unlink(missing_ok=True)
    print(f"service: {' '.join(args.command)} exited with status {child.returncode}", flush=True)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
