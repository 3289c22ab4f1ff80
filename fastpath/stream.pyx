# cython: language_level=3
"""TCP reassembly of the first bytes of a client's flow, and the bounded flow table that holds them.

A Stream is a fixed buffer that segments are copied into at their offset from the stream's first
sequence number, in any order. The TLS or HTTP parser then reads the in-order prefix. There is one
home for reassembly: the Assembler (one flow, for tests and tools) and the FlowTable (the data plane)
both run the stream_* functions below."""

import os

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memmove, memset

from fastpath.http cimport http_request_object, looks_like_http_start, parse_http_request
from fastpath.names cimport MALFORMED, NEED_MORE
from fastpath.siphash cimport KEY_SIZE, sip_hash, sip_key
from fastpath.tls cimport client_hello_object, looks_like_tls_start, parse_tls_stream

cdef enum:
    STREAM_BASE = 1        # base is set: some payload or the SYN has been seen
    STREAM_SYN = 2         # base came from the SYN
    STREAM_STARTED = 4     # data[0] is the first byte of the connection (SYN, or a start-like segment)
    STREAM_OVERFLOW = 8    # bytes fell beyond cap and were dropped
    STREAM_BROKEN = 16     # conflicting overlap, or more holes than STREAM_RANGES: MALFORMED for good
    # A buffer must hold at least a record header and a handshake header.
    STREAM_BUF_MIN = 64


cdef inline bint looks_like_start(int proto, const uint8_t* p, size_t n) noexcept nogil:
    return looks_like_tls_start(p, n) if proto == TLS else looks_like_http_start(p, n)


cdef void stream_init(Stream* s, uint8_t* data, uint32_t cap, int proto) noexcept nogil:
    s.data = data
    s.cap = cap
    s.base = 0
    s.proto = <uint8_t>proto
    s.flags = 0
    s.nranges = 0


cdef void shift(Stream* s, int64_t delta) noexcept nogil:
    """Moves every byte from offset o to o + delta: the stream now begins delta bytes earlier (delta > 0)
    or later (delta < 0). What falls below 0 is dropped; what falls beyond cap is dropped as overflow."""
    cdef uint32_t i
    cdef uint16_t kept = 0
    cdef int64_t start, end
    cdef uint32_t top = s.ranges[s.nranges - 1].end if s.nranges else 0
    if delta < 0 and -delta < top:
        memmove(s.data, s.data - delta, <size_t>(top + delta))
    elif delta > 0 and delta < s.cap:
        memmove(s.data + delta, s.data, <size_t>(top if top + delta <= s.cap else s.cap - delta))
    for i in range(s.nranges):
        start = s.ranges[i].start + delta
        end = s.ranges[i].end + delta
        if end > s.cap:
            s.flags |= STREAM_OVERFLOW
            end = s.cap
        if start < 0:
            start = 0
        if start < end:
            s.ranges[kept].start = <uint32_t>start
            s.ranges[kept].end = <uint32_t>end
            kept += 1
    s.nranges = kept
    s.base = <uint32_t>(s.base - delta)


cdef void stream_syn(Stream* s, uint32_t isn) noexcept nogil:
    cdef uint32_t first = isn + 1  # the SYN takes one sequence number
    if s.flags & STREAM_SYN:
        if s.base == first:
            return  # a retransmitted SYN
        s.flags = 0  # a new connection on the same addresses and ports
        s.nranges = 0
    elif s.flags & STREAM_BASE:
        # Payload arrived before the SYN: re-anchor it on the real start.
        shift(s, <int32_t>(s.base - first))
    s.base = first
    s.flags |= STREAM_BASE | STREAM_SYN | STREAM_STARTED


