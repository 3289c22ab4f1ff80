# C-level TLS ClientHello parsing, shared with the QUIC parser (which finds a ClientHello in CRYPTO frames).
from libc.stdint cimport uint8_t, uint16_t
from fastpath.names cimport NAME_BUF

cdef enum:
    ALPN_BUF = 128
    # Largest TLSPlaintext fragment (RFC 8446 5.1); a longer record is not TLS.
    TLS_RECORD_MAX = 16384

cdef struct ClientHelloInfo:
    char sni[NAME_BUF]      # normalised server name, NUL-terminated; empty when sni_len <= 0
    int sni_len             # length of sni, or -1 when the ClientHello has no server_name extension
    char alpn[ALPN_BUF]     # protocol names joined by ',' (truncated at a name boundary if too long)
    int alpn_len
    bint has_ech            # an encrypted_client_hello extension (0xfe0d) is present (real or GREASE)
    uint16_t legacy_version
    uint16_t max_version    # highest non-GREASE version in supported_versions, else legacy_version

# msg points at a handshake message (HandshakeType byte, uint24 length, body), n bytes of it.
# Returns a ParseStatus (fastpath.names): OK, NO_NAME, NEED_MORE (n is shorter than the message),
# MALFORMED or NOT_HANDLED (a handshake message other than ClientHello).
cdef int parse_client_hello(const uint8_t* msg, size_t n, ClientHelloInfo* out) noexcept nogil

# data is a TCP payload from the start of a connection (TLS records), n contiguous bytes of it.
# Gathers the first handshake message across as many handshake records as it spans and parses it.
# A message inside the first record is parsed in place; one split over records is copied into
# scratch (scratch_cap bytes, caller-owned; a message that does not fit is MALFORMED).
# Returns NOT_HANDLED when the stream does not start with a TLS handshake record (plain HTTP,
# SSLv2), NEED_MORE for a prefix, MALFORMED for broken framing, else parse_client_hello's answer.
cdef int parse_tls_stream(const uint8_t* data, size_t n, uint8_t* scratch, size_t scratch_cap,
                          ClientHelloInfo* out) noexcept nogil

# Whether a segment's payload starts like a TLS connection's first: a handshake record with a
# plausible version and length that starts a ClientHello.
cdef bint looks_like_tls_start(const uint8_t* data, size_t n) noexcept nogil

# The Python-level ClientHello for a parse result (used by the stream module's Python API).
cdef object client_hello_object(int status, const ClientHelloInfo* info)
