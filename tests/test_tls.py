"""TLS ClientHello parsing, checked against ClientHellos that real clients send to a local listener.

The recorder and client runners here are shared with test_stream.py and test_http.py."""

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastpath.names import ParseStatus, normalise
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpath.tls import ClientHello, parse_handshake, parse_stream

TLS13 = 0x0304
TLS12 = 0x0303
FUZZ = Path(__file__).parent / "fuzz"


class Recorder:
    """A TCP listener on 127.0.0.1 that keeps what each client sends until the client goes quiet
    (it is then waiting for an answer that never comes), and then closes the connection."""

    def __init__(self, reply: bytes = b"", idle: float = 0.5) -> None:
        self.reply = reply
        self.idle = idle
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.streams: list[bytes] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._record, args=(conn,), daemon=True).start()

    def _record(self, conn: socket.socket) -> None:
        data = b""
        conn.settimeout(self.idle)
        try:
            while len(data) < 1 << 16:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            with contextlib.suppress(OSError):
                conn.sendall(self.reply)
        except OSError:
            pass
        conn.close()
        if data:
            with self.lock:
                self.streams.append(data)

    def wait_for(self, wanted: Callable[[bytes], bool], timeout: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for data in self.streams:
                    if wanted(data):
                        return data
            time.sleep(0.05)
        raise AssertionError(f"no matching connection within {timeout}s (got {len(self.streams)})")

    def close(self) -> None:
        self.sock.close()


def run_client(argv: list[str], recorder: Recorder, wanted: Callable[[bytes], bool]) -> bytes:
    """Runs a client process until the recorder has the connection it makes, then stops it."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return recorder.wait_for(wanted)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the group holds only this client and its children
        proc.wait()


def chromium_argv(url: str, port: int, profile: str) -> list[str]:
    return [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-features=HttpsUpgrades",
        f"--user-data-dir={profile}",
        f"--host-resolver-rules=MAP * 127.0.0.1:{port}",
        url,
    ]


# Firefox resolves every name to 127.0.0.1 (so the URL carries the recorder's port) and makes no
# background connections of its own that matter: no updates, telemetry, captive-portal or
# connectivity checks, Safe Browsing, remote settings or DNS over HTTPS.
FIREFOX_PREFS = {
    "network.dns.forceResolve": "127.0.0.1",
    "network.trr.mode": 5,
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "extensions.update.enabled": False,
    "extensions.blocklist.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "browser.region.network.url": "",
    "media.gmp-manager.url": "",
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "network.prefetch-next": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
}


def firefox_argv(url: str, profile: str) -> list[str]:
    prefs = "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in FIREFOX_PREFS.items())
    Path(profile, "user.js").write_text(prefs)
    return ["firefox-esr", "--headless", "--profile", profile, "--no-remote", url]


def python_client(port: int, name: str | None, alpn: list[str]) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    # The recorder hangs up instead of answering.
    with (
        socket.create_connection(("127.0.0.1", port)) as sock,
        ctx.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False) as tls,
        contextlib.suppress(ssl.SSLError, OSError),
    ):
        tls.do_handshake()


@functools.cache
def capture(client: str, name: str) -> bytes:
    """The first bytes `client` sends when told to open https://name/ (cached for the session)."""
    rec = Recorder()
    port = rec.port
    needle = name.lower().encode()
    has_name: Callable[[bytes], bool] = lambda data: needle in data.lower()  # noqa: E731
    try:
        with tempfile.TemporaryDirectory() as profile:
            resolve = ["--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/"]
            argv = {
                "curl": ["curl", "-sk", "--max-time", "20", *resolve],
                "curl-http1.1": ["curl", "-sk", "--max-time", "20", "--http1.1", *resolve],
                "curl-http2": ["curl", "-sk", "--max-time", "20", "--http2", *resolve],
                "curl-ip": ["curl", "-sk", "--max-time", "20", f"https://127.0.0.1:{port}/"],
                "openssl": ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name],
                "openssl-dot": [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{port}",
                    "-servername",
                    name,
                    "-alpn",
                    "dot",
                ],
                "openssl-tls12": [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{port}",
                    "-tls1_2",
                    "-servername",
                    name,
                ],
                "openssl-nosni": ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-noservername"],
                "gnutls": [
                    "gnutls-cli",
                    "--insecure",
                    "-p",
                    str(port),
                    "--sni-hostname",
                    name,
                    "--alpn",
                    "h2",
                    "--alpn",
                    "http/1.1",
                    "127.0.0.1",
                ],
                "chromium": chromium_argv(f"https://{name}/", port, profile),
                "firefox": firefox_argv(f"https://{name}:{port}/", profile),
            }.get(client)
            if argv is not None:
                wanted = has_name if name and not client.endswith(("-ip", "-nosni")) else bool
                return run_client(argv, rec, wanted)
            threading.Thread(
                target=python_client,
                args=(port, name or None, ["h2", "http/1.1"] if client == "python" else []),
                daemon=True,
            ).start()
            return rec.wait_for(bool)
    finally:
        rec.close()


