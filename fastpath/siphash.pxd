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
    /* The table format and SipHash words are little-endian by definition; swap on big-endian hosts. */
    static inline uint64_t sg_load_le64(const uint8_t* p) {
        uint64_t v;
        memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
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

cdef struct SipKey:
    uint64_t k0    # key bytes 0..7, little-endian (the reference convention)
    uint64_t k1    # key bytes 8..15

cdef SipKey sip_key(const uint8_t* key) noexcept nogil
cdef uint64_t sip_hash(const SipKey* key, const uint8_t* data, size_t n) noexcept nogil

# The hashes of every label-boundary suffix of name[:n], in one pass over the name with its labels
# reversed ("www.example.com" is hashed as "com.example.www", so each shorter suffix's message is a
# prefix of the longer one's). hashes[i] belongs to the suffix name[starts[i]:], least specific (the
# last label) first; both arrays need MAX_SUFFIXES entries. Returns the number of suffixes (0 for an
# empty name or n outside 0..NAME_MAX).
cdef int name_suffix_hashes(const SipKey* key, const char* name, int n, uint64_t* hashes,
                            int* starts) noexcept nogil

# The normalised ASCII form of an entry or query name (IDNA/UTS46 for Unicode), or ValueError naming it.
cdef bytes entry_name(object name)
cdef SipKey key_from_bytes(object key) except *
