# cython: language_level=3
"""Per-group verdicts over a domain table, and batch classification of names, DNS queries, TLS
ClientHello streams and QUIC Initials.

The layer order (docs/architecture.md) is that of the filters schools rely on: categories nobody may
override (padlocked: IWF, CTIRU, trust-locked lists) first, then the school's own most specific
allow/deny, then the group's blocked categories, then its default action."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc

from fastpath.dns cimport DnsQuery, parse_query
from fastpath.names cimport MALFORMED, NAME_BUF, OK, normalise_name
from fastpath.quic cimport QuicFlowKey, QuicInitialAssembler, quic_flow_key
from fastpath.siphash cimport MAX_SUFFIXES, entry_name
from fastpath.table cimport DomainTable, Probe, SuffixHit, table_match, table_prepare, table_probe
from fastpath.tls cimport ClientHelloInfo, parse_tls_stream


cdef enum Kind:
    NAMES
    DNS
    TLS
    QUIC

cdef enum:
    # Items a batch parses and prefetches before probing any of them: enough to overlap the memory
    # latency of a table much larger than the caches, few enough that the probes stay in L1/L2.
    GROUP = 16


cdef inline int settle(VerdictC* out, int action, int reason, uint64_t bits, int matched_len) noexcept nogil:
    out.action = action
    out.reason = reason
    out.bits = bits
    out.matched_len = matched_len
    return action


cdef inline int first_with(const SuffixHit* hits, int count, uint64_t bits) noexcept nogil:
    """The length of the most specific hit carrying any of bits (there is one when called)."""
    cdef int i
    for i in range(count):
        if hits[i].mask & bits:
            return hits[i].length
    return -1


cdef int decide_hits(const GroupPolicyC* p, const SuffixHit* hits, int count, VerdictC* out) noexcept nogil:
    """The verdict from a name's table hits (most specific first)."""
    cdef uint64_t total = 0
    cdef uint64_t overrides = p.allow | p.deny
    cdef int i
    for i in range(count):
        total |= hits[i].mask
    out.categories = total
    if total & p.padlocked:
        return settle(out, BLOCK, PADLOCKED, total & p.padlocked, first_with(hits, count, p.padlocked))
    if total & overrides:
        for i in range(count):
            if hits[i].mask & p.deny:
                return settle(out, BLOCK, SCHOOL_DENY, hits[i].mask & p.deny, hits[i].length)
            if hits[i].mask & p.allow:
                return settle(out, ALLOW, SCHOOL_ALLOW, hits[i].mask & p.allow, hits[i].length)
    if total & p.blocked:
        return settle(out, BLOCK, CATEGORY, total & p.blocked, first_with(hits, count, p.blocked))
    return settle(out, p.default_action, DEFAULT, 0, -1)


cdef int decide_c(const TableView* t, const GroupPolicyC* p, const char* name, int n,
                  VerdictC* out) noexcept nogil:
    cdef SuffixHit hits[MAX_SUFFIXES]
    return decide_hits(p, hits, table_match(t, name, n, hits), out)


cdef int prepare_item(int kind, const TableView* t, const uint8_t* item, size_t n, uint8_t* scratch,
                      size_t scratch_cap, Probe* probe) noexcept nogil:
    """Parses one batch item and starts its table lookup; returns the parser's ParseStatus."""
    cdef DnsQuery query
    cdef ClientHelloInfo hello
    cdef char name[NAME_BUF]
    cdef int status
    cdef int length
    if kind == DNS:
        status = parse_query(item, n, &query)
        if status == OK:
            table_prepare(t, query.name, query.name_len, probe)
    elif kind == TLS:
        status = parse_tls_stream(item, n, scratch, scratch_cap, &hello)
        if status == OK:
            table_prepare(t, hello.sni, hello.sni_len, probe)
    else:
        length = normalise_name(item, n, name)
        status = OK if length > 0 else MALFORMED
        if status == OK:
            table_prepare(t, name, length, probe)
    return status


