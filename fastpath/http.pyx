# cython: language_level=3
"""HTTP/1.x request heads from the first bytes of a plain-HTTP connection (RFC 9112).

Sans-IO: bytes in, a ParseStatus and an HttpRequestInfo out. The head is checked byte by byte as it
arrives, so a stream that cannot become a request is MALFORMED at once rather than NEED_MORE."""

import cython
from libc.stdint cimport uint8_t
from libc.string cimport memcmp, strlen

from fastpath.names cimport (
    MALFORMED,
    NAME_MAX,
    NEED_MORE,
    NO_NAME,
    NOT_HANDLED,
    OK,
    ends_in_number,
    normalise_name,
)

from fastpath.names import ParseStatus

cdef enum:
    HTAB = 9
    LF = 10
    CR = 13
    SP = 32
    # "HTTP/" DIGIT "." DIGIT
    VERSION_LEN = 8
    # Whole-line answers of line_end (an index otherwise).
    LINE_INCOMPLETE = -1
    LINE_BAD = -2


cdef const char* HTTP_PREFIX = b"HTTP/"


cdef inline bint is_tchar(uint8_t c) noexcept nogil:
    # RFC 9110 5.6.2 token characters.
    if (c >= 97 and c <= 122) or (c >= 65 and c <= 90) or (c >= 48 and c <= 57):
        return True
    return c in b"!#$%&'*+-.^_`|~"


cdef inline bint is_target_char(uint8_t c) noexcept nogil:
    # Visible ASCII, plus 8-bit bytes that some clients send unescaped and servers accept.
    return c > SP and c != 127


cdef inline bint is_value_char(uint8_t c) noexcept nogil:
    # RFC 9110 5.5 field-vchar, SP and HTAB, and obs-text; no other control byte.
    return c == HTAB or (c >= SP and c != 127)


cdef inline bint is_digit(uint8_t c) noexcept nogil:
    return c >= 48 and c <= 57


cdef inline bint is_hex(uint8_t c) noexcept nogil:
    return is_digit(c) or (c >= 97 and c <= 102) or (c >= 65 and c <= 70)


cdef inline Py_ssize_t line_end(const uint8_t* d, size_t i, size_t n) noexcept nogil:
    # The index after a CRLF (or a bare LF, RFC 9112 2.2) at i.
    if i >= n:
        return LINE_INCOMPLETE
    if d[i] == LF:
        return <Py_ssize_t>(i + 1)
    if d[i] != CR:
        return LINE_BAD
    if i + 1 >= n:
        return LINE_INCOMPLETE
    return <Py_ssize_t>(i + 2) if d[i + 1] == LF else LINE_BAD


cdef int parse_authority(const uint8_t* a, size_t n, HttpRequestInfo* out) noexcept nogil:
    """Reads host[:port] into out; OK, NO_NAME (empty or an IP literal) or MALFORMED."""
    cdef size_t host_end
    cdef size_t i
    cdef int port = 0
    cdef int norm
    if n == 0:
        return NO_NAME
    if a[0] == 91:  # '[': an IPv6 literal, kept with its brackets and lower-cased
        host_end = 1
        while host_end < n and a[host_end] != 93:
            if not (is_hex(a[host_end]) or a[host_end] == 58 or a[host_end] == 46):
                return MALFORMED
            host_end += 1
        if host_end == n or host_end < 3 or host_end + 1 > NAME_MAX:
            return MALFORMED
        host_end += 1
        for i in range(host_end):
            out.host[i] = <char>(a[i] | 0x20 if a[i] >= 65 and a[i] <= 70 else a[i])
        out.host[host_end] = 0
        out.host_len = <int>host_end
        out.host_is_ip = True
    else:
        host_end = 0
        while host_end < n and a[host_end] != 58:
            host_end += 1
        if host_end == 0:
            return MALFORMED
        norm = normalise_name(a, host_end, out.host)
        if norm <= 0:
            return MALFORMED
        out.host_len = norm
        out.host_is_ip = ends_in_number(out.host, norm)
    if host_end < n:
        if a[host_end] != 58 or n - host_end - 1 > 5:
            return MALFORMED
        for i in range(host_end + 1, n):
            if not is_digit(a[i]):
                return MALFORMED
            port = port * 10 + (a[i] - 48)
        if port > 65535:
            return MALFORMED
        out.port = port if n > host_end + 1 else -1  # "host:" is allowed and means the default
    return NO_NAME if out.host_is_ip else OK


