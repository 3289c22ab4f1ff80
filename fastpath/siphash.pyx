# cython: language_level=3
"""Keyed SipHash-2-4 of normalised names.

SipHash-2-4 rather than -1-3: the hashes are all that a table file holds of confidential lists (the
IWF's), so they must stay a PRF an attacker cannot run a dictionary through without the key, and 2-4
is the parameter set with the analysed security margin. The price is small here: names are short, so
the cost is dominated by finalising one hash per label boundary (6 rounds with 2-4 against 4 with
1-3), a few nanoseconds per suffix against a lookup's cache misses."""

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memset

import idna

from fastpath.names cimport NAME_BUF, NAME_MAX, normalise_name

cdef enum:
    C_ROUNDS = 1
    D_ROUNDS = 3

cdef struct SipState:
    uint64_t v0
    uint64_t v1
    uint64_t v2
    uint64_t v3

cdef inline uint64_t rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline void sip_rounds(SipState* s, int rounds) noexcept nogil:
    cdef int r
    for r in range(rounds):
        s.v0 += s.v1
        s.v1 = rotl(s.v1, 13)
        s.v1 ^= s.v0
        s.v0 = rotl(s.v0, 32)
        s.v2 += s.v3
        s.v3 = rotl(s.v3, 16)
        s.v3 ^= s.v2
        s.v0 += s.v3
        s.v3 = rotl(s.v3, 21)
        s.v3 ^= s.v0
        s.v2 += s.v1
        s.v1 = rotl(s.v1, 17)
        s.v1 ^= s.v2
        s.v2 = rotl(s.v2, 32)


cdef inline void sip_compress(SipState* s, uint64_t m) noexcept nogil:
    s.v3 ^= m
    sip_rounds(s, C_ROUNDS)
    s.v0 ^= m


cdef inline void sip_init(SipState* s, const SipKey* key) noexcept nogil:
    s.v0 = key.k0 ^ 0x736F6D6570736575ULL
    s.v1 = key.k1 ^ 0x646F72616E646F6DULL
    s.v2 = key.k0 ^ 0x6C7967656E657261ULL
    s.v3 = key.k1 ^ 0x7465646279746573ULL


cdef inline uint64_t sip_final(SipState s, const uint8_t* tail, size_t length) noexcept nogil:
    """The hash of the message absorbed into s (a copy, so the caller's state can go on absorbing)
    followed by its last length % 8 bytes at tail; length is the whole message's. tail must be
    readable for 8 bytes: the bytes past the message are masked off."""
    cdef size_t rest = length & 7
    cdef uint64_t b = sg_load_le64(tail) & ((<uint64_t>1 << (8 * rest)) - 1) if rest else 0
    sip_compress(&s, b | (<uint64_t>(length & 0xFF) << 56))
    s.v2 ^= 0xFF
    sip_rounds(&s, D_ROUNDS)
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3


cdef SipKey sip_key(const uint8_t* key) noexcept nogil:
    cdef SipKey k
    k.k0 = sg_load_le64(key)
    k.k1 = sg_load_le64(key + 8)
    return k


cdef uint64_t sip_hash(const SipKey* key, const uint8_t* data, size_t n) noexcept nogil:
    cdef SipState s
    cdef uint8_t last[8]
    cdef size_t i = 0
    memset(last, 0, 8)
    sip_init(&s, key)
    while n - i >= 8:
        sip_compress(&s, sg_load_le64(data + i))
        i += 8
    memcpy(last, data + i, n - i)
    return sip_final(s, last, n)


cdef int name_suffix_hashes(const SipKey* key, const char* name, int n, uint64_t* hashes,
                            int* starts) noexcept nogil:
    # The labels are copied in reverse order into one buffer, so the hash reads whole words and each
    # suffix's hash is a finalised copy of the state at its label boundary. Copies move whole words
    # between padded buffers, and dots are found without a branch per byte: on names this short,
    # mispredicted loop exits cost more than the hashing.
    cdef uint8_t padded[NAME_MAX + 8]
    cdef uint8_t message[NAME_MAX + 16]
    cdef int dots[MAX_SUFFIXES]
    cdef int ends[MAX_SUFFIXES]
    cdef SipState s
    cdef int ndots = 0
    cdef int count = 0
    cdef int end = n
    cdef int start, i, j
    cdef int length = 0
    cdef int done = 0
    if n <= 0 or n > NAME_MAX:
        return 0
    for i in range(n):
        padded[i] = name[i]
        dots[ndots] = i
        ndots += name[i] == 46
    for i in range(ndots, -1, -1):
        start = dots[i - 1] + 1 if i else 0
        if count:
            message[length] = 46
            length += 1
        for j in range(0, end - start, 8):
            memcpy(message + length + j, padded + start + j, 8)
        length += end - start
        ends[count] = length
        starts[count] = start
        count += 1
        end = start - 1
    sip_init(&s, key)
    for i in range(count):
        while ends[i] - done >= 8:
            sip_compress(&s, sg_load_le64(message + done))
            done += 8
        hashes[i] = sip_final(s, message + done, <size_t>ends[i])
    return count


cdef bytes _idna_ascii(str name):
    # Per label, so that ASCII labels idna would refuse (underscores, as in _dmarc) still pass here
    # and are judged by the shared name rules like every other ASCII name.
    try:
        mapped = idna.uts46_remap(name, std3_rules=False, transitional=False)
        return b".".join(
            [label.encode("ascii") if label.isascii() else idna.alabel(label) for label in mapped.split(".")]
        )
    except UnicodeError as e:  # idna.IDNAError is a UnicodeError
        raise ValueError(f"invalid domain name {name!r}: {e}") from None


cdef bytes entry_name(object name):
    cdef char buf[NAME_BUF]
    cdef bytes raw
    cdef int n
    if isinstance(name, str):
        raw = name.encode("ascii") if name.isascii() else _idna_ascii(name)
    elif isinstance(name, bytes):
        raw = name
    else:
        raise TypeError(f"a domain name must be str or bytes, not {type(name).__name__}")
    n = normalise_name(<const uint8_t*><char*>raw, len(raw), buf)
    if n <= 0:
        raise ValueError(f"invalid domain name {name!r}")
    return buf[:n]


cdef SipKey key_from_bytes(object key) except *:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"a table key must be {KEY_SIZE} bytes")
    return sip_key(<const uint8_t*><char*>key)


def keyed_hash(key: bytes, name: str | bytes) -> int:
    """The keyed hash a table stores for name (normalised first, as TableBuilder.add does)."""
    cdef SipKey k = key_from_bytes(key)
    cdef bytes norm = entry_name(name)
    cdef uint64_t hashes[MAX_SUFFIXES]
    cdef int starts[MAX_SUFFIXES]
    cdef int count = name_suffix_hashes(&k, norm, len(norm), hashes, starts)
    return hashes[count - 1]
