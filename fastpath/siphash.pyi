"""Keyed SipHash-2-4 of normalised names (C-level API: siphash.pxd)."""

def keyed_hash(key: bytes, name: str | bytes) -> int:
    """The 64-bit keyed hash a domain table stores for name under key (16 bytes).

    The name is normalised as TableBuilder.add normalises it (IDNA/UTS46 for Unicode, lower case, no
    trailing dot) and hashed with its labels reversed. Raises ValueError for an invalid name or key."""

def keyed_hash_depth(key: bytes, name: str | bytes) -> tuple[int, int]:
    """keyed_hash(key, name) and the name's bit in a table's depth mask: bit d - 1 for a name of d
    labels (bit 63 for 64 or more). A list keeps the OR of its names' bits, not each name's count."""
