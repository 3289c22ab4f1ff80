# C-level TCP reassembly of a flow's first bytes (client to server), classified by the TLS or HTTP parser,
# and the bounded flow table the data plane keeps them in.
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.http cimport HttpRequestInfo
from fastpath.siphash cimport SipKey
from fastpath.tls cimport ClientHelloInfo

# Which parser reads a flow's bytes.
cpdef enum Proto:
    TLS = 1
    HTTP = 2

cdef enum:
    STREAM_BUF_DEFAULT = 16384
    # Separate runs of received bytes a stream may hold at once. Reordering leaves a few holes; more
    # means a deliberately scattered stream, which is MALFORMED.
    STREAM_RANGES = 16

cdef struct StreamRange:
    uint32_t start          # offsets into Stream.data, start < end <= cap
    uint32_t end

cdef struct Stream:
    uint8_t* data           # cap bytes, owned by whoever owns the Stream
    uint32_t cap
    uint32_t base           # sequence number of data[0]
    uint8_t proto           # a Proto
    uint8_t flags           # STREAM_* flags (stream.pyx)
    uint16_t nranges
    StreamRange ranges[STREAM_RANGES]   # the bytes received, sorted, disjoint, not adjacent

# The parse result of a stream, read as .tls or .http according to the stream's Proto. The http spans
# point into Stream.data: valid until the stream is next fed, reset or released.
cdef union StreamResult:
    ClientHelloInfo tls
    HttpRequestInfo http

cdef void stream_init(Stream* s, uint8_t* data, uint32_t cap, int proto) noexcept nogil
# The client's SYN: its sequence number + 1 is the stream's first byte. A SYN with another ISN
# (the 4-tuple reused by a new connection) starts the stream afresh.
cdef void stream_syn(Stream* s, uint32_t isn) noexcept nogil
# One segment's payload, in any order; retransmits and overlaps must carry the same bytes.
cdef void stream_add(Stream* s, uint32_t seq, const uint8_t* payload, size_t n) noexcept nogil
# A ParseStatus for the bytes so far: the parser's answer on the in-order prefix; NEED_MORE while the
# start has not arrived; MALFORMED for conflicting overlaps, a scattered stream, or a message that
# does not fit in cap bytes (or is incomplete when bytes beyond cap arrive). scratch needs cap bytes
# (for TLS handshakes split over records).
cdef int stream_parse(Stream* s, uint8_t* scratch, StreamResult* out) noexcept nogil
# Bytes in order from the start of the stream.
cdef uint32_t stream_contiguous(const Stream* s) noexcept nogil

# A flow, client to server. Addresses are in network order; IPv4 uses the first 4 bytes. Keys are
# hashed and compared as bytes, so build them with flow_key_set.
cdef struct FlowKey:
    uint8_t src[16]
    uint8_t dst[16]
    uint16_t sport
    uint16_t dport
    uint8_t family          # 4 or 6
    uint8_t pad[3]          # zero

# Fills in a whole key (padding and unused address bytes zeroed); family is 4 or 6, and src and dst
# hold 4 or 16 bytes accordingly.
cdef void flow_key_set(FlowKey* key, int family, const uint8_t* src, const uint8_t* dst, uint16_t sport,
                       uint16_t dport) noexcept nogil

# Links of an intrusive least-recently-used list over a pool's entries (by index; -1 ends).
cdef struct Links:
    int32_t older
    int32_t newer

cdef struct LruList:
    int32_t newest
    int32_t oldest

cdef struct FlowSlot:
    FlowKey key
    uint32_t hash
    int32_t chain           # next flow in the same bucket, or in the free list; -1 ends
    int32_t stream          # its entry in the stream pool, or -1 until payload arrives
    uint32_t isn
    uint8_t proto
    uint8_t has_syn

# Bounded flow table: at most max_flows flows (about 72 bytes each) and max_streams reassembly buffers
# (buffer_size bytes each), all allocated once. A flow takes a buffer only when payload arrives, so a
# SYN flood only recycles flow slots. When full, the least recently used flow is evicted; when the
# buffers are all taken, the flow least recently fed. Not thread-safe: one table per packet thread.
# A flow index is valid until the next flow_open, flow_feed or flow_remove (each may evict).
cdef class FlowTable:
    cdef FlowSlot* flows
    cdef Links* flow_links
    cdef LruList flow_lru
    cdef int32_t* buckets
    cdef uint32_t bucket_mask
    cdef int32_t max_flows
    cdef int32_t free_flows      # head of the free list through FlowSlot.chain
    cdef int32_t count
    cdef Stream* streams
    cdef int32_t* stream_owner   # the flow holding each stream, or the next free stream when free
    cdef Links* stream_links
    cdef LruList stream_lru
    cdef int32_t max_streams
    cdef int32_t free_streams
    cdef int32_t streams_used
    cdef uint8_t* buffers
    cdef uint8_t* scratch
    cdef uint32_t buffer_size
    cdef SipKey hash_key
    cdef readonly uint64_t evictions

    cdef uint32_t hash(self, const FlowKey* key) noexcept nogil
    cdef int32_t attach_stream(self, int32_t flow) noexcept nogil
    # The flow's index, or -1.
    cdef int32_t flow_find(self, const FlowKey* key) noexcept nogil
    # The flow's index, created if new (evicting the least recently used flow when the table is full).
    # proto is fixed when the flow is created.
    cdef int32_t flow_open(self, const FlowKey* key, int proto) noexcept nogil
    cdef void flow_syn(self, int32_t flow, uint32_t isn) noexcept nogil
    # Adds a segment and returns the flow's ParseStatus (stream_parse). An empty payload adds nothing.
    cdef int flow_feed(self, int32_t flow, uint32_t seq, const uint8_t* payload, size_t n,
                       StreamResult* out) noexcept nogil
    # The flow's reassembled bytes (what StreamResult.http spans index); NULL before any payload.
    cdef const uint8_t* flow_data(self, int32_t flow) noexcept nogil
    cdef void flow_remove(self, int32_t flow) noexcept nogil