cdef int parse_target(const uint8_t* d, HttpRequestInfo* out) noexcept nogil:
    """Splits the request-target into its authority (read into out) and path. MALFORMED if it is none
    of the four forms of RFC 9112 3.2; else what the authority says, NO_NAME if it has none."""
    cdef const uint8_t* t = d + out.target_off
    cdef size_t n = out.target_len
    cdef size_t i = 0
    cdef size_t auth_start
    if t[0] == 47:  # '/': origin-form
        out.path_off = out.target_off
        out.path_len = n
        return NO_NAME
    if n == 1 and t[0] == 42:  # '*'
        return NO_NAME if out.method_len == 7 and memcmp(d + out.method_off, b"OPTIONS", 7) == 0 else MALFORMED
    if out.method_len == 7 and memcmp(d + out.method_off, b"CONNECT", 7) == 0:
        return parse_authority(t, n, out)
    # absolute-form: scheme "://" authority [path-abempty] [ "?" query ]
    while i < n and (is_tchar(t[i]) and t[i] != 58):
        i += 1
    if i == 0 or i + 3 > n or t[i] != 58 or t[i + 1] != 47 or t[i + 2] != 47:
        return MALFORMED
    i += 3
    auth_start = i
    while i < n and t[i] != 47 and t[i] != 63 and t[i] != 35:
        if t[i] == 64:  # userinfo: RFC 9110 4.2.4 has recipients treat it as an error
            return MALFORMED
        i += 1
    if i == auth_start:
        return MALFORMED  # RFC 9110 4.2.1: an http URI with an empty host is invalid
    out.path_off = out.target_off + i
    out.path_len = n - i
    return parse_authority(t + auth_start, i - auth_start, out)


cdef int parse_head(const uint8_t* d, size_t n, HttpRequestInfo* out,
                    size_t* host_off, size_t* host_len) noexcept nogil:
    """Walks the request line and header fields; OK once the empty line is reached."""
    cdef size_t i = 0
    cdef size_t start, value_end, k
    cdef Py_ssize_t end
    cdef uint8_t c
    # RFC 9112 2.2: empty lines before the request line are ignored.
    while i < n and (d[i] == CR or d[i] == LF):
        end = line_end(d, i, n)
        if end < 0:
            return NEED_MORE if end == LINE_INCOMPLETE else MALFORMED
        i = <size_t>end
    start = i
    while i < n and is_tchar(d[i]):
        i += 1
    if i == n:
        return NEED_MORE
    if i == start or d[i] != SP:
        return MALFORMED
    out.method_off = start
    out.method_len = i - start
    i += 1
    start = i
    while i < n and is_target_char(d[i]):
        i += 1
    if i == n:
        return NEED_MORE
    if i == start or d[i] != SP:
        return MALFORMED
    out.target_off = start
    out.target_len = i - start
    i += 1
    for k in range(<size_t>VERSION_LEN):
        if i + k == n:
            return NEED_MORE
        c = d[i + k]
        if k < 5:
            if c != HTTP_PREFIX[k]:
                return MALFORMED
        elif k == 6:
            if c != 46:
                return MALFORMED
        elif not is_digit(c):
            return MALFORMED
    if d[i + 5] != 49:
        return NOT_HANDLED  # not HTTP/1.x (HTTP/2 prior knowledge starts "PRI * HTTP/2.0")
    out.version_minor = d[i + 7] - 48
    end = line_end(d, i + VERSION_LEN, n)
    while True:
        if end < 0:
            return NEED_MORE if end == LINE_INCOMPLETE else MALFORMED
        i = <size_t>end
        if i == n:
            return NEED_MORE
        if d[i] == CR or d[i] == LF:
            end = line_end(d, i, n)
            if end < 0:
                return NEED_MORE if end == LINE_INCOMPLETE else MALFORMED
            out.head_len = <size_t>end
            return OK
        start = i
        while i < n and is_tchar(d[i]):
            i += 1
        if i == n:
            return NEED_MORE
        # No name (obs-fold continuation lines included) or space before the colon: RFC 9112 5.
        if i == start or d[i] != 58:
            return MALFORMED
        k = i - start
        i += 1
        while i < n and (d[i] == SP or d[i] == HTAB):
            i += 1
        value_end = i
        while value_end < n and is_value_char(d[value_end]):
            value_end += 1
        end = line_end(d, value_end, n)
        if k == 4 and end >= 0:
            if ((d[start] | 0x20) == 104 and (d[start + 1] | 0x20) == 111 and (d[start + 2] | 0x20) == 115
                    and (d[start + 3] | 0x20) == 116):
                if host_off[0] != 0:
                    return MALFORMED  # RFC 9112 3.2: more than one Host field
                while value_end > i and (d[value_end - 1] == SP or d[value_end - 1] == HTAB):
                    value_end -= 1
                host_off[0] = i
                host_len[0] = value_end - i