def handshake_of(stream: bytes) -> bytes:
    """The first handshake message in a record stream (test-side reading of the record layer)."""
    msg = b""
    pos = 0
    while len(msg) < 4 or len(msg) < 4 + int.from_bytes(msg[1:4], "big"):
        length = struct.unpack_from("!H", stream, pos + 3)[0]
        msg += stream[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return msg[: 4 + int.from_bytes(msg[1:4], "big")]


def as_records(msg: bytes, sizes: list[int], version: bytes = b"\x03\x01") -> bytes:
    """msg re-packed into handshake records of the given fragment sizes (the last takes the rest)."""
    out = b""
    for size in [*sizes, len(msg)]:
        frag, msg = msg[:size], msg[size:]
        if frag:
            out += b"\x16" + version + struct.pack("!H", len(frag)) + frag
    return out


def split_hello(msg: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A ClientHello message as (everything before the extensions, [(type, data)])."""
    body = msg[4:]
    pos = 34
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    head, rest = body[:pos], body[pos + 2 :]
    exts = []
    while rest:
        ext_type, length = struct.unpack_from("!HH", rest)
        exts.append((ext_type, rest[4 : 4 + length]))
        rest = rest[4 + length :]
    return head, exts


def join_hello(head: bytes, exts: list[tuple[int, bytes]]) -> bytes:
    block = b"".join(struct.pack("!HH", t, len(d)) + d for t, d in exts)
    body = head + struct.pack("!H", len(block)) + block
    return b"\x01" + len(body).to_bytes(3, "big") + body


def sni_ext(*names: bytes) -> tuple[int, bytes]:
    entries = b"".join(b"\x00" + struct.pack("!H", len(n)) + n for n in names)
    return 0, struct.pack("!H", len(entries)) + entries


def with_ext(msg: bytes, ext_type: int, data: bytes) -> bytes:
    """msg with extension ext_type set to data (in its place, or appended if absent)."""
    head, exts = split_hello(msg)
    if ext_type in {t for t, _ in exts}:
        return join_hello(head, [(t, data if t == ext_type else d) for t, d in exts])
    return join_hello(head, [*exts, (ext_type, data)])


# (client, name, expected ALPN, ECH expected, expected highest version)
REAL_CLIENTS = [
    ("curl", "www.example.org", ("h2", "http/1.1"), False, TLS13),
    ("curl", "Mixed.Case.Example.COM", ("h2", "http/1.1"), False, TLS13),
    ("curl", "xn--bcher-kva.example", ("h2", "http/1.1"), False, TLS13),
    ("curl-http1.1", "plain.example.net", ("http/1.1",), False, TLS13),
    ("curl-http2", "h2.example.net", ("h2", "http/1.1"), False, TLS13),
    ("openssl", "s-client.example.co.uk", (), False, TLS13),
    ("openssl", "a" * 63 + ".example", (), False, TLS13),
    ("openssl-dot", "dns.example.net", ("dot",), False, TLS13),
    ("openssl-tls12", "old.example.net", (), False, TLS12),
    ("gnutls", "gnutls.example.org", ("h2", "http/1.1"), False, TLS13),
    ("python", "python.example.org", ("h2", "http/1.1"), False, TLS13),
    ("chromium", "www.example.org", ("h2", "http/1.1"), True, TLS13),
    ("chromium", "sub.domain.example.ac.uk", ("h2", "http/1.1"), True, TLS13),
    ("firefox", "www.example.org", ("h2", "http/1.1"), True, TLS13),
]
# Clients whose ClientHello carries a post-quantum key share and so spans two TCP segments.
LARGE = {"chromium", "firefox"}


@pytest.mark.parametrize(("client", "name", "alpn", "ech", "version"), REAL_CLIENTS)
def test_real_client_hello(client: str, name: str, alpn: tuple[str, ...], ech: bool, version: int) -> None:
    stream = capture(client, name)
    result = parse_stream(stream)
    assert result == ClientHello(ParseStatus.OK, name.lower(), alpn, ech, TLS12, version)
    assert parse_handshake(handshake_of(stream)) == result
    if client in LARGE:
        assert len(stream) > 1500, "expected a post-quantum ClientHello larger than one segment"


@pytest.mark.parametrize("client", ["openssl-nosni", "curl-ip", "python-nosni"])
def test_real_client_hello_without_name(client: str) -> None:
    result = parse_stream(capture(client, ""))
    assert result.status == ParseStatus.NO_NAME
    assert result.sni is None
    assert result.max_version == TLS13


def test_truncated_stream_needs_more() -> None:
    stream = capture("chromium", "www.example.org")
    for cut in range(len(stream)):
        assert parse_stream(stream[:cut]).status == ParseStatus.NEED_MORE, cut
    msg = handshake_of(stream)
    for cut in range(1, len(msg)):
        assert parse_handshake(msg[:cut]).status == ParseStatus.NEED_MORE, cut


@pytest.mark.parametrize("client", ["chromium", "firefox", "curl", "openssl"])
def test_repacked_into_records(client: str) -> None:
    stream = capture(client, "www.example.org" if client in LARGE else "s-client.example.co.uk")
    expected = parse_stream(stream)
    msg = handshake_of(stream)
    rng = random.Random(client)
    layouts = [[1], [1, 1, 1, 1], [3], [4], [5, 7], [100, 100, 100], [len(msg) - 1], [512] * 8]
    layouts += [[rng.randint(1, 300) for _ in range(rng.randint(2, 12))] for _ in range(40)]
    for sizes in layouts:
        for version in (b"\x03\x01", b"\x03\x03"):
            repacked = as_records(msg, sizes, version)
            assert parse_stream(repacked) == expected, sizes
            # Bytes after the ClientHello (the next flight, early data) do not change the answer.
            assert parse_stream(repacked + b"\x17\x03\x03\x00\x05hello") == expected
            assert parse_stream(repacked[:-1]).status == ParseStatus.NEED_MORE


def test_extension_order_does_not_matter() -> None:
    msg = handshake_of(capture("chromium", "www.example.org"))
    expected = parse_handshake(msg)
    head, exts = split_hello(msg)
    rng = random.Random(7)
    for _ in range(50):
        rng.shuffle(exts)
        assert parse_handshake(join_hello(head, exts)) == expected


def test_grease_is_skipped() -> None:
    msg = handshake_of(capture("openssl", "s-client.example.co.uk"))
    # ALPN: a GREASE identifier (RFC 8701), h2, and a name that is not text.
    msg = with_ext(msg, 16, struct.pack("!H", 10) + b"\x02\x3a\x3a" + b"\x02h2" + b"\x04\xfa\xfahi")
    msg = with_ext(msg, 43, b"\x06\x7a\x7a\x03\x04\x03\x03")
    head, exts = split_hello(msg)
    result = parse_handshake(join_hello(head, [(0x1A1A, b""), *exts, (0xDADA, b"\x00")]))
    assert result == ClientHello(ParseStatus.OK, "s-client.example.co.uk", ("h2",), False, TLS12, TLS13)


def test_alpn_list_is_truncated_at_a_name_boundary() -> None:
    names = [f"proto-{i:02d}-" + "x" * 20 for i in range(10)]
    wire = b"".join(bytes([len(n)]) + n.encode() for n in names)
    msg = with_ext(
        handshake_of(capture("openssl", "s-client.example.co.uk")), 16, struct.pack("!H", len(wire)) + wire
    )
    result = parse_handshake(msg)
    assert result.status == ParseStatus.OK
    assert 0 < len(result.alpn) < len(names)
    assert list(result.alpn) == names[: len(result.alpn)]
    assert len(",".join(result.alpn)) < 128


@pytest.mark.parametrize(
    ("sni", "status"),
    [
        (sni_ext(b"Good.Example."), ParseStatus.OK),
        (sni_ext(b"bad name.example"), ParseStatus.MALFORMED),
        (sni_ext(b"bad\x00.example"), ParseStatus.MALFORMED),
        (sni_ext(b"caf\xc3\xa9.example"), ParseStatus.MALFORMED),
        (sni_ext(b"a..b"), ParseStatus.MALFORMED),
        (sni_ext(b"."), ParseStatus.MALFORMED),
        (sni_ext(b"x" * 64 + b".example"), ParseStatus.MALFORMED),
        (sni_ext(b"a." * 127 + b"bc"), ParseStatus.MALFORMED),
        (sni_ext(b"one.example", b"two.example"), ParseStatus.MALFORMED),
        (sni_ext(b""), ParseStatus.MALFORMED),
        ((0, b""), ParseStatus.MALFORMED),
        ((0, b"\x00\x00"), ParseStatus.MALFORMED),
        ((0, b"\x00\x05\x00\x00\x09abc"), ParseStatus.MALFORMED),
        ((0, b"\x00\x0e\x07\x00\x03abc\x00\x00\x04a.bc"), ParseStatus.OK),  # unknown name type skipped
        ((0, b"\x00\x06\x07\x00\x03abc"), ParseStatus.NO_NAME),
    ],
)
def test_server_name_extension(sni: tuple[int, bytes], status: ParseStatus) -> None:
    msg = handshake_of(capture("curl", "www.example.org"))
    head, exts = split_hello(msg)
    exts = [e for e in exts if e[0] != 0]
    result = parse_handshake(join_hello(head, [*exts[:3], sni, *exts[3:]]))
    assert result.status == status
    if status == ParseStatus.OK:
        assert result.sni in ("good.example", "a.bc")
        assert normalise(result.sni) == result.sni
    else:
        assert result.sni is None


@pytest.mark.parametrize("ext_type", [0, 16, 43, 0xFE0D])
def test_duplicate_extension_is_malformed(ext_type: int) -> None:
    msg = handshake_of(capture("chromium", "www.example.org"))
    head, exts = split_hello(msg)
    dup = next(e for e in exts if e[0] == ext_type)
    assert parse_handshake(join_hello(head, [*exts, dup])).status == ParseStatus.MALFORMED


@pytest.mark.parametrize(
    ("ext_type", "data"),
    [
        (16, b""),
        (16, b"\x00\x00"),
        (16, b"\x00\x03\x02h2"),
        (16, b"\x00\x03\x00\x01x"),
        (43, b""),
        (43, b"\x00"),
        (43, b"\x03\x03\x04\x03"),
        (43, b"\x04\x03\x04"),
        (0xFE0D, b""),
    ],
)
def test_broken_extension_is_malformed(ext_type: int, data: bytes) -> None:
    msg = handshake_of(capture("chromium", "www.example.org"))
    assert parse_handshake(with_ext(msg, ext_type, data)).status == ParseStatus.MALFORMED


def test_broken_framing() -> None:
    msg = handshake_of(capture("curl", "www.example.org"))
    stream = as_records(msg, [])
    head = split_hello(msg)[0]
    cases = {
        "record length 0": b"\x16\x03\x01\x00\x00" + stream,
        "record too long": b"\x16\x03\x01\x40\x01" + msg,
        "alert between fragments": as_records(msg, [100])[:105] + b"\x15\x03\x03\x00\x02\x02\x28",
        "record version 2.x after the first": as_records(msg, [100])[:105] + b"\x16\x02" + stream[107:],
        "handshake length beyond the record and the buffer": b"\x16\x03\x01\x00\x04\x01\xff\xff\xff",
        "extensions block length off by one": msg[:4]
        + head
        + struct.pack("!H", len(msg) - len(head) - 5)
        + msg[4 + len(head) + 2 :],
        "session id over 32": msg[:38] + b"\x21" + msg[39:],
        "odd cipher suites length": msg[:4]
        + head[: 35 + head[34]]
        + b"\x00\x03"
        + head[37 + head[34] :]
        + msg[4 + len(head) :],
        "legacy version 2.0": msg[:4] + b"\x02\x00" + msg[6:],
        "trailing byte in the body": msg[:1]
        + (int.from_bytes(msg[1:4], "big") + 1).to_bytes(3, "big")
        + msg[4:]
        + b"\x00",
    }
    for what, data in cases.items():
        got = parse_stream(data) if data[0] == 0x16 else parse_handshake(data)
        assert got.status == ParseStatus.MALFORMED, what
        assert got.sni is None


def test_not_tls() -> None:
    for data in [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"\x80\x2e\x01\x00\x02\x00\x15",  # SSLv2 CLIENT-HELLO
        b"\x17\x03\x03\x00\x10",  # application data
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x02",
    ]:
        assert parse_stream(data).status == ParseStatus.NOT_HANDLED, data
    server_hello = b"\x02\x00\x00\x26\x03\x03" + bytes(32) + b"\x00\x13\x01\x00"
    assert parse_stream(as_records(server_hello, [])).status == ParseStatus.NOT_HANDLED
    assert parse_handshake(server_hello).status == ParseStatus.NOT_HANDLED
    assert parse_stream(b"").status == ParseStatus.NEED_MORE
    assert parse_handshake(b"").status == ParseStatus.NEED_MORE


def test_without_extensions() -> None:
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    assert parse_stream(as_records(msg, [])) == ClientHello(
        ParseStatus.NO_NAME, None, (), False, TLS12, TLS12
    )


def check_invariants(result: ClientHello) -> None:
    assert isinstance(result.status, ParseStatus)
    if result.status == ParseStatus.OK:
        assert result.sni and normalise(result.sni) == result.sni
    else:
        assert result.sni is None
    if result.status not in (ParseStatus.OK, ParseStatus.NO_NAME):
        assert result == ClientHello(result.status, None, (), False, 0, 0)
    assert all(a and "," not in a and a.isprintable() for a in result.alpn)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes(data: bytes) -> None:
    check_invariants(parse_stream(data))
    check_invariants(parse_handshake(data))
    check_invariants(parse_stream(b"\x16\x03\x01" + struct.pack("!H", len(data)) + data))
    check_invariants(parse_handshake(b"\x01" + len(data).to_bytes(3, "big") + data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["chromium", "firefox", "curl", "gnutls"]), st.data())
def test_corrupted_real_hello(client: str, data: st.DataObject) -> None:
    stream = capture(client, "www.example.org" if client in LARGE | {"curl"} else "gnutls.example.org")
    corrupt = bytearray(stream)
    for _ in range(data.draw(st.integers(1, 4))):
        corrupt[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    for variant in (bytes(corrupt), bytes(corrupt[:cut]), stream[:cut]):
        result = parse_stream(variant)
        check_invariants(result)
        if variant == stream[:cut] and cut < len(stream):
            assert result.status == ParseStatus.NEED_MORE


def test_fuzz_harness_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_tls.py"), "-atheris_runs=3000"],
        capture_output=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


def test_clients_are_installed() -> None:
    # The real-client tests need these; a missing one must fail loudly, not skip.
    for tool in ("curl", "openssl", "gnutls-cli", "chromium", "firefox-esr"):
        assert shutil.which(tool), tool
