"""The NFQUEUE consumer: the first packets of each web flow from nfnetlink_queue, classified by the TLS,
HTTP and QUIC parsers and decided per group. C-level API: nfqueue.pxd.

One Consumer serves one queue from one thread: run() reads batches with recvmmsg and answers each batch
with one sendmsg (individual verdicts for packets that decide a flow or are dropped, one batch verdict
accepting the rest). A decision travels in the packet mark (the allow or block bit added), which the
ruleset copies into the flow's conntrack mark so that no later packet of the flow is queued. A
plain-HTTP request blocked by its name or page is first answered with a redirect to the block page
(block_page)."""

import enum
from collections.abc import Callable, Iterable, Mapping

from fastpath.table import DomainTable
from fastpath.verdict import GroupPolicy

class PacketVerdict(enum.IntFlag):
    PASS = 0  # accepted, mark unchanged: the flow is not decided yet
    ALLOW = 1  # accepted with the allow bit: the flow is allowed
    BLOCK = 2  # accepted with the block bit: the ruleset refuses it (TCP reset) and the flow
    DROP = 3  # dropped, this packet only: it could not be vetted (fail-closed groups)

class Layer(enum.IntFlag):
    LAYER_TLS = 1
    LAYER_QUIC = 2
    LAYER_HTTP = 3

class Rule(enum.IntFlag):
    """Why a flow without a usable name was decided by its group's fail setting."""

    RULE_NO_NAME = 16  # complete, but no name: no SNI or Host, or an IP literal
    RULE_MALFORMED = 17  # not a valid ClientHello, request head or QUIC Initial
    RULE_NOT_HANDLED = 18  # another protocol on a web port, or QUIC other than a v1/v2 Initial
    RULE_PACKET_BUDGET = 19  # nothing complete within the packets the ruleset queues
    RULE_NO_POLICY = 20  # no policy applied yet, or none for this group

# Rule values to the names block events carry ("NO_NAME", ...); a name decision carries the
# fastpath.verdict.Reason name instead ("CATEGORY", "PADLOCKED", ...).
RULE_NAMES: dict[int, str]
LAYER_NAMES: dict[int, str]

# A block event: (unix time, client address, server address, client MAC or None, group id,
# name or None, layer "tls"/"quic"/"http", rule, the categories behind the verdict).
BlockEvent = tuple[float, str, str, str | None, int, str | None, str, str, int]

class Policy:
    """A policy for the consumer: the domain table (held open while the policy is in use), each group's
    masks by group id, and for plain HTTP the bit marking hosts with page-level entries and a lookup
    (host, path) -> the page's category mask. A page in a padlocked category blocks; one in a blocked
    category blocks unless a school allow decided the host."""

    def __init__(
        self,
        table: DomainTable,
        policies: Mapping[int, GroupPolicy],
        pages_bit: int = 0,
        page_lookup: Callable[[str, bytes], int] | None = None,
    ) -> None: ...

class Consumer:
    """One queue. groups: (group id, fails closed) for each configured group; ids not listed are
    treated as failing closed. packets_per_flow: how many packets of a flow the ruleset queues (a flow
    still undecided at the last of them is decided by its group's fail setting). group_mask, allow_bit
    and block_bit: the packet-mark layout (appliance.dataplane.marks). Flow state is bounded:
    max_flows TCP flows with max_streams reassembly buffers, max_quic QUIC assemblers; the least
    recently used give way.

    block_page (appliance.blockpage.inject.Injector.redirect): called, with the GIL, for the packet
    that completes a plain-HTTP request blocked by its host's verdict or a page-level entry, before
    that packet's verdict is sent: (the whole packet from its network header, the host, the request's
    path from '/' when only that page is blocked, else None). Not called for flows decided by the fail
    setting, nor for packets answered from an earlier decision. What it raises is counted in
    redirect_errors; the flow is blocked either way."""

    queue: int
    packets: int  # packets handled
    passed: int
    dropped: int
    flows_allowed: int
    flows_blocked: int
    malformed: int  # packets that were not IPv4/IPv6 TCP or UDP to a web port, or inconsistent
    events_lost: int  # block events dropped because nobody drained them
    kernel_errors: int  # error answers from the kernel, and packet messages without an id
    redirect_errors: int  # block_page calls that raised

    def __init__(
        self,
        queue: int,
        groups: Iterable[tuple[int, bool]],
        packets_per_flow: int,
        *,
        group_mask: int,
        allow_bit: int,
        block_bit: int,
        max_flows: int = 65536,
        max_streams: int = 1024,
        max_quic: int = 1024,
        block_page: Callable[[bytes, str, bytes | None], object] | None = None,
    ) -> None: ...
    def set_policy(self, policy: Policy | None) -> None:
        """Installs a policy (None: none, so every flow goes by its group's fail setting). The packet
        thread takes it before its next batch; a flow in progress keeps nothing of the old one."""
    def bind(self, maxlen: int = 4096, rcvbuf: int = 8 << 20) -> None:
        """Binds the queue (whole packets, unsegmented GSO packets, maxlen packets queued at most).
        OSError if the kernel refuses, e.g. EPERM when another program serves the queue."""
    def run(self) -> None:
        """Serves the queue until stop() is called from another thread, without holding the GIL
        except to open QUIC flows and look up HTTP pages. OSError if the socket fails."""
    def stop(self) -> None: ...
    def close(self) -> None:
        """Unbinds the queue; the kernel drops what is still queued."""
    @property
    def idle_seconds(self) -> float:
        """Since the packet thread last came round its loop (it does at least every 0.2 s)."""
    @property
    def flows_pending(self) -> int:
        """Flows seen but not yet decided (TCP and QUIC)."""
    @property
    def evictions(self) -> int:
        """Undecided flows forgotten to make room."""
    def drain_events(self) -> list[BlockEvent]:
        """Block events since the last drain, oldest first (safe beside a running packet thread)."""
    def handle_packet(self, packet: bytes, mark: int, mac: bytes = b"") -> tuple[PacketVerdict, int]:
        """The verdict for one packet (network header onwards) with its packet mark and source MAC, and
        the mark the verdict carries. What run() does for every queued packet; sans-IO, for tests."""
