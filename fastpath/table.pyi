"""The compiled domain table: build, on-disk format, suffix lookup (C-level API: table.pxd)."""

import os
from array import array
from typing import Any

import numpy as np

class TableError(ValueError):
    """A table file that is corrupt, truncated, of another format version, or built with another key."""

def file_checksum(data: bytes) -> int:
    """The checksum a table file's header carries for the whole file image data (XXH64 of data[16:])."""

class TableBuilder:
    """Collects entries (keyed hashes and category masks) and writes a table file."""

    def __init__(self, key: bytes) -> None: ...
    def add(self, name: str | bytes, categories: int, exact: bool = False) -> None:
        """Adds a name for its subtree (or only itself when exact), with a non-empty 64-bit category
        mask. Unicode is converted to IDNA punycode; ValueError names an invalid entry."""
    def add_hash(self, h: int, categories: int, exact: bool = False, labels: int | None = None) -> None:
        """Adds an entry hashed with fastpath.siphash.keyed_hash under this builder's key; labels is
        the name's label count (optional: it only lets lookups skip depths no entry has)."""
    def add_hashes(
        self,
        hashes: np.ndarray | array[int] | memoryview,
        categories: int,
        exact: bool = False,
        depths: int | None = None,
    ) -> None:
        """Adds entries hashed as for add_hash, all with the same categories, from a buffer of uint64
        ("Q", e.g. a list entry file's array). depths is their depth mask, the OR of their names'
        fastpath.siphash.keyed_hash_depth bits (optional, as labels is for add_hash)."""
    def build(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> None:
        """Writes the table atomically (temporary file, fsync, rename). Duplicate names merge by OR.
        metadata is stored as JSON in clear."""

class Match:
    """The outcome of a lookup."""

    @property
    def categories(self) -> int:
        """OR of the categories of every matching entry."""
    @property
    def hits(self) -> tuple[tuple[str, int], ...]:
        """(suffix, categories) of each matching entry, most specific first."""
    @property
    def matched(self) -> str | None:
        """The most specific matching suffix, or None."""
    @property
    def matched_len(self) -> int:
        """Length of the most specific matching suffix, or -1."""
    def __bool__(self) -> bool: ...

class DomainTable:
    """A table file mapped read-only; keeps its own mapping until close()."""

    @property
    def path(self) -> str: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def created(self) -> int:
        """Build time, unix seconds."""
    @property
    def file_size(self) -> int: ...
    @staticmethod
    def open(path: str | os.PathLike[str], key: bytes) -> DomainTable:
        """Maps and validates a table; TableError if it is corrupt, truncated, of an unknown format
        version or built with another key."""
    def lookup(self, name: str | bytes) -> Match:
        """Every entry matching name; ValueError for an invalid name or a closed table."""
    def close(self) -> None: ...
    def __len__(self) -> int: ...
    @property
    def depths(self) -> int:
        """The label counts entries have: bit d - 1 for d labels (bit 63: 64 or more)."""
    def __enter__(self) -> DomainTable: ...
    def __exit__(self, *exc: object) -> None: ...
