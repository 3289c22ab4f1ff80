"""TCP reassembly of a flow's first bytes and the data plane's bounded flow table. C-level API: stream.pxd."""

from enum import IntFlag

from fastpath.http import HttpRequest
from fastpath.tls import ClientHello

class Proto(IntFlag):
    """Which parser reads a flow's bytes (Cython makes C enums IntFlags)."""

    TLS = 1
    HTTP = 2

# A flow, client to server: (source address, destination address, source port, destination port).
# Addresses are packed bytes, both 4 (IPv4) or both 16 (IPv6) long.
FlowKeyTuple = tuple[bytes, bytes, int, int]

class Assembler:
    """One flow's first bytes (client to server), reassembled in a fixed buffer of `size` bytes.

    Segments may come in any order, repeated or overlapping (a repeat must carry the same bytes, else
    the stream is MALFORMED); sequence numbers wrap modulo 2**32. With the SYN seen, the stream starts
    at its sequence number + 1. Without it (a flow first seen mid-handshake), the stream starts at the
    lowest segment whose payload looks like a connection's first (a TLS handshake record starting a
    ClientHello; GET, POST or another common method and a space), or whose bytes do together with the
    segments that follow it; segments are held until then, and bytes before that start are dropped.
    More than 16 separate runs of bytes at once, a message that needs more than `size` bytes, or bytes
    arriving beyond them before the message is complete, make the stream MALFORMED."""

    def __init__(self, proto: Proto, size: int = 16384) -> None: ...
    def syn(self, isn: int) -> None:
        """The client's SYN (its sequence number, not + 1)."""
    def feed(self, seq: int, payload: bytes) -> ClientHello | HttpRequest:
        """Adds one segment and returns the parse of the bytes so far."""
    @property
    def contiguous(self) -> int:
        """Bytes received in order from the start of the stream."""

class FlowTable:
    """The data plane's flows: bounded memory, allocated once.

    At most max_flows flows and max_streams reassembly buffers of buffer_size bytes. A flow takes a
    buffer only when payload arrives, so a SYN flood only recycles flow slots. When full, the least
    recently used flow is evicted; when all buffers are taken, the flow least recently fed. Call
    remove() once a flow is decided. Not thread-safe: one table per packet-handling thread."""

    def __init__(self, max_flows: int = 65536, max_streams: int = 1024, buffer_size: int = 16384) -> None: ...
    def syn(self, key: FlowKeyTuple, proto: Proto, isn: int) -> None:
        """Records the client's SYN, creating the flow if needed."""
    def feed(self, key: FlowKeyTuple, proto: Proto, seq: int, payload: bytes) -> ClientHello | HttpRequest:
        """Adds a segment to the flow (created if needed; proto is fixed at creation) and parses."""
    def remove(self, key: FlowKeyTuple) -> bool:
        """Forgets the flow; False if it was not there."""
    def __contains__(self, key: FlowKeyTuple) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def streams_in_use(self) -> int:
        """Flows holding a reassembly buffer."""
    @property
    def evictions(self) -> int:
        """Flows evicted to make room since the table was created."""
