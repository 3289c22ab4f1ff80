"""Atheris harness for fastpath.http and HTTP reassembly in fastpath.stream.

Each input is raw bytes, a browser-like request head with fuzzed bytes overwritten and cut, or a
head assembled from fuzzed pieces (request line parts, header names and values, line endings). The
result is parsed whole and reassembled from fuzzed segments, and every answer must keep the parser's
promises.

    python tests/fuzz/fuzz_http.py -atheris_runs=20000
"""

import sys

import atheris
from streamfuzz import check_reassembly, corrupted

from fastpath import http, names, stream
from fastpath.names import ParseStatus

SEED = (
    b"GET /Page%20One/index.html?q=1 HTTP/1.1\r\nHost: www.example.org:8080\r\nConnection: keep-alive\r\n"
    b"User-Agent: Mozilla/5.0\r\nAccept: text/html,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate\r\n\r\n"
)
METHODS = [b"GET", b"POST", b"CONNECT", b"OPTIONS", b"PRI", b"G\xc5T"]
TARGETS = [b"/", b"*", b"http://a.example/x", b"a.example:443", b"http://[::1]:80", b"/p#f", b"//x"]
FIELDS = [b"Host", b"hOST", b"Host ", b"X-Test", b""]
VALUES = [b"a.example", b"A.Example.:80", b"[2001:db8::1]", b"10.0.0.1", b"", b" a.example ", b"a b"]
ENDINGS = [b"\r\n", b"\n", b"\r", b""]


@atheris.instrument_func
def built_head(fdp: atheris.FuzzedDataProvider) -> bytes:
    def piece(choices: list[bytes]) -> bytes:
        return (
            fdp.PickValueInList(choices)
            if fdp.ConsumeBool()
            else fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
        )

    version = fdp.PickValueInList([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x"])
    head = piece(METHODS) + b" " + piece(TARGETS) + b" " + version + piece(ENDINGS)
    for _ in range(fdp.ConsumeIntInRange(0, 5)):
        head += piece(FIELDS) + b":" + piece(VALUES) + piece(ENDINGS)
    return head + piece(ENDINGS)


def check(result: http.HttpRequest) -> None:
    assert result.status in ParseStatus.__members__.values()
    if result.status == ParseStatus.OK:
        assert result.host and names.normalise(result.host) == result.host and not result.host_is_ip
    elif result.status == ParseStatus.NO_NAME:
        assert result.host is None or result.host_is_ip
    else:
        assert result.host is None and result.method is None and result.url is None


@atheris.instrument_func
def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 2)
    if kind == 0:
        request = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000))
    elif kind == 1:
        request = corrupted(fdp, SEED)
    else:
        request = built_head(fdp)
    whole = http.parse_request(request)
    check(whole)

    check_reassembly(fdp, stream.Proto.HTTP, request, whole, check)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
