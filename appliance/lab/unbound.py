"""unbound configurations for the lab's three DNS roles: the authoritative nameserver (the lab's root and
every top-level zone), the foreign public resolver (Do53, DoT and DoH) and, when the gateway runs
without the appliance, the gateway's plain recursive resolver."""

from __future__ import annotations

from pathlib import Path

DNS_PORT = 53
DOT_PORT = 853
DOH_PORT = 443
DOH_PATH = "/dns-query"


def _server(directory: Path, listen: list[str], access: list[str]) -> list[str]:
    # Foreground, no privilege drop or chroot, logs to stderr: the lab keeps the log and the pid.
    lines = [
        "server:",
        f'  directory: "{directory}"',
        "  do-daemonize: no",
        '  username: ""',
        '  chroot: ""',
        '  pidfile: ""',
        "  use-syslog: no",
        '  logfile: ""',
        "  verbosity: 1",
        "  num-threads: 1",
        "  interface-automatic: no",
        # The lab's zones are unsigned: no validator, so no trust anchor is needed.
        '  module-config: "iterator"',
    ]
    lines += [f"  interface: {addr}" for addr in listen]
    lines += [f"  access-control: {net} allow" for net in access]
    return lines


def _tail() -> list[str]:
    return ["remote-control:", "  control-enable: no", ""]


def nameserver(directory: Path, addresses: list[str], zones: dict[str, Path]) -> str:
    """Authoritative only: every zone is an auth-zone served downstream and never used for recursion."""
    lines = _server(directory, [f"{a}@{DNS_PORT}" for a in addresses], ["0.0.0.0/0", "::/0"])
    for zone, path in zones.items():
        name = "." if zone == "." else f"{zone}."
        lines += ["auth-zone:", f'  name: "{name}"', f'  zonefile: "{path}"']
        lines += ["  for-downstream: yes", "  for-upstream: no", "  fallback-enabled: no"]
    return "\n".join(lines + _tail())


def recursive(
    directory: Path,
    addresses: list[str],
    access: list[str],
    root_hints: Path,
    identity: str,
    tls: tuple[Path, Path] | None = None,
) -> str:
    """A recursive resolver that starts from the lab's root hints; with tls=(certificate, key) it also
    answers DoT on 853 and DoH on 443 at every address."""
    ports = [DNS_PORT] + ([DOT_PORT, DOH_PORT] if tls else [])
    listen = [f"{a}@{p}" for a in addresses for p in ports]
    lines = _server(directory, listen, access)
    lines += [
        f'  root-hints: "{root_hints}"',
        # `dig CH TXT id.server` names the resolver that answered: how a test tells a redirected query.
        f'  identity: "{identity}"',
        "  hide-identity: no",
    ]
    if tls:
        cert, key = tls
        lines += [
            f'  tls-service-pem: "{cert}"',
            f'  tls-service-key: "{key}"',
            f"  tls-port: {DOT_PORT}",
            f"  https-port: {DOH_PORT}",
            f'  http-endpoint: "{DOH_PATH}"',
        ]
    return "\n".join(lines + _tail())
