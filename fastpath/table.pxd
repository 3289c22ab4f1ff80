# C-level view of a compiled domain table, for the verdict and the data plane.
from libc.stdint cimport uint32_t, uint64_t
from fastpath.siphash cimport MAX_SUFFIXES, SipKey

cdef packed struct Slot:
    uint64_t hash    # keyed hash of a normalised name; EMPTY_HASH marks a free slot
    uint32_t info    # subtree maskset id << 16 | exact-name maskset id (0 = none)

cdef struct TableView:
    const Slot* slots
    const uint64_t* masks      # category mask per maskset id; masks[0] == 0
    uint64_t capacity          # home slot of h is (h * capacity) >> 64
    uint64_t depths            # label counts entries have, as for siphash.name_suffix_hashes
    SipKey key

cdef struct SuffixHit:
    uint64_t mask    # categories of the entry at this suffix
    int length       # the suffix is the last `length` bytes of the name

# A lookup in two steps, so a batch can start many names' memory reads before waiting on any:
# table_prepare hashes the suffixes of the normalised name[:n] (those at a depth some entry has) and
# prefetches their home slots; table_probe then reads them. A probe is self-contained (the name
# itself is not kept).
cdef struct Probe:
    int count                          # suffixes, least specific first in the arrays below
    int length                         # the name's length
    uint64_t hashes[MAX_SUFFIXES]
    uint64_t homes[MAX_SUFFIXES]
    int starts[MAX_SUFFIXES]           # suffix i is name[starts[i]:]

cdef void table_prepare(const TableView* t, const char* name, int n, Probe* p) noexcept nogil
# Fills hits (MAX_SUFFIXES entries) with every entry matching the name, most specific first: its
# suffixes at label boundaries (subtree entries) and the whole name (exact-only entries too).
# Returns the number of hits (0 for an empty or over-long name).
cdef int table_probe(const TableView* t, const Probe* p, SuffixHit* hits) noexcept nogil
# Both steps at once, for a single name.
cdef int table_match(const TableView* t, const char* name, int n, SuffixHit* hits) noexcept nogil

cdef class DomainTable:
    cdef TableView view
    cdef const unsigned char* _map
    cdef size_t _map_size
    cdef int _users
    cdef bint _closed
    cdef readonly object path
    cdef readonly dict metadata
    cdef readonly long long created
    cdef unsigned long long _entries
    cdef readonly unsigned long long file_size

    cdef _validate(self, SipKey key)
    cdef void _unmap(self) noexcept

    # Batch callers hold the mapping across a nogil section with acquire/release, so a close() from
    # another thread (a table swap) unmaps only after they finish. acquire raises on a closed table.
    cdef const TableView* acquire(self) except NULL
    cdef void release(self) noexcept
