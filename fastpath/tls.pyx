# cython: language_level=3
"""TLS ClientHello parsing: the record layer, the handshake message, and its SNI, ALPN and ECH.

Sans-IO: bytes in, a ParseStatus and a ClientHelloInfo out. Every read is bounds-checked against both
the bytes present and the lengths the message declares."""

import cython
from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcpy

from fastpath.names cimport MALFORMED, NEED_MORE, NO_NAME, NOT_HANDLED, OK, ends_in_number, normalise_name

from fastpath.names import ParseStatus

cdef enum:
    CONTENT_HANDSHAKE = 22
    HS_CLIENT_HELLO = 1
    EXT_SERVER_NAME = 0
    EXT_ALPN = 16
    EXT_SUPPORTED_VERSIONS = 43
    EXT_ECH = 0xfe0d
    # legacy_version(2) random(32) session_id length(1) cipher_suites length(2) >= 2 suites bytes,
    # compression_methods length(1) >= 1 method: the shortest possible ClientHello body.
    CH_MIN_BODY = 2 + 32 + 1 + 2 + 2 + 1 + 1
    # Every field at its maximum (session_id 32, cipher_suites 65534, compression 255, extensions
    # 65535): a longer declared length cannot be a ClientHello, so it need not be waited for.
    CH_MAX_BODY = 2 + 32 + 1 + 32 + 2 + 65534 + 1 + 255 + 2 + 65535
    # Which of the extensions we read have been seen (each may appear at most once, RFC 8446 4.2).
    SEEN_SNI = 1
    SEEN_ALPN = 2
    SEEN_VERSIONS = 4
    SEEN_ECH = 8


