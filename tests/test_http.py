"""HTTP/1.x request heads, checked against requests that real clients send to a local listener."""

import functools
import itertools
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import realclients
from hypothesis import given, settings
from hypothesis import strategies as st
from recorder import HTTP_404, LOOPBACK, Recorder, record
from test_tls import FUZZ, firefox

from fastpath.http import HttpRequest, parse_request
from fastpath.names import ParseStatus, normalise
from fastpath.stream import Assembler, Proto


def http_client(client: str, name: str, path: str) -> Callable[[Recorder], object]:
    """client(rec) sends the request `client` makes for http://name<path> to the recorder."""

    def curl(*extra: str, scheme: str = "http", port: int | None = None) -> Callable[[Recorder], object]:
        def run(rec: Recorder) -> object:
            url = f"{scheme}://{name}:{port or rec.port}{path}"
            return realclients.curl(None, url, name, LOOPBACK, port or rec.port, *extra)

        return run

    def proxy(rec: Recorder) -> tuple[str, str]:
        return ("-x", f"http://{LOOPBACK}:{rec.port}")

    clients: dict[str, Callable[[Recorder], object]] = {
        "curl": curl(),
        "curl-http1.0": curl("--http1.0"),
        "curl-post": curl("--data-binary", "field=value&x=1"),
        # Through a forward proxy: the absolute-form target, and a CONNECT tunnel for https.
        "curl-proxy": lambda rec: curl(*proxy(rec), port=80)(rec),
        "curl-connect": lambda rec: curl("-p", *proxy(rec), scheme="https", port=443)(rec),
        "chromium": lambda rec: realclients.chromium(None, f"http://{name}:{rec.port}{path}", LOOPBACK),
        "firefox": firefox(f"http://{name}:{{port}}{path}"),
    }
    return clients[client]


@functools.cache
def capture(client: str, name: str, path: str) -> bytes:
    """The first bytes `client` sends for http://name<path> (cached for the session)."""
    needle = name.lower().encode()
    return record(http_client(client, name, path), HTTP_404, lambda data: needle in data.lower())


PATH = "/Page%20One/index.html?q=Caf%C3%A9&Page=2"
RECORDER = -1  # the port the recorder listens on
# (client, name, path asked for, expected method, target, path, port)
REAL_REQUESTS = [
    ("curl", "www.example.org", PATH, "GET", PATH, PATH, RECORDER),
    ("curl", "Mixed.Case.Example", "/", "GET", "/", "/", RECORDER),
    ("curl-http1.0", "old.example.net", "/a/b", "GET", "/a/b", "/a/b", RECORDER),
    ("curl-post", "forms.example.net", "/submit", "POST", "/submit", "/submit", RECORDER),
    ("curl-proxy", "proxied.example.org", PATH, "GET", "http://proxied.example.org" + PATH, PATH, None),
    ("curl-connect", "tunnel.example.org", "/", "CONNECT", "tunnel.example.org:443", "", 443),
    ("chromium", "www.example.org", PATH, "GET", PATH, PATH, RECORDER),
    ("firefox", "www.example.org", PATH, "GET", PATH, PATH, RECORDER),
]


@pytest.mark.parametrize(("client", "name", "ask", "method", "target", "path", "port"), REAL_REQUESTS)
def test_real_request(
    client: str, name: str, ask: str, method: str, target: str, path: str, port: int | None
) -> None:
    data = capture(client, name, ask)
    result = parse_request(data)
    host = name.lower()
    assert result.status == ParseStatus.OK
    assert (result.method, result.host, result.target, result.path) == (
        method,
        host,
        target.encode(),
        path.encode(),
    )
    if port == RECORDER:  # the client wrote the recorder's port into the Host field
        port = int(re.search(rb"\r\nHost: [^:\r]+:(\d+)\r\n", data)[1])
    assert result.port == port
    assert result.url == (host + (path or "/")).encode()
    assert not result.host_is_ip
    head_end = data.index(b"\r\n\r\n") + 4
    assert result.head_length == head_end
    if client == "curl-post":
        assert data[head_end:] == b"field=value&x=1"


def test_prefixes_need_more() -> None:
    data = capture("chromium", "www.example.org", PATH)
    head = data[: parse_request(data).head_length]
    for cut in range(len(head)):
        assert parse_request(head[:cut]).status == ParseStatus.NEED_MORE, cut


@pytest.mark.parametrize("client", ["chromium", "curl-proxy", "curl-post"])
def test_segmented(client: str) -> None:
    data = capture(client, REAL_REQUESTS[[r[0] for r in REAL_REQUESTS].index(client)][1], PATH)
    expected = parse_request(data)
    cuts = range(1, len(data))
    splits = [[0, a, len(data)] for a in cuts]
    splits += [[0, a, b, len(data)] for a, b in itertools.combinations(range(1, len(data), 37), 2)]
    for bounds in splits:
        segs = [(a, data[a:b]) for a, b in itertools.pairwise(bounds)]
        for order in (segs, segs[::-1]):
            asm = Assembler(Proto.HTTP)
            asm.syn(4_000_000_000)
            results = [asm.feed((4_000_000_001 + off) % 2**32, seg) for off, seg in order]
            assert results[-1] == expected, bounds
            assert all(r.status in (ParseStatus.NEED_MORE, ParseStatus.OK) for r in results)


