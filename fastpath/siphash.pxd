# Keyed SipHash-2-4 of names, shared by the table builder and every lookup so both hash identically.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from fastpath.names cimport NAME_MAX

cdef enum:
    # Most dot-separated pieces a string of NAME_MAX bytes can have (one more than its dots), so
    # suffix arrays of this size are safe even for a name that was not normalised.
    MAX_SUFFIXES = NAME_MAX + 1
    KEY_SIZE = 16

cdef extern from *:
    """
    #include <string.h>
    /* Fixed-order loads: the table format and SipHash words are little-endian by definition, and a
       reversed name's message words are the name read big-endian. */
    static inline uint64_t sg_load_le64(const uint8_t* p) {
        uint64_t v;
        memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
    static inline uint64_t sg_load_be64(const uint8_t* p) {
        uint64_t v;
        memcpy(&v, p, 8);
    #if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
    static inline uint32_t sg_load_be32(const uint8_t* p) {
        uint32_t v;
        memcpy(&v, p, 4);
    #if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap32(v);
    #endif
        return v;
    }
    static inline int sg_ctz64(uint64_t x) { return __builtin_ctzll(x); }
    static inline uint32_t sg_load_le32(const uint8_t* p) {
        uint32_t v;
        memcpy(&v, p, 4);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap32(v);
    #endif
        return v;
    }
    """
    uint64_t sg_load_le64(const uint8_t* p) noexcept nogil
    uint32_t sg_load_le32(const uint8_t* p) noexcept nogil
    uint64_t sg_load_be64(const uint8_t* p) noexcept nogil
    uint32_t sg_load_be32(const uint8_t* p) noexcept nogil
    int sg_ctz64(uint64_t x) noexcept nogil    # x != 0

cdef extern from *:
    """
    #define SG_ALL_DEPTHS (~(uint64_t)0)
    """
    const uint64_t ALL_DEPTHS "SG_ALL_DEPTHS"

cdef struct SipKey:
    uint64_t k0    # key bytes 0..7, little-endian (the reference convention)
    uint64_t k1    # key bytes 8..15

cdef SipKey sip_key(const uint8_t* key) noexcept nogil
cdef uint64_t sip_hash(const SipKey* key, const uint8_t* data, size_t n) noexcept nogil

cdef inline uint64_t depth_bit(int labels) noexcept nogil:
    """A name's bit in a depth mask: bit d - 1 for d labels, bit 63 for 64 or more (labels >= 1)."""
    return <uint64_t>1 << (labels - 1 if labels < 64 else 63)

# The hashes of the label-boundary suffixes of name[:n], in one pass over the name reversed byte by
# byte ("www.example.com" is hashed as "moc.elpmaxe.www", so each shorter suffix's message is a
# prefix of the longer one's). Only suffixes whose depth (label count) has its depth_bit set in
# depths are finalised (ALL_DEPTHS for every one). hashes[i] belongs to the suffix
# name[starts[i]:], least specific first; both arrays need MAX_SUFFIXES entries. Returns the number
# of suffixes hashed (0 for an empty name or n outside 0..NAME_MAX).
cdef int name_suffix_hashes(const SipKey* key, const char* name, int n, uint64_t depths,
                            uint64_t* hashes, int* starts) noexcept nogil

# The normalised ASCII form of an entry or query name (IDNA/UTS46 for Unicode), or ValueError naming it.
cdef bytes entry_name(object name)
cdef SipKey key_from_bytes(object key) except *
