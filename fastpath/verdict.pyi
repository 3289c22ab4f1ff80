"""Per-group verdicts over a domain table and batch classification (C-level API: verdict.pxd)."""

import enum
from array import array
from typing import TypeAlias

from fastpath.table import DomainTable

_Data: TypeAlias = bytes | bytearray | memoryview
_Offsets: TypeAlias = array[int] | memoryview  # uint32 ("I")
_Out: TypeAlias = bytearray | memoryview

class Action(enum.IntFlag):
    ALLOW = 0
    BLOCK = 1

class Reason(enum.IntFlag):
    DEFAULT = 0  # nothing in the policy matched: the group's default action
    PADLOCKED = 1  # a category nobody can override (IWF, CTIRU, trust-locked lists)
    SCHOOL_DENY = 2  # the most specific school override is a deny
    SCHOOL_ALLOW = 3  # the most specific school override is an allow
    CATEGORY = 4  # a category the group blocks

# The action a batch writes for an item whose status is not OK.
NO_VERDICT: int

class GroupPolicy:
    """A group's policy as category bit masks."""

    def __init__(
        self,
        *,
        blocked: int = 0,
        padlocked: int = 0,
        allow: int = 0,
        deny: int = 0,
        default_action: Action = ...,
    ) -> None: ...
    @property
    def blocked(self) -> int: ...
    @property
    def padlocked(self) -> int: ...
    @property
    def allow(self) -> int: ...
    @property
    def deny(self) -> int: ...
    @property
    def default_action(self) -> Action: ...

class Verdict:
    """What decide() found."""

    @property
    def action(self) -> Action: ...
    @property
    def reason(self) -> Reason: ...
    @property
    def bits(self) -> int:
        """The categories behind the reason (matched padlocked, deny, allow or blocked bits)."""
    @property
    def categories(self) -> int:
        """Every category the name is in."""
    @property
    def matched(self) -> str | None:
        """The suffix of the name that decided, or None for DEFAULT."""
    @property
    def blocked(self) -> bool: ...

def decide(table: DomainTable, name: str | bytes, policy: GroupPolicy) -> Verdict:
    """The group's verdict on name: padlocked categories block; then the most specific school allow
    or deny (deny wins at the same suffix); then blocked categories; then the default action."""

# Batches: item i is data[offsets[i]:offsets[i + 1]] (offsets: uint32, n + 1 entries). Each writes
# statuses[i] (a fastpath.names.ParseStatus) and actions[i] (an Action when the status is OK, else
# NO_VERDICT) into writable byte buffers of n bytes, and returns how many items were OK.

def classify_names(
    table: DomainTable, policy: GroupPolicy, data: _Data, offsets: _Offsets, statuses: _Out, actions: _Out
) -> int:
    """Host names (e.g. HTTP Host values); MALFORMED for an invalid name."""

def classify_dns(
    table: DomainTable, policy: GroupPolicy, data: _Data, offsets: _Offsets, statuses: _Out, actions: _Out
) -> int:
    """DNS query messages (UDP payloads)."""

def classify_tls_streams(
    table: DomainTable, policy: GroupPolicy, data: _Data, offsets: _Offsets, statuses: _Out, actions: _Out
) -> int:
    """The first bytes of TLS connections (ClientHello records, possibly several)."""

def classify_quic_initials(
    table: DomainTable, policy: GroupPolicy, data: _Data, offsets: _Offsets, statuses: _Out, actions: _Out
) -> int:
    """QUIC Initial datagrams, each the first flight of its connection (NEED_MORE when its
    ClientHello continues in a later datagram)."""
