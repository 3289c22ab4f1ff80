"""Atheris harness for fastpath.quic.

Each input drives one connection through a few datagrams, each either raw fuzzed bytes or a genuine
Initial (protected by aioquic) around fuzzed frames or a fuzzed ClientHello, so the fuzzer gets past the
AEAD tag into the frame parser, the CRYPTO reassembly and the ClientHello parser.

    python tests/fuzz/fuzz_quic.py -atheris_runs=20000
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the packet builders of test_quic

from test_quic import RFC_DCID, RFC_HELLO, V1, V2, crypto_frame, protect_initial

from fastpath import names, quic

ParseStatus = names.ParseStatus


# The C extension carries no coverage instrumentation; the harness's own branches give atheris some.
@atheris.instrument_func
def next_datagram(fdp: atheris.FuzzedDataProvider, version: int, pn: int) -> bytes:
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1500))
    if kind == 1:  # arbitrary frames
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1200))
    elif kind == 2:  # a slice of a real ClientHello at a fuzzed offset
        start = fdp.ConsumeIntInRange(0, len(RFC_HELLO))
        end = fdp.ConsumeIntInRange(start, len(RFC_HELLO))
        payload = crypto_frame(fdp.ConsumeIntInRange(0, 300), RFC_HELLO[start:end])
    else:  # a fuzzed ClientHello body behind a consistent handshake header
        body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1200))
        payload = crypto_frame(0, b"\x01" + len(body).to_bytes(3, "big") + body)
    return protect_initial(version, RFC_DCID, pn, payload, fdp.ConsumeIntInRange(1, 4))


@atheris.instrument_func
def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    version = fdp.PickValueInList([V1, V2])
    asm = quic.QuicInitialAssembler(version, RFC_DCID)
    for pn in range(fdp.ConsumeIntInRange(1, 4)):
        datagram = next_datagram(fdp, version, pn)
        key = quic.flow_key(datagram)
        assert key is None or key[0] in (V1, V2)
        status = asm.feed(datagram)
        assert status in ParseStatus.__members__.values()
        # A name ends the connection's parsing; a final status is returned for every later datagram.
        if status in (ParseStatus.OK, ParseStatus.NO_NAME) or asm.status != ParseStatus.NEED_MORE:
            assert asm.status == status
        if status == ParseStatus.OK:
            assert asm.sni and names.normalise(asm.sni) == asm.sni
        else:
            assert asm.sni is None


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