cdef inline uint16_t be16(const uint8_t* p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef inline size_t be24(const uint8_t* p) noexcept nogil:
    return (<size_t>p[0] << 16) | (<size_t>p[1] << 8) | p[2]


cdef inline bint is_grease(uint16_t v) noexcept nogil:
    # RFC 8701: 0x0A0A, 0x1A1A, ... 0xFAFA, for versions, extension types and ALPN identifiers.
    return (v & 0x0f0f) == 0x0a0a and (v >> 8) == (v & 0xff)


cdef void reset_info(ClientHelloInfo* out) noexcept nogil:
    out.sni[0] = 0
    out.sni_len = -1
    out.alpn[0] = 0
    out.alpn_len = 0
    out.has_ech = False
    out.legacy_version = 0
    out.max_version = 0


cdef int parse_sni(const uint8_t* ext, size_t n, ClientHelloInfo* out) noexcept nogil:
    # RFC 6066 3: server_name_list<1..2^16-1> of (name_type, opaque<1..2^16-1>), at most one per type.
    cdef size_t i = 2
    cdef size_t name_len
    cdef int norm
    if n < 3 or <size_t>be16(ext) + 2 != n:
        return MALFORMED
    out.sni_len = 0
    while i < n:
        if i + 3 > n:
            return MALFORMED
        name_len = be16(ext + i + 1)
        if name_len == 0 or i + 3 + name_len > n:
            return MALFORMED
        if ext[i] == 0:
            # A second host_name would let the filter and the server read different names.
            if out.sni_len > 0:
                return MALFORMED
            norm = normalise_name(ext + i + 3, name_len, out.sni)
            if norm <= 0:
                return MALFORMED
            out.sni_len = norm
        i += 3 + name_len
    return OK


cdef int parse_alpn(const uint8_t* ext, size_t n, ClientHelloInfo* out) noexcept nogil:
    # RFC 7301 3.1: protocol_name_list<2..2^16-1> of opaque<1..2^8-1>.
    cdef size_t i = 2
    cdef size_t name_len, j
    cdef bint printable
    cdef bint full = False
    if n < 3 or <size_t>be16(ext) + 2 != n:
        return MALFORMED
    while i < n:
        name_len = ext[i]
        if name_len == 0 or i + 1 + name_len > n:
            return MALFORMED
        i += 1
        if name_len == 2 and is_grease(be16(ext + i)):
            i += name_len
            continue
        # Names are opaque bytes; only those that read as text without the ',' separator can be
        # listed unambiguously, and no policy keys on any other.
        printable = True
        for j in range(name_len):
            if ext[i + j] < 0x21 or ext[i + j] > 0x7e or ext[i + j] == 44:
                printable = False
                break
        if printable and not full:
            if out.alpn_len + (out.alpn_len > 0) + <int>name_len >= ALPN_BUF:
                full = True  # keep the list a prefix of the client's, ending at a whole name
            else:
                if out.alpn_len > 0:
                    out.alpn[out.alpn_len] = 44
                    out.alpn_len += 1
                memcpy(out.alpn + out.alpn_len, ext + i, name_len)
                out.alpn_len += <int>name_len
                out.alpn[out.alpn_len] = 0
        i += name_len
    return OK


cdef int parse_versions(const uint8_t* ext, size_t n, ClientHelloInfo* out) noexcept nogil:
    # RFC 8446 4.2.1: ClientHello form, versions<2..254> of uint16.
    cdef size_t i
    cdef uint16_t v
    cdef bint found = False
    if n < 3 or <size_t>ext[0] + 1 != n or (ext[0] & 1):
        return MALFORMED
    for i in range(1, n, 2):
        v = be16(ext + i)
        if not is_grease(v) and (not found or v > out.max_version):
            out.max_version = v
            found = True
    return OK


cdef int parse_body(const uint8_t* body, size_t n, ClientHelloInfo* out) noexcept nogil:
    cdef size_t pos = 34
    cdef size_t field, ext_len
    cdef uint16_t ext_type
    cdef int seen = 0
    cdef int bit
    cdef int status = OK
    if n < CH_MIN_BODY or body[0] != 3:  # legacy_version is 3.x in SSL 3.0 and every TLS
        return MALFORMED
    out.legacy_version = be16(body)
    out.max_version = out.legacy_version
    field = body[pos]
    if field > 32 or pos + 1 + field + 2 > n:
        return MALFORMED
    pos += 1 + field
    field = be16(body + pos)
    if field < 2 or (field & 1) or pos + 2 + field + 1 > n:
        return MALFORMED
    pos += 2 + field
    field = body[pos]
    if field < 1 or pos + 1 + field > n:
        return MALFORMED
    pos += 1 + field
    if pos == n:
        return NO_NAME  # before TLS 1.3, extensions may be absent altogether
    if pos + 2 > n or pos + 2 + be16(body + pos) != n:
        return MALFORMED
    pos += 2
    while pos < n:
        if pos + 4 > n:
            return MALFORMED
        ext_type = be16(body + pos)
        ext_len = be16(body + pos + 2)
        pos += 4
        if pos + ext_len > n:
            return MALFORMED
        if ext_type == EXT_SERVER_NAME:
            bit = SEEN_SNI
            status = parse_sni(body + pos, ext_len, out)
        elif ext_type == EXT_ALPN:
            bit = SEEN_ALPN
            status = parse_alpn(body + pos, ext_len, out)
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            bit = SEEN_VERSIONS
            status = parse_versions(body + pos, ext_len, out)
        elif ext_type == EXT_ECH:
            bit = SEEN_ECH
            out.has_ech = True
            status = OK if ext_len > 0 else MALFORMED  # ECHClientHello starts with its type byte
        else:
            bit = 0  # GREASE and every other extension: skipped
            status = OK
        # A duplicate would let the filter and the server disagree about which one counts.
        if status != OK or (seen & bit):
            return MALFORMED
        seen |= bit
        pos += ext_len
    if out.sni_len > 0 and ends_in_number(out.sni, out.sni_len):
        # RFC 6066 forbids an address as server_name: what it names is the IP the client connects to.
        out.sni_len = 0
        out.sni[0] = 0
    return OK if out.sni_len > 0 else NO_NAME


cdef int parse_client_hello(const uint8_t* msg, size_t n, ClientHelloInfo* out) noexcept nogil:
    cdef size_t body_len
    cdef int status
    reset_info(out)
    if n < 1:
        return NEED_MORE
    if msg[0] != HS_CLIENT_HELLO:
        return NOT_HANDLED
    if n < 4:
        return NEED_MORE
    body_len = be24(msg + 1)
    if body_len > CH_MAX_BODY:
        return MALFORMED
    if n - 4 < body_len:
        return NEED_MORE
    status = parse_body(msg + 4, body_len, out)
    if status == MALFORMED:
        reset_info(out)  # never hand out a name from a message we rejected
    return status


cdef inline bint is_handshake_record(const uint8_t* data, size_t n) noexcept nogil:
    # A handshake record with a 3.x record version, as far as the bytes go.
    return n >= 1 and data[0] == CONTENT_HANDSHAKE and (n < 2 or data[1] == 3)


cdef bint looks_like_tls_start(const uint8_t* data, size_t n) noexcept nogil:
    # Stricter than is_handshake_record, as this picks a connection's first segment from ones in the
    # middle: record versions 3.0 to 3.4, a record length TLS allows, and a ClientHello inside. A
    # first segment always holds all six bytes.
    return (n >= 6 and data[0] == CONTENT_HANDSHAKE and data[1] == 3 and data[2] <= 4
            and be16(data + 3) > 0 and be16(data + 3) <= TLS_RECORD_MAX and data[5] == HS_CLIENT_HELLO)


cdef int parse_tls_stream(const uint8_t* data, size_t n, uint8_t* scratch, size_t scratch_cap,
                          ClientHelloInfo* out) noexcept nogil:
    cdef size_t pos = 0
    cdef size_t got = 0
    cdef size_t need = 4  # the handshake header until its length is known
    cdef size_t rec_len, have, take
    reset_info(out)
    if not is_handshake_record(data, n):
        return NEED_MORE if n == 0 else NOT_HANDLED
    while True:
        # Later records must continue the handshake (RFC 8446 5.1: no interleaving of other types).
        if pos < n and data[pos] != CONTENT_HANDSHAKE:
            return MALFORMED
        if pos + 1 < n and data[pos + 1] != 3:
            return MALFORMED
        if n - pos < 5:
            return NEED_MORE
        rec_len = be16(data + pos + 3)
        if rec_len == 0 or rec_len > TLS_RECORD_MAX:
            return MALFORMED
        pos += 5
        have = rec_len if n - pos >= rec_len else n - pos
        if got == 0 and have >= 4 and 4 + be24(data + pos + 1) <= rec_len:
            # The whole message lies in the first record (the usual case): parse it where it is.
            return parse_client_hello(data + pos, have, out)
        while have > 0:
            take = need - got if need - got < have else have
            if got + take > scratch_cap:
                return MALFORMED
            memcpy(scratch + got, data + pos, take)
            got += take
            pos += take
            have -= take
            if scratch[0] != HS_CLIENT_HELLO:
                return parse_client_hello(scratch, got, out)  # NOT_HANDLED
            if need == 4 and got == 4:
                need = 4 + be24(scratch + 1)
                if need > scratch_cap or need - 4 > CH_MAX_BODY:
                    return MALFORMED
            if got == need:
                return parse_client_hello(scratch, got, out)
        if pos == n:
            return NEED_MORE  # the message continues past what has arrived


@cython.dataclasses.dataclass(frozen=True)
cdef class ClientHello:
    """What a ClientHello says about where the client is going. Fields other than status are empty
    unless status is OK or NO_NAME."""
    status: object
    sni: object
    alpn: tuple
    has_ech: cython.bint
    legacy_version: int
    max_version: int


cdef object client_hello_object(int status, const ClientHelloInfo* info):
    alpn = info.alpn[:info.alpn_len].decode("ascii").split(",") if info.alpn_len > 0 else ()
    return ClientHello(
        status=ParseStatus(status),
        sni=info.sni[:info.sni_len].decode("ascii") if info.sni_len > 0 else None,
        alpn=tuple(alpn),
        has_ech=info.has_ech,
        legacy_version=info.legacy_version,
        max_version=info.max_version,
    )


def parse_stream(record_stream: bytes) -> ClientHello:
    """Parses the first bytes a client sent on a TLS connection (TLS records, in order)."""
    cdef const uint8_t[::1] data = record_stream
    cdef bytearray scratch = bytearray(len(record_stream))  # the message is never longer than its records
    cdef uint8_t* scratch_ptr = scratch
    cdef ClientHelloInfo info
    cdef int status
    status = parse_tls_stream(&data[0] if data.shape[0] else NULL, data.shape[0], scratch_ptr,
                              data.shape[0], &info)
    return client_hello_object(status, &info)


def parse_handshake(message: bytes) -> ClientHello:
    """Parses one handshake message (type, uint24 length, body) such as QUIC carries in CRYPTO frames."""
    cdef const uint8_t[::1] data = message
    cdef ClientHelloInfo info
    cdef int status
    status = parse_client_hello(&data[0] if data.shape[0] else NULL, data.shape[0], &info)
    return client_hello_object(status, &info)
