"""Keyed SipHash-2-4 of normalised names (C-level API: siphash.pxd)."""

def keyed_hash(key: bytes, name: str | bytes) -> int:
    """The 64-bit keyed hash a domain table stores for name under key (16 bytes).

    The name is normalised as TableBuilder.add normalises it (IDNA/UTS46 for Unicode, lower case, no
    trailing dot) and hashed with its labels reversed. Raises ValueError for an invalid name or key."""
