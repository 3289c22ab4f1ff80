# cython: language_level=3
"""Keyed SipHash-2-4 of normalised names.

SipHash-2-4 rather than -1-3: the hashes are all that a table file holds of confidential lists (the
IWF's), so they must stay a PRF nobody can run a dictionary through without the key, and 2-4 is the
parameter set its authors give for that (1-3 is their suggestion for hash tables). The price is
small: measured here, about 4 ns of a name's ~37 ns of hashing."""

from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset

from fastpath.names cimport NAME_BUF, NAME_MAX, ascii_name, normalise_name

cdef enum:
    C_ROUNDS = 2
    D_ROUNDS = 4

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


cdef inline uint64_t sip_final(SipState s, uint64_t tail, uint64_t length) noexcept nogil:
    """The hash of a message of length bytes whose whole words are absorbed in s (a copy, so the
    caller's state can go on absorbing) and whose last length % 8 bytes are tail."""
    sip_compress(&s, tail | ((length & 0xFF) << 56))
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
    return sip_final(s, sg_load_le64(last), n)


cdef inline uint64_t load_be_short(const uint8_t* p, int r) noexcept nogil:
    """p[0..r) (0 < r < 8) as a big-endian number, reading only those bytes."""
    if r >= 4:  # two overlapping 4-byte reads: the shared bytes are equal, so OR joins them
        return (<uint64_t>sg_load_be32(p) << (8 * (r - 4))) | sg_load_be32(p + r - 4)
    return (<uint64_t>p[0] << (8 * (r - 1))) | (<uint64_t>p[r >> 1] << (8 * (r - 1 - (r >> 1)))) | p[r - 1]


cdef inline uint64_t low_bytes(int b) noexcept nogil:
    return (<uint64_t>1 << (8 * b)) - 1


cdef int name_suffix_hashes(const SipKey* key, const char* name, int n, uint64_t depths,
                            uint64_t* hashes, int* starts) noexcept nogil:
    # The message is the name reversed byte by byte ("moc.elpmaxe.www"), so every suffix's message
    # is a prefix of the whole name's: one pass gives them all, finalising a copy of the state at
    # each dot. Its words are the name read big-endian from the end, so nothing is copied or split
    # into labels, and dots are found eight bytes at a time.
    cdef const uint8_t* p = <const uint8_t*>name
    cdef SipState s
    cdef int full = n >> 3
    cdef int rest = n & 7
    cdef int count = 0
    # Bit 0: whether the next suffix's depth is wanted. Shifted arithmetically, so that bit 63 (64 or
    # more labels) stays for every deeper suffix.
    cdef int64_t wanted = <int64_t>depths
    cdef int k, at
    cdef uint64_t word = 0
    cdef uint64_t x, dots
    if n <= 0 or n > NAME_MAX:
        return 0
    sip_init(&s, key)
    for k in range(full + (rest != 0)):
        # The last, partial word has zero high bytes: never taken for dots.
        word = sg_load_be64(p + n - 8 * k - 8) if k < full else load_be_short(p, rest)
        x = word ^ 0x2E2E2E2E2E2E2E2EULL
        dots = ~(((x & 0x7F7F7F7F7F7F7F7FULL) + 0x7F7F7F7F7F7F7F7FULL) | x | 0x7F7F7F7F7F7F7F7FULL)
        while dots:  # a dot ends a suffix's message
            at = sg_ctz64(dots) >> 3
            if wanted & 1:
                hashes[count] = sip_final(s, word & low_bytes(at), 8 * k + at)
                starts[count] = n - 8 * k - at
                count += 1
            wanted >>= 1
            dots &= dots - 1
        if k < full:
            sip_compress(&s, word)
    if wanted & 1:
        hashes[count] = sip_final(s, word & low_bytes(rest), n)
        starts[count] = 0
        count += 1
    return count


cdef bytes entry_name(object name):
    cdef char buf[NAME_BUF]
    cdef bytes raw
    cdef int n
    raw = ascii_name(name)
    n = normalise_name(<const uint8_t*><char*>raw, len(raw), buf)
    if n <= 0:
        raise ValueError(f"invalid domain name {name!r}")
    return buf[:n]


cdef SipKey key_from_bytes(object key) except *:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"a table key must be {KEY_SIZE} bytes")
    return sip_key(<const uint8_t*><char*>key)


cdef uint64_t entry_hash(object key, object name, int* labels) except? 0:
    """The keyed hash of the normalised name, and its label count in labels."""
    cdef SipKey k = key_from_bytes(key)
    cdef bytes norm = entry_name(name)
    cdef uint64_t hashes[MAX_SUFFIXES]
    cdef int starts[MAX_SUFFIXES]
    labels[0] = name_suffix_hashes(&k, norm, len(norm), ALL_DEPTHS, hashes, starts)
    return hashes[labels[0] - 1]


def keyed_hash(key: bytes, name: str | bytes) -> int:
    """The keyed hash a table stores for name (normalised first, as TableBuilder.add does)."""
    cdef int labels
    return entry_hash(key, name, &labels)


def keyed_hash_depth(key: bytes, name: str | bytes) -> tuple[int, int]:
    """keyed_hash(key, name) and the name's bit in a table's depth mask (see TableBuilder.add_hashes)."""
    cdef int labels
    cdef uint64_t h = entry_hash(key, name, &labels)
    return h, depth_bit(labels)