cdef void insert_range(Stream* s, uint32_t start, uint32_t end) noexcept nogil:
    # Adds [start, end) to the sorted list, merging everything it overlaps or touches.
    cdef StreamRange merged[STREAM_RANGES + 1]
    cdef uint32_t i
    cdef uint32_t n = 0
    cdef bint placed = False
    for i in range(s.nranges):
        if s.ranges[i].end < start:
            merged[n] = s.ranges[i]
            n += 1
        elif s.ranges[i].start > end:
            if not placed:
                merged[n].start = start
                merged[n].end = end
                n += 1
                placed = True
            merged[n] = s.ranges[i]
            n += 1
        else:
            start = start if start < s.ranges[i].start else s.ranges[i].start
            end = end if end > s.ranges[i].end else s.ranges[i].end
    if not placed:
        merged[n].start = start
        merged[n].end = end
        n += 1
    if n > STREAM_RANGES:
        s.flags |= STREAM_BROKEN
        return
    memcpy(s.ranges, merged, n * sizeof(StreamRange))
    s.nranges = <uint16_t>n


cdef void stream_add(Stream* s, uint32_t seq, const uint8_t* payload, size_t n) noexcept nogil:
    cdef int64_t off
    cdef size_t end
    cdef uint32_t i, lo, hi
    cdef bint start_like
    if n == 0 or s.flags & STREAM_BROKEN:
        return
    start_like = looks_like_start(s.proto, payload, n)
    if not s.flags & STREAM_BASE:
        s.base = seq
        s.flags |= STREAM_BASE
    # Sequence arithmetic is modulo 2^32: the signed distance is the offset.
    off = <int32_t>(seq - s.base)
    if not s.flags & STREAM_SYN:
        # Without the SYN the stream starts at the lowest segment that looks like a start (or whose
        # bytes do once the segments after it are in); until then, segments are held from the lowest.
        if off < 0 and (start_like or not s.flags & STREAM_STARTED):
            shift(s, -off)
            off = 0
        elif off > 0 and start_like and not s.flags & STREAM_STARTED:
            shift(s, -off)
            off = 0
        if off == 0 and start_like:
            s.flags |= STREAM_STARTED
    if off < 0:
        # Bytes before the first one (an old retransmit or keepalive probe) are not part of the stream.
        if n <= <size_t>(-off):
            return
        payload -= off
        n += <size_t>off
        off = 0
    if off >= s.cap:
        s.flags |= STREAM_OVERFLOW
        return
    end = <size_t>off + n
    if end > s.cap:
        s.flags |= STREAM_OVERFLOW
        end = s.cap
    # A retransmit that disagrees with what was already received would let the filter and the server
    # read different bytes; nothing safe can be said about such a stream.
    for i in range(s.nranges):
        lo = s.ranges[i].start if s.ranges[i].start > off else <uint32_t>off
        hi = s.ranges[i].end if s.ranges[i].end < end else <uint32_t>end
        if lo < hi and memcmp(s.data + lo, payload + (lo - off), hi - lo) != 0:
            s.flags |= STREAM_BROKEN
            return
    memcpy(s.data + off, payload, end - <size_t>off)
    insert_range(s, <uint32_t>off, <uint32_t>end)
    if (not s.flags & STREAM_STARTED and s.nranges and s.ranges[0].start == 0
            and looks_like_start(s.proto, s.data, s.ranges[0].end)):
        s.flags |= STREAM_STARTED  # a start cut into pieces smaller than the pattern


cdef uint32_t stream_contiguous(const Stream* s) noexcept nogil:
    if s.nranges and s.ranges[0].start == 0 and s.flags & STREAM_STARTED:
        return s.ranges[0].end
    return 0


cdef inline int parse_prefix(int proto, const uint8_t* data, uint32_t n, uint8_t* scratch, uint32_t cap,
                             StreamResult* out) noexcept nogil:
    if proto == TLS:
        return parse_tls_stream(data, n, scratch, cap, &out.tls)
    return parse_http_request(data, n, &out.http)


cdef int stream_parse(Stream* s, uint8_t* scratch, StreamResult* out) noexcept nogil:
    cdef uint32_t n = 0 if s.flags & STREAM_BROKEN else stream_contiguous(s)
    cdef int status = parse_prefix(s.proto, s.data, n, scratch, s.cap, out)
    if s.flags & STREAM_BROKEN:
        return MALFORMED
    # The parser wants bytes the buffer cannot hold (or has had to drop).
    if status == NEED_MORE and (s.flags & STREAM_OVERFLOW or n == s.cap):
        return MALFORMED
    return status


