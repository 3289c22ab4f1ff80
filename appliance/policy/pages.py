"""The compiled page table: page-level entries (host and path), enforceable on plain HTTP only.

The domain table marks each host that has page entries with the policy's "pages" bit; for such a
host the HTTP filter computes appliance.lists.entries.page_hash(key, host, path) and looks it up
here. The file holds sorted keyed hashes and each one's category mask, no URLs.

Layout: magic, count (uint64), the hashes (uint64, sorted), the masks (uint64), little-endian."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance.lists.entries import page_hash
from appliance.store import atomic_file

MAGIC = b"SGPAGES1"
_U64 = np.dtype("<u8")


def write(path: Path, hashes: np.ndarray, masks: np.ndarray) -> int:
    """Writes the page table, merging a page listed by several lists (its masks OR'd); returns the
    number of pages."""
    order = np.argsort(hashes, kind="stable")
    hashes, masks = hashes[order], masks[order]
    if len(hashes):
        starts = np.flatnonzero(np.concatenate(([True], hashes[1:] != hashes[:-1])))
        hashes, masks = hashes[starts], np.bitwise_or.reduceat(masks, starts)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(np.array([len(hashes)], _U64).tobytes())
        f.write(hashes.astype(_U64).tobytes())
        f.write(masks.astype(_U64).tobytes())
    return len(hashes)


class PageTable:
    def __init__(self, path: Path, key: bytes) -> None:
        self.key = key
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError(f"{path}: not a page table")
            (count,) = np.frombuffer(f.read(8), _U64)
            data = np.fromfile(f, _U64, count=2 * int(count))
        if len(data) != 2 * int(count):
            raise ValueError(f"{path}: truncated")
        self.hashes, self.masks = data[: int(count)], data[int(count) :]

    def __len__(self) -> int:
        return len(self.hashes)

    def lookup(self, host: str, path: str | bytes) -> int:
        """The category mask of the page, or 0. host is normalised; path as sent, fragment removed."""
        h = np.uint64(page_hash(self.key, host, path))
        i = int(np.searchsorted(self.hashes, h))
        return int(self.masks[i]) if i < len(self.hashes) and self.hashes[i] == h else 0
