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

cdef extern from *:
    """
    /* The normalised form of each byte in a host-name label: letters (lower-cased), digits, hyphen
       and underscore (SRV/DMARC style labels). Every other byte (space, NUL, dot, 8-bit) maps to
       0x80, which no valid byte has, so a label is checked by OR-ing its mapped bytes, without a
       branch per byte. */
    #define SG_LETTER(c) [(c) - 32] = (c), [c] = (c)
    static const uint8_t sg_label_chars[256] __attribute__((unused)) = {
        [0 ... 255] = 0x80,
        ['-'] = '-', ['_'] = '_',
        ['0'] = '0', ['1'] = '1', ['2'] = '2', ['3'] = '3', ['4'] = '4',
        ['5'] = '5', ['6'] = '6', ['7'] = '7', ['8'] = '8', ['9'] = '9',
        SG_LETTER('a'), SG_LETTER('b'), SG_LETTER('c'), SG_LETTER('d'), SG_LETTER('e'), SG_LETTER('f'),
        SG_LETTER('g'), SG_LETTER('h'), SG_LETTER('i'), SG_LETTER('j'), SG_LETTER('k'), SG_LETTER('l'),
        SG_LETTER('m'), SG_LETTER('n'), SG_LETTER('o'), SG_LETTER('p'), SG_LETTER('q'), SG_LETTER('r'),
        SG_LETTER('s'), SG_LETTER('t'), SG_LETTER('u'), SG_LETTER('v'), SG_LETTER('w'), SG_LETTER('x'),
        SG_LETTER('y'), SG_LETTER('z'),
    };
    #undef SG_LETTER
    """
    const uint8_t LABEL_CHARS "sg_label_chars"[256]

cdef enum:
    NOT_LABEL_CHAR = 0x80   # what LABEL_CHARS holds for a byte no label may contain

cdef int normalise_name(const uint8_t* src, size_t n, char* out) noexcept nogil

# A normalised name that is really an IPv4 address: its last label is a decimal or 0x-hex number.
cdef bint ends_in_number(const char* name, int n) noexcept nogil

# A name as ASCII bytes, as clients put it on the wire: Unicode labels become IDNA A-labels (UTS #46,
# non-transitional, as browsers do). Raises ValueError for a name IDNA refuses. Not yet normalised.
cdef bytes ascii_name(object name)
