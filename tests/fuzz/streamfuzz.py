"""What the TLS and HTTP harnesses share: fuzzed inputs around a seed, and fuzzed TCP reassembly."""

import itertools
from collections.abc import Callable
from typing import TypeVar

import atheris

from fastpath import stream

Result = TypeVar("Result")


@atheris.instrument_func
def corrupted(fdp: atheris.FuzzedDataProvider, seed: bytes) -> bytes:
    """seed with a few bytes overwritten, then cut."""
    corrupt = bytearray(seed)
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        corrupt[fdp.ConsumeIntInRange(0, len(corrupt) - 1)] = fdp.ConsumeIntInRange(0, 255)
    return bytes(corrupt[: fdp.ConsumeIntInRange(0, len(corrupt))])


@atheris.instrument_func
def segments(fdp: atheris.FuzzedDataProvider, data: bytes) -> list[tuple[int, bytes]]:
    """data cut into segments (offset, bytes), shuffled, some repeated, some overlapping."""
    cuts = sorted(
        {0, len(data), *(fdp.ConsumeIntInRange(0, len(data)) for _ in range(fdp.ConsumeIntInRange(0, 4)))}
    )
    segs = [(a, data[a:b]) for a, b in itertools.pairwise(cuts)]
    for _ in range(fdp.ConsumeIntInRange(0, 2)):  # retransmits, possibly overlapping a neighbour
        a = fdp.ConsumeIntInRange(0, len(data))
        segs.append((a, data[a : a + fdp.ConsumeIntInRange(0, 1500)]))
    order = [fdp.ConsumeIntInRange(0, 1 << 16) for _ in segs]
    return [seg for _, seg in sorted(zip(order, segs, strict=True), key=lambda p: p[0])]


def check_reassembly(
    fdp: atheris.FuzzedDataProvider,
    proto: stream.Proto,
    data: bytes,
    whole: Result,
    check: Callable[[Result], None],
) -> None:
    """Feeds data to an assembler in fuzzed segments; every answer must pass check, and with the SYN
    seen and every byte delivered intact, reassembly changes nothing (unless data overflows the buffer)."""
    isn = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
    size = fdp.PickValueInList([64, 512, 16384])
    asm = stream.Assembler(proto, size)
    syn = fdp.ConsumeBool()
    if syn:
        asm.syn(isn)
    result = None
    for offset, payload in segments(fdp, data):
        result = asm.feed((isn + 1 + offset) & 0xFFFFFFFF, payload)
        check(result)
    if syn and result is not None and asm.contiguous == len(data) < size:
        assert result == whole
