"""Shared benchmark helpers: the seeded synthetic domain generator, packing items for the batch
classifiers, and timing/memory readings."""

from __future__ import annotations

import gc
import random
import time
from array import array
from collections.abc import Callable, Iterator, Sequence

# Share of blocklist domains per public suffix, roughly as in large public blocklists (.com dominant,
# then cheap gTLDs and big ccTLDs, including second-level registries such as co.uk).
TLD_WEIGHTS: dict[str, float] = {
    "com": 42, "net": 6, "org": 5, "co.uk": 3.5, "uk": 0.8, "de": 3.5, "ru": 3.5, "info": 2.5,
    "xyz": 2.5, "top": 2.5, "io": 1.6, "cn": 1.5, "com.br": 1.4, "fr": 1.2, "nl": 1.1, "jp": 1,
    "it": 1, "pl": 1, "com.au": 1, "in": 1, "eu": 0.8, "online": 1.2, "site": 1.2, "club": 0.8,
    "me": 0.8, "tk": 0.8, "us": 0.7, "ca": 0.7, "es": 0.7, "biz": 0.6, "cc": 0.6, "tv": 0.5,
    "app": 0.5, "shop": 0.6, "store": 0.4, "co": 0.5, "ac.uk": 0.2, "sch.uk": 0.1, "gov.uk": 0.1,
}
# Host labels that precede registrable names in ad, tracker and adult lists.
COMMON_HOSTS = ["www", "cdn", "api", "m", "mail", "static", "img", "ads", "track", "stats", "app",
                "media", "pixel", "go", "click", "t", "s", "assets", "metrics", "login"]
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
    under = [rng.choice(COMMON_HOSTS + ["a1", "edge-7"]) + "." + p for p in picks[: len(picks) // 2]]
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


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