cdef int classify_quic(const TableView* t, const GroupPolicyC* p, const uint8_t* data, size_t n,
                       VerdictC* out) except -1:
    # Each datagram is taken as a new connection's first flight: its ClientHello must fit in it,
    # else NEED_MORE (the data plane keeps an assembler per flow for the multi-datagram case).
    cdef QuicFlowKey key
    cdef QuicInitialAssembler assembler
    cdef int status = quic_flow_key(data, n, &key)
    if status != OK:
        return status
    assembler = QuicInitialAssembler.for_flow(&key)
    with nogil:
        status = assembler.feed_datagram(data, n)
        if status == OK:
            decide_c(t, p, assembler.info.sni, assembler.info.sni_len, out)
    return status


cdef class GroupPolicy:
    """A group's policy as category bit masks (bits assigned by the policy compiler)."""

    def __init__(self, *, blocked: int = 0, padlocked: int = 0, allow: int = 0, deny: int = 0,
                 default_action=ALLOW):
        for mask in (blocked, padlocked, allow, deny):
            if not 0 <= mask < (1 << 64):
                raise ValueError(f"category masks are 64-bit unsigned integers, not {mask!r}")
        if default_action not in (ALLOW, BLOCK):
            raise ValueError(f"default_action must be ALLOW or BLOCK, not {default_action!r}")
        self.c.blocked = blocked
        self.c.padlocked = padlocked
        self.c.allow = allow
        self.c.deny = deny
        self.c.default_action = default_action

    @property
    def blocked(self) -> int:
        return self.c.blocked

    @property
    def padlocked(self) -> int:
        return self.c.padlocked

    @property
    def allow(self) -> int:
        return self.c.allow

    @property
    def deny(self) -> int:
        return self.c.deny

    @property
    def default_action(self) -> Action:
        return Action(self.c.default_action)

    def __repr__(self) -> str:
        return (f"GroupPolicy(blocked={self.c.blocked:#x}, padlocked={self.c.padlocked:#x}, "
                f"allow={self.c.allow:#x}, deny={self.c.deny:#x}, default_action={self.default_action!r})")


cdef class Verdict:
    """What decide() found: the action, why, and which suffix of the name decided."""

    cdef readonly object action
    cdef readonly object reason
    cdef readonly object bits
    cdef readonly object categories
    cdef readonly object matched

    @property
    def blocked(self) -> bool:
        return self.action == BLOCK

    def __repr__(self) -> str:
        return (f"Verdict({self.action!r}, {self.reason!r}, bits={self.bits:#x}, "
                f"categories={self.categories:#x}, matched={self.matched!r})")


def decide(DomainTable table not None, name: str | bytes, GroupPolicy policy not None) -> Verdict:
    """The group's verdict on name (normalised as TableBuilder.add normalises it)."""
    cdef bytes norm = entry_name(name)
    cdef VerdictC v
    cdef Verdict result = Verdict.__new__(Verdict)
    decide_c(table.acquire(), &policy.c, norm, len(norm), &v)
    table.release()
    result.action = Action(v.action)
    result.reason = Reason(v.reason)
    result.bits = v.bits
    result.categories = v.categories
    result.matched = norm[len(norm) - v.matched_len:].decode("ascii") if v.matched_len >= 0 else None
    return result


cdef inline bint record(int status, const VerdictC* v, uint8_t* status_out, uint8_t* action_out) noexcept nogil:
    status_out[0] = status
    action_out[0] = v.action if status == OK else NO_VERDICT
    return status == OK


cdef Py_ssize_t classify_group(int kind, const TableView* t, const GroupPolicyC* p, const uint8_t* base,
                               const uint32_t* offsets, Py_ssize_t count, uint8_t* scratch,
                               size_t scratch_cap, Probe* probes, uint8_t* statuses,
                               uint8_t* actions) noexcept nogil:
    """Items 0..count-1 (count <= GROUP): all parsed and prefetched first, then all probed."""
    cdef SuffixHit hits[MAX_SUFFIXES]
    cdef VerdictC v
    cdef Py_ssize_t k
    cdef Py_ssize_t decided = 0
    for k in range(count):
        statuses[k] = prepare_item(kind, t, base + offsets[k], offsets[k + 1] - offsets[k], scratch,
                                   scratch_cap, &probes[k])
    for k in range(count):
        if statuses[k] == OK:
            decide_hits(p, hits, table_probe(t, &probes[k], hits), &v)
        decided += record(statuses[k], &v, &statuses[k], &actions[k])
    return decided


