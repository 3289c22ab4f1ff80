# C-level HTTP/1.x request-head parsing: method, request target, path and the host it names.
from libc.stdint cimport uint8_t
from fastpath.names cimport NAME_BUF

cdef struct HttpRequestInfo:
    char host[NAME_BUF]     # normalised host (lower case; port, trailing dot removed), NUL-terminated
    int host_len            # length of host, or -1 when the request names no host
    bint host_is_ip         # host is an IPv4 or [IPv6] literal rather than a name (status NO_NAME)
    int port                # port given with the host, or -1
    int version_minor       # x in HTTP/1.x
    # Spans of the parsed bytes, exactly as sent (nothing percent-decoded):
    size_t method_off
    size_t method_len
    size_t target_off       # the request-target
    size_t target_len
    size_t path_off         # origin-form: the whole target; absolute-form: what follows the authority;
    size_t path_len         # empty for authority-form (CONNECT) and asterisk-form (OPTIONS *)
    size_t match_len        # length of the path before any '#' fragment
    size_t head_len         # request line and header fields through the empty line

# data holds the first n bytes of a plain-HTTP connection. Returns a ParseStatus: OK (a host name),
# NO_NAME (no host, or an IP literal), NEED_MORE (a valid prefix; the head is not complete),
# MALFORMED (not an HTTP/1.x request head, or an invalid or ambiguous host) or NOT_HANDLED
# (an HTTP version other than 1.x, e.g. the HTTP/2 prior-knowledge preface "PRI * HTTP/2.0").
cdef int parse_http_request(const uint8_t* data, size_t n, HttpRequestInfo* out) noexcept nogil

# Whether a segment's payload starts like a connection's first request: a common method and a space.
cdef bint looks_like_http_start(const uint8_t* data, size_t n) noexcept nogil

# The Python-level HttpRequest for a parse result over data.
cdef object http_request_object(int status, const HttpRequestInfo* info, const uint8_t* data)
