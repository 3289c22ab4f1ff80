"""The DNS filter's engine: the per-query decision, the batched UDP loop, and the block-event ring.

Typical use (appliance/dnsfilter.py does this):

    engine = Engine(len(groups), block_ipv4="192.0.2.1", block_ipv6="2001:db8::1", nxdomain=False,
                    ttl=60, special_names={"www.google.com": 0, ...}, targets=["forcesafesearch.google.com"],
                    actions=[[0, ...], ...], strip_ech=[True, ...], upstream_timeout=2.0)
    engine.set_state(table, policies, generation, lans=[(ifindex, group)], subnets=[(network, group)])
    loop = threading.Thread(target=engine.serve_udp, args=(sock4.fileno(), sock6.fileno(), up.fileno()))
    loop.start()
    ...
    engine.set_state(new_table, ...)     # returns once the loop has taken up the new state
    engine.stop()

Groups are indexes into the caller's list of groups (config order). Per query: the client's group is
the one of its ingress interface (lans), else of its source subnet, else the query is REFUSED. A name
the group's policy blocks gets the block answer (NXDOMAIN with nxdomain=True, else an A/AAAA of the
block page, NODATA for other types), and a block event. Otherwise a special name (exact match) gets
what its feature does for the group: FEATURE_NXDOMAIN, a CNAME to targets[i] followed by the upstream's
records for the target (action i >= 0), or nothing (FEATURE_OFF). Everything else is relayed from the
upstream (the UDP loop first asks its cache of upstream answers), with ECH stripped from
HTTPS/SVCB/ANY answers for groups with strip_ech. Malformed queries get FORMERR (or nothing, without a
header), other opcodes NOTIMP, EDNS versions other than 0 BADVERS; responses are never answered, and
nothing that does not parse as a standard query is forwarded. An upstream answer must repeat the
question sent (name bytes, type, class); one that is late, malformed, or cannot be rewritten gives
SERVFAIL, as does a full pending table.
"""

from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

from fastpath.table import DomainTable
from fastpath.verdict import GroupPolicy

MAX_GROUPS: int
MAX_FEATURES: int
FEATURE_OFF: int
FEATURE_NXDOMAIN: int

# (ts_us, generation, group, client_ip, name, reason, bits): reason is a fastpath.verdict.Reason and
# bits the categories behind it, in the bit numbering of the state with that generation.
EventTuple = tuple[int, int, int, str, str, int, int]

class Forward:
    """A TCP query to send upstream (over TCP); give the resolver's reply to Engine.answer."""

    @property
    def message(self) -> bytes: ...

class Engine:
    def __init__(
        self,
        groups: int,
        *,
        block_ipv4: str | None,
        block_ipv6: str | None,
        nxdomain: bool,
        ttl: int,
        special_names: dict[str, int],
        targets: list[str],
        actions: list[list[int]],
        strip_ech: list[bool],
        upstream_timeout: float,
        pending: int = 4096,
        events: int = 16384,
    ) -> None:
        """special_names maps a name to its feature (0..MAX_FEATURES-1); actions[group][feature] is
        FEATURE_OFF, FEATURE_NXDOMAIN or an index into targets. pending bounds the UDP queries waiting
        for the upstream; events (a power of two) the block events waiting for drain_events. ttl is the
        TTL of every answer the engine makes up. Until set_state, every group allows everything."""
    def set_state(
        self,
        table: DomainTable | None,
        policies: Sequence[GroupPolicy],
        generation: int,
        lans: Sequence[tuple[int, int]],
        subnets: Sequence[tuple[IPv4Network | IPv6Network, int]],
    ) -> None:
        """Publishes a new state: the table (None: each group's default action decides), one policy
        per group, a generation number (carried by block events), (ifindex, group) pairs and
        (subnet, group) pairs. Returns once a running UDP loop uses it; the old table is released then."""
    def serve_udp(self, sock4: int, sock6: int, upstream: int) -> None:
        """Runs the UDP loop (without the GIL) until stop(). sock4 and sock6 are bound UDP sockets
        (either may be -1); the loop turns on IP_PKTINFO / IPV6_RECVPKTINFO itself. upstream is a UDP
        socket connected to the resolver."""
    def stop(self) -> None: ...
    def query(self, message: bytes, client: str, local: str, ifindex: int) -> bytes | Forward | None:
        """One query over TCP: the reply, a Forward to send upstream, or None for no reply. local is
        the address the client connected to, ifindex its ingress interface (0 if unknown)."""
    def answer(self, forward: Forward, upstream: bytes) -> bytes | None:
        """The reply from the resolver's answer to forward.message; None if it does not answer it."""
    def servfail(self, forward: Forward) -> bytes | None:
        """The reply when the resolver does not answer."""
    def drain_events(self, limit: int) -> list[EventTuple]:
        """Takes up to limit block events from the ring, oldest first."""
    def stats(self) -> dict[str, int]:
        """Counters since start, UDP and TCP together: queries, blocked, rewritten, negative,
        forwarded, answered (from upstream answers, fresh or cached), cached, servfail, errors,
        dropped, stray; events_dropped (ring full), events_waiting, in_flight."""
