"""Atheris harness for fastpath.tls and the TCP stream assembler (fastpath.stream).

Each input is either raw bytes, a real ClientHello (made in-process by OpenSSL through Python's ssl)
with fuzzed bytes overwritten and cut, or a ClientHello built around fuzzed extensions. The result
is parsed whole, as a bare handshake message, and reassembled from fuzzed segments, and every answer
must keep the parser's promises.

    python tests/fuzz/fuzz_tls.py -atheris_runs=20000
"""

import contextlib
import ssl
import struct
import sys

import atheris
from streamfuzz import check_reassembly, corrupted

from fastpath import names, stream, tls
from fastpath.names import ParseStatus

GREASE = 0x2A2A


def openssl_client_hello(name: str) -> bytes:
    """The records OpenSSL sends first for https://name/, without any socket."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    out = ssl.MemoryBIO()
    conn = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it has sent its ClientHello and waits for the server
        conn.do_handshake()
    return out.read()


SEED = openssl_client_hello("fuzz.example.org")


@atheris.instrument_func
def built_hello(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A record holding a ClientHello whose extensions are fuzzed (so the extension parsers are reached)."""
    exts = b""
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        ext_type = fdp.PickValueInList([0, 16, 43, 0xFE0D, GREASE, fdp.ConsumeIntInRange(0, 0xFFFF)])
        data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
        exts += struct.pack("!HH", ext_type, len(data)) + data
    body = b"\x03\x03" + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00" + struct.pack("!H", len(exts)) + exts
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(msg)) + msg


def check(result: tls.ClientHello) -> None:
    assert result.status in ParseStatus.__members__.values()
    if result.status == ParseStatus.OK:
        assert result.sni and names.normalise(result.sni) == result.sni
    else:
        assert result.sni is None
    assert all(a and "," not in a for a in result.alpn)


@atheris.instrument_func
def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 2)
    if kind == 0:
        records = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4000))
    elif kind == 1:
        records = corrupted(fdp, SEED)
    else:
        records = built_hello(fdp)
    whole = tls.parse_stream(records)
    check(whole)
    check(tls.parse_handshake(records[5:]))

    check_reassembly(fdp, stream.Proto.TLS, records, whole, check)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