cdef Py_ssize_t classify_batch(int kind, DomainTable table, GroupPolicy policy, const uint8_t[::1] data,
                               const uint32_t[::1] offsets, uint8_t[::1] statuses,
                               uint8_t[::1] actions) except -1:
    """Item i is data[offsets[i]:offsets[i + 1]]; writes its ParseStatus and, when that is OK, its
    Action (else NO_VERDICT). Returns how many items were OK."""
    cdef Py_ssize_t n = offsets.shape[0] - 1
    cdef Py_ssize_t i
    cdef Py_ssize_t decided = 0
    cdef size_t longest = 0
    cdef uint8_t* scratch = NULL
    cdef Probe* probes = NULL
    cdef const uint8_t* base = &data[0] if data.shape[0] else NULL
    cdef const TableView* t
    cdef VerdictC v
    if n < 0 or statuses.shape[0] < n or actions.shape[0] < n:
        raise ValueError("offsets needs n + 1 entries for n items, and statuses and actions n each")
    if n == 0:
        return 0
    for i in range(n):
        if offsets[i] > offsets[i + 1]:
            raise ValueError(f"offsets decrease at item {i}")
        longest = max(longest, offsets[i + 1] - offsets[i])
    if offsets[n] > <size_t>data.shape[0]:
        raise ValueError("offsets run past the end of data")
    t = table.acquire()
    try:
        if kind == QUIC:  # needs the GIL: an assembler (a Python object) per connection
            for i in range(n):
                decided += record(classify_quic(t, &policy.c, base + offsets[i], offsets[i + 1] - offsets[i], &v),
                                  &v, &statuses[i], &actions[i])
            return decided
        if kind == TLS:
            # A ClientHello split over records is gathered here; it is never longer than its records.
            scratch = <uint8_t*>malloc(longest + 1)
            if scratch == NULL:
                raise MemoryError()
        probes = <Probe*>malloc(GROUP * sizeof(Probe))
        if probes == NULL:
            raise MemoryError()
        with nogil:
            i = 0
            while i < n:
                decided += classify_group(kind, t, &policy.c, base, &offsets[i], min(<Py_ssize_t>GROUP, n - i),
                                          scratch, longest, probes, &statuses[i], &actions[i])
                i += GROUP
    finally:
        table.release()
        free(scratch)
        free(probes)
    return decided


def classify_names(DomainTable table not None, GroupPolicy policy not None, const uint8_t[::1] data,
                   const uint32_t[::1] offsets, uint8_t[::1] statuses, uint8_t[::1] actions) -> int:
    """Decides host names (e.g. HTTP Host values) packed in data; MALFORMED for an invalid name."""
    return classify_batch(NAMES, table, policy, data, offsets, statuses, actions)


def classify_dns(DomainTable table not None, GroupPolicy policy not None, const uint8_t[::1] data,
                 const uint32_t[::1] offsets, uint8_t[::1] statuses, uint8_t[::1] actions) -> int:
    """Decides DNS query messages (UDP payloads) packed in data."""
    return classify_batch(DNS, table, policy, data, offsets, statuses, actions)


def classify_tls_streams(DomainTable table not None, GroupPolicy policy not None, const uint8_t[::1] data,
                         const uint32_t[::1] offsets, uint8_t[::1] statuses, uint8_t[::1] actions) -> int:
    """Decides the first bytes of TLS connections (ClientHello records) packed in data."""
    return classify_batch(TLS, table, policy, data, offsets, statuses, actions)


def classify_quic_initials(DomainTable table not None, GroupPolicy policy not None, const uint8_t[::1] data,
                           const uint32_t[::1] offsets, uint8_t[::1] statuses, uint8_t[::1] actions) -> int:
    """Decides QUIC Initial datagrams packed in data, each the first flight of its connection."""
    return classify_batch(QUIC, table, policy, data, offsets, statuses, actions)