cdef void reset_info(HttpRequestInfo* out) noexcept nogil:
    out.host[0] = 0
    out.host_len = -1
    out.host_is_ip = False
    out.port = -1
    out.version_minor = 0
    out.method_off = out.method_len = 0
    out.target_off = out.target_len = 0
    out.path_off = out.path_len = 0
    out.match_len = 0
    out.head_len = 0


cdef int parse_http_request(const uint8_t* data, size_t n, HttpRequestInfo* out) noexcept nogil:
    cdef size_t host_off = 0  # 0 means absent: a field value can never start at offset 0
    cdef size_t host_len = 0
    cdef HttpRequestInfo header
    cdef int status
    cdef size_t i
    reset_info(out)
    status = parse_head(data, n, out, &host_off, &host_len)
    if status == OK:
        status = parse_target(data, out)
        if host_off != 0:
            reset_info(&header)
            if status == NO_NAME and out.host_len < 0:
                # The target names no host: the Host field does.
                status = parse_authority(data + host_off, host_len, out)
            elif status != MALFORMED and (
                    parse_authority(data + host_off, host_len, &header) == MALFORMED
                    or header.host_len != out.host_len
                    or memcmp(header.host, out.host, <size_t>out.host_len) != 0):
                # RFC 9112 3.2.2 has the server take the target's host, but a server that reads the
                # Host field instead would see a different site: no single answer is safe.
                status = MALFORMED
        elif out.version_minor >= 1 and out.host_len < 0:
            status = MALFORMED  # RFC 9112 3.2: HTTP/1.1 requires a Host field
    if status == MALFORMED or status == NEED_MORE or status == NOT_HANDLED:
        reset_info(out)
        return status
    out.match_len = out.path_len
    for i in range(out.path_len):
        if data[out.path_off + i] == 35:
            out.match_len = i
            break
    return status


# Methods that mark a segment as a connection's first (RFC 9110 9.3, PATCH, and the HTTP/2 preface).
# None is the tail of another, so a segment cut inside a method is not taken for a start.
cdef const char* START_METHODS[10]
START_METHODS[:] = [b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"CONNECT ", b"OPTIONS ", b"TRACE ",
                    b"PATCH ", b"PRI "]


cdef bint looks_like_http_start(const uint8_t* data, size_t n) noexcept nogil:
    cdef size_t i, length
    for i in range(10):
        length = strlen(START_METHODS[i])
        if n >= length and memcmp(data, START_METHODS[i], length) == 0:
            return True
    return False


@cython.dataclasses.dataclass(frozen=True)
cdef class HttpRequest:
    """An HTTP/1.x request head. Fields other than status are empty unless status is OK or NO_NAME.

    For page-level URL lists, compare `url`: the lower-cased host (port and trailing dot removed)
    followed by the path exactly as sent (not percent-decoded; query kept; any '#' fragment dropped),
    with a "/" put in front when the path does not start with one (it is empty, or only a query)."""
    status: object
    method: object
    target: object
    path: object
    host: object
    host_is_ip: cython.bint
    port: object
    url: object
    head_length: int


cdef object http_request_object(int status, const HttpRequestInfo* info, const uint8_t* data):
    if status != OK and status != NO_NAME:
        return HttpRequest(ParseStatus(status), None, None, None, None, False, None, None, 0)
    host = info.host[:info.host_len].decode("ascii") if info.host_len > 0 else None
    path = data[info.path_off:info.path_off + info.path_len]
    url = None
    if host is not None:
        match = data[info.path_off:info.path_off + info.match_len]
        url = host.encode("ascii") + (match if match.startswith(b"/") else b"/" + match)
    return HttpRequest(
        status=ParseStatus(status),
        method=data[info.method_off:info.method_off + info.method_len].decode("ascii"),
        target=data[info.target_off:info.target_off + info.target_len],
        path=path,
        host=host,
        host_is_ip=info.host_is_ip,
        port=info.port if info.port >= 0 else None,
        url=url,
        head_length=info.head_len,
    )


def parse_request(data: bytes) -> HttpRequest:
    """Parses the first bytes of a plain-HTTP connection (one request head; a body may follow)."""
    cdef const uint8_t[::1] view = data
    cdef const uint8_t* ptr = &view[0] if view.shape[0] else NULL
    cdef HttpRequestInfo info
    cdef int status
    status = parse_http_request(ptr, view.shape[0], &info)
    return http_request_object(status, &info, ptr)
