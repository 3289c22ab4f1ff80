# cython: language_level=3
"""The DNS filter's engine: receive, decide, answer.

One decision (answer_query) serves both transports. UDP runs in serve_udp, a loop without the GIL
that takes queries in batches with recvmmsg, answers blocked and special names at once, forwards the
rest to the upstream resolver over one connected socket with remapped IDs (a pending table with
timeouts), relays or rewrites the answers, and sends everything in batches with sendmmsg. TCP is
driven from Python (query, answer, servfail), one query at a time.

The client's group comes from its ingress interface (IP_PKTINFO / IPV6_PKTINFO ifindex, kept by
nftables' redirect), else its source subnet. The policy (table, group masks, interface map) is a
State swapped as a whole: set_state publishes the new one and frees the old one only once the loop
has taken up the new, so no query ever sees a table that is gone. Blocks go to a bounded ring that a
Python thread drains; when it is full, events are counted, never waited for.
"""

import os
import socket
import time

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec
from posix.uio cimport iovec
from posix.unistd cimport read, usleep, write

from fastpath.dns cimport (
    EDNS_PAYLOAD,
    HEADER_LEN,
    RCODE_BADVERS,
    RCODE_FORMERR,
    RCODE_NOTIMP,
    RCODE_NXDOMAIN,
    RCODE_REFUSED,
    RCODE_SERVFAIL,
    TCP_MAX,
    TYPE_HTTPS,
    TYPE_OPT,
    TYPE_SVCB,
    UDP_MIN,
    build_block,
    build_cname,
    build_error,
    build_negative,
    parse_query,
    response_limit,
    strip_ech,
)
from fastpath.names cimport NOT_HANDLED, OK, normalise_name
from fastpath.table cimport DomainTable
from fastpath.verdict cimport BLOCK, DEFAULT, GroupPolicy, VerdictC, decide_c

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    cdef struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    cdef struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr* CMSG_FIRSTHDR(msghdr* m)
    cmsghdr* CMSG_NXTHDR(msghdr* m, cmsghdr* c)
    unsigned char* CMSG_DATA(cmsghdr* c)
    size_t CMSG_SPACE(size_t n)
    size_t CMSG_LEN(size_t n)
    int recvmmsg(int fd, mmsghdr* v, unsigned int n, int flags, timespec* timeout)
    int sendmmsg(int fd, mmsghdr* v, unsigned int n, int flags)
    int setsockopt(int fd, int level, int name, const void* value, socklen_t length)
    int MSG_DONTWAIT
    int MSG_TRUNC
    int AF_INET
    int AF_INET6

cdef extern from "<netinet/in.h>" nogil:
    cdef struct in_addr:
        uint32_t s_addr
    cdef struct in6_addr:
        unsigned char s6_addr[16]
    cdef struct sockaddr_in:
        unsigned short sin_family
        uint16_t sin_port
        in_addr sin_addr
    cdef struct sockaddr_in6:
        unsigned short sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    cdef struct in_pktinfo:
        int ipi_ifindex
        in_addr ipi_spec_dst
        in_addr ipi_addr
    cdef struct in6_pktinfo:
        in6_addr ipi6_addr
        unsigned int ipi6_ifindex
    int IPPROTO_IP
    int IPPROTO_IPV6
    int IP_PKTINFO
    int IPV6_PKTINFO
    int IPV6_RECVPKTINFO

cdef extern from "<poll.h>" nogil:
    cdef struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long nfds, int timeout)
    short POLLIN

cdef extern from *:
    """
    /* The UDP loop and the Python threads share a few words; every access to them is atomic. */
    static inline void* sg_load_ptr(void** p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void sg_store_ptr(void** p, void* v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline int sg_load_int(int* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void sg_store_int(int* p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline uint64_t sg_load_u64(uint64_t* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void sg_store_u64(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline void sg_lock(int* p) {
        while (__atomic_exchange_n(p, 1, __ATOMIC_ACQUIRE))
            while (__atomic_load_n(p, __ATOMIC_RELAXED)) {}
    }
    static inline void sg_unlock(int* p) { __atomic_store_n(p, 0, __ATOMIC_RELEASE); }
    """
    void* sg_load_ptr(void** p) noexcept nogil
    void sg_store_ptr(void** p, void* v) noexcept nogil
    int sg_load_int(int* p) noexcept nogil
    void sg_store_int(int* p, int v) noexcept nogil
    uint64_t sg_load_u64(uint64_t* p) noexcept nogil
    void sg_store_u64(uint64_t* p, uint64_t v) noexcept nogil
    void sg_lock(int* p) noexcept nogil
    void sg_unlock(int* p) noexcept nogil

cdef enum:
    BATCH = 64              # datagrams per recvmmsg / sendmmsg
    QUERY_BUF = 2048        # a client datagram (longer ones are dropped), or the reply to one (<= 1232)
    ANSWER_BUF = 65536      # an upstream datagram
    CONTROL_WORDS = 8       # room for one IP_PKTINFO or IPV6_PKTINFO, in 8-byte words (cmsg alignment)
    CONTROL = CONTROL_WORDS * 8
    FLAG_QR = 0x80          # in header byte 2
    FLAG_RD = 0x0100
    FLAG_CD = 0x0010
    TYPE_ANY = 255
    IDS = 65536
    CACHE_SLOTS = 4096
    CACHE_WAYS = 4          # a key may take any slot of its set of 4 (a power of two)
    CACHE_MSG = 512         # larger answers are not cached
    CACHE_MAX_TTL = 300     # seconds, whatever the records say