cdef object result_object(int status, const Stream* s, const StreamResult* out):
    if s.proto == TLS:
        return client_hello_object(status, &out.tls)
    return http_request_object(status, &out.http, s.data)


cdef uint32_t check_buffer_size(size: int) except 0:
    if not STREAM_BUF_MIN <= size <= 1 << 30:
        raise ValueError(f"buffer size must be {STREAM_BUF_MIN} to 2**30 bytes")
    return <uint32_t>size


cdef class Assembler:
    """Reassembles one flow's first bytes (client to server) and classifies them."""

    cdef Stream stream
    cdef uint8_t* memory  # the stream's buffer, then the TLS scratch buffer

    def __cinit__(self, proto: Proto, size: int = STREAM_BUF_DEFAULT):
        cdef uint32_t cap = check_buffer_size(size)
        self.memory = <uint8_t*>calloc(2, cap)
        if self.memory == NULL:
            raise MemoryError()
        stream_init(&self.stream, self.memory, cap, Proto(proto))

    def __dealloc__(self):
        free(self.memory)

    def syn(self, isn: int) -> None:
        stream_syn(&self.stream, isn)

    def feed(self, seq: int, payload: bytes):
        cdef uint32_t sequence = seq
        cdef const uint8_t[::1] view = payload
        cdef StreamResult out
        cdef int status
        # The GIL stays held: it is what keeps two Python threads from feeding one stream at once.
        if view.shape[0]:
            stream_add(&self.stream, sequence, &view[0], view.shape[0])
        status = stream_parse(&self.stream, self.memory + self.stream.cap, &out)
        return result_object(status, &self.stream, &out)

    @property
    def contiguous(self) -> int:
        return stream_contiguous(&self.stream)


cdef inline void lru_unlink(Links* links, LruList* lru, int32_t i) noexcept nogil:
    if links[i].older >= 0:
        links[links[i].older].newer = links[i].newer
    else:
        lru.oldest = links[i].newer
    if links[i].newer >= 0:
        links[links[i].newer].older = links[i].older
    else:
        lru.newest = links[i].older


cdef inline void lru_push(Links* links, LruList* lru, int32_t i) noexcept nogil:
    links[i].older = lru.newest
    links[i].newer = -1
    if lru.newest >= 0:
        links[lru.newest].newer = i
    else:
        lru.oldest = i
    lru.newest = i


cdef inline void lru_touch(Links* links, LruList* lru, int32_t i) noexcept nogil:
    if lru.newest != i:
        lru_unlink(links, lru, i)
        lru_push(links, lru, i)


cdef void flow_key_set(FlowKey* key, int family, const uint8_t* src, const uint8_t* dst, uint16_t sport,
                       uint16_t dport) noexcept nogil:
    cdef size_t size = 4 if family == 4 else 16
    memset(key, 0, sizeof(FlowKey))
    memcpy(key.src, src, size)
    memcpy(key.dst, dst, size)
    key.sport = sport
    key.dport = dport
    key.family = <uint8_t>family


cdef int make_key(object key, FlowKey* out) except -1:
    src, dst, sport, dport = key
    if not isinstance(src, bytes) or not isinstance(dst, bytes) or len(src) != len(dst) or len(src) not in (4, 16):
        raise ValueError("addresses must both be 4 (IPv4) or 16 (IPv6) packed bytes")
    flow_key_set(out, 4 if len(src) == 4 else 6, <const uint8_t*><const char*>src,
                 <const uint8_t*><const char*>dst, sport, dport)
    return 0


