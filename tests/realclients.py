"""Real clients (curl, openssl, gnutls-cli, Python ssl, chromium, firefox-esr, dig, aioquic), run inside a
network namespace, so tests drive the appliance the way pupils' devices do.

Each helper returns the finished process; most tests care about the packets the client sent (or whether
the connection succeeded), so a client that fails to connect is not an error here."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Chromium flags that keep it from calling Google and from waiting on a GPU or a user profile.
CHROMIUM_QUIET = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--metrics-recording-only",
]

# Firefox prefs: no telemetry, updates, captive-portal or connectivity probes, no DoH; every name
# resolves to the address under test.
FIREFOX_PREFS = {
    "app.update.enabled": False,
    "app.update.auto": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.search.update": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "network.prefetch-next": False,
    "network.trr.mode": 5,
    # An http:// URL is fetched as given (HTTPS-First and the HSTS preload list would make it https://).
    "dom.security.https_first": False,
    "dom.security.https_first_schemeless": False,
    "network.stricttransportsecurity.preloadlist": False,
    # No HTTPS (type 65) records: forceResolve does not cover them, and they too upgrade to https://.
    "network.dns.native_https_query": False,
    "network.dns.upgrade_with_https_rr": False,
    "network.dns.use_https_rr_as_altsvc": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "services.settings.server": "http://127.0.0.1:9/",
    "browser.region.network.url": "",
    "security.OCSP.enabled": 0,
}


def in_ns(ns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


def run(
    ns: str | None, argv: list[str], timeout: float = 20, **kw: object
) -> subprocess.CompletedProcess[str]:
    """Runs a client to completion; a client that hangs past the timeout is killed and reported as rc -9."""
    try:
        return subprocess.run(in_ns(ns, argv), capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(e.cmd, -9, out, "timeout")


def host_port(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ipaddress.ip_address(addr).version == 6 else f"{addr}:{port}"


def curl(ns: str | None, url: str, name: str, addr: str, port: int, *extra: str, timeout: float = 10):
    """curl to url with name pinned to addr (no DNS), as a pupil's device would after resolving it."""
    resolve = f"{name}:{port}:{addr}" if ":" not in addr else f"{name}:{port}:[{addr}]"
    argv = ["curl", "-sS", "-k", "-m", str(timeout), "--resolve", resolve, *extra, url]
    return run(ns, argv, timeout=timeout + 5)


def openssl_hello(ns: str | None, name: str, addr: str, port: int = 443, *extra: str):
    argv = ["openssl", "s_client", "-connect", host_port(addr, port), "-servername", name, *extra]
    return run(ns, argv, timeout=10, input="")


def gnutls_hello(ns: str | None, name: str, addr: str, port: int = 443):
    argv = ["gnutls-cli", "--insecure", f"--sni-hostname={name}", "-p", str(port), addr]
    return run(ns, argv, timeout=10, input="")


def python_tls(ns: str | None, name: str, addr: str, port: int = 443):
    code = (
        "import socket,ssl,sys\n"
        "c=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE\n"
        "c.set_alpn_protocols(['h2','http/1.1'])\n"
        "s=socket.create_connection((sys.argv[2],int(sys.argv[3])),timeout=5)\n"
        "try:\n c.wrap_socket(s,server_hostname=sys.argv[1])\nexcept Exception as e:\n print(e)\n"
    )
    return run(ns, [sys.executable, "-c", code, name, addr, str(port)], timeout=15)


def chromium(ns: str | None, url: str, addr: str, *extra: str, quic: bool = False, timeout: float = 25):
    """Loads url in headless chromium with every name mapped to addr. With quic, HTTP/3 is forced on.
    Certificate errors are ignored over TCP; chromium's QUIC ignores that flag, so an HTTP/3 test
    passes --ignore-certificate-errors-spki-list=PIN in extra."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        host = url.split("/")[2]
        flags = [*CHROMIUM_QUIET, f"--user-data-dir={profile}", "--timeout=8000", "--dump-dom"]
        flags.append(f"--host-resolver-rules=MAP * {host_port(addr, 443)[: -len(':443')]}")
        flags.append("--ignore-certificate-errors")
        if quic:
            flags += ["--enable-quic", f"--origin-to-force-quic-on={host}:443"]
        return run(ns, ["chromium", *flags, *extra, url], timeout=timeout, env=_browser_env(profile))


def firefox_profile(profile: str, addr: str) -> None:
    """Writes a fresh firefox profile whose DNS resolves every name to addr."""
    prefs = {**FIREFOX_PREFS, "network.dns.forceResolve": addr}
    lines = [f"user_pref({_js(k)}, {_js(v)});" for k, v in prefs.items()]
    Path(profile, "user.js").write_text("\n".join(lines) + "\n")


def firefox(
    ns: str | None, url: str, addr: str, *, until: Callable[[], bool] | None = None, timeout: float = 15
) -> None:
    """Opens url in headless firefox-esr (every name resolving to addr) and stops it once until() is
    true, or after timeout: firefox never exits by itself on a server that serves no page."""
    with tempfile.TemporaryDirectory(prefix="firefox-") as profile:
        firefox_profile(profile, addr)
        argv = ["firefox-esr", "--headless", "--no-remote", "--profile", profile, url]
        proc = subprocess.Popen(
            in_ns(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_browser_env(profile),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and proc.poll() is None and not (until and until()):
                time.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group holds only firefox and its children
            proc.wait()


def dig(ns: str | None, server: str, name: str, qtype: str = "A", *extra: str):
    argv = ["dig", f"@{server}", name, qtype, "+tries=1", "+timeout=2", *extra]
    return run(ns, argv, timeout=10)


def aioquic_hello(ns: str | None, name: str, addr: str, port: int = 443, version: int = 1):
    """Sends aioquic's client Initials for name to addr (the handshake need not complete)."""
    code = (
        "import socket,sys,time\n"
        "from aioquic.quic.configuration import QuicConfiguration\n"
        "from aioquic.quic.connection import QuicConnection\n"
        "from aioquic.quic.packet import QuicProtocolVersion as V\n"
        "v=V.VERSION_2 if sys.argv[4]=='2' else V.VERSION_1\n"
        "cfg=QuicConfiguration(is_client=True,alpn_protocols=['h3'],server_name=sys.argv[1],"
        "supported_versions=[v])\n"
        "q=QuicConnection(configuration=cfg)\n"
        "fam=socket.AF_INET6 if ':' in sys.argv[2] else socket.AF_INET\n"
        "s=socket.socket(fam,socket.SOCK_DGRAM)\n"
        "dst=(sys.argv[2],int(sys.argv[3]))\n"
        "q.connect(dst,now=time.time())\n"
        "for d,_ in q.datagrams_to_send(now=time.time()): s.sendto(d,dst)\n"
    )
    return run(ns, [sys.executable, "-c", code, name, addr, str(port), str(version)], timeout=15)


def _js(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _browser_env(home: str) -> dict[str, str]:
    # A private HOME keeps browsers from touching root's real profile or caches.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
    env.update(HOME=home, XDG_CACHE_HOME=home, XDG_CONFIG_HOME=home)
    return env


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