cdef inline uint16_t rd16(const uint8_t* p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline void wr16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF


cdef inline int64_t clock_ns(int clock) noexcept nogil:
    cdef timespec ts
    clock_gettime(clock, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef uint64_t fnv1a(const char* s, int n) noexcept nogil:
    cdef uint64_t h = 0xCBF29CE484222325ULL
    cdef int i
    for i in range(n):
        h = (h ^ <uint8_t>s[i]) * 0x100000001B3ULL
    return h


# ---------------------------------------------------------------------------------------------------
# The decision, shared by UDP and TCP

cdef int special_feature(const Rules* r, const char* name, int n) noexcept nogil:
    """The feature of a special name (exact match), or -1."""
    cdef uint64_t h
    cdef uint64_t i
    if r.names == NULL:
        return -1
    h = fnv1a(name, n)
    i = h & r.names_mask
    while r.names[i].feature >= 0:
        if (r.names[i].hash == h and r.names[i].length == n
                and memcmp(r.text + r.names[i].offset, name, n) == 0):
            return r.names[i].feature
        i = (i + 1) & r.names_mask
    return -1


cdef inline bint in_prefix(const uint8_t* a, const uint8_t* net, int bits) noexcept nogil:
    cdef int whole = bits >> 3
    cdef int rest = bits & 7
    if memcmp(a, net, whole) != 0:
        return 0
    return rest == 0 or ((a[whole] ^ net[whole]) & (0xFF << (8 - rest)) & 0xFF) == 0


cdef int group_of(const State* s, const Client* c) noexcept nogil:
    cdef int i
    if c.ifindex > 0:
        for i in range(s.lan_count):
            if s.lans[i].ifindex == c.ifindex:
                return s.lans[i].group
    for i in range(s.subnet_count):
        if s.subnets[i].family == c.family and in_prefix(c.addr, s.subnets[i].addr, s.subnets[i].prefix):
            return s.subnets[i].group
    return -1


cdef void push_event(Events* ev, const State* s, const Client* c, int group, const VerdictC* v,
                     const DnsQuery* q, int64_t now_us) noexcept nogil:
    cdef EventC* e
    cdef uint64_t head
    if ev.slots == NULL:
        return
    sg_lock(&ev.lock)
    head = ev.head
    if head - sg_load_u64(&ev.tail) > ev.mask:
        sg_store_u64(&ev.dropped, ev.dropped + 1)
    else:
        e = &ev.slots[head & ev.mask]
        e.ts_us = now_us
        e.generation = s.generation
        e.group = group
        e.reason = v.reason
        e.bits = v.bits
        e.family = c.family
        memcpy(e.addr, c.addr, 16)
        e.name_len = q.name_len
        memcpy(e.name, q.name, q.name_len)
        sg_store_u64(&ev.head, head + 1)
    sg_unlock(&ev.lock)


cdef inline int reply(int built, int* length) noexcept nogil:
    """A builder's result as an Outcome: it fails only when even a truncated reply has no room."""
    length[0] = built
    return REPLY if built > 0 else DROP


cdef int target_query(const Target* t, const DnsQuery* q, uint8_t* out, size_t cap) noexcept nogil:
    """The upstream query for a safe-search target: the client's type, class, CD and DO bits."""
    cdef size_t o = HEADER_LEN + t.wire_len
    if o + 4 + 11 > cap:
        return 0
    wr16(out, 0)
    wr16(out + 2, FLAG_RD | (q.flags & FLAG_CD))
    wr16(out + 4, 1)
    wr16(out + 6, 0)
    wr16(out + 8, 0)
    wr16(out + 10, 1)
    memcpy(out + HEADER_LEN, t.wire, t.wire_len)
    wr16(out + o, q.qtype)
    wr16(out + o + 2, q.qclass)
    o += 4
    out[o] = 0                          # OPT: owner the root, our payload size, version 0
    wr16(out + o + 1, TYPE_OPT)
    wr16(out + o + 3, EDNS_PAYLOAD)
    out[o + 5] = 0
    out[o + 6] = 0
    out[o + 7] = 0x80 if q.dnssec_ok else 0
    out[o + 8] = 0
    wr16(out + o + 9, 0)
    return o + 11


cdef int answer_query(const Rules* r, const State* s, Events* ev, Counters* k, const uint8_t* msg,
                      size_t n, const Client* c, bint tcp, int64_t now_us, Pending* p, uint8_t* out,
                      size_t cap, int* length) noexcept nogil:
    cdef int status = parse_query(msg, n, &p.q)
    cdef const DnsQuery* q = &p.q
    cdef size_t limit = min(response_limit(q, tcp), cap)
    cdef VerdictC v
    cdef int group
    cdef int feature
    cdef int action
    k.queries += 1
    length[0] = 0
    if status != OK:
        # Responses are never answered (no reflection loops); nothing is ever forwarded unparsed.
        if not q.has_header or msg[2] & FLAG_QR:
            k.dropped += 1
            return DROP
        k.errors += 1
        if status == NOT_HANDLED and q.opcode != 0:
            return reply(build_error(q, RCODE_NOTIMP, out, limit), length)
        return reply(build_error(q, RCODE_FORMERR, out, limit), length)
    if q.has_edns and q.edns_version != 0:
        k.errors += 1
        return reply(build_error(q, RCODE_BADVERS, out, limit), length)
    group = group_of(s, c)
    if group < 0:  # not a client of any LAN: the filter is no open resolver
        k.errors += 1
        return reply(build_error(q, RCODE_REFUSED, out, limit), length)
    if s.table != NULL:
        decide_c(s.table, &s.policies[group], q.name, q.name_len, &v)
    else:
        v.action = s.policies[group].default_action
        v.reason = DEFAULT
        v.bits = 0
    feature = special_feature(r, q.name, q.name_len)
    action = r.action[group][feature] if feature >= 0 else FEATURE_OFF
    if v.action == BLOCK:
        k.blocked += 1
        push_event(ev, s, c, group, &v, q, now_us)
        # The DoH canary and Private Relay names must stay negative even when blocked: any address,
        # the block page's included, tells the browser to keep its own resolver.
        if r.nxdomain or action == FEATURE_NXDOMAIN:
            return reply(build_negative(q, RCODE_NXDOMAIN, r.ttl, out, limit), length)
        return reply(build_block(q, <const uint8_t*>r.ipv4 if r.has_ipv4 else NULL,
                                 <const uint8_t*>r.ipv6 if r.has_ipv6 else NULL, r.ttl, out, limit), length)
    if action == FEATURE_NXDOMAIN:
        k.negative += 1
        return reply(build_negative(q, RCODE_NXDOMAIN, r.ttl, out, limit), length)
    p.client = c[0]
    p.target = action if action >= 0 else -1
    p.strip = r.strip[group] and (q.qtype == TYPE_HTTPS or q.qtype == TYPE_SVCB or q.qtype == TYPE_ANY)
    if p.target >= 0:
        length[0] = target_query(&r.targets[p.target], q, out, cap)
        k.rewritten += 1
    elif q.message_end <= cap:
        # Only what was parsed goes upstream: trailing bytes could carry anything past the filter.
        memcpy(out, msg, q.message_end)
        length[0] = q.message_end
    return FORWARD if length[0] > 0 else DROP


cdef int servfail_for(const Pending* p, bint tcp, uint8_t* out, size_t cap) noexcept nogil:
    cdef int built = build_error(&p.q, RCODE_SERVFAIL, out, min(response_limit(&p.q, tcp), cap))
    return built if built > 0 else 0


cdef inline const uint8_t* sent_name(const Rules* r, const Pending* p, size_t* length) noexcept nogil:
    """The question name p sent upstream, as sent: the safe-search target, or the client's own."""
    if p.target >= 0:
        length[0] = r.targets[p.target].wire_len
        return r.targets[p.target].wire
    length[0] = p.q.qname_wire_len
    return p.q.qname_wire


cdef inline size_t relay_limit(const DnsQuery* q, bint tcp) noexcept nogil:
    # The upstream sized its answer for the client's own EDNS size, which may exceed EDNS_PAYLOAD.
    return TCP_MAX if tcp else max(<size_t>UDP_MIN, <size_t>(q.udp_size if q.has_edns else 0))


cdef int answer_upstream(const Rules* r, const Pending* p, Counters* k, const uint8_t* msg, size_t n,
                         bint tcp, uint8_t* out, size_t cap, uint8_t* scratch) noexcept nogil:
    cdef const DnsQuery* q = &p.q
    cdef const Target* t = &r.targets[p.target] if p.target >= 0 else NULL
    cdef size_t name_len
    cdef const uint8_t* name = sent_name(r, p, &name_len)
    cdef size_t length = n
    cdef int stripped = 0
    cdef int built
    # The answer must repeat the question we sent, byte for byte (so 0x20 case too).
    if (n < HEADER_LEN + name_len + 4 or not msg[2] & FLAG_QR or (msg[2] >> 3) & 0xF != 0
            or rd16(msg + 4) != 1 or memcmp(msg + HEADER_LEN, name, name_len) != 0
            or rd16(msg + HEADER_LEN + name_len) != q.qtype
            or rd16(msg + HEADER_LEN + name_len + 2) != q.qclass):
        k.stray += 1
        return -1
    if p.strip:
        if strip_ech(msg, n, scratch, &length, &stripped) != OK:
            k.servfail += 1
            return servfail_for(p, tcp, out, cap)
        if stripped:
            msg = scratch
        else:
            length = n
    if t != NULL:
        built = build_cname(q, t.name, t.name_len, r.ttl, msg, length, out,
                            min(response_limit(q, tcp), cap))
        if built <= 0:
            k.servfail += 1
            return servfail_for(p, tcp, out, cap)
        k.answered += 1
        return built
    if length > relay_limit(q, tcp) or length > cap:
        k.servfail += 1
        return servfail_for(p, tcp, out, cap)
    memcpy(out, msg, length)
    wr16(out, q.id)
    k.answered += 1
    return length


# ---------------------------------------------------------------------------------------------------
# The UDP loop's cache of upstream answers: allowed names asked again are answered without a round trip
# to the resolver. It sits behind the decision (only allowed names reach it, whatever policy is in
# force), keys on the question sent upstream and the bits that shape its answer, and ages TTLs.

cdef struct CacheEntry:
    uint64_t hash
    int64_t stored              # CLOCK_MONOTONIC ns; 0 for an empty slot
    int64_t expires
    int key_len
    int length
    uint8_t key[WIRE_NAME_MAX + 5]
    uint8_t msg[CACHE_MSG]


cdef uint32_t NO_RECORDS = 0xFFFFFFFFU


cdef inline uint32_t rd32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>rd16(p) << 16) | rd16(p + 2)


cdef inline void wr32(uint8_t* p, uint32_t v) noexcept nogil:
    wr16(p, v >> 16)
    wr16(p + 2, v & 0xFFFF)


cdef Py_ssize_t skip_name(const uint8_t* msg, size_t n, size_t pos) noexcept nogil:
    while pos < n:
        if msg[pos] == 0:
            return pos + 1
        if msg[pos] & 0xC0 == 0xC0:
            return pos + 2 if pos + 2 <= n else -1
        if msg[pos] & 0xC0:
            return -1
        pos += 1 + msg[pos]
    return -1


cdef bint age_records(uint8_t* msg, size_t n, uint32_t age, uint32_t* lowest) noexcept nogil:
    """Takes age seconds off every record's TTL (not OPT's, whose TTL field is flags) and finds the
    lowest TTL left (NO_RECORDS without any); 0 if the message cannot be walked."""
    cdef Py_ssize_t pos = HEADER_LEN
    cdef int i
    cdef uint32_t ttl
    lowest[0] = NO_RECORDS
    for i in range(rd16(msg + 4)):
        pos = skip_name(msg, n, pos)
        if pos < 0 or <size_t>pos + 4 > n:
            return 0
        pos += 4
    for i in range(rd16(msg + 6) + rd16(msg + 8) + rd16(msg + 10)):
        pos = skip_name(msg, n, pos)
        if pos < 0 or <size_t>pos + 10 > n or <size_t>pos + 10 + rd16(msg + pos + 8) > n:
            return 0
        if rd16(msg + pos) != TYPE_OPT:
            ttl = rd32(msg + pos + 4)
            ttl = ttl - age if ttl > age else 0
            if age:
                wr32(msg + pos + 4, ttl)
            lowest[0] = min(lowest[0], ttl)
        pos += 10 + rd16(msg + pos + 8)
    return 1


cdef int cache_key(const Rules* r, const Pending* p, uint8_t* key, uint64_t* h) noexcept nogil:
    """The question sent upstream (name in lower case), with the query bits that shape its answer."""
    cdef size_t n
    cdef const uint8_t* name = sent_name(r, p, &n)
    cdef size_t i
    cdef uint8_t c
    for i in range(n):
        c = name[i]
        key[i] = c + 32 if 65 <= c <= 90 else c  # length bytes are below 64: unchanged
    wr16(key + n, p.q.qtype)
    wr16(key + n + 2, p.q.qclass)
    # A target query always has EDNS and RD; a relayed one carries the client's bits.
    key[n + 4] = ((p.q.dnssec_ok != 0) | ((p.q.flags & FLAG_CD) != 0) << 1
                  | (p.target >= 0 or p.q.has_edns) << 2 | (p.target >= 0 or (p.q.flags & FLAG_RD) != 0) << 3)
    h[0] = fnv1a(<const char*>key, n + 5)
    return n + 5


cdef inline bint holds(const CacheEntry* e, const uint8_t* key, int key_len, uint64_t h) noexcept nogil:
    return e.stored and e.hash == h and e.key_len == key_len and memcmp(e.key, key, key_len) == 0


cdef CacheEntry* cache_find(CacheEntry* cache, const uint8_t* key, int key_len, uint64_t h,
                            int64_t now) noexcept nogil:
    """A key lives in one of the CACHE_WAYS slots of its set."""
    cdef CacheEntry* e = &cache[h & (CACHE_SLOTS - CACHE_WAYS)]
    cdef int i
    for i in range(CACHE_WAYS):
        if holds(&e[i], key, key_len, h) and e[i].expires > now:
            return &e[i]
    return NULL


cdef CacheEntry* cache_slot(CacheEntry* cache, const uint8_t* key, int key_len, uint64_t h,
                            int64_t now) noexcept nogil:
    """Where to keep an answer for key: its old slot, else a free or expired one, else the oldest."""
    cdef CacheEntry* e = &cache[h & (CACHE_SLOTS - CACHE_WAYS)]
    cdef CacheEntry* oldest = e
    cdef int i
    for i in range(CACHE_WAYS):
        if holds(&e[i], key, key_len, h) or e[i].expires <= now:
            return &e[i]
        if e[i].stored < oldest.stored:
            oldest = &e[i]
    return oldest


cdef void cache_store(const Rules* r, CacheEntry* cache, const Pending* p, const uint8_t* msg, size_t n,
                      int64_t now) noexcept nogil:
    """Keeps a validated upstream answer: complete (no TC), NOERROR or NXDOMAIN, with records that
    say how long it may be kept."""
    cdef uint8_t key[WIRE_NAME_MAX + 5]
    cdef uint64_t h
    cdef int key_len
    cdef uint32_t ttl
    cdef CacheEntry* e
    if n > CACHE_MSG or msg[2] & 0x02 or (msg[3] & 0x0F != 0 and msg[3] & 0x0F != RCODE_NXDOMAIN):
        return
    key_len = cache_key(r, p, key, &h)
    e = cache_slot(cache, key, key_len, h, now)
    memcpy(e.msg, msg, n)
    if not age_records(e.msg, n, 0, &ttl) or ttl == 0 or ttl == NO_RECORDS:
        e.stored = 0
        return
    e.hash = h
    e.key_len = key_len
    memcpy(e.key, key, key_len)
    e.length = n
    e.stored = now
    e.expires = now + <int64_t>min(ttl, <uint32_t>CACHE_MAX_TTL) * 1000000000


cdef int cache_answer(const Rules* r, CacheEntry* cache, const Pending* p, Counters* k, int64_t now,
                      uint8_t* copy, uint8_t* out, size_t cap, uint8_t* scratch) noexcept nogil:
    """The reply from the cache (as answer_upstream makes it), or -1 on a miss."""
    cdef uint8_t key[WIRE_NAME_MAX + 5]
    cdef uint64_t h
    cdef int key_len = cache_key(r, p, key, &h)
    cdef CacheEntry* e = cache_find(cache, key, key_len, h, now)
    cdef size_t name_len
    cdef const uint8_t* name = sent_name(r, p, &name_len)
    cdef uint32_t lowest
    if e == NULL or (p.target < 0 and <size_t>e.length > relay_limit(&p.q, 0)):
        return -1
    memcpy(copy, e.msg, e.length)
    # The question as this client spelled it (0x20), and the TTLs as old as the entry.
    memcpy(copy + HEADER_LEN, name, name_len)
    if not age_records(copy, e.length, <uint32_t>((now - e.stored) // 1000000000), &lowest):
        return -1
    k.cached += 1
    return answer_upstream(r, p, k, copy, e.length, 0, out, cap, scratch)


# ---------------------------------------------------------------------------------------------------
# The UDP loop

cdef struct Inbox:
    mmsghdr msgs[BATCH]
    iovec iov[BATCH]
    sockaddr_in6 names[BATCH]
    uint64_t control[BATCH * CONTROL_WORDS]
    uint8_t* bufs               # BATCH datagrams of the size inbox_init gives


cdef struct Outbox:
    int fd
    unsigned int count
    mmsghdr msgs[BATCH]
    iovec iov[BATCH]
    sockaddr_in6 names[BATCH]
    uint64_t control[BATCH * CONTROL_WORDS]


cdef struct Loop:
    const Rules* rules
    const State* state
    Events* events
    Counters* counters
    int fd4
    int fd6
    int upstream
    int64_t timeout_ns
    Inbox queries
    Inbox answers
    uint8_t* query_out          # BATCH x QUERY_BUF: the reply or upstream query for each query
    uint8_t* answer_out         # BATCH x ANSWER_BUF: the reply for each upstream answer
    uint8_t* scratch            # ANSWER_BUF
    uint8_t* cached             # CACHE_MSG: a cache entry being turned into a reply
    CacheEntry* cache           # CACHE_SLOTS
    Outbox replies4
    Outbox replies6
    Outbox forwards
    Pending* pending
    int* free_slots
    int free_count
    int* ids                    # upstream ID -> pending slot, or -1
    int oldest
    int newest
    int in_flight
    uint64_t rng
    Pending spare               # parse space when every slot is taken


cdef void inbox_reset(Inbox* b) noexcept nogil:
    """recvmmsg overwrites the lengths of names and control data: give them back before each call."""
    cdef unsigned int i
    for i in range(BATCH):
        b.msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
        b.msgs[i].msg_hdr.msg_controllen = CONTROL
        b.msgs[i].msg_hdr.msg_flags = 0


cdef void inbox_init(Inbox* b, size_t size) noexcept nogil:
    cdef unsigned int i
    for i in range(BATCH):
        b.iov[i].iov_base = b.bufs + i * size
        b.iov[i].iov_len = size
        b.msgs[i].msg_hdr.msg_name = &b.names[i]
        b.msgs[i].msg_hdr.msg_iov = &b.iov[i]
        b.msgs[i].msg_hdr.msg_iovlen = 1
        b.msgs[i].msg_hdr.msg_control = <uint8_t*>b.control + i * CONTROL
    inbox_reset(b)


cdef void read_client(mmsghdr* m, const sockaddr_in6* name, Client* c) noexcept nogil:
    cdef const sockaddr_in* sin
    cdef cmsghdr* cm
    cdef in_pktinfo pi
    cdef in6_pktinfo pi6
    memset(c, 0, sizeof(Client))
    if name.sin6_family == AF_INET:
        sin = <const sockaddr_in*>name
        c.family = 4
        c.port = sin.sin_port
        memcpy(c.addr, &sin.sin_addr, 4)
    else:
        c.family = 6
        c.port = name.sin6_port
        memcpy(c.addr, &name.sin6_addr, 16)
    cm = CMSG_FIRSTHDR(&m.msg_hdr)
    while cm != NULL:
        if cm.cmsg_level == IPPROTO_IP and cm.cmsg_type == IP_PKTINFO:
            memcpy(&pi, CMSG_DATA(cm), sizeof(in_pktinfo))
            c.ifindex = pi.ipi_ifindex
            memcpy(c.local, &pi.ipi_addr, 4)
        elif cm.cmsg_level == IPPROTO_IPV6 and cm.cmsg_type == IPV6_PKTINFO:
            memcpy(&pi6, CMSG_DATA(cm), sizeof(in6_pktinfo))
            c.ifindex = pi6.ipi6_ifindex
            memcpy(c.local, &pi6.ipi6_addr, 16)
        cm = CMSG_NXTHDR(&m.msg_hdr, cm)


cdef void outbox_add(Outbox* b, const uint8_t* data, size_t length, const Client* c) noexcept nogil:
    """Queues a datagram: to c from the address it asked (so redirected answers un-NAT), or, with c
    NULL, on the connected upstream socket."""
    cdef unsigned int i = b.count
    cdef msghdr* h = &b.msgs[i].msg_hdr
    cdef sockaddr_in* sin
    cdef sockaddr_in6* sin6
    cdef cmsghdr* cm
    cdef in_pktinfo pi
    cdef in6_pktinfo pi6
    b.iov[i].iov_base = <void*>data
    b.iov[i].iov_len = length
    h.msg_iov = &b.iov[i]
    h.msg_iovlen = 1
    h.msg_flags = 0
    h.msg_name = NULL
    h.msg_namelen = 0
    h.msg_control = NULL
    h.msg_controllen = 0
    if c != NULL:
        h.msg_name = &b.names[i]
        h.msg_control = <uint8_t*>b.control + i * CONTROL
        memset(h.msg_control, 0, CONTROL)
        if c.family == 4:
            sin = <sockaddr_in*>&b.names[i]
            memset(sin, 0, sizeof(sockaddr_in))
            sin.sin_family = AF_INET
            sin.sin_port = c.port
            memcpy(&sin.sin_addr, c.addr, 4)
            h.msg_namelen = sizeof(sockaddr_in)
            h.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo))
            cm = CMSG_FIRSTHDR(h)
            cm.cmsg_level = IPPROTO_IP
            cm.cmsg_type = IP_PKTINFO
            cm.cmsg_len = CMSG_LEN(sizeof(in_pktinfo))
            memset(&pi, 0, sizeof(pi))
            memcpy(&pi.ipi_spec_dst, c.local, 4)
            memcpy(CMSG_DATA(cm), &pi, sizeof(pi))
        else:
            sin6 = &b.names[i]
            memset(sin6, 0, sizeof(sockaddr_in6))
            sin6.sin6_family = AF_INET6
            sin6.sin6_port = c.port
            memcpy(&sin6.sin6_addr, c.addr, 16)
            h.msg_namelen = sizeof(sockaddr_in6)
            h.msg_controllen = CMSG_SPACE(sizeof(in6_pktinfo))
            cm = CMSG_FIRSTHDR(h)
            cm.cmsg_level = IPPROTO_IPV6
            cm.cmsg_type = IPV6_PKTINFO
            cm.cmsg_len = CMSG_LEN(sizeof(in6_pktinfo))
            memset(&pi6, 0, sizeof(pi6))
            memcpy(&pi6.ipi6_addr, c.local, 16)
            # Link-local addresses only mean something on their own interface.
            if c.local[0] == 0xFE and (c.local[1] & 0xC0) == 0x80:
                pi6.ipi6_ifindex = c.ifindex
                sin6.sin6_scope_id = c.ifindex
            memcpy(CMSG_DATA(cm), &pi6, sizeof(pi6))
    b.count += 1


cdef void outbox_flush(Outbox* b) noexcept nogil:
    cdef unsigned int i = 0
    cdef int sent
    while i < b.count:
        sent = sendmmsg(b.fd, &b.msgs[i], b.count - i, 0)
        if sent < 0:
            if errno == EINTR:
                continue
            i += 1  # this datagram cannot go (no route, say): the rest still can
        else:
            i += sent
    b.count = 0


cdef inline uint64_t xorshift(uint64_t* state) noexcept nogil:
    # Upstream IDs travel only over loopback: they need to be spread, so that collisions are rare,
    # not unpredictable.
    state[0] ^= state[0] << 13
    state[0] ^= state[0] >> 7
    state[0] ^= state[0] << 17
    return state[0]


cdef void commit(Loop* L, int slot, int64_t now) noexcept nogil:
    """Takes the free slot at the top of the stack for a forwarded query, under a fresh upstream ID."""
    cdef Pending* p = &L.pending[slot]
    cdef int uid = xorshift(&L.rng) & (IDS - 1)
    while L.ids[uid] >= 0:
        uid = (uid + 1) & (IDS - 1)
    L.free_count -= 1
    L.ids[uid] = slot
    p.upstream_id = uid
    p.deadline = now + L.timeout_ns
    p.older = L.newest
    p.newer = -1
    if L.newest >= 0:
        L.pending[L.newest].newer = slot
    else:
        L.oldest = slot
    L.newest = slot
    L.in_flight += 1


cdef void release(Loop* L, int slot) noexcept nogil:
    cdef Pending* p = &L.pending[slot]
    if p.older >= 0:
        L.pending[p.older].newer = p.newer
    else:
        L.oldest = p.newer
    if p.newer >= 0:
        L.pending[p.newer].older = p.older
    else:
        L.newest = p.older
    L.ids[p.upstream_id] = -1
    L.free_slots[L.free_count] = slot
    L.free_count += 1
    L.in_flight -= 1


cdef int serve_queries(Loop* L, int fd, Outbox* replies) noexcept nogil:
    cdef int n
    cdef int i
    cdef int slot
    cdef int outcome
    cdef int length
    cdef int cached
    cdef Client c
    cdef Pending* p
    cdef uint8_t* out
    cdef int64_t now
    cdef int64_t now_us
    inbox_reset(&L.queries)
    n = recvmmsg(fd, L.queries.msgs, BATCH, MSG_DONTWAIT, NULL)
    if n <= 0:
        return 0
    now = clock_ns(CLOCK_MONOTONIC)
    now_us = clock_ns(CLOCK_REALTIME) // 1000
    for i in range(n):
        read_client(&L.queries.msgs[i], &L.queries.names[i], &c)
        if L.queries.msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
            L.counters.queries += 1
            L.counters.dropped += 1
            continue
        slot = L.free_slots[L.free_count - 1] if L.free_count > 0 else -1
        p = &L.pending[slot] if slot >= 0 else &L.spare
        out = L.query_out + i * QUERY_BUF
        outcome = answer_query(L.rules, L.state, L.events, L.counters, L.queries.bufs + i * QUERY_BUF,
                               L.queries.msgs[i].msg_len, &c, 0, now_us, p, out, QUERY_BUF, &length)
        if outcome == FORWARD:
            cached = cache_answer(L.rules, L.cache, p, L.counters, now, L.cached, out, QUERY_BUF, L.scratch)
            if cached >= 0:
                length = cached
                outcome = REPLY if cached > 0 else DROP
        if outcome == FORWARD and slot < 0:  # every pending slot is taken: say so at once
            L.counters.servfail += 1
            length = servfail_for(p, 0, out, QUERY_BUF)
            outcome = REPLY if length > 0 else DROP
        if outcome == REPLY:
            outbox_add(replies, out, length, &c)
        elif outcome == FORWARD:
            commit(L, slot, now)
            L.counters.forwarded += 1
            wr16(out, p.upstream_id)
            outbox_add(&L.forwards, out, length, NULL)
    outbox_flush(&L.forwards)
    outbox_flush(replies)
    return n


cdef int serve_answers(Loop* L) noexcept nogil:
    cdef int n
    cdef int i
    cdef int slot
    cdef int length
    cdef Pending* p
    cdef const uint8_t* msg
    cdef uint8_t* out
    cdef int64_t now
    inbox_reset(&L.answers)
    n = recvmmsg(L.upstream, L.answers.msgs, BATCH, MSG_DONTWAIT, NULL)
    if n <= 0:
        return 0
    now = clock_ns(CLOCK_MONOTONIC)
    for i in range(n):
        msg = L.answers.bufs + i * ANSWER_BUF
        if L.answers.msgs[i].msg_len < HEADER_LEN or L.answers.msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
            L.counters.stray += 1
            continue
        slot = L.ids[rd16(msg)]
        if slot < 0:  # late (already answered SERVFAIL) or not ours
            L.counters.stray += 1
            continue
        p = &L.pending[slot]
        out = L.answer_out + i * ANSWER_BUF
        length = answer_upstream(L.rules, p, L.counters, msg, L.answers.msgs[i].msg_len, 0, out,
                                 ANSWER_BUF, L.scratch)
        if length < 0:  # does not answer our question: keep waiting for the one that does
            continue
        cache_store(L.rules, L.cache, p, msg, L.answers.msgs[i].msg_len, now)
        if length > 0:
            outbox_add(&L.replies4 if p.client.family == 4 else &L.replies6, out, length, &p.client)
        release(L, slot)
    outbox_flush(&L.replies4)
    outbox_flush(&L.replies6)
    return n


cdef void expire(Loop* L, int64_t now) noexcept nogil:
    """SERVFAIL for every forwarded query whose upstream answer is overdue (oldest first)."""
    cdef int slot
    cdef int length
    cdef int used = 0
    cdef Pending* p
    cdef uint8_t* out
    while L.oldest >= 0 and L.pending[L.oldest].deadline <= now:
        slot = L.oldest
        p = &L.pending[slot]
        out = L.answer_out + used * ANSWER_BUF
        length = servfail_for(p, 0, out, ANSWER_BUF)
        L.counters.servfail += 1
        if length > 0:
            outbox_add(&L.replies4 if p.client.family == 4 else &L.replies6, out, length, &p.client)
            used += 1
        release(L, slot)
        if used == BATCH:
            outbox_flush(&L.replies4)
            outbox_flush(&L.replies6)
            used = 0
    outbox_flush(&L.replies4)
    outbox_flush(&L.replies6)


cdef int run_loop(Loop* L, Engine e) noexcept nogil:
    """Until stop(): returns 0, or errno if poll fails."""
    cdef pollfd fds[4]
    cdef uint64_t wakes
    cdef int timeout
    cdef int64_t wait
    cdef int i
    cdef State* s
    fds[0].fd = e.wake_fd
    fds[1].fd = L.fd4
    fds[2].fd = L.fd6
    fds[3].fd = L.upstream
    for i in range(4):
        fds[i].events = POLLIN
    while not sg_load_int(&e.stopping):
        timeout = -1  # until a datagram, or a wake for a new state or stop
        if L.oldest >= 0:  # or the oldest forwarded query's deadline (ms, rounded up)
            wait = max(<int64_t>0, L.pending[L.oldest].deadline - clock_ns(CLOCK_MONOTONIC))
            timeout = <int>(wait // 1000000) + 1
        if poll(fds, 4, timeout) < 0:
            if errno == EINTR:
                continue
            return errno
        if fds[0].revents:
            read(e.wake_fd, &wakes, 8)
        s = <State*>sg_load_ptr(<void**>&e.loop_state)
        if s != L.state:
            L.state = s
            sg_store_ptr(<void**>&e.in_use, s)
        if fds[3].revents:
            serve_answers(L)
        if fds[1].revents:
            serve_queries(L, L.fd4, &L.replies4)
        if fds[2].revents:
            serve_queries(L, L.fd6, &L.replies6)
        expire(L, clock_ns(CLOCK_MONOTONIC))
        sg_store_int(&e.in_flight, L.in_flight)
    return 0


cdef Loop* new_loop(Engine e, int fd4, int fd6, int upstream) noexcept:
    cdef Loop* L = <Loop*>calloc(1, sizeof(Loop))
    cdef int i
    if L == NULL:
        return NULL
    L.queries.bufs = <uint8_t*>malloc(BATCH * QUERY_BUF)
    L.answers.bufs = <uint8_t*>malloc(BATCH * ANSWER_BUF)
    L.query_out = <uint8_t*>malloc(BATCH * QUERY_BUF)
    L.answer_out = <uint8_t*>malloc(BATCH * ANSWER_BUF)
    L.scratch = <uint8_t*>malloc(ANSWER_BUF)
    L.cached = <uint8_t*>malloc(CACHE_MSG)
    L.cache = <CacheEntry*>calloc(CACHE_SLOTS, sizeof(CacheEntry))
    L.pending = <Pending*>calloc(e.pending_capacity, sizeof(Pending))
    L.free_slots = <int*>malloc(e.pending_capacity * sizeof(int))
    L.ids = <int*>malloc(IDS * sizeof(int))
    if (L.queries.bufs == NULL or L.answers.bufs == NULL or L.query_out == NULL or L.answer_out == NULL
            or L.scratch == NULL or L.cached == NULL or L.cache == NULL or L.pending == NULL
            or L.free_slots == NULL or L.ids == NULL):
        free_loop(L)
        return NULL
    inbox_init(&L.queries, QUERY_BUF)
    inbox_init(&L.answers, ANSWER_BUF)
    L.rules = &e.rules
    L.events = &e.events
    L.counters = &e.udp
    L.fd4 = fd4
    L.fd6 = fd6
    L.upstream = upstream
    L.replies4.fd = fd4
    L.replies6.fd = fd6
    L.forwards.fd = upstream
    L.timeout_ns = e.timeout_ns
    # Slots are handed out from the top of the stack, lowest first: a light load touches few pages.
    for i in range(e.pending_capacity):
        L.free_slots[i] = e.pending_capacity - 1 - i
    L.free_count = e.pending_capacity
    for i in range(IDS):
        L.ids[i] = -1
    L.oldest = L.newest = -1
    L.rng = <uint64_t>clock_ns(CLOCK_REALTIME) | 1
    return L


cdef void free_loop(Loop* L) noexcept:
    free(L.queries.bufs)
    free(L.answers.bufs)
    free(L.query_out)
    free(L.answer_out)
    free(L.scratch)
    free(L.cached)
    free(L.cache)
    free(L.pending)
    free(L.free_slots)
    free(L.ids)
    free(L)


# ---------------------------------------------------------------------------------------------------
# Python API

cdef bytes wire_name(str name):
    return b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.split(".")) + b"\x00"


cdef bytes normalised(str name):
    cdef bytes raw = name.encode("ascii")
    cdef char buf[256]
    cdef int n = normalise_name(<const uint8_t*><const char*>raw, len(raw), buf)
    if n <= 0:
        raise ValueError(f"{name!r} is not a host name")
    return buf[:n]


cdef void fill_client(Client* c, str address, str local, int ifindex) except *:
    memset(c, 0, sizeof(Client))
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = socket.inet_pton(family, address)
    c.family = 6 if family == socket.AF_INET6 else 4
    memcpy(c.addr, <const char*>raw, len(raw))
    raw = socket.inet_pton(family, local)
    memcpy(c.local, <const char*>raw, len(raw))
    c.ifindex = ifindex


cdef void free_state(State* s) noexcept:
    if s != NULL:
        free(s.lans)
        free(s.subnets)
        free(s)


cdef int check_group(group, int groups) except -1:
    if not 0 <= group < groups:
        raise ValueError(f"no group {group}")
    return group


cdef void wake(int fd) noexcept:
    cdef uint64_t one = 1
    write(fd, &one, 8)


cdef class Forward:
    """A TCP query the engine sends upstream: message goes to the resolver (over TCP), and its reply
    goes to Engine.answer."""

    cdef Pending p
    cdef readonly bytes message


cdef class Engine:
    """One filter process's engine; fastpath/dnsfilter.pyi describes the Python API."""

    def __cinit__(self):
        self.wake_fd = -1

    def __init__(self, int groups, *, block_ipv4: str | None, block_ipv6: str | None, bint nxdomain,
                 int ttl, special_names: dict, targets: list, actions: list, strip_ech: list,
                 double upstream_timeout, int pending=4096, int events=16384):
        cdef int g, f
        cdef uint64_t size
        cdef uint64_t i
        cdef uint32_t offset = 0
        cdef bytes name
        cdef bytes text
        cdef bytes raw
        if not 1 <= groups <= MAX_GROUPS:
            raise ValueError(f"between 1 and {MAX_GROUPS} groups, not {groups}")
        if len(actions) != groups or len(strip_ech) != groups:
            raise ValueError("actions and strip_ech need one entry per group")
        if not 1 <= pending < IDS // 2:
            raise ValueError(f"pending must be between 1 and {IDS // 2 - 1}")
        if events < 1 or events & (events - 1):
            raise ValueError("events must be a power of two")
        self.rules.groups = groups
        self.rules.nxdomain = nxdomain
        self.rules.ttl = ttl
        if block_ipv4 is not None:
            raw = socket.inet_pton(socket.AF_INET, block_ipv4)
            memcpy(self.rules.ipv4, <const char*>raw, 4)
            self.rules.has_ipv4 = 1
        if block_ipv6 is not None:
            raw = socket.inet_pton(socket.AF_INET6, block_ipv6)
            memcpy(self.rules.ipv6, <const char*>raw, 16)
            self.rules.has_ipv6 = 1
        self.rules.targets = <Target*>calloc(max(1, len(targets)), sizeof(Target))
        if self.rules.targets == NULL:
            raise MemoryError()
        for i, target in enumerate(targets):
            name = normalised(target)
            memcpy(self.rules.targets[i].name, <const char*>name, len(name))
            self.rules.targets[i].name_len = len(name)
            wire = wire_name(name.decode("ascii"))
            memcpy(self.rules.targets[i].wire, <const char*>wire, len(wire))
            self.rules.targets[i].wire_len = len(wire)
        for g in range(groups):
            if len(actions[g]) > MAX_FEATURES:
                raise ValueError(f"at most {MAX_FEATURES} features")
            for f in range(MAX_FEATURES):
                action = actions[g][f] if f < len(actions[g]) else FEATURE_OFF
                if not FEATURE_OFF <= action < len(targets):
                    raise ValueError(f"group {g}, feature {f}: no such action {action}")
                self.rules.action[g][f] = action
            self.rules.strip[g] = bool(strip_ech[g])
        # Special names: at most half full, so probes stay short.
        size = 16
        while size < 2 * len(special_names):
            size *= 2
        names = [(normalised(n), f) for n, f in special_names.items()]
        text = b"".join(n for n, _ in names)
        self.rules.text = <char*>malloc(max(1, len(text)))
        self.rules.names = <SpecialName*>malloc(size * sizeof(SpecialName))
        if self.rules.text == NULL or self.rules.names == NULL:
            raise MemoryError()
        memcpy(self.rules.text, <const char*>text, len(text))
        self.rules.names_mask = size - 1
        for i in range(size):
            self.rules.names[i].feature = -1
        for name, f in names:
            if not 0 <= f < MAX_FEATURES:
                raise ValueError(f"feature {f} out of range")
            i = fnv1a(name, len(name)) & self.rules.names_mask
            while self.rules.names[i].feature >= 0:
                i = (i + 1) & self.rules.names_mask
            self.rules.names[i].hash = fnv1a(name, len(name))
            self.rules.names[i].feature = f
            self.rules.names[i].length = len(name)
            self.rules.names[i].offset = offset
            offset += len(name)
        self.events.slots = <EventC*>malloc(events * sizeof(EventC))
        if self.events.slots == NULL:
            raise MemoryError()
        self.events.mask = events - 1
        self.timeout_ns = <int64_t>(upstream_timeout * 1e9)
        self.pending_capacity = pending
        self.rng = <uint64_t>time.time_ns() | 1
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Until the first set_state: every group gets its default of ALLOW, with no table.
        self.set_state(None, [GroupPolicy() for _ in range(groups)], 0, [], [])

    def __dealloc__(self):
        free_state(self.state)
        free(self.rules.targets)
        free(self.rules.text)
        free(self.rules.names)
        free(self.events.slots)
        if self.wake_fd >= 0:
            os.close(self.wake_fd)

    def set_state(self, DomainTable table, policies: list, int generation, lans: list, subnets: list) -> None:
        cdef State* s = <State*>calloc(1, sizeof(State))
        cdef State* old
        cdef GroupPolicy policy
        cdef int i
        if s == NULL:
            raise MemoryError()
        try:
            if len(policies) != self.rules.groups:
                raise ValueError(f"{self.rules.groups} group policies expected, not {len(policies)}")
            for i, policy in enumerate(policies):
                s.policies[i] = policy.c
            s.lans = <Lan*>malloc(max(1, len(lans)) * sizeof(Lan))
            s.subnets = <Subnet*>calloc(max(1, len(subnets)), sizeof(Subnet))
            if s.lans == NULL or s.subnets == NULL:
                raise MemoryError()
            for i, (ifindex, group) in enumerate(lans):
                s.lans[i].ifindex = ifindex
                s.lans[i].group = check_group(group, self.rules.groups)
            s.lan_count = len(lans)
            for i, (network, group) in enumerate(subnets):
                raw = network.network_address.packed
                s.subnets[i].family = network.version
                s.subnets[i].prefix = network.prefixlen
                memcpy(s.subnets[i].addr, <const char*>raw, len(raw))
                s.subnets[i].group = check_group(group, self.rules.groups)
            s.subnet_count = len(subnets)
            s.generation = generation
            if table is not None:
                s.table = table.acquire()
        except BaseException:
            free_state(s)
            raise
        old = self.state
        sg_store_ptr(<void**>&self.loop_state, s)
        wake(self.wake_fd)
        # The old state (and its table) stays until the loop has moved on: no query sees it vanish.
        with nogil:
            while sg_load_int(&self.running) and sg_load_ptr(<void**>&self.in_use) != s:
                usleep(500)
        if self._table is not None:
            (<DomainTable>self._table).release()
        free_state(old)
        self.state = s
        self._table = table

    def serve_udp(self, int sock4, int sock6, int upstream) -> None:
        cdef int one = 1
        cdef int error
        cdef Loop* L
        for fd, level, option in ((sock4, IPPROTO_IP, IP_PKTINFO), (sock6, IPPROTO_IPV6, IPV6_RECVPKTINFO)):
            if fd >= 0 and setsockopt(fd, level, option, &one, sizeof(one)) != 0:
                raise OSError(errno, os.strerror(errno))
        L = new_loop(self, sock4, sock6, upstream)
        if L == NULL:
            raise MemoryError()
        sg_store_int(&self.running, 1)
        L.state = <State*>sg_load_ptr(<void**>&self.loop_state)
        sg_store_ptr(<void**>&self.in_use, <void*>L.state)
        try:
            with nogil:
                error = run_loop(L, self)
        finally:
            sg_store_int(&self.running, 0)
            self.in_flight = 0
            free_loop(L)
        if error:
            raise OSError(error, os.strerror(error))

    def stop(self) -> None:
        sg_store_int(&self.stopping, 1)
        wake(self.wake_fd)

    def query(self, message: bytes, client: str, local: str, int ifindex) -> bytes | Forward | None:
        cdef Forward f = Forward.__new__(Forward)
        cdef Client c
        cdef int length
        cdef int outcome
        cdef int64_t now_us
        cdef size_t n = len(message)
        cdef uint8_t* out = <uint8_t*>malloc(max(n, <size_t>TCP_MAX))
        if out == NULL:
            raise MemoryError()
        try:
            fill_client(&c, client, local, ifindex)
            now_us = time.time_ns() // 1000
            # No Python call from here to the end of answer_query, so the state it reads cannot be
            # swapped and freed by another thread meanwhile.
            outcome = answer_query(&self.rules, self.state, &self.events, &self.tcp,
                                   <const uint8_t*><const char*>message, n, &c, 1, now_us, &f.p, out,
                                   max(n, <size_t>TCP_MAX), &length)
            if outcome == REPLY:
                return PyBytes_FromStringAndSize(<char*>out, length)
            if outcome == DROP:
                return None
            wr16(out, xorshift(&self.rng) & 0xFFFF)
            self.tcp.forwarded += 1
            f.message = PyBytes_FromStringAndSize(<char*>out, length)
            return f
        finally:
            free(out)

    def answer(self, Forward forward not None, upstream: bytes) -> bytes | None:
        cdef size_t n = len(upstream)
        cdef uint8_t* out = <uint8_t*>malloc(TCP_MAX)
        cdef uint8_t* scratch = <uint8_t*>malloc(max(n, <size_t>1))
        cdef int length
        if out == NULL or scratch == NULL:
            free(out)
            free(scratch)
            raise MemoryError()
        try:
            if n < HEADER_LEN or rd16(<const uint8_t*><const char*>upstream) != rd16(
                    <const uint8_t*><const char*>forward.message):
                self.tcp.stray += 1
                return None
            length = answer_upstream(&self.rules, &forward.p, &self.tcp,
                                     <const uint8_t*><const char*>upstream, n, 1, out, TCP_MAX, scratch)
            if length < 0:
                return None
            return PyBytes_FromStringAndSize(<char*>out, length) if length > 0 else None
        finally:
            free(out)
            free(scratch)

    def servfail(self, Forward forward not None) -> bytes | None:
        cdef uint8_t out[512]
        cdef int length = servfail_for(&forward.p, 1, out, sizeof(out))
        self.tcp.servfail += 1
        return PyBytes_FromStringAndSize(<char*>out, length) if length > 0 else None

    def drain_events(self, int limit) -> list:
        cdef uint64_t head = sg_load_u64(&self.events.head)
        cdef uint64_t tail = self.events.tail
        cdef EventC* e
        out = []
        while tail != head and len(out) < limit:
            e = &self.events.slots[tail & self.events.mask]
            raw = PyBytes_FromStringAndSize(<char*>e.addr, 4 if e.family == 4 else 16)
            out.append((e.ts_us, e.generation, e.group,
                        socket.inet_ntop(socket.AF_INET if e.family == 4 else socket.AF_INET6, raw),
                        e.name[:e.name_len].decode("ascii"), e.reason, e.bits))
            tail += 1
        sg_store_u64(&self.events.tail, tail)
        return out

    def stats(self) -> dict:
        cdef dict udp = self.udp
        cdef dict tcp = self.tcp
        totals = {key: udp[key] + tcp[key] for key in udp}
        totals["events_dropped"] = sg_load_u64(&self.events.dropped)
        totals["events_waiting"] = sg_load_u64(&self.events.head) - sg_load_u64(&self.events.tail)
        totals["in_flight"] = sg_load_int(&self.in_flight)
        return totals
