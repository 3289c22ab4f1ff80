"""A list's entries as keyed hashes, and the file that stores them.

An imported list is kept only as keyed hashes (the same keyed SipHash the fast-path table uses), so
the store never holds the IWF's or CTIRU's entries in clear and compiling needs no re-hashing. Four
sorted, de-duplicated uint64 arrays:

- subtree: a domain and every name under it (enforced at DNS, TLS, QUIC and HTTP);
- exact: that name only (hosts files, RPZ names without a wildcard); never also in subtree;
- pages: a page (host and path), enforceable on plain HTTP only (see page_hash);
- page_hosts: the hosts those pages are on, so the fast path knows when to look at the path.

With them, the list's depth mask: which label counts its names have (subtree, exact and page_hosts),
so that lookups in the compiled table skip the others. One mask for the list rather than a count per
entry: the table needs no more, and it tells nothing about any one confidential entry.

File layout: magic, key fingerprint, depth mask, the four counts (uint64 each), then the arrays, all
little-endian. A file is written beside its final name and renamed into place."""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.store import atomic_file
from fastpath.siphash import keyed_hash, keyed_hash_depth

MAGIC = b"SGLIST02"
# Files from before the depth mask: read as having every depth until the list is next imported.
MAGIC_V1 = b"SGLIST01"
KINDS = ("subtree", "exact", "pages", "page_hosts")
ALL_DEPTHS = (1 << 64) - 1
_HEADER = len(MAGIC) + 8 * (2 + len(KINDS))
_U64 = np.dtype("<u8")


def key_fingerprint(key: bytes) -> int:
    """Identifies the key and the hash function a file was made with, without revealing the key:
    the keyed hash of a name no list can hold (.invalid is reserved), so a fast-path upgrade that
    changes the hashing is noticed as surely as a new key."""
    return keyed_hash(key, "list-store-fingerprint.invalid")


def page_hash(key: bytes, host: str, path: str | bytes) -> int:
    """The keyed hash of a page: the normalised host followed by the path as sent (starting with '/',
    query included, fragment removed). The HTTP filter computes the same for a request whose host
    carries the page-entries category."""
    raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")
    h = hashlib.blake2b(host.encode("ascii") + raw, key=key, digest_size=8, person=b"sg-page")
    return int.from_bytes(h.digest(), "little")


class EntryError(ValueError):
    """An entry file that is damaged or was hashed with another key."""


@dataclass
class EntrySet:
    subtree: np.ndarray
    exact: np.ndarray
    pages: np.ndarray
    page_hosts: np.ndarray
    depths: int  # bit d - 1 set: some name has d labels (fastpath.siphash.keyed_hash_depth)

    @classmethod
    def empty(cls) -> EntrySet:
        return cls(*(np.empty(0, _U64) for _ in KINDS), depths=0)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.subtree, self.exact, self.pages, self.page_hosts)

    @property
    def domains(self) -> int:
        """Entries enforceable on every path (DNS, TLS, QUIC and HTTP)."""
        return len(self.subtree) + len(self.exact)

    def write(self, path: Path, key: bytes) -> None:
        with atomic_file(path, 0o600) as tmp, open(tmp, "wb") as f:
            f.write(MAGIC)
            header = [key_fingerprint(key), self.depths, *(len(a) for a in self.arrays())]
            f.write(np.array(header, _U64).tobytes())
            for a in self.arrays():
                f.write(np.ascontiguousarray(a, _U64).tobytes())

    @classmethod
    def read(cls, path: Path, key: bytes, mmap: bool = False) -> EntrySet:
        """Loads a file; mmap=True maps it instead (cheap membership tests on a large list)."""
        with open(path, "rb") as f:
            head = f.read(_HEADER)
        v1 = head[: len(MAGIC)] == MAGIC_V1
        header_size = _HEADER - 8 * v1
        if len(head) < header_size or head[: len(MAGIC)] not in (MAGIC, MAGIC_V1):
            raise EntryError(f"{path}: not a list entry file")
        fields = [int(x) for x in np.frombuffer(head[:header_size], _U64, offset=len(MAGIC))]
        if v1:
            fields.insert(1, ALL_DEPTHS)
        if fields[0] != key_fingerprint(key):
            raise EntryError(
                f"{path}: hashed with a different key or hash function "
                "(import the list again: appliance lists update --force)"
            )
        counts = fields[2:]
        if path.stat().st_size != header_size + 8 * sum(counts):
            raise EntryError(f"{path}: truncated")
        if mmap and sum(counts):
            data = np.memmap(path, _U64, "r", offset=header_size, shape=(sum(counts),))
        else:
            data = np.fromfile(path, _U64, offset=header_size, count=sum(counts))
        ends = np.cumsum([0, *counts])
        return cls(*(data[ends[i] : ends[i + 1]] for i in range(len(KINDS))), depths=fields[1])

    def has(self, kind: str, h: int) -> bool:
        a = getattr(self, kind)
        i = int(np.searchsorted(a, np.uint64(h)))
        return i < len(a) and int(a[i]) == h


class Collector:
    """Gathers hashes while a list is read, in compact arrays (8 bytes an entry), then sorts them."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.subtree = array("Q")
        self.exact = array("Q")
        self.pages = array("Q")
        self.page_hosts = array("Q")
        self.depths = 0  # the OR of every name's depth bit (subtree, exact and page hosts)

    def domain(self, name: str | bytes, exact: bool = False) -> None:
        """Adds a name; ValueError if it is not a valid host name."""
        h, depth = keyed_hash_depth(self.key, name)
        (self.exact if exact else self.subtree).append(h)
        self.depths |= depth

    def page(self, host: str, path: str | bytes) -> None:
        h, depth = keyed_hash_depth(self.key, host)
        self.page_hosts.append(h)
        self.pages.append(page_hash(self.key, host, path))
        self.depths |= depth

    def finish(self) -> EntrySet:
        subtree, exact, pages, page_hosts = (
            _unique(a) for a in (self.subtree, self.exact, self.pages, self.page_hosts)
        )
        # A name listed both ways needs only its subtree entry, which also matches the name itself.
        return EntrySet(subtree, exact[~member(subtree, exact)], pages, page_hosts, self.depths)


def _unique(values: array) -> np.ndarray:
    """Sorted distinct values; empties values as it goes, so the import holds one copy at a time."""
    a = np.frombuffer(values, np.uint64).astype(_U64) if len(values) else np.empty(0, _U64)
    del values[:]
    a.sort()
    if len(a) < 2:
        return a
    keep = np.empty(len(a), bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def member(sorted_set: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each of values, whether it is in sorted_set (sorted, distinct)."""
    if not len(sorted_set):
        return np.zeros(len(values), bool)
    i = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[i] == values


def changes(old: EntrySet, new: EntrySet) -> tuple[int, int]:
    """(entries added, entries removed) from old to new: names and pages (page_hosts only follow
    from the pages)."""
    added = removed = 0
    for a, b in ((old.subtree, new.subtree), (old.exact, new.exact), (old.pages, new.pages)):
        added += len(b) - int(member(a, b).sum())
        removed += len(a) - int(member(b, a).sum())
    return added, removed
