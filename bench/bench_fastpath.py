"""Fast-path table and verdict benchmark, side by side with a pure-Python baseline in the same run.

    python bench/bench_fastpath.py --entries 1000000 [--entries 10000000]

For each table size: build time (from a Python list of names), load time, bytes per entry (file size
and resident memory), and ns per name lookup, per DNS query parse + match, per ClientHello parse +
match and per QUIC Initial decrypt + match, each through the batch classifiers of fastpath.verdict.
The baseline is what a Python filter does: a set of the same names, a suffix walk over it, and the
parsing in Python (QUIC decryption through aioquic). Machines here are shared, so each figure is the
best of a few runs, and only ratios within one run mean much (docs: /work/shared/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from aioquic.buffer import Buffer
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import pull_quic_header
from common import (
    best_of,
    client_hello,
    dns_query,
    pack,
    query_mix,
    quic_initial,
    rss_bytes,
    synthetic_domains,
)

from fastpath.table import DomainTable, TableBuilder
from fastpath.verdict import (
    GroupPolicy,
    classify_dns,
    classify_names,
    classify_quic_initials,
    classify_tls_streams,
)

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
POLICY = GroupPolicy(blocked=1, padlocked=2, allow=4, deny=8)
TARGETS = {
    "build": "<= 2 s at 1M",
    "load": "<= 50 ms at 1M",
    "bytes/entry (file)": "<= 24",
    "bytes/entry (RSS)": "<= 24",
    "build peak RSS, streamed": "10M within a 4 GB Pi",
    "DNS query parse+match": "<= 150 ns at 1M",
    "ClientHello parse+match": "<= 300 ns at 1M",
}


# ---- The baseline: a Python filter over a set of names.


def py_match(names: set[str], name: str) -> bool:
    while True:
        if name in names:
            return True
        dot = name.find(".")
        if dot < 0:
            return False
        name = name[dot + 1 :]


def py_dns_name(msg: bytes) -> str:
    pos, labels = 12, []
    while msg[pos]:
        labels.append(msg[pos + 1 : pos + 1 + msg[pos]])
        pos += 1 + msg[pos]
    return b".".join(labels).decode("ascii").lower()


def py_hello_sni(msg: bytes) -> str | None:
    """SNI of a ClientHello handshake message."""
    pos = 4 + 2 + 32
    pos += 1 + msg[pos]  # session id
    pos += 2 + int.from_bytes(msg[pos : pos + 2])  # cipher suites
    pos += 1 + msg[pos]  # compression methods
    end = pos + 2 + int.from_bytes(msg[pos : pos + 2])
    pos += 2
    while pos < end:
        ext_type, length = struct.unpack_from("!HH", msg, pos)
        if ext_type == 0:
            return msg[pos + 9 : pos + 9 + int.from_bytes(msg[pos + 7 : pos + 9])].decode("ascii").lower()
        pos += 4 + length
    return None


def py_tls_sni(stream: bytes) -> str | None:
    msg, pos = b"", 0
    while pos < len(stream):
        length = int.from_bytes(stream[pos + 3 : pos + 5])
        msg += stream[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return py_hello_sni(msg)


def py_quic_sni(datagram: bytes) -> str | None:
    buf = Buffer(data=datagram)
    header = pull_quic_header(buf, host_cid_length=8)
    crypto = CryptoPair()
    crypto.setup_initial(header.destination_cid, is_client=False, version=header.version)
    end = header.packet_length
    _, payload, _ = crypto.decrypt_packet(datagram[:end], buf.tell(), 0)
    frames, data = Buffer(data=payload), {}
    while not frames.eof():
        kind = frames.pull_uint_var()
        if kind == 6:  # CRYPTO
            offset, length = frames.pull_uint_var(), frames.pull_uint_var()
            data[offset] = frames.pull_bytes(length)
        elif kind not in (0, 1):  # PADDING, PING
            break
    return py_hello_sni(b"".join(data[k] for k in sorted(data)))


# ---- Measurements


def batch(classify: Callable, table: DomainTable, items: Sequence[bytes]) -> Callable[[], int]:
    data, offsets = pack(items)
    statuses, actions = bytearray(len(items)), bytearray(len(items))

    def run() -> int:
        return classify(table, POLICY, data, offsets, statuses, actions)

    ok = run()
    if ok != len(items):
        raise RuntimeError(f"{classify.__name__}: only {ok} of {len(items)} items parsed")
    return run


def stream_build(names_file: str, out: str) -> None:
    """Builds from a file of names, one per line, and prints the peak resident memory it added."""
    start = rss_bytes()
    builder = TableBuilder(KEY)
    with open(names_file) as f:
        for line in f:
            builder.add(line.rstrip("\n"), 1)
    builder.build(out)
    print(rss_bytes("VmHWM") - start)


def build_peak_rss(names_file: Path, out: Path) -> int:
    """What a rebuild costs beside the running filter: a fresh process streams the names in."""
    child = [sys.executable, __file__, "--stream-build", str(names_file), str(out)]
    return int(subprocess.run(child, check=True, capture_output=True, text=True).stdout)


class Report:
    """Rows of: measure, fastpath, baseline, how many times better, target."""

    def __init__(self) -> None:
        self.rows = [("measure", "fastpath", "baseline: Python set", "baseline/fastpath", "target")]

    def add(self, measure: str, ours: float, theirs: float, unit: str, scale: float, digits: int = 0) -> None:
        ratio = f"{theirs / ours:.1f}x" if ours > 0 and theirs > 0 else ""
        self.rows.append(
            (
                measure,
                f"{ours * scale:.{digits}f} {unit}",
                f"{theirs * scale:.{digits}f} {unit}" if theirs else "",
                ratio,
                TARGETS.get(measure, ""),
            )
        )

    def print(self) -> None:
        widths = [max(len(r[i]) for r in self.rows) for i in range(len(self.rows[0]))]
        for r in self.rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def run_size(n: int, queries: int, hellos: int, initials: int, workdir: Path) -> None:
    print(f"\n== {n:,} entries ==")
    t0 = time.perf_counter()
    names = synthetic_domains(n, seed=1)
    mean_len = sum(map(len, names)) / n
    print(f"generated in {time.perf_counter() - t0:.1f} s (mean name length {mean_len:.1f})")
    table_path = workdir / "bench.tbl"
    names_path = workdir / "names.txt"
    names_path.write_text("\n".join(names) + "\n")
    repeats = 1 if n > 2_000_000 else 2

    def build() -> None:
        builder = TableBuilder(KEY)
        add = builder.add
        for name in names:
            add(name, 1)
        builder.build(table_path, {"entries": n})

    build_s = best_of(repeats, build)
    set_build_s = best_of(repeats, lambda: set(names))

    # Resident memory: the first open maps (and populates) the file; then the same for the set.
    before = rss_bytes()
    table = DomainTable.open(table_path, KEY)
    table_rss = rss_bytes() - before
    table.close()
    load_s = best_of(3, lambda: DomainTable.open(table_path, KEY).close())
    table = DomainTable.open(table_path, KEY)

    def load_set() -> set[str]:
        with open(names_path) as f:
            return set(f.read().split())

    set_load_s = best_of(repeats, load_set)
    before = rss_bytes()
    name_set = load_set()
    set_rss = rss_bytes() - before

    build_rss = build_peak_rss(names_path, workdir / "child.tbl")

    qnames = query_mix(names, queries)
    dns = [dns_query(q, i) for i, q in enumerate(qnames)]
    tls = [client_hello(q) for q in qnames[:hellos]]  # distinct, so table reads stay random
    quic = [quic_initial(q) for q in qnames[:initials]]
    encoded = [q.encode() for q in qnames]

    r = Report()
    r.add("build", build_s, set_build_s, "s", 1, 2)
    r.add("load", load_s, set_load_s, "ms", 1e3, 1)
    r.add("bytes/entry (file)", table.file_size / n, names_path.stat().st_size / n, "B", 1, 1)
    r.add("bytes/entry (RSS)", table_rss / n, set_rss / n, "B", 1, 1)
    r.add("build peak RSS, streamed", build_rss / n, 0, "B/entry", 1, 1)
    r.add(
        "name normalise+match",
        best_of(5, batch(classify_names, table, encoded)) / queries,
        best_of(3, lambda: [py_match(name_set, q.lower()) for q in qnames]) / queries,
        "ns",
        1e9,
    )
    r.add(
        "DNS query parse+match",
        best_of(5, batch(classify_dns, table, dns)) / queries,
        best_of(3, lambda: [py_match(name_set, py_dns_name(m)) for m in dns]) / queries,
        "ns",
        1e9,
    )
    r.add(
        "ClientHello parse+match",
        best_of(5, batch(classify_tls_streams, table, tls)) / len(tls),
        best_of(3, lambda: [py_match(name_set, py_tls_sni(s)) for s in tls]) / len(tls),
        "ns",
        1e9,
    )
    r.add(
        "QUIC Initial decrypt+match",
        best_of(3, batch(classify_quic_initials, table, quic)) / len(quic),
        best_of(2, lambda: [py_match(name_set, py_quic_sni(d)) for d in quic]) / len(quic),
        "ns",
        1e9,
    )
    r.print()
    table.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, action="append", help="table size (repeatable)")
    parser.add_argument("--queries", type=int, default=200_000, help="names and DNS queries per run")
    parser.add_argument("--hellos", type=int, default=20_000, help="distinct ClientHellos")
    parser.add_argument("--initials", type=int, default=500, help="distinct QUIC Initials")
    parser.add_argument("--stream-build", nargs=2, metavar=("NAMES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream_build:
        stream_build(*args.stream_build)
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench_fastpath.") as tmp:
        for n in args.entries or [1_000_000]:
            run_size(n, args.queries, args.hellos, args.initials, Path(tmp))


if __name__ == "__main__":
    main()
