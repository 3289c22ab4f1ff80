"""atheris harness for fastpath.dns: parse_query and the builders, strip_ech, cname_answer and
frame_length, on raw bytes and on corrupted or truncated real messages (encoded by dnspython).

It checks the same invariants as the property tests in tests/test_dns.py, which it imports:

    python tests/fuzz/fuzz_dns.py -atheris_runs=20000
"""

import sys
from collections.abc import Callable
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for test_dns and its helpers

# The Cython module has no coverage instrumentation; the checks and dnspython (which decodes inputs
# and replies) do, and give libFuzzer its feedback.
with atheris.instrument_imports(include=["test_dns", "dns.message", "dns.name", "dns.wire"]):
    from test_dns import (
        QUERY_CORPUS,
        SAFE_UPSTREAM_CORPUS,
        UPSTREAM_CORPUS,
        check_cname,
        check_frame,
        check_query,
        check_strip,
    )

TARGETS: list[tuple[Callable[[bytes], None], list[bytes]]] = [
    (check_query, QUERY_CORPUS),
    (check_strip, UPSTREAM_CORPUS),
    (check_cname, SAFE_UPSTREAM_CORPUS),
    (check_frame, QUERY_CORPUS),
]


def corrupted(fdp: atheris.FuzzedDataProvider, corpus: list[bytes]) -> bytes:
    wire = bytearray(corpus[fdp.ConsumeIntInRange(0, len(corpus) - 1)])
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        wire[fdp.ConsumeIntInRange(0, len(wire) - 1)] = fdp.ConsumeIntInRange(0, 255)
    if fdp.ConsumeBool():
        del wire[fdp.ConsumeIntInRange(0, len(wire)) :]
    return bytes(wire)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    check, corpus = TARGETS[fdp.ConsumeIntInRange(0, len(TARGETS) - 1)]
    check(corrupted(fdp, corpus) if fdp.ConsumeBool() else fdp.ConsumeBytes(fdp.remaining_bytes()))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