cdef class FlowTable:
    """The data plane's flows: get or create a flow by its addresses and ports, feed it segments,
    remove it once decided. Memory is fixed at creation (see stream.pxd)."""

    def __cinit__(self, max_flows: int = 65536, max_streams: int = 1024,
                  buffer_size: int = STREAM_BUF_DEFAULT):
        cdef int32_t i
        cdef uint32_t buckets = 1
        if not 1 <= max_flows <= 1 << 24 or not 1 <= max_streams <= max_flows:
            raise ValueError("need 1 <= max_streams <= max_flows <= 2**24")
        self.buffer_size = check_buffer_size(buffer_size)
        while buckets < <uint32_t>max_flows:
            buckets <<= 1
        self.bucket_mask = buckets - 1
        self.max_flows = max_flows
        self.max_streams = max_streams
        self.flows = <FlowSlot*>calloc(max_flows, sizeof(FlowSlot))
        self.flow_links = <Links*>calloc(max_flows, sizeof(Links))
        self.buckets = <int32_t*>calloc(buckets, sizeof(int32_t))
        self.streams = <Stream*>calloc(max_streams, sizeof(Stream))
        self.stream_owner = <int32_t*>calloc(max_streams, sizeof(int32_t))
        self.stream_links = <Links*>calloc(max_streams, sizeof(Links))
        self.buffers = <uint8_t*>calloc(max_streams, self.buffer_size)
        self.scratch = <uint8_t*>calloc(1, self.buffer_size)
        if (self.flows == NULL or self.flow_links == NULL or self.buckets == NULL or self.streams == NULL
                or self.stream_owner == NULL or self.stream_links == NULL or self.buffers == NULL
                or self.scratch == NULL):
            raise MemoryError()
        for i in range(<int32_t>buckets):
            self.buckets[i] = -1
        for i in range(max_flows):
            self.flows[i].chain = i + 1 if i + 1 < max_flows else -1
        for i in range(max_streams):
            self.stream_owner[i] = i + 1 if i + 1 < max_streams else -1
        self.free_flows = 0
        self.free_streams = 0
        self.flow_lru.newest = self.flow_lru.oldest = -1
        self.stream_lru.newest = self.stream_lru.oldest = -1
        # A secret key per table, so that nobody can choose addresses that all land in one bucket.
        key = os.urandom(KEY_SIZE)
        self.hash_key = sip_key(<const uint8_t*><const char*>key)

    def __dealloc__(self):
        free(self.flows)
        free(self.flow_links)
        free(self.buckets)
        free(self.streams)
        free(self.stream_owner)
        free(self.stream_links)
        free(self.buffers)
        free(self.scratch)

    cdef uint32_t hash(self, const FlowKey* key) noexcept nogil:
        return <uint32_t>sip_hash(&self.hash_key, <const uint8_t*>key, sizeof(FlowKey))

    cdef int32_t flow_find(self, const FlowKey* key) noexcept nogil:
        cdef uint32_t h = self.hash(key)
        cdef int32_t i = self.buckets[h & self.bucket_mask]
        while i >= 0:
            if self.flows[i].hash == h and memcmp(&self.flows[i].key, key, sizeof(FlowKey)) == 0:
                return i
            i = self.flows[i].chain
        return -1

    cdef int32_t flow_open(self, const FlowKey* key, int proto) noexcept nogil:
        cdef int32_t i = self.flow_find(key)
        cdef uint32_t h
        if i >= 0:
            lru_touch(self.flow_links, &self.flow_lru, i)
            return i
        if self.free_flows < 0:
            self.flow_remove(self.flow_lru.oldest)
            self.evictions += 1
        i = self.free_flows
        self.free_flows = self.flows[i].chain
        h = self.hash(key)
        memcpy(&self.flows[i].key, key, sizeof(FlowKey))
        self.flows[i].hash = h
        self.flows[i].stream = -1
        self.flows[i].proto = <uint8_t>proto
        self.flows[i].has_syn = False
        self.flows[i].chain = self.buckets[h & self.bucket_mask]
        self.buckets[h & self.bucket_mask] = i
        lru_push(self.flow_links, &self.flow_lru, i)
        self.count += 1
        return i

    cdef void flow_syn(self, int32_t flow, uint32_t isn) noexcept nogil:
        self.flows[flow].isn = isn
        self.flows[flow].has_syn = True
        if self.flows[flow].stream >= 0:
            stream_syn(&self.streams[self.flows[flow].stream], isn)

    cdef int32_t attach_stream(self, int32_t flow) noexcept nogil:
        cdef int32_t s
        if self.free_streams < 0:
            # Every buffer is taken: the flow fed least recently gives up its buffer, and its flow
            # (whose bytes are then gone) with it.
            self.flow_remove(self.stream_owner[self.stream_lru.oldest])
            self.evictions += 1
        s = self.free_streams
        self.free_streams = self.stream_owner[s]
        self.stream_owner[s] = flow
        lru_push(self.stream_links, &self.stream_lru, s)
        self.streams_used += 1
        stream_init(&self.streams[s], self.buffers + <size_t>s * self.buffer_size, self.buffer_size,
                    self.flows[flow].proto)
        if self.flows[flow].has_syn:
            stream_syn(&self.streams[s], self.flows[flow].isn)
        self.flows[flow].stream = s
        return s

    cdef int flow_feed(self, int32_t flow, uint32_t seq, const uint8_t* payload, size_t n,
                       StreamResult* out) noexcept nogil:
        cdef int32_t s = self.flows[flow].stream
        lru_touch(self.flow_links, &self.flow_lru, flow)
        if s < 0:
            if n == 0:
                # Nothing to hold yet (a bare ACK): answer for an empty stream without taking a buffer.
                return parse_prefix(self.flows[flow].proto, NULL, 0, self.scratch, 0, out)
            s = self.attach_stream(flow)
        else:
            lru_touch(self.stream_links, &self.stream_lru, s)
        stream_add(&self.streams[s], seq, payload, n)
        return stream_parse(&self.streams[s], self.scratch, out)

    cdef const uint8_t* flow_data(self, int32_t flow) noexcept nogil:
        cdef int32_t s = self.flows[flow].stream
        return self.streams[s].data if s >= 0 else NULL

    cdef void flow_remove(self, int32_t flow) noexcept nogil:
        cdef int32_t* link = &self.buckets[self.flows[flow].hash & self.bucket_mask]
        cdef int32_t s = self.flows[flow].stream
        while link[0] != flow:
            link = &self.flows[link[0]].chain
        link[0] = self.flows[flow].chain
        lru_unlink(self.flow_links, &self.flow_lru, flow)
        if s >= 0:
            lru_unlink(self.stream_links, &self.stream_lru, s)
            self.stream_owner[s] = self.free_streams
            self.free_streams = s
            self.streams_used -= 1
        self.flows[flow].chain = self.free_flows
        self.free_flows = flow
        self.count -= 1

    def syn(self, key: tuple, proto: Proto, isn: int) -> None:
        cdef FlowKey k
        make_key(key, &k)
        self.flow_syn(self.flow_open(&k, Proto(proto)), isn)

    def feed(self, key: tuple, proto: Proto, seq: int, payload: bytes):
        cdef FlowKey k
        cdef uint32_t sequence = seq
        cdef const uint8_t[::1] view = payload
        cdef StreamResult out
        cdef int32_t flow
        cdef int status
        make_key(key, &k)
        flow = self.flow_open(&k, Proto(proto))
        status = self.flow_feed(flow, sequence, &view[0] if view.shape[0] else NULL, view.shape[0], &out)
        if self.flows[flow].proto == TLS:
            return client_hello_object(status, &out.tls)
        return http_request_object(status, &out.http, self.flow_data(flow))

    def remove(self, key: tuple) -> bool:
        cdef FlowKey k
        cdef int32_t flow
        make_key(key, &k)
        flow = self.flow_find(&k)
        if flow < 0:
            return False
        self.flow_remove(flow)
        return True

    def __contains__(self, key: tuple) -> bool:
        cdef FlowKey k
        make_key(key, &k)
        return self.flow_find(&k) >= 0

    def __len__(self) -> int:
        return self.count

    @property
    def streams_in_use(self) -> int:
        return self.streams_used
