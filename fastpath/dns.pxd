# C-level DNS for the DNS filter's hot loop and the batch classifier: query parsing, TCP framing,
# response building into caller buffers, and ECH stripping of upstream answers. No Python objects.
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from fastpath.names cimport NAME_BUF

cdef enum:
    HEADER_LEN = 12
    WIRE_NAME_MAX = 255     # a name on the wire: length bytes and the root label included
    UDP_MIN = 512           # what a client without EDNS can take (RFC 1035)
    EDNS_PAYLOAD = 1232     # the UDP payload we advertise, and the cap on UDP answers (no fragmentation)
    TCP_MAX = 65535
    TYPE_A = 1
    TYPE_CNAME = 5
    TYPE_SOA = 6
    TYPE_AAAA = 28
    TYPE_OPT = 41
    TYPE_SVCB = 64
    TYPE_HTTPS = 65
    CLASS_IN = 1
    SVC_MANDATORY = 0       # SvcParamKeys (RFC 9460)
    SVC_ECH = 5
    RCODE_NOERROR = 0
    RCODE_FORMERR = 1
    RCODE_SERVFAIL = 2
    RCODE_NXDOMAIN = 3
    RCODE_NOTIMP = 4
    RCODE_REFUSED = 5
    RCODE_BADVERS = 16      # extended: the upper 8 bits travel in the OPT record
    # Builder failures are negative, so a result >= 0 is always a message length.
    BUILD_NO_ROOM = -1      # cap is below even a truncated response
    BUILD_BAD_QUERY = -2    # the query lacks what the response needs (a header; a question for answers)
    BUILD_BAD_NAME = -3     # the CNAME target is not a valid host name
    BUILD_BAD_UPSTREAM = -4 # the upstream response is malformed or answers another question

cdef struct DnsQuery:
    uint16_t id
    uint16_t flags                      # header bytes 2..3 as sent
    uint8_t opcode
    uint16_t qdcount
    bint has_header                     # 12 bytes or more: the fields above are valid
    bint has_question                   # exactly one question, parsed: the fields below are valid
    char name[NAME_BUF]                 # normalised question name, NUL-terminated; "" for the root
    int name_len
    uint8_t qname_wire[WIRE_NAME_MAX]   # the question name as sent (case kept for 0x20), uncompressed
    int qname_wire_len
    uint16_t qtype
    uint16_t qclass
    size_t question_end                 # offset just past the question
    bint has_edns                       # exactly one valid OPT record
    uint16_t udp_size                   # the client's advertised UDP payload size, as sent
    uint8_t edns_version
    bint dnssec_ok                      # the DO bit
    size_t message_end                  # offset just past the last record: bytes after it are ignored

# Returns a ParseStatus (fastpath.names): OK for a standard query with one question whose name follows
# the name rules; NOT_HANDLED for a response, an opcode other than QUERY, or qdcount != 1 (out is
# still filled as far as the message allows, so a NOTIMP/FORMERR can be addressed); MALFORMED for
# truncation, bad labels or compression, an invalid name, or more than one OPT record.
cdef int parse_query(const uint8_t* msg, size_t n, DnsQuery* out) noexcept nogil

# DNS over TCP: NEED_MORE until buf holds the 2-byte length prefix and the whole first message, then
# OK with *msg_len set (the message is buf[2:2 + *msg_len]).
cdef int frame_length(const uint8_t* buf, size_t n, size_t* msg_len) noexcept nogil

# The largest response the client accepts: 65535 over TCP, else its EDNS size clamped to
# UDP_MIN..EDNS_PAYLOAD, or UDP_MIN without EDNS. Pass min(this, buffer size) as a builder's cap.
cdef size_t response_limit(const DnsQuery* q, bint tcp) noexcept nogil

# Builders write a complete response to out (at most cap bytes) and return its length, or a BUILD_*
# error. Each echoes ID, opcode, RD and CD, sets QR and RA, copies the question as the client sent it,
# and adds an OPT record (payload EDNS_PAYLOAD, DO echoed) when the query had EDNS. A response over
# cap is replaced by header, question and OPT with TC set, so the client retries over TCP.

# Header-only errors: FORMERR, SERVFAIL, NOTIMP, REFUSED, or BADVERS (needs EDNS in the query).
cdef int build_error(const DnsQuery* q, int rcode, uint8_t* out, size_t cap) noexcept nogil
# NXDOMAIN (rcode RCODE_NXDOMAIN) or NODATA (RCODE_NOERROR), with a synthetic SOA whose TTL and
# minimum are ttl, so that negative caches keep the answer for ttl seconds at most.
cdef int build_negative(const DnsQuery* q, int rcode, uint32_t ttl, uint8_t* out, size_t cap) noexcept nogil
# A block page: an A record with ipv4 (4 bytes) for an IN A query, an AAAA with ipv6 (16 bytes) for
# AAAA; NODATA for other types or when the address is NULL.
cdef int build_block(const DnsQuery* q, const uint8_t* ipv4, const uint8_t* ipv6, uint32_t ttl,
                     uint8_t* out, size_t cap) noexcept nogil
# Safe-search rewrite: the client's question, a CNAME (TTL ttl) to target (a host name of target_len
# bytes), then the answer and authority records of upstream, the upstream server's response for
# target with the client's qtype and qclass. Upstream's rcode and TC bit are kept; its names are
# written out in full (its compression pointers are relative to its own message). An upstream with an
# extended rcode in its OPT record (BADVERS, BADCOOKIE) has not answered: BUILD_BAD_UPSTREAM.
cdef int build_cname(const DnsQuery* q, const char* target, size_t target_len, uint32_t ttl,
                     const uint8_t* upstream, size_t upstream_len, uint8_t* out, size_t cap) noexcept nogil

# Removes the ech SvcParam (and its entry in mandatory) from every HTTPS and SVCB record of a
# response, fixing RDLENGTH and every compression pointer that the removal shifts. out needs n bytes.
# Returns OK (*out_len and *stripped set; with *stripped == 0 the caller can keep msg), NOT_HANDLED
# for a query, or MALFORMED (the filter then answers SERVFAIL), which includes a pointer to anything
# but a label of a name earlier in the message: compressors never write one, and after the rewrite it
# could read different bytes.
cdef int strip_ech(const uint8_t* msg, size_t n, uint8_t* out, size_t* out_len, int* stripped) noexcept nogil

# A parsed query for Python callers; Cython callers can take its DnsQuery directly.
cdef class Query:
    cdef DnsQuery q
    cdef int _status
