# Shared C-level name rules: every parser and the domain table normalise names the same way.
from libc.stdint cimport uint8_t

cdef enum:
    # Longest name in presentation form without the trailing dot (RFC 1035: 255 octets on the wire).
    NAME_MAX = 253
    LABEL_MAX = 63
    # Room for a normalised name plus a NUL, so C callers can keep fixed buffers.
    NAME_BUF = 256

# Outcome of every parser in the fast path.
cpdef enum ParseStatus:
    OK = 0            # complete, and a name was found
    NO_NAME = 1       # complete, but the message carries no name (e.g. ClientHello without SNI)
    NEED_MORE = 2     # a prefix of a valid message: feed more bytes
    MALFORMED = 3     # cannot be a valid message of this protocol
    NOT_HANDLED = 4   # valid, but not something this parser classifies (e.g. a DNS response, QUIC Retry)

cdef inline int name_char(uint8_t c) noexcept nogil:
    """The normalised form of one name byte, or -1 if the byte cannot appear in a host name.

    Letters, digits, hyphen and underscore (SRV/DMARC style labels) are accepted; anything else
    (spaces, NULs, dots inside labels, 8-bit bytes) marks the name invalid."""
    if c >= 97 and c <= 122:
        return c
    if c >= 65 and c <= 90:
        return c + 32
    if (c >= 48 and c <= 57) or c == 45 or c == 95:
        return c
    return -1

cdef int normalise_name(const uint8_t* src, size_t n, char* out) noexcept nogil

# A normalised name that is really an IPv4 address: its last label is a decimal or 0x-hex number.
cdef bint ends_in_number(const char* name, int n) noexcept nogil

# A name as ASCII bytes, as clients put it on the wire: Unicode labels become IDNA A-labels (UTS #46,
# non-transitional, as browsers do). Raises ValueError for a name IDNA refuses. Not yet normalised.
cdef bytes ascii_name(object name)
