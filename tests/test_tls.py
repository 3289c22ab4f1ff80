"""TLS ClientHello parsing, checked against ClientHellos that real clients send to a local listener.

The client runners and captures here are shared with test_stream.py and test_http.py."""

import contextlib
import functools
import random
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import realclients
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recorder import LOOPBACK, TLS_ALERT, Recorder, record

from fastpath.names import ParseStatus, normalise
from fastpath.tls import ClientHello, parse_handshake, parse_stream

TLS13 = 0x0304
TLS12 = 0x0303
FUZZ = Path(__file__).parent / "fuzz"


def firefox(url: str) -> Callable[[Recorder], object]:
    """Opens url ("{port}" standing for the recorder's) in headless firefox-esr until it has connected."""
    return lambda rec: realclients.firefox(
        None, url.format(port=rec.port), LOOPBACK, until=lambda: bool(rec.streams), timeout=30
    )


def python_without_sni(rec: Recorder) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((LOOPBACK, rec.port)) as sock,
        ctx.wrap_socket(sock, do_handshake_on_connect=False) as tls,
        contextlib.suppress(ssl.SSLError, OSError),  # the recorder answers with an alert
    ):
        tls.do_handshake()


def tls_client(client: str, name: str) -> Callable[[Recorder], object]:
    """client(rec) connects to the recorder as `client` would to https://name/."""
    clients: dict[str, Callable[[Recorder], object]] = {
        "curl": lambda rec: realclients.curl(None, f"https://{name}:{rec.port}/", name, LOOPBACK, rec.port),
        "curl-http1.1": lambda rec: realclients.curl(
            None, f"https://{name}:{rec.port}/", name, LOOPBACK, rec.port, "--http1.1"
        ),
        "curl-http2": lambda rec: realclients.curl(
            None, f"https://{name}:{rec.port}/", name, LOOPBACK, rec.port, "--http2"
        ),
        "curl-ip": lambda rec: realclients.curl(
            None, f"https://{LOOPBACK}:{rec.port}/", LOOPBACK, LOOPBACK, rec.port
        ),
        "openssl": lambda rec: realclients.openssl_hello(None, name, LOOPBACK, rec.port),
        "openssl-dot": lambda rec: realclients.openssl_hello(None, name, LOOPBACK, rec.port, "-alpn", "dot"),
        "openssl-tls12": lambda rec: realclients.openssl_hello(None, name, LOOPBACK, rec.port, "-tls1_2"),
        "gnutls": lambda rec: realclients.gnutls_hello(None, name, LOOPBACK, rec.port),
        "python": lambda rec: realclients.python_tls(None, name, LOOPBACK, rec.port),
        "python-nosni": python_without_sni,
        "chromium": lambda rec: realclients.chromium(None, f"https://{name}:{rec.port}/", LOOPBACK),
        "firefox": firefox(f"https://{name}:{{port}}/"),
    }
    return clients[client]


@functools.cache
def capture(client: str, name: str) -> bytes:
    """The first bytes `client` sends when told to open https://name/ (cached for the session)."""
    needle = name.lower().encode()
    # Browsers also open connections of their own (to Google, say); take the one for name.
    return record(tls_client(client, name), TLS_ALERT, lambda data: needle in data.lower())


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
    ("gnutls", "gnutls.example.org", (), False, TLS13),
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


@pytest.mark.parametrize("client", ["curl-ip", "python-nosni"])
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
    protocols = b"\x02\x3a\x3a" + b"\x02h2" + b"\x04\xfa\xfahi"
    msg = with_ext(msg, 16, struct.pack("!H", len(protocols)) + protocols)
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
        ((0, b"\x00\x0d\x07\x00\x03abc\x00\x00\x04a.bc"), ParseStatus.OK),  # unknown name type skipped
        ((0, b"\x00\x06\x07\x00\x03abc"), ParseStatus.NO_NAME),
        (sni_ext(b"10.1.2.3"), ParseStatus.NO_NAME),  # an address names no host (RFC 6066)
        (sni_ext(b"0x7f.1"), ParseStatus.NO_NAME),
        (sni_ext(b"example.0x7g"), ParseStatus.OK),
        (sni_ext(b"1.2.3.example"), ParseStatus.OK),
    ],
)
def test_server_name_extension(sni: tuple[int, bytes], status: ParseStatus) -> None:
    msg = handshake_of(capture("curl", "www.example.org"))
    head, exts = split_hello(msg)
    exts = [e for e in exts if e[0] != 0]
    result = parse_handshake(join_hello(head, [*exts[:3], sni, *exts[3:]]))
    assert result.status == status
    if status == ParseStatus.OK:
        assert result.sni in ("good.example", "a.bc", "example.0x7g", "1.2.3.example")
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
        (16, b"\x00\x04\x02h2"),
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
