# cython: language_level=3
"""Name normalisation shared by the parsers and the domain table."""

import idna

from libc.stdint cimport uint8_t


cdef int normalise_name(const uint8_t* src, size_t n, char* out) noexcept nogil:
    """Writes the normalised name (lower case, no trailing dot, NUL-terminated) to out.

    Returns its length, or -1 if the name is invalid: an empty label, a label over 63 bytes,
    a name over 253 bytes, or a byte that no host name may contain. out needs NAME_BUF bytes."""
    cdef size_t i
    cdef size_t start = 0   # the current label's first byte
    cdef uint8_t c
    cdef uint8_t seen = 0
    if n > 0 and src[n - 1] == 46:  # one trailing dot is the fully-qualified form
        n -= 1
    if n > NAME_MAX:
        return -1
    # Each byte goes through LABEL_CHARS with its check OR-ed in; the one branch per byte, on dots,
    # is taken only a few times per name, and label lengths are checked there.
    for i in range(n):
        c = src[i]
        if c == 46:
            if i - start - 1 >= LABEL_MAX:  # unsigned: an empty label wraps round too
                return -1
            out[i] = 46
            start = i + 1
        else:
            c = LABEL_CHARS[c]
            out[i] = <char>c
            seen |= c
    if (n > 0 and n - start - 1 >= LABEL_MAX) or seen & NOT_LABEL_CHAR:
        return -1
    out[n] = 0
    return <int>n


cdef bint ends_in_number(const char* name, int n) noexcept nogil:
    # WHATWG URL: a host whose last label is a decimal or 0x-hex number is an IPv4 address (browsers
    # read "10.1", "2130706433" and "0x7f.1" that way), and no top-level domain is numeric.
    cdef int start = n
    cdef int i
    cdef char c
    if n <= 0:
        return False
    while start > 0 and name[start - 1] != 46:
        start -= 1
    if n - start >= 2 and name[start] == 48 and name[start + 1] == 120:
        for i in range(start + 2, n):
            c = name[i]
            if not ((c >= 48 and c <= 57) or (c >= 97 and c <= 102) or (c >= 65 and c <= 70)):
                return False
        return True
    for i in range(start, n):
        if name[i] < 48 or name[i] > 57:
            return False
    return True


cdef bytes ascii_name(object name):
    if isinstance(name, bytes):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a domain name must be str or bytes, not {type(name).__name__}")
    if name.isascii():
        return name.encode("ascii")
    # Per label, so that ASCII labels idna would refuse (underscores, as in _dmarc) still pass here
    # and are judged by the shared name rules like every other ASCII name.
    try:
        mapped = idna.uts46_remap(name, std3_rules=False, transitional=False)
        return b".".join(
            [label.encode("ascii") if label.isascii() else idna.alabel(label) for label in mapped.split(".")]
        )
    except UnicodeError as e:  # idna.IDNAError is a UnicodeError
        raise ValueError(f"invalid domain name {name!r}: {e}") from None


def normalise(name: str | bytes) -> str | None:
    """The normalised form of a host name, or None if it is not a valid host name.

    Unicode names are converted to their IDNA (punycode) form first, as clients send them."""
    cdef char buf[NAME_BUF]
    cdef bytes raw
    cdef int n
    try:
        raw = ascii_name(name)
    except ValueError:
        return None
    n = normalise_name(<const uint8_t*><char*>raw, len(raw), buf)
    if n < 0:
        return None
    return buf[:n].decode("ascii")
