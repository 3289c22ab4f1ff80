"""Shared benchmark helpers: the seeded synthetic domain generator, real-looking packets (DNS queries,
TLS ClientHellos from Python's OpenSSL, QUIC Initials from aioquic), packing items for the batch
classifiers, and timing/memory readings. tests/test_verdict.py uses the packet builders too."""

from __future__ import annotations

import contextlib
import gc
import random
import ssl
import struct
import time
from array import array
from collections.abc import Callable, Sequence

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

# Share of blocklist domains per public suffix, roughly as in large public blocklists (.com dominant,
# then cheap gTLDs and big ccTLDs, including second-level registries such as co.uk).
TLD_WEIGHTS: dict[str, float] = {
    "com": 42,
    "net": 6,
    "org": 5,
    "co.uk": 3.5,
    "uk": 0.8,
    "de": 3.5,
    "ru": 3.5,
    "info": 2.5,
    "xyz": 2.5,
    "top": 2.5,
    "io": 1.6,
    "cn": 1.5,
    "com.br": 1.4,
    "fr": 1.2,
    "nl": 1.1,
    "jp": 1,
    "it": 1,
    "pl": 1,
    "com.au": 1,
    "in": 1,
    "eu": 0.8,
    "online": 1.2,
    "site": 1.2,
    "club": 0.8,
    "me": 0.8,
    "tk": 0.8,
    "us": 0.7,
    "ca": 0.7,
    "es": 0.7,
    "biz": 0.6,
    "cc": 0.6,
    "tv": 0.5,
    "app": 0.5,
    "shop": 0.6,
    "store": 0.4,
    "co": 0.5,
    "ac.uk": 0.2,
    "sch.uk": 0.1,
    "gov.uk": 0.1,
}
# Host labels that precede registrable names in ad, tracker and adult lists.
COMMON_HOSTS = [
    "www",
    "cdn",
    "api",
    "m",
    "mail",
    "static",
    "img",
    "ads",
    "track",
    "stats",
    "app",
    "media",
    "pixel",
    "go",
    "click",
    "t",
    "s",
    "assets",
    "metrics",
    "login",
]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
INNER = LETTERS * 4 + "0123456789-"


def _label(rng: random.Random, lo: int, mean: float, hi: int) -> str:
    """A label of realistic length (roughly log-normal around mean, within lo..hi)."""
    length = max(lo, min(hi, round(rng.lognormvariate(0, 0.45) * mean)))
    if length <= 2:
        return "".join(rng.choice(LETTERS) for _ in range(length))
    middle = "".join(rng.choice(INNER) for _ in range(length - 2))
    return rng.choice(LETTERS) + middle + rng.choice(LETTERS + "0123456789")


def synthetic_domains(n: int, seed: int = 1) -> list[str]:
    """n distinct lower-case host names, the same for the same (n, seed)."""
    rng = random.Random(seed)
    tlds = list(TLD_WEIGHTS)
    cumulative = []
    total = 0.0
    for t in tlds:
        total += TLD_WEIGHTS[t]
        cumulative.append(total)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        name = _label(rng, 1, 9.5, 63) + "." + rng.choices(tlds, cum_weights=cumulative)[0]
        r = rng.random()
        if r < 0.28:
            name = rng.choice(COMMON_HOSTS) + "." + name
        elif r < 0.40:
            name = _label(rng, 1, 6, 63) + "." + name
        elif r < 0.45:
            name = _label(rng, 1, 8, 63) + "." + rng.choice(COMMON_HOSTS) + "." + name
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def query_mix(entries: Sequence[str], n: int, seed: int = 2) -> list[str]:
    """Query names as a filter sees them: half names not in the list, a quarter listed names, a
    quarter hosts under listed names."""
    rng = random.Random(seed)
    misses = synthetic_domains(n // 2, seed=seed + 1000)
    picks = [rng.choice(entries) for _ in range(n - len(misses))]
    under = [rng.choice([*COMMON_HOSTS, "a1", "edge-7"]) + "." + p for p in picks[: len(picks) // 2]]
    names = misses + picks[len(picks) // 2 :] + under
    rng.shuffle(names)
    return names


def pack(items: Sequence[bytes]) -> tuple[bytes, array]:
    """(data, offsets) for the verdict batch functions: item i is data[offsets[i]:offsets[i + 1]]."""
    offsets = array("I", [0])
    pos = 0
    for item in items:
        pos += len(item)
        offsets.append(pos)
    return b"".join(items), offsets


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The fastest of repeats runs of fn, in seconds (the least disturbed by the other tenants)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set size, or with "VmHWM" its peak (which, unlike ru_maxrss, does not
    inherit the peak of the process that forked it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def dns_query(name: str, qid: int, qtype: int = 1) -> bytes:
    """A recursive query as stub resolvers send it: one question, an EDNS OPT record (1232 bytes)."""
    header = struct.pack("!HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 1)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
    return header + qname + struct.pack("!HH", qtype, 1) + opt


_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE
_TLS.set_alpn_protocols(["h2", "http/1.1"])


def client_hello(name: str | None) -> bytes:
    """The first flight of a TLS 1.3 client (OpenSSL via Python's ssl): ClientHello record(s)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = _TLS.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for a server that is not there
        conn.do_handshake()
    return outgoing.read()


def quic_initial(name: str) -> bytes:
    """The first datagram of an aioquic client: a padded Initial carrying its ClientHello."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=name)
    conn = QuicConnection(configuration=config)
    conn.connect(("192.0.2.1", 443), now=0.0)
    return conn.datagrams_to_send(now=0.0)[0][0]
