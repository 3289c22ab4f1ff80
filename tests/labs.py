"""The lab for tests (docs/lab.md): the `appliance` command as a test runs it, and a lab brought up with
the appliance and its sample policy, then brought down leaving nothing behind. The module-scoped
fixture `appliance_lab` (tests/conftest.py) is built on `appliance_lab` here."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.lab import netns
from appliance.lab.topology import Lab


def appliance(*args: str, timeout: float = 180, input: str = "") -> subprocess.CompletedProcess[str]:
    """The CLI, its standard input not a terminal."""
    argv = [sys.executable, "-m", "appliance.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, check=False)


def cmdline(proc: Path) -> str:
    """A process's command line (proc: its /proc directory), or "" once it has gone."""
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@contextmanager
def appliance_lab(name: str) -> Iterator[Lab]:
    """`appliance lab up --gateway appliance` (the appliance with the lab's sample policy in force), and
    at the end `lab down`, which must leave nothing behind: the appliance took its nftables table away
    when it stopped (`lab down` says if it did not), and no namespace, /etc/netns file, process (the web
    UI included) or state is left."""
    lab = Lab(name)
    try:
        up = appliance("lab", "--name", lab.name, "up", "--gateway", "appliance")
        assert up.returncode == 0, up.stdout + up.stderr
        yield lab
    finally:
        down = appliance("lab", "--name", lab.name, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not [ns for ns in lab.namespaces if re.search(rf"^{ns}\b", listed, re.M)]
        assert not [ns for ns in lab.namespaces if (netns.NETNS_ETC / ns).exists()]
        assert not lab.state_dir.exists()
        assert not any(str(lab.appliance_config) in cmdline(p) for p in Path("/proc").glob("[0-9]*"))
