"""The real clients a probe runs: dig (DNS, DoT), curl (HTTPS, HTTP, DoH) and an aioquic client
(HTTP/3), each as a separate process in the probe's network namespace (argv is wrapped by the
caller's `Wrap`: `ip netns exec NS ...`). They report what the client saw; judging is elsewhere."""

from __future__ import annotations

import base64
import json
import secrets
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

# The same clients, run the same way, as the lab's checker.
from appliance.lab.check import CURL_ERRORS, DIG, STATUS_RE

Wrap = Callable[[list[str]], list[str]]

CURL = ["curl", "-sS", "--parallel", "--parallel-max", "16", "--connect-timeout", "5", "--max-time", "8"]
NO_REPLY = "no reply"


@dataclass(frozen=True)
class Answer:
    status: str  # NOERROR, NXDOMAIN, SERVFAIL, REFUSED ... or NO_REPLY
    addresses: tuple[str, ...]
    cnames: tuple[str, ...]
    records: tuple[str, ...]  # the rdata of every answer record of the type asked for

    def words(self) -> str:
        if self.status != "NOERROR":
            return self.status
        if not self.records:
            return "no records (NODATA)"
        via = f" via {self.cnames[-1]}" if self.cnames else ""
        return (" ".join(self.addresses) or " ".join(self.records)) + via


def dig(wrap: Wrap, name: str, rtype: str, server: tuple[str, ...] = ()) -> Answer:
    proc = subprocess.run(
        wrap([*DIG, *server, name, rtype]), capture_output=True, text=True, check=False, timeout=30
    )
    status = STATUS_RE.search(proc.stdout)
    if proc.returncode != 0 or status is None:
        return Answer(NO_REPLY, (), (), ())
    rows = [line.split(None, 4) for line in proc.stdout.splitlines() if line and not line.startswith(";")]
    rows = [r for r in rows if len(r) == 5]
    records = tuple(r[4] for r in rows if r[3] == rtype)
    addresses = records if rtype in ("A", "AAAA") else ()
    cnames = tuple(r[4].rstrip(".") for r in rows if r[3] == "CNAME")
    return Answer(status.group(1), addresses, cnames, records)


@dataclass(frozen=True)
class Fetch:
    status: int  # the HTTP status, 0 when none came
    remote_ip: str
    error: str  # what went wrong, in a few words; "" when a response came
    redirect: str = ""  # where a redirect pointed (not followed)

    @property
    def answered(self) -> bool:
        return not self.error and self.status > 0

    @property
    def redirect_host(self) -> str:
        """The host a redirect points to ("" for none): the web filter answers a blocked plain-HTTP
        request, as the server, with a redirect to the block page at a block address."""
        return (urlsplit(self.redirect).hostname or "") if self.redirect else ""

    def words(self) -> str:
        if self.error:
            return self.error
        to = f", redirected to {self.redirect}" if self.redirect else ""
        return f"HTTP {self.status} from {self.remote_ip}{to}"


def curl(
    wrap: Wrap,
    urls: list[str],
    family: int,
    cacert: str | None,
    resolve: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> dict[str, Fetch]:
    """One curl for many URLs, in parallel (so blocked ones cost one timeout, not one each);
    resolve maps "name:port" to the address to use instead of asking DNS."""
    if not urls:
        return {}
    written = "%{url} %{exitcode} %{response_code} %{remote_ip} %{redirect_url}\\n"
    argv = [*CURL, f"-{family}", "-w", written, *extra]
    if cacert:
        argv += ["--cacert", cacert]
    for host_port, address in (resolve or {}).items():
        argv += ["--resolve", f"{host_port}:{address}"]
    for url in urls:
        argv += ["-o", "/dev/null", url]
    proc = subprocess.run(wrap(argv), capture_output=True, text=True, check=False, timeout=120)
    seen = {}
    for line in proc.stdout.splitlines():
        parts = line.split(" ")
        if len(parts) == 5:
            seen[parts[0]] = (int(parts[1]), int(parts[2]), parts[3], parts[4])
    out = {}
    for url in urls:
        exitcode, code, remote, redirect = seen.get(url, (-1, 0, "", ""))
        error = "" if exitcode == 0 else CURL_ERRORS.get(exitcode, f"curl exit {exitcode}")
        out[url] = Fetch(code, remote, error, redirect)
    return out


def h3(
    wrap: Wrap, specs: list[tuple[str, int, str | None]], cacert: str | None, concurrency: int | None = None
) -> dict[tuple[str, int, str | None], Fetch]:
    """HTTP/3 fetches of (name, family, address or None for the name's own) in one client process,
    concurrency at once (default: the client's)."""
    if not specs:
        return {}
    args = [f"{n}/{f}" + (f"/{a}" if a else "") for n, f, a in specs]
    argv = [
        sys.executable,
        "-m",
        "appliance.compliance.h3fetch",
        *(["--cacert", cacert] if cacert else []),
        *(["--concurrency", str(concurrency)] if concurrency else []),
        *args,
    ]
    proc = subprocess.run(wrap(argv), capture_output=True, text=True, check=False, timeout=300)
    out = {spec: Fetch(0, "", "client failed") for spec in specs}
    for line, spec in zip(proc.stdout.splitlines(), specs, strict=False):
        r = json.loads(line)
        out[spec] = Fetch(r["status"] or 0, r["address"] or "", r["error"] or "")
    return out


def dns_query(name: str) -> bytes:
    """A DNS query for name's A record, as a DoH client sends it (RFC 8484 wants id 0)."""
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)


def doh_url(resolver: str, name: str) -> str:
    encoded = base64.urlsafe_b64encode(dns_query(name)).rstrip(b"=").decode()
    return f"https://{resolver}/dns-query?dns={encoded}"


def tcp_connect(wrap: Wrap, address: str, port: int) -> str:
    """'connected', 'refused' (something answered with a reset) or 'timeout'."""
    host = f"[{address}]" if ":" in address else address
    argv = ["curl", "-sS", "--connect-timeout", "4", "--max-time", "5", "-o", "/dev/null"]
    # A nonce in the path: nothing can have cached an answer for it.
    argv.append(f"http://{host}:{port}/{secrets.token_hex(4)}")
    proc = subprocess.run(wrap(argv), capture_output=True, text=True, check=False, timeout=30)
    return {7: "refused", 28: "timeout"}.get(proc.returncode, "connected")
