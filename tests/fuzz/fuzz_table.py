"""atheris harness for the domain table and the verdict: arbitrary names to lookup/decide/the batch
classifier, and arbitrary bytes as a table file (raw, and with the checksum recomputed so the deeper
checks are reached). Anything but a clean TableError/ValueError, or a crash, is a finding.

    python tests/fuzz/fuzz_table.py -atheris_runs=20000
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from array import array

import atheris

with atheris.instrument_imports():
    from fastpath.table import DomainTable, TableBuilder, TableError, file_checksum
    from fastpath.verdict import Action, GroupPolicy, classify_names, decide

KEY = bytes(range(16))
# Files are unlinked as soon as they are mapped (a table keeps its mapping), so nothing is left over.
SCRATCH = os.path.join(tempfile.gettempdir(), f"fuzz_table.{os.getpid()}.tbl")
POLICY = GroupPolicy(blocked=1, padlocked=2, allow=4, deny=8, default_action=Action.ALLOW)


def _good_table() -> tuple[DomainTable, bytes]:
    b = TableBuilder(KEY)
    for i, name in enumerate(["example.com", "ads.example.com", "xn--bcher-kva.de", "a", "b.c.d.e"]):
        b.add(name, 1 << (i % 4), exact=i == 3)
    for i in range(200):
        b.add(f"host{i}.example.net", 1 << (i % 5))
    b.build(SCRATCH, {"policy_version": 1})
    try:
        with open(SCRATCH, "rb") as f:
            return DomainTable.open(SCRATCH, KEY), f.read()
    finally:
        os.unlink(SCRATCH)


TABLE, IMAGE = _good_table()


def _exercise(table: DomainTable, name: bytes) -> None:
    for query in (name, name.decode("utf-8", "replace")):
        try:
            match = table.lookup(query)
            verdict = decide(table, query, POLICY)
        except ValueError:
            continue
        assert verdict.categories == match.categories
        assert verdict.matched is None or verdict.matched in {h[0] for h in match.hits}
    statuses, actions = bytearray(1), bytearray(1)
    classify_names(table, POLICY, name, array("I", [0, len(name)]), statuses, actions)


def _load(data: bytes) -> None:
    with open(SCRATCH, "wb") as f:
        f.write(data)
    try:
        table = DomainTable.open(SCRATCH, KEY)
    except TableError:
        return
    finally:
        os.unlink(SCRATCH)
    with table:
        for name in (b"example.com", b"www.ads.example.com", b"a", b"zz.b.c.d.e"):
            _exercise(table, name)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        _exercise(TABLE, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)))
    elif mode == 1:
        _load(fdp.ConsumeBytes(fdp.remaining_bytes()))
    else:
        # A valid image with fuzzed bytes written over it, then (mode 3) a matching checksum, so the
        # header and slot checks behind the checksum are fuzzed too.
        image = bytearray(IMAGE)
        while fdp.remaining_bytes() > 2:
            pos = fdp.ConsumeIntInRange(0, len(image) - 1)
            chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
            image[pos : pos + len(chunk)] = chunk
        if fdp.ConsumeBool():
            del image[fdp.ConsumeIntInRange(0, len(image)) :]
        if mode == 3 and len(image) >= 16:
            image[8:16] = struct.pack("<Q", file_checksum(bytes(image)))
        _load(bytes(image))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
