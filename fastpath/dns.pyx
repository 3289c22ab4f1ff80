# cython: language_level=3
"""DNS for the fast path, sans-IO: query parsing, TCP framing, response building and ECH stripping.

The C-level API is declared in dns.pxd; the Python API is described in dns.pyi."""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

from fastpath.names cimport (
    LABEL_CHARS,
    MALFORMED,
    NAME_BUF,
    NEED_MORE,
    NOT_HANDLED,
    NOT_LABEL_CHAR,
    OK,
    normalise_name,
)

import socket

from fastpath.names import ParseStatus

cdef enum:
    # A name has at most 127 labels: more pointers than that only make work (targets decrease, so
    # there are no true loops).
    MAX_HOPS = 127
    FLAG_QR = 0x8000
    FLAG_TC = 0x0200
    # What a response echoes from the query's flags: opcode, RD and CD.
    ECHOED_FLAGS = 0x7910
    FLAG_RA = 0x0080
    POINTER = 0xC000
    # Pointers carry 14 bits, so only names below this offset can be pointed at.
    POINTABLE = 0x4000

# ---------------------------------------------------------------------------------------------------
# Reading and writing

cdef inline uint16_t rd16(const uint8_t* p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef struct Out:
    uint8_t* buf
    size_t cap
    size_t len
    bint full       # a write did not fit; later writes are refused so the message never has holes


cdef inline void put(Out* o, const uint8_t* p, size_t k) noexcept nogil:
    if o.full or k > o.cap - o.len:
        o.full = 1
        return
    memcpy(o.buf + o.len, p, k)
    o.len += k


cdef inline void put16(Out* o, uint32_t v) noexcept nogil:
    cdef uint8_t b[2]
    b[0] = (v >> 8) & 0xFF
    b[1] = v & 0xFF
    put(o, b, 2)


cdef inline void put32(Out* o, uint32_t v) noexcept nogil:
    put16(o, v >> 16)
    put16(o, v & 0xFFFF)


cdef inline void set16(Out* o, size_t at, uint32_t v) noexcept nogil:
    """Patches a field written earlier (a count or RDLENGTH)."""
    if at + 2 <= o.len:
        o.buf[at] = (v >> 8) & 0xFF
        o.buf[at + 1] = v & 0xFF


# ---------------------------------------------------------------------------------------------------
# Names

cdef struct NameWalk:
    size_t end          # just past the name where it sits: after its root label or first pointer
    size_t ptr_at       # offset of that pointer, or 0 if the name ends in place
    size_t ptr_to       # where the pointer points
    size_t wire_len     # length of the expanded name, root label included


cdef struct Removed:
    size_t start        # input bytes [start, end) are left out of the output
    size_t end
    size_t delta        # bytes removed by this range and every range before it


cdef struct Strip:
    Removed* ranges     # ascending; grown on demand, since most responses have nothing to strip
    int count
    int cap
    uint8_t* labels     # bitmap over input offsets below POINTABLE: the labels of every name read so far


cdef size_t shift_at(const Strip* st, size_t x) noexcept nogil:
    """Bytes removed before input offset x (which was kept)."""
    cdef int lo = 0
    cdef int hi = st.count
    cdef int mid
    while lo < hi:
        mid = (lo + hi) // 2
        if st.ranges[mid].start <= x:
            lo = mid + 1
        else:
            hi = mid
    return st.ranges[lo - 1].delta if lo else 0


cdef int walk_name(const uint8_t* msg, size_t n, size_t off, uint8_t* wire, NameWalk* w,
                   const uint8_t* labels) noexcept nogil:
    """Follows the name at off, checking every label and pointer, and copies its expanded wire form
    (case kept) to wire unless NULL (WIRE_NAME_MAX bytes). Returns 0, or -1 if the name is malformed.

    A pointer must point past the header and before the start of the segment it ends (BIND's rule),
    so every walk terminates; the hop limit also bounds the work per name. With labels (a bitmap of
    label offsets), a pointer must also land on a label of a name read before, as compressors do."""
    cdef size_t pos = off
    cdef size_t seg = off
    cdef size_t wl = 0
    cdef size_t target
    cdef int hops = 0
    cdef uint8_t c
    w.end = 0
    w.ptr_at = 0
    while True:
        if pos >= n:
            return -1
        c = msg[pos]
        if c == 0:
            if wire != NULL:
                wire[wl] = 0
            w.wire_len = wl + 1
            if w.end == 0:
                w.end = pos + 1
            return 0
        if c < 64:
            # wl + 1 + c label bytes, then at least the root label, within WIRE_NAME_MAX
            if c >= n - pos or wl + 1 + c >= WIRE_NAME_MAX:
                return -1
            if wire != NULL:
                memcpy(wire + wl, msg + pos, 1 + c)
            wl += 1 + c
            pos += 1 + c
            continue
        if c < 0xC0 or pos + 1 >= n:
            return -1
        target = ((c & 0x3F) << 8) | msg[pos + 1]
        hops += 1
        if target < HEADER_LEN or target >= seg or hops > MAX_HOPS:
            return -1
        if labels != NULL and not labels[target >> 3] & (1 << (target & 7)):
            return -1
        if w.end == 0:
            w.end = pos + 2
            w.ptr_at = pos
            w.ptr_to = target
        pos = seg = target


cdef int name_to_wire(const char* name, size_t n, uint8_t* wire) noexcept nogil:
    """Writes a host name (presentation form, validated and normalised) to wire (WIRE_NAME_MAX
    bytes) and returns the wire length, or -1 if the name is invalid or the root."""
    cdef char norm[NAME_BUF]
    cdef int k = normalise_name(<const uint8_t*>name, n, norm)
    cdef int i
    cdef int start = 0
    cdef int o = 0
    if k <= 0:
        return -1
    for i in range(k + 1):
        if i == k or norm[i] == 46:
            wire[o] = i - start
            memcpy(wire + o + 1, norm + start, i - start)
            o += 1 + i - start
            start = i + 1
    wire[o] = 0
    return o + 1


cdef bint same_name(const uint8_t* a, const uint8_t* b) noexcept nogil:
    """Two wire names are equal, ignoring ASCII case (length bytes are below 64, so unaffected)."""
    cdef size_t i = 0
    cdef uint8_t x, y
    while True:
        x = a[i]
        y = b[i]
        if x >= 65 and x <= 90:
            x += 32
        if y >= 65 and y <= 90:
            y += 32
        if x != y:
            return 0
        if a[i] == 0:
            return 1
        # a length byte and its label move together, so both names reach the root at the same i
        i += 1


# ---------------------------------------------------------------------------------------------------
# Query parsing and TCP framing

cdef Py_ssize_t rr_end(const uint8_t* msg, size_t n, size_t off, uint16_t* rtype, size_t* rdata) noexcept nogil:
    """The offset just past the resource record at off (setting its type and RDATA offset), or -1."""
    cdef NameWalk w
    if walk_name(msg, n, off, NULL, &w, NULL) < 0 or n - w.end < 10:
        return -1
    rtype[0] = rd16(msg + w.end)
    rdata[0] = w.end + 10
    if rd16(msg + w.end + 8) > n - rdata[0]:
        return -1
    return rdata[0] + rd16(msg + w.end + 8)


cdef bint edns_options_ok(const uint8_t* msg, size_t pos, size_t end) noexcept nogil:
    while pos < end:
        if end - pos < 4:
            return 0
        pos += 4 + rd16(msg + pos + 2)
    return pos == end


cdef Py_ssize_t read_qname(const uint8_t* msg, size_t n, uint8_t* wire, char* name) noexcept nogil:
    """Reads the question name at HEADER_LEN in one pass: its labels checked as walk_name checks
    them, copied as sent to wire (WIRE_NAME_MAX bytes) and normalised into name (NAME_BUF bytes,
    NUL-terminated) by the rules of names.pxd. Returns the offset just past the name, or -1 if it
    is malformed or invalid.

    The name is always in place: a compression pointer in it would have to point before its own
    start, into the header, which walk_name refuses too. So wire is msg's bytes, and the byte at
    wire[i + 1] is name[i] (a length byte past the first becomes a dot)."""
    cdef const uint8_t* src = msg + HEADER_LEN
    cdef size_t room = n - HEADER_LEN
    cdef size_t pos = 0
    cdef size_t i
    cdef uint8_t c, byte
    cdef uint8_t bad = 0
    while True:
        if pos >= room:
            return -1
        c = src[pos]
        wire[pos] = c
        if c == 0:
            break
        # a length byte (pointers and the reserved types are 64 or more), its label within the
        # message, and room for at least the root label after it within WIRE_NAME_MAX
        if c >= 64 or c >= room - pos or pos + 1 + c >= WIRE_NAME_MAX:
            return -1
        if pos:
            name[pos - 1] = 46
        # Each byte through LABEL_CHARS, the check OR-ed in: no branch per byte.
        for i in range(pos + 1, pos + 1 + c):
            byte = src[i]
            wire[i] = byte
            byte = LABEL_CHARS[byte]
            name[i - 1] = <char>byte
            bad |= byte
        pos += 1 + c
    if bad & NOT_LABEL_CHAR:
        return -1
    name[pos - 1 if pos else 0] = 0
    return HEADER_LEN + pos + 1


cdef int parse_query(const uint8_t* msg, size_t n, DnsQuery* out) noexcept nogil:
    cdef size_t off = HEADER_LEN
    cdef size_t rdata
    cdef Py_ssize_t end
    cdef uint16_t rtype
    cdef int i
    out.has_header = 0
    out.has_question = 0
    out.has_edns = 0
    out.name[0] = 0
    out.name_len = 0
    out.qname_wire_len = 0
    out.qtype = 0
    out.qclass = 0
    out.question_end = 0
    out.udp_size = 0
    out.edns_version = 0
    out.dnssec_ok = 0
    out.message_end = 0
    if n < HEADER_LEN:
        return MALFORMED
    out.id = rd16(msg)
    out.flags = rd16(msg + 2)
    out.opcode = (out.flags >> 11) & 0xF
    out.qdcount = rd16(msg + 4)
    out.has_header = 1
    if out.flags & FLAG_QR or out.qdcount > 1:
        return NOT_HANDLED
    if out.qdcount == 1:
        end = read_qname(msg, n, out.qname_wire, out.name)
        if end < 0 or n - end < 4:
            out.name[0] = 0
            return MALFORMED
        out.qname_wire_len = end - HEADER_LEN
        # the presentation form lacks the first length byte and the root label
        out.name_len = out.qname_wire_len - 2 if out.qname_wire_len > 1 else 0
        out.qtype = rd16(msg + end)
        out.qclass = rd16(msg + end + 2)
        off = out.question_end = end + 4
        out.has_question = 1
    # Answer and authority are empty in a normal query but skipped properly (UPDATE, oddities).
    for i in range(rd16(msg + 6) + rd16(msg + 8)):
        end = rr_end(msg, n, off, &rtype, &rdata)
        if end < 0:
            return MALFORMED
        off = end
    for i in range(rd16(msg + 10)):
        end = rr_end(msg, n, off, &rtype, &rdata)
        if end < 0:
            return MALFORMED
        if rtype == TYPE_OPT:
            # RFC 6891: one OPT, owned by the root; a second one is FORMERR
            if out.has_edns or msg[off] != 0 or not edns_options_ok(msg, rdata, end):
                out.has_edns = out.dnssec_ok = out.udp_size = out.edns_version = 0
                return MALFORMED
            out.has_edns = 1
            out.udp_size = rd16(msg + off + 3)
            out.edns_version = msg[off + 6]
            out.dnssec_ok = (msg[off + 7] & 0x80) != 0
        off = end
    out.message_end = off
    if out.opcode != 0 or out.qdcount == 0:
        return NOT_HANDLED
    return OK


cdef int frame_length(const uint8_t* buf, size_t n, size_t* msg_len) noexcept nogil:
    if n < 2 or n - 2 < rd16(buf):
        return NEED_MORE
    msg_len[0] = rd16(buf)
    return OK


# ---------------------------------------------------------------------------------------------------
# Response building

cdef size_t response_limit(const DnsQuery* q, bint tcp) noexcept nogil:
    if tcp:
        return TCP_MAX
    if not q.has_edns or q.udp_size <= UDP_MIN:
        return UDP_MIN
    if q.udp_size >= EDNS_PAYLOAD:
        return EDNS_PAYLOAD
    return q.udp_size


cdef void start_response(Out* o, uint8_t* out, size_t cap, const DnsQuery* q, int rcode) noexcept nogil:
    """Header (counts patched by finish) and the question exactly as the client sent it."""
    o.buf = out
    o.cap = cap
    o.len = 0
    o.full = 0
    put16(o, q.id)
    put16(o, FLAG_QR | (q.flags & ECHOED_FLAGS) | FLAG_RA | (rcode & 0xF))
    put16(o, q.has_question)
    put32(o, 0)
    put16(o, 0)
    if q.has_question:
        put(o, q.qname_wire, q.qname_wire_len)
        put16(o, q.qtype)
        put16(o, q.qclass)


cdef int finish(Out* o, const DnsQuery* q, int rcode, bint tc, int an, int ns) noexcept nogil:
    """Appends the OPT record and sets the counts. A response over cap is rebuilt as header, question
    and OPT with TC set (RFC 6891 keeps the OPT in truncated answers)."""
    cdef uint8_t opt[11]
    if q.has_edns:
        opt[0] = 0              # owner: the root
        opt[1] = 0
        opt[2] = TYPE_OPT
        opt[3] = EDNS_PAYLOAD >> 8
        opt[4] = EDNS_PAYLOAD & 0xFF
        opt[5] = rcode >> 4     # extended rcode
        opt[6] = 0              # version
        opt[7] = 0x80 if q.dnssec_ok else 0
        opt[8] = 0
        opt[9] = 0              # RDLENGTH: no options
        opt[10] = 0
        put(o, opt, 11)
    if o.full:
        start_response(o, o.buf, o.cap, q, rcode)
        if q.has_edns:
            put(o, opt, 11)
        if o.full:
            return BUILD_NO_ROOM
        tc = 1
        an = 0
        ns = 0
    set16(o, 6, an)
    set16(o, 8, ns)
    set16(o, 10, q.has_edns)
    if tc:
        o.buf[2] |= FLAG_TC >> 8
    return <int>o.len


cdef int build_error(const DnsQuery* q, int rcode, uint8_t* out, size_t cap) noexcept nogil:
    cdef Out o
    if not q.has_header or rcode < 0 or rcode > 0xFFF or (rcode > 15 and not q.has_edns):
        return BUILD_BAD_QUERY
    start_response(&o, out, cap, q, rcode)
    return finish(&o, q, rcode, 0, 0, 0)


cdef int build_negative(const DnsQuery* q, int rcode, uint32_t ttl, uint8_t* out, size_t cap) noexcept nogil:
    cdef Out o
    if not q.has_question or (rcode != RCODE_NOERROR and rcode != RCODE_NXDOMAIN):
        return BUILD_BAD_QUERY
    start_response(&o, out, cap, q, rcode)
    # SOA owned by the root with empty MNAME and RNAME: it claims no real zone, and negative caches
    # keep the answer for min(TTL, MINIMUM) = ttl (RFC 2308).
    put(&o, <const uint8_t*>b"\x00\x00\x06\x00\x01", 5)  # owner the root, type SOA, class IN
    put32(&o, ttl)
    put16(&o, 22)
    put16(&o, 0)                # MNAME and RNAME: the root
    put32(&o, 1)                # serial
    put32(&o, 0)                # refresh, retry, expire: unused by negative caching
    put32(&o, 0)
    put32(&o, 0)
    put32(&o, ttl)              # minimum
    return finish(&o, q, rcode, 0, 0, 1)


cdef int build_block(const DnsQuery* q, const uint8_t* ipv4, const uint8_t* ipv6, uint32_t ttl,
                     uint8_t* out, size_t cap) noexcept nogil:
    cdef Out o
    cdef const uint8_t* addr = NULL
    cdef size_t k = 0
    if not q.has_question:
        return BUILD_BAD_QUERY
    if q.qtype == TYPE_A:
        addr = ipv4
        k = 4
    elif q.qtype == TYPE_AAAA:
        addr = ipv6
        k = 16
    if addr == NULL or q.qclass != CLASS_IN:
        return build_negative(q, RCODE_NOERROR, ttl, out, cap)
    start_response(&o, out, cap, q, RCODE_NOERROR)
    put16(&o, POINTER | HEADER_LEN)     # owner: the question name
    put16(&o, q.qtype)
    put16(&o, CLASS_IN)
    put32(&o, ttl)
    put16(&o, k)
    put(&o, addr, k)
    return finish(&o, q, RCODE_NOERROR, 0, 1, 0)


# ---------------------------------------------------------------------------------------------------
# Copying records out of an upstream response: expanded (CNAME answers) or with ECH stripped

cdef struct Rewrite:
    const uint8_t* msg
    size_t n
    Out* out
    Strip* strip            # strip_ech: names copied as they sit, pointers shifted; NULL: names expanded
    const uint8_t* alias    # expanding: an owner name equal to this one becomes a pointer to alias_at
    size_t alias_at
    int stripped


cdef const char* rdata_layout(uint16_t t) noexcept nogil:
    """Where a decoder finds names (and so may follow pointers) in RDATA: 'N' a name, 'S' a
    <character-string>, a byte below 32 that many fixed bytes; the rest of the RDATA is opaque. RFC 1035
    types, those that RFC 3597 section 4 has receivers decompress, and the DNSSEC and SVCB types."""
    if t == 2 or t == 3 or t == 4 or t == 5 or t == 7 or t == 8 or t == 9 or t == 12 or t == 39:
        return b"N"              # NS MD MF CNAME MB MG MR PTR DNAME
    if t == 30 or t == 47:
        return b"N"              # NXT NSEC: next name, then a type bitmap
    if t == TYPE_SOA:
        return b"NN\x14"
    if t == 14 or t == 17:
        return b"NN"             # MINFO RP
    if t == 15 or t == 18 or t == 21 or t == 36:
        return b"\x02N"          # MX AFSDB RT KX
    if t == 26:
        return b"\x02NN"         # PX
    if t == 33:
        return b"\x06N"          # SRV
    if t == 35:
        return b"\x04SSSN"       # NAPTR
    if t == 24 or t == 46:
        return b"\x12N"          # SIG RRSIG: signer name, then the signature
    if t == TYPE_SVCB or t == TYPE_HTTPS:
        return b"\x02N"          # SvcPriority, TargetName, then SvcParams
    return b""


cdef int drop(Strip* st, size_t start, size_t end) noexcept nogil:
    """Records that input bytes [start, end) are left out of the output; -1 if out of memory."""
    cdef Removed* grown
    cdef int cap
    if st.count == st.cap:
        cap = st.cap * 2 if st.cap else 8
        grown = <Removed*>realloc(st.ranges, cap * sizeof(Removed))
        if grown == NULL:
            return -1
        st.ranges = grown
        st.cap = cap
    st.ranges[st.count].start = start
    st.ranges[st.count].end = end
    st.ranges[st.count].delta = end - start + (st.ranges[st.count - 1].delta if st.count else 0)
    st.count += 1
    return 0


cdef Py_ssize_t copy_name(Rewrite* rw, size_t off, bint owner) noexcept nogil:
    """Copies the name at off to the output; returns the input offset after it, or -1."""
    cdef NameWalk w
    cdef uint8_t wire[WIRE_NAME_MAX]
    cdef Strip* st = rw.strip
    cdef size_t pos
    if st == NULL:
        # upstream's pointers are relative to its message, so write the name in full
        if walk_name(rw.msg, rw.n, off, wire, &w, NULL) < 0:
            return -1
        if owner and rw.alias != NULL and same_name(wire, rw.alias):
            put16(rw.out, POINTER | rw.alias_at)
        else:
            put(rw.out, wire, w.wire_len)
        return w.end
    # Names are copied as they sit, so a pointer into a name read before still finds the same labels
    # (never removed, never rewritten) once shifted; a pointer anywhere else could not be trusted.
    if walk_name(rw.msg, rw.n, off, NULL, &w, st.labels) < 0:
        return -1
    pos = off
    while pos < w.end and pos < POINTABLE and rw.msg[pos] < 64:
        st.labels[pos >> 3] |= 1 << (pos & 7)
        pos += 1 + rw.msg[pos]
    if w.ptr_at == 0:
        put(rw.out, rw.msg + off, w.end - off)
        return w.end
    put(rw.out, rw.msg + off, w.ptr_at - off)
    put16(rw.out, POINTER | (w.ptr_to - shift_at(st, w.ptr_to)))
    return w.end


cdef int copy_svc_params(Rewrite* rw, size_t pos, size_t end) noexcept nogil:
    """Copies SvcParams leaving out ech, and ech's entry in mandatory (a mandatory key that is missing
    would make clients drop the whole record)."""
    cdef const uint8_t* m = rw.msg
    cdef size_t vlen
    cdef size_t i
    while pos < end:
        if end - pos < 4 or rd16(m + pos + 2) > end - pos - 4:
            return -1
        vlen = rd16(m + pos + 2)
        if rd16(m + pos) == SVC_ECH:
            if drop(rw.strip, pos, pos + 4 + vlen) < 0:
                return -1
            rw.stripped += 1
            pos += 4 + vlen
            continue
        if rd16(m + pos) == SVC_MANDATORY and vlen % 2 == 0:
            for i in range(0, vlen, 2):
                if rd16(m + pos + 4 + i) == SVC_ECH:
                    break
            else:
                i = vlen
            if i < vlen:
                if vlen == 2:
                    if drop(rw.strip, pos, pos + 6) < 0:
                        return -1
                else:
                    put(rw.out, m + pos, 2)
                    put16(rw.out, vlen - 2)
                    put(rw.out, m + pos + 4, i)
                    if drop(rw.strip, pos + 4 + i, pos + 6 + i) < 0:
                        return -1
                    put(rw.out, m + pos + 6 + i, vlen - i - 2)
                pos += 4 + vlen
                continue
        put(rw.out, m + pos, 4 + vlen)
        pos += 4 + vlen
    return 0


cdef int copy_rdata(Rewrite* rw, uint16_t rtype, size_t pos, size_t end) noexcept nogil:
    cdef const char* layout = rdata_layout(rtype)
    cdef Py_ssize_t after
    cdef size_t k
    while layout[0] != 0:
        if layout[0] == 78:     # 'N'
            after = copy_name(rw, pos, 0)
            if after < 0 or <size_t>after > end:
                return -1
            pos = after
        else:
            if layout[0] == 83:     # 'S': a length byte and that many bytes
                k = 1 + rw.msg[pos] if pos < end else 1
            else:
                k = <uint8_t>layout[0]
            if k > end - pos:
                return -1
            put(rw.out, rw.msg + pos, k)
            pos += k
        layout += 1
    if rw.strip != NULL and (rtype == TYPE_SVCB or rtype == TYPE_HTTPS):
        return copy_svc_params(rw, pos, end)
    put(rw.out, rw.msg + pos, end - pos)
    return 0


cdef Py_ssize_t copy_rr(Rewrite* rw, size_t off) noexcept nogil:
    """Copies the record at off, with RDLENGTH recomputed; returns the input offset after it, or -1."""
    cdef Py_ssize_t pos = copy_name(rw, off, 1)
    cdef size_t end
    cdef size_t len_at
    if pos < 0 or rw.n - pos < 10 or rd16(rw.msg + pos + 8) > rw.n - pos - 10:
        return -1
    end = pos + 10 + rd16(rw.msg + pos + 8)
    put(rw.out, rw.msg + pos, 8)    # type, class, TTL
    len_at = rw.out.len
    put16(rw.out, 0)
    if copy_rdata(rw, rd16(rw.msg + pos), pos + 10, end) < 0:
        return -1
    set16(rw.out, len_at, rw.out.len - len_at - 2)
    return end


cdef Py_ssize_t copy_rrs(Rewrite* rw, size_t off, int count, bint tc, int* copied) noexcept nogil:
    """Copies count records from off. A truncated (TC) response may end early at a record boundary."""
    cdef Py_ssize_t end
    cdef int i
    copied[0] = 0
    for i in range(count):
        if tc and off == rw.n:
            break
        end = copy_rr(rw, off)
        if end < 0:
            return -1
        off = end
        copied[0] += 1
    return off


cdef int build_cname(const DnsQuery* q, const char* target, size_t target_len, uint32_t ttl,
                     const uint8_t* upstream, size_t upstream_len, uint8_t* out, size_t cap) noexcept nogil:
    cdef uint8_t twire[WIRE_NAME_MAX]
    cdef uint8_t uwire[WIRE_NAME_MAX]
    cdef int tlen
    cdef NameWalk w
    cdef Out o
    cdef Rewrite rw
    cdef Py_ssize_t off
    cdef int an
    cdef int ns
    cdef int rcode
    cdef int i
    cdef uint16_t rtype
    cdef size_t rdata
    cdef bint tc
    if not q.has_question:
        return BUILD_BAD_QUERY
    tlen = name_to_wire(target, target_len, twire)
    if tlen < 0:
        return BUILD_BAD_NAME
    # Upstream must be a response to exactly (target, qtype, qclass), or the combination is a lie.
    if (upstream_len < HEADER_LEN or not (upstream[2] & (FLAG_QR >> 8)) or rd16(upstream + 4) != 1
            or walk_name(upstream, upstream_len, HEADER_LEN, uwire, &w, NULL) < 0
            or upstream_len - w.end < 4 or not same_name(uwire, twire)
            or rd16(upstream + w.end) != q.qtype or rd16(upstream + w.end + 2) != q.qclass):
        return BUILD_BAD_UPSTREAM
    rcode = upstream[3] & 0xF
    tc = (upstream[2] & (FLAG_TC >> 8)) != 0
    start_response(&o, out, cap, q, rcode)
    put16(&o, POINTER | HEADER_LEN)
    put16(&o, TYPE_CNAME)
    put16(&o, q.qclass)
    put32(&o, ttl)
    put16(&o, tlen)
    rw.alias_at = o.len
    put(&o, twire, tlen)
    rw.msg = upstream
    rw.n = upstream_len
    rw.out = &o
    rw.strip = NULL
    rw.alias = twire
    rw.stripped = 0
    off = copy_rrs(&rw, w.end + 4, rd16(upstream + 6), tc, &an)
    if off >= 0:
        off = copy_rrs(&rw, off, rd16(upstream + 8), tc, &ns)
    # Upstream's OPT belongs to its exchange with the filter: an extended rcode there (BADVERS,
    # BADCOOKIE) means no answer came back, and its low bits alone would be a wrong rcode.
    for i in range(rd16(upstream + 10)):
        if off < 0 or (tc and <size_t>off == upstream_len):
            break
        off = rr_end(upstream, upstream_len, off, &rtype, &rdata)
        if off >= 0 and rtype == TYPE_OPT and upstream[rdata - 6] != 0:
            off = -1
    if off < 0:
        return BUILD_BAD_UPSTREAM
    return finish(&o, q, rcode, tc, 1 + an, ns)


cdef int strip_ech(const uint8_t* msg, size_t n, uint8_t* out, size_t* out_len, int* stripped) noexcept nogil:
    cdef Out o
    cdef Strip st
    cdef Rewrite rw
    cdef uint8_t labels[POINTABLE >> 3]
    cdef Py_ssize_t off = HEADER_LEN
    cdef int i
    cdef int copied
    cdef bint tc
    out_len[0] = 0
    stripped[0] = 0
    if n < HEADER_LEN:
        return MALFORMED
    if not (msg[2] & (FLAG_QR >> 8)):
        return NOT_HANDLED
    tc = (msg[2] & (FLAG_TC >> 8)) != 0
    o.buf = out
    o.cap = n
    o.len = 0
    o.full = 0
    st.ranges = NULL
    st.count = 0
    st.cap = 0
    st.labels = labels
    memset(labels, 0, ((n if n < POINTABLE else POINTABLE) + 7) >> 3)  # only offsets below n are read
    rw.msg = msg
    rw.n = n
    rw.out = &o
    rw.strip = &st
    rw.alias = NULL
    rw.stripped = 0
    put(&o, msg, HEADER_LEN)
    for i in range(rd16(msg + 4)):
        off = copy_name(&rw, off, 0)
        if off < 0 or n - off < 4:
            off = -1
            break
        put(&o, msg + off, 4)
        off += 4
    for i in range(3):
        if off >= 0:
            off = copy_rrs(&rw, off, rd16(msg + 6 + 2 * i), tc, &copied)
    free(st.ranges)
    if off < 0 or o.full:
        return MALFORMED
    put(&o, msg + off, n - off)     # bytes after the last record are not ours to judge
    out_len[0] = o.len
    stripped[0] = rw.stripped
    return OK


# ---------------------------------------------------------------------------------------------------
# Python API

cdef class Query:
    """A parsed DNS query: the outcome of parse_query, and the input of the response builders."""

    def __cinit__(self) -> None:
        self._status = MALFORMED  # a Query not made by parse_query holds nothing to answer

    @property
    def status(self) -> ParseStatus:
        return ParseStatus(self._status)

    @property
    def has_header(self) -> bool:
        return self.q.has_header

    @property
    def id(self) -> int:
        return self.q.id

    @property
    def flags(self) -> int:
        return self.q.flags

    @property
    def opcode(self) -> int:
        return self.q.opcode

    @property
    def qdcount(self) -> int:
        return self.q.qdcount

    @property
    def rd(self) -> bool:
        return bool(self.q.flags & 0x0100)

    @property
    def cd(self) -> bool:
        return bool(self.q.flags & 0x0010)

    @property
    def name(self) -> str | None:
        return self.q.name[: self.q.name_len].decode("ascii") if self.q.has_question else None

    @property
    def qtype(self) -> int:
        return self.q.qtype

    @property
    def qclass(self) -> int:
        return self.q.qclass

    @property
    def question_end(self) -> int:
        return self.q.question_end

    @property
    def message_end(self) -> int:
        return self.q.message_end

    @property
    def has_edns(self) -> bool:
        return self.q.has_edns

    @property
    def udp_size(self) -> int:
        return self.q.udp_size

    @property
    def edns_version(self) -> int:
        return self.q.edns_version

    @property
    def dnssec_ok(self) -> bool:
        return self.q.dnssec_ok

    @property
    def max_udp_response(self) -> int:
        return response_limit(&self.q, 0)

    def __repr__(self) -> str:
        return (
            f"Query(status={self.status.name}, id={self.id}, opcode={self.opcode}, name={self.name!r}, "
            f"qtype={self.qtype}, qclass={self.qclass}, edns={self.has_edns}, udp_size={self.udp_size}, "
            f"do={self.dnssec_ok})"
        )


cdef dict _BUILD_ERRORS = {
    BUILD_NO_ROOM: "no room for the response",
    BUILD_BAD_QUERY: "the query cannot be answered this way",
    BUILD_BAD_NAME: "the CNAME target is not a valid host name",
    BUILD_BAD_UPSTREAM: "the upstream response is malformed or answers another question",
}


cdef uint8_t* _alloc(size_t cap) except NULL:
    cdef uint8_t* buf = <uint8_t*>malloc(cap)
    if buf == NULL:
        raise MemoryError()
    return buf


cdef bytes _take(uint8_t* buf, int n):
    """The built response (freeing buf); a builder's failure becomes ValueError."""
    try:
        if n < 0:
            raise ValueError(_BUILD_ERRORS[n])
        return PyBytes_FromStringAndSize(<char*>buf, n)
    finally:
        free(buf)


def _parse_query(data: bytes | bytearray | memoryview) -> Query:
    cdef const uint8_t[::1] v = data
    cdef Query query = Query.__new__(Query)
    query._status = parse_query(&v[0], v.shape[0], &query.q)
    return query


def _frame_length(buf: bytes | bytearray | memoryview) -> int | None:
    cdef const uint8_t[::1] v = buf
    cdef size_t length
    if frame_length(&v[0], v.shape[0], &length) == OK:
        return length
    return None


def _strip_ech(response: bytes | bytearray | memoryview) -> tuple[ParseStatus, bytes, int]:
    cdef const uint8_t[::1] v = response
    cdef size_t n = v.shape[0]
    cdef uint8_t* buf = _alloc(n + 1)
    cdef size_t out_len
    cdef int count
    cdef int status = strip_ech(&v[0], n, buf, &out_len, &count)
    try:
        if status == OK and count:
            return ParseStatus(status), PyBytes_FromStringAndSize(<char*>buf, out_len), count
        return ParseStatus(status), bytes(response), 0
    finally:
        free(buf)


cdef bytes _error(Query query, int rcode):
    cdef size_t cap = response_limit(&query.q, 0)
    cdef uint8_t* buf = _alloc(cap)
    return _take(buf, build_error(&query.q, rcode, buf, cap))


cdef bytes _negative(Query query, int rcode, uint32_t ttl):
    cdef size_t cap = response_limit(&query.q, 0)
    cdef uint8_t* buf = _alloc(cap)
    return _take(buf, build_negative(&query.q, rcode, ttl, buf, cap))


def formerr(Query query) -> bytes:
    return _error(query, RCODE_FORMERR)


def servfail(Query query) -> bytes:
    return _error(query, RCODE_SERVFAIL)


def notimp(Query query) -> bytes:
    return _error(query, RCODE_NOTIMP)


def refused(Query query) -> bytes:
    return _error(query, RCODE_REFUSED)


def badvers(Query query) -> bytes:
    return _error(query, RCODE_BADVERS)


def nxdomain(Query query, ttl: int = 60) -> bytes:
    return _negative(query, RCODE_NXDOMAIN, ttl)


def nodata(Query query, ttl: int = 60) -> bytes:
    return _negative(query, RCODE_NOERROR, ttl)


def block_answer(Query query, ipv4: str | None = None, ipv6: str | None = None, ttl: int = 60) -> bytes:
    cdef bytes a4 = socket.inet_pton(socket.AF_INET, ipv4) if ipv4 is not None else None
    cdef bytes a6 = socket.inet_pton(socket.AF_INET6, ipv6) if ipv6 is not None else None
    cdef size_t cap = response_limit(&query.q, 0)
    cdef uint8_t* buf = _alloc(cap)
    return _take(buf, build_block(&query.q, <const uint8_t*><char*>a4 if a4 is not None else NULL,
                                  <const uint8_t*><char*>a6 if a6 is not None else NULL, ttl, buf, cap))


def cname_answer(Query query, target: str, upstream: bytes | bytearray | memoryview, ttl: int = 60, *, tcp: bool = False) -> bytes:
    cdef bytes t = target.encode("ascii")
    cdef const uint8_t[::1] up = upstream
    cdef size_t cap = response_limit(&query.q, tcp)
    cdef uint8_t* buf = _alloc(cap)
    return _take(buf, build_cname(&query.q, t, len(t), ttl, &up[0], up.shape[0], buf, cap))


# The C functions of these names are declared in dns.pxd for other Cython modules; Python callers get
# the wrappers under the same names (a def cannot share a name with a cdef function in one module).
for _c_name, _wrapper in (("parse_query", _parse_query), ("frame_length", _frame_length),
                          ("strip_ech", _strip_ech)):
    _wrapper.__name__ = _wrapper.__qualname__ = _c_name
    globals()[_c_name] = _wrapper
del _c_name, _wrapper, _parse_query, _frame_length, _strip_ech