OK_A = (ParseStatus.OK, "a.example", b"a.example/")
BAD = (ParseStatus.MALFORMED, None, None)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /x#frag HTTP/1.1\r\nHost: a.example\r\n\r\n", (ParseStatus.OK, "a.example", b"a.example/x")),
        (b"GET /x HTTP/1.1\nHost: A.Example.\n\n", (ParseStatus.OK, "a.example", b"a.example/x")),
        (b"\r\nGET / HTTP/1.1\r\nHost: a.example\r\n\r\n", OK_A),
        (
            b"GET / HTTP/1.1\r\nhOsT:   a.example:8080 \t\r\n\r\n",
            (ParseStatus.OK, "a.example", b"a.example/"),
        ),
        (
            b"GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n",
            (ParseStatus.OK, "a.example", b"a.example/"),
        ),
        (b"GET http://a.example?q HTTP/1.1\r\n\r\n", (ParseStatus.OK, "a.example", b"a.example/?q")),
        (b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n", OK_A),
        (b"GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n", (ParseStatus.NO_NAME, "192.0.2.1", b"192.0.2.1/")),
        (b"GET / HTTP/1.1\r\nHost: 10.1\r\n\r\n", (ParseStatus.NO_NAME, "10.1", b"10.1/")),
        (b"GET / HTTP/1.1\r\nHost: foo.0x7F\r\n\r\n", (ParseStatus.NO_NAME, "foo.0x7f", b"foo.0x7f/")),
        (
            b"GET / HTTP/1.1\r\nHost: [2001:DB8::1]:80\r\n\r\n",
            (ParseStatus.NO_NAME, "[2001:db8::1]", b"[2001:db8::1]/"),
        ),
        (b"GET / HTTP/1.0\r\n\r\n", (ParseStatus.NO_NAME, None, None)),
        (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", (ParseStatus.NO_NAME, None, None)),
        (b"GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n", OK_A),
        # MALFORMED: no host, two hosts, hosts that disagree, or not a valid host.
        (b"GET / HTTP/1.1\r\n\r\n", BAD),
        (
            b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            (ParseStatus.MALFORMED, None, None),
        ),
        (b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", BAD),
        (
            b"GET http://u:p@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
            (ParseStatus.MALFORMED, None, None),
        ),
        (b"GET http:///x HTTP/1.1\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a example\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a.example:99999\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a.example:8o\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n", BAD),
        (b"GET relative HTTP/1.1\r\nHost: a.example\r\n\r\n", BAD),
        (b"GET * HTTP/1.1\r\nHost: a.example\r\n\r\n", BAD),
        # Not a request head at all.
        (b"GET / HTTP/1.1\r\nHost: a.example\r\n folded\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\nHost: a.example\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\rHost: a.example\r\n\r\n", BAD),
        (b"GET  / HTTP/1.1\r\nHost: a.example\r\n\r\n", BAD),
        (b"GET / http/1.1\r\nHost: a.example\r\n\r\n", BAD),
        (b"GET /\r\n\r\n", BAD),
        (b"\x16\x03\x01\x02\x00\x01", BAD),
        (b"SSH-2.0-OpenSSH_9.2\r\n", BAD),
        # Another HTTP version: HTTP/2 with prior knowledge (h2c) would hide the host in HPACK.
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (ParseStatus.NOT_HANDLED, None, None)),
        (b"GET / HTTP/0.9\r\n\r\n", (ParseStatus.NOT_HANDLED, None, None)),
    ],
)
def test_request_heads(head: bytes, expected: tuple[ParseStatus, str | None, bytes | None]) -> None:
    result = parse_request(head)
    assert (result.status, result.host, result.url) == expected
    if result.status == ParseStatus.NO_NAME and result.host is not None:
        assert result.host_is_ip


def test_path_is_exact() -> None:
    target = b"/%7Euser/A%2fB/./../caf\xc3\xa9?x=%41#top"
    result = parse_request(b"GET " + target + b" HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert result.target == result.path == target
    assert result.url == b"a.example" + target.split(b"#")[0]


def check_invariants(result: HttpRequest) -> None:
    assert isinstance(result.status, ParseStatus)
    if result.status == ParseStatus.OK:
        assert result.host and normalise(result.host) == result.host and not result.host_is_ip
        assert result.url is not None and result.url.startswith(result.host.encode() + b"/")
    elif result.status == ParseStatus.NO_NAME:
        assert result.host is None or result.host_is_ip
    else:
        assert result == HttpRequest(result.status, None, None, None, None, False, None, None, 0)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes(data: bytes) -> None:
    check_invariants(parse_request(data))
    check_invariants(parse_request(b"GET / HTTP/1.1\r\n" + data))
    check_invariants(parse_request(b"GET / HTTP/1.1\r\nHost: " + data + b"\r\n\r\n"))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_real_request(data: st.DataObject) -> None:
    request = capture("chromium", "www.example.org", PATH)
    corrupt = bytearray(request)
    for _ in range(data.draw(st.integers(1, 4))):
        corrupt[data.draw(st.integers(0, len(request) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(request)))
    for variant in (bytes(corrupt), bytes(corrupt[:cut])):
        check_invariants(parse_request(variant))


def test_fuzz_harness_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_http.py"), "-atheris_runs=3000"],
        capture_output=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
