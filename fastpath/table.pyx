# cython: language_level=3
"""The compiled domain table: build, on-disk format, suffix lookup.

Entries are keyed SipHash values of normalised names (fastpath.siphash), so the file holds no
cleartext. Slots use ordered linear probing: hashes are sorted, and since the home slot
fastrange(h, capacity) = (h * capacity) >> 64 is monotone in h, each entry sits at
max(home, previous position + 1). A lookup counts the slots below h in a window from home (free
slots hold EMPTY_HASH, above every real hash), which lands on h's slot if h is there. Lookups come
in two steps (hash and prefetch, then probe) so batches overlap the cache misses of many names.

File layout (little-endian): a 128-byte header (FileHeader), the JSON metadata blob, the maskset
masks (uint64 each, 8-aligned) and the slots (12 bytes each, 64-aligned), with XXH64 of everything
after the first 16 bytes in the header (`tail -c +17 FILE | xxh64sum` checks it)."""

import json
import os
import tempfile
import time

from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy
from posix.mman cimport MAP_FAILED, MAP_POPULATE, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap

from fastpath.siphash cimport (
    ALL_DEPTHS,
    MAX_SUFFIXES,
    SipKey,
    depth_bit,
    entry_name,
    key_from_bytes,
    name_suffix_hashes,
    sg_load_le32,
    sg_load_le64,
    sip_hash,
)

cdef extern from *:
    """
    #ifndef __SIZEOF_INT128__
    #error "fastpath.table needs a 64-bit target (unsigned __int128)"
    #endif
    static inline uint64_t sg_fastrange64(uint64_t h, uint64_t n) {
        return (uint64_t)(((unsigned __int128)h * n) >> 64);
    }
    #define SG_EMPTY_HASH UINT64_MAX
    #define SG_XXH_P1 0x9E3779B185EBCA87ULL
    #define SG_XXH_P2 0xC2B2AE3D27D4EB4FULL
    #define SG_XXH_P3 0x165667B19E3779F9ULL
    #define SG_XXH_P4 0x85EBCA77C2B2AE63ULL
    #define SG_XXH_P5 0x27D4EB2F165667C5ULL
    """
    uint64_t sg_fastrange64(uint64_t h, uint64_t n) noexcept nogil
    void __builtin_prefetch(const void* p) noexcept nogil
    # Free slots hold EMPTY_HASH: above every real hash, so the probe's "below h" test stops there.
    const uint64_t EMPTY_HASH "SG_EMPTY_HASH"
    # XXH64's primes.
    const uint64_t P1 "SG_XXH_P1"
    const uint64_t P2 "SG_XXH_P2"
    const uint64_t P3 "SG_XXH_P3"
    const uint64_t P4 "SG_XXH_P4"
    const uint64_t P5 "SG_XXH_P5"

cdef enum:
    FORMAT_VERSION = 1
    HEADER_SIZE = 128
    CHECKED_FROM = 16               # the checksum covers the file from here (after magic and itself)
    # 75% full: 16 bytes per entry, and most probes end inside their first window. Measured at 1M
    # entries: 60-75% equally fast, 80% slightly and 90% clearly slower.
    LOAD_PERCENT = 75
    MAX_MASKSETS = 65536            # maskset ids are 16 bits
    MASK_INDEX_BITS = 17            # interner index twice MAX_MASKSETS, so at most half full
    METADATA_MAX = 1 << 20
    # Slots a probe compares at once, without a branch per slot; the table ends with this many free
    # slots so a window never reads past the end.
    PROBE_WINDOW = 4
    RADIX_BITS = 11
    RADIX_PASSES = 6                # 6 x 11 bits cover the 64-bit hash

cdef const char* MAGIC = b"SGDOMTBL"
# Fingerprint message: a space can never be part of a normalised name, so no entry hashes this.
cdef bytes FINGERPRINT_MESSAGE = b"school gateway domain table key fingerprint"

cdef packed struct FileHeader:
    char magic[8]
    uint64_t checksum
    uint32_t version
    uint32_t header_size
    uint64_t entry_count
    uint64_t capacity
    uint64_t slot_count            # capacity + tail slack, ending with PROBE_WINDOW free slots
    uint32_t maskset_count
    uint32_t metadata_len
    uint64_t key_fingerprint
    int64_t created                # unix seconds
    uint64_t depths                # bit d - 1 set: some entry has d labels (bit 63: 64 or more)
    uint8_t reserved[48]


class TableError(ValueError):
    """A table file that is corrupt, truncated, of another format version, or built with another key."""


cdef uint64_t key_fingerprint(const SipKey* key) noexcept:
    return sip_hash(key, <const uint8_t*>PyBytes_AS_STRING(FINGERPRINT_MESSAGE), len(FINGERPRINT_MESSAGE))


cdef inline uint64_t clamp_hash(uint64_t h) noexcept nogil:
    # EMPTY_HASH marks free slots, so the one real hash equal to it is stored (and looked up) one lower.
    return h - 1 if h == EMPTY_HASH else h


# ---- XXH64 (the reference algorithm, seed 0): the body checksum, several GB/s, so loading stays fast.

cdef inline uint64_t rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline uint64_t xxh_round(uint64_t acc, uint64_t lane) noexcept nogil:
    acc += lane * P2
    return rotl(acc, 31) * P1


cdef inline uint64_t xxh_merge(uint64_t h, uint64_t acc) noexcept nogil:
    h ^= xxh_round(0, acc)
    return h * P1 + P4


cdef uint64_t xxh64(const uint8_t* p, size_t n) noexcept nogil:
    cdef const uint8_t* end = p + n
    cdef uint64_t v1, v2, v3, v4, h
    if n >= 32:
        v1 = P1 + P2
        v2 = P2
        v3 = 0
        v4 = 0 - P1
        while end - p >= 32:
            v1 = xxh_round(v1, sg_load_le64(p))
            v2 = xxh_round(v2, sg_load_le64(p + 8))
            v3 = xxh_round(v3, sg_load_le64(p + 16))
            v4 = xxh_round(v4, sg_load_le64(p + 24))
            p += 32
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)
        h = xxh_merge(h, v1)
        h = xxh_merge(h, v2)
        h = xxh_merge(h, v3)
        h = xxh_merge(h, v4)
    else:
        h = P5
    h += n
    while end - p >= 8:
        h ^= xxh_round(0, sg_load_le64(p))
        h = rotl(h, 27) * P1 + P4
        p += 8
    if end - p >= 4:
        h ^= <uint64_t>sg_load_le32(p) * P1
        h = rotl(h, 23) * P2 + P3
        p += 4
    while p < end:
        h ^= p[0] * P5
        h = rotl(h, 11) * P1
        p += 1
    h ^= h >> 33
    h *= P2
    h ^= h >> 29
    h *= P3
    h ^= h >> 32
    return h


def file_checksum(data: bytes) -> int:
    """The checksum a table file's header carries for the whole file image data (XXH64 of data[16:])."""
    if len(data) < CHECKED_FROM:
        raise ValueError("shorter than the checksummed region's start")
    return xxh64(<const uint8_t*>PyBytes_AS_STRING(data) + CHECKED_FROM, len(data) - CHECKED_FROM)


# ---- Layout shared by the writer and the loader (Python ints: a corrupt header cannot overflow them).

cdef tuple layout(object maskset_count, object metadata_len, object slot_count):
    """(masks offset, slots offset, file size) for the given counts."""
    masks_off = (HEADER_SIZE + metadata_len + 7) & ~7
    slots_off = (masks_off + 8 * maskset_count + 63) & ~63
    return masks_off, slots_off, slots_off + sizeof(Slot) * slot_count


# ---- Lookup

cdef inline uint64_t first_not_below(const Slot* slots, uint64_t j, uint64_t h) noexcept nogil:
    """The first slot from j (h's home) whose hash is not below h: h's slot if h is present.

    From the home slot on, "hash < h" holds for a prefix of slots and never again: occupied slots are
    sorted, and every entry past a free slot has its home past it, so a larger hash. Counting the
    true ones in a window therefore gives the position without a branch per slot."""
    cdef uint64_t below
    while True:
        below = ((slots[j].hash < h) + (slots[j + 1].hash < h) + (slots[j + 2].hash < h)
                 + (slots[j + 3].hash < h))
        if below < PROBE_WINDOW:
            return j + below
        j += PROBE_WINDOW


cdef void table_prepare(const TableView* t, const char* name, int n, Probe* p) noexcept nogil:
    cdef int i
    p.length = n
    # Suffixes of a depth no entry has are neither finalised nor probed: in most lists that skips
    # the top-level domain, a third of a typical name's work.
    p.count = name_suffix_hashes(&t.key, name, n, t.depths, p.hashes, p.starts)
    for i in range(p.count):
        p.hashes[i] = clamp_hash(p.hashes[i])
        p.homes[i] = sg_fastrange64(p.hashes[i], t.capacity)
        # A window can straddle two cache lines.
        __builtin_prefetch(&t.slots[p.homes[i]])
        __builtin_prefetch(&t.slots[p.homes[i] + PROBE_WINDOW - 1])


cdef int table_probe(const TableView* t, const Probe* p, SuffixHit* hits) noexcept nogil:
    cdef int i
    cdef int found = 0
    cdef uint64_t j, mask
    cdef uint32_t info
    for i in range(p.count - 1, -1, -1):  # most specific (the whole name) first
        j = first_not_below(t.slots, p.homes[i], p.hashes[i])
        if t.slots[j].hash != p.hashes[i]:
            continue
        info = t.slots[j].info
        mask = t.masks[info >> 16]
        if p.starts[i] == 0:
            mask |= t.masks[info & 0xFFFF]
        if mask:
            hits[found].mask = mask
            hits[found].length = p.length - p.starts[i]
            found += 1
    return found


cdef int table_match(const TableView* t, const char* name, int n, SuffixHit* hits) noexcept nogil:
    cdef Probe p
    table_prepare(t, name, n, &p)
    return table_probe(t, &p, hits)


# ---- Builder

cdef int radix_sort(Slot* a, size_t n) noexcept nogil:
    """Sorts slots by hash (LSD radix, all digit histograms from one read pass); -1 if out of memory."""
    cdef size_t buckets = 1 << RADIX_BITS
    cdef Slot* tmp
    cdef size_t* counts
    cdef Slot* src = a
    cdef Slot* dst
    cdef Slot* swap
    cdef size_t i, d, total, c
    cdef int p, shift
    cdef uint64_t h
    if n < 2:
        return 0
    tmp = <Slot*>malloc(n * sizeof(Slot))
    counts = <size_t*>calloc(RADIX_PASSES * buckets, sizeof(size_t))
    if tmp == NULL or counts == NULL:
        free(tmp)
        free(counts)
        return -1
    dst = tmp
    for i in range(n):
        h = a[i].hash
        for p in range(RADIX_PASSES):
            counts[p * buckets + ((h >> (p * RADIX_BITS)) & (buckets - 1))] += 1
    for p in range(RADIX_PASSES):
        shift = p * RADIX_BITS
        c = p * buckets
        if counts[c + ((src[0].hash >> shift) & (buckets - 1))] == n:
            continue  # every key has this digit: the pass would not move anything
        total = 0
        for d in range(buckets):
            i = counts[c + d]
            counts[c + d] = total
            total += i
        for i in range(n):
            d = c + ((src[i].hash >> shift) & (buckets - 1))
            dst[counts[d]] = src[i]
            counts[d] += 1
        swap = src
        src = dst
        dst = swap
    if src != a:
        memcpy(a, src, n * sizeof(Slot))
    free(tmp)
    free(counts)
    return 0


cdef class TableBuilder:
    """Collects entries (keyed hashes and category masks) and writes a table file.

    Memory is about 12 bytes per entry while adding, plus as much again while build() sorts."""

    cdef SipKey _key
    cdef Slot* _entries
    cdef size_t _count
    cdef size_t _allocated
    cdef uint64_t* _masks
    cdef uint32_t* _mask_index      # open addressing over _masks: id + 1, or 0 for a free cell
    cdef uint32_t _mask_count
    cdef uint64_t _depths

    def __cinit__(self, key: bytes):
        self._key = key_from_bytes(key)
        self._masks = <uint64_t*>calloc(MAX_MASKSETS, sizeof(uint64_t))
        self._mask_index = <uint32_t*>calloc(1 << MASK_INDEX_BITS, sizeof(uint32_t))
        if self._masks == NULL or self._mask_index == NULL:
            raise MemoryError()
        self._mask_count = 1  # id 0 is the empty mask

    def __dealloc__(self):
        free(self._entries)
        free(self._masks)
        free(self._mask_index)

    cdef int _intern(self, uint64_t mask) noexcept nogil:
        """The maskset id of mask, added if new; -1 when all 16-bit ids are taken."""
        cdef uint32_t cell
        if mask == 0:
            return 0
        cell = (mask * 0x9E3779B97F4A7C15ULL) >> (64 - MASK_INDEX_BITS)
        while self._mask_index[cell]:
            if self._masks[self._mask_index[cell] - 1] == mask:
                return self._mask_index[cell] - 1
            cell = (cell + 1) & ((1 << MASK_INDEX_BITS) - 1)
        if self._mask_count == MAX_MASKSETS:
            return -1
        self._masks[self._mask_count] = mask
        self._mask_count += 1
        self._mask_index[cell] = self._mask_count
        return self._mask_count - 1

    cdef int _mask_id(self, object categories) except -1:
        cdef int mask_id
        if not 0 < categories < (1 << 64):
            raise ValueError(f"categories must be a non-empty 64-bit mask, not {categories!r}")
        mask_id = self._intern(categories)
        if mask_id < 0:
            raise TableError(f"more than {MAX_MASKSETS - 1} distinct category combinations")
        return mask_id

    cdef int _reserve(self, size_t more) except -1:
        cdef size_t grown
        cdef Slot* entries
        if self._allocated - self._count >= more:
            return 0
        grown = max(self._allocated + self._allocated // 2 + 4096, self._count + more)
        entries = <Slot*>realloc(self._entries, grown * sizeof(Slot))
        if entries == NULL:
            raise MemoryError()
        self._entries = entries
        self._allocated = grown
        return 0

    cdef void _push(self, uint64_t h, uint32_t mask_id, bint exact) noexcept nogil:
        """Appends an entry (room reserved by the caller)."""
        self._entries[self._count].hash = clamp_hash(h)
        self._entries[self._count].info = mask_id if exact else mask_id << 16
        self._count += 1

    def add(self, name: str | bytes, categories: int, exact: bool = False) -> None:
        """Adds a name (Unicode is converted to IDNA punycode) for its subtree, or for itself only
        when exact. Raises ValueError naming the entry if it is not a valid host name."""
        cdef bytes norm = entry_name(name)
        cdef uint64_t hashes[MAX_SUFFIXES]
        cdef int starts[MAX_SUFFIXES]
        cdef int count = name_suffix_hashes(&self._key, norm, len(norm), ALL_DEPTHS, hashes, starts)
        cdef int mask_id = self._mask_id(categories)
        self._reserve(1)
        self._push(hashes[count - 1], mask_id, exact)
        self._depths |= depth_bit(count)

    def add_hash(self, h: int, categories: int, exact: bool = False, labels: int | None = None) -> None:
        """Adds an entry already hashed with fastpath.siphash.keyed_hash under this builder's key, so
        confidential names never exist in clear beyond the importer that reads them. labels, the
        name's label count, lets lookups skip suffix depths no entry has; without it every depth
        is probed."""
        cdef int mask_id
        if not 0 <= h < (1 << 64):
            raise ValueError(f"a keyed hash is a 64-bit unsigned integer, not {h!r}")
        if labels is not None and not 1 <= labels <= MAX_SUFFIXES:
            raise ValueError(f"labels must be 1..{MAX_SUFFIXES}, not {labels!r}")
        mask_id = self._mask_id(categories)
        self._reserve(1)
        self._push(h, mask_id, exact)
        self._depths |= ALL_DEPTHS if labels is None else depth_bit(labels)

    def add_hashes(self, const uint64_t[::1] hashes, categories: int, exact: bool = False,
                   depths: int | None = None) -> None:
        """Adds entries hashed as for add_hash, all with the same categories, from a buffer of uint64
        (a list entry file's array). depths is their depth mask: the OR of their names'
        fastpath.siphash.keyed_hash_depth bits, so a list can keep it without keeping each name's
        label count; None probes every depth."""
        cdef Py_ssize_t i
        cdef int mask_id
        cdef bint whole_name = exact
        if depths is not None and not 0 < depths < (1 << 64):
            raise ValueError(f"depths must be a non-empty 64-bit mask, not {depths!r}")
        if hashes.shape[0] == 0:
            return  # nothing to add, so no maskset either
        mask_id = self._mask_id(categories)
        self._reserve(hashes.shape[0])
        with nogil:
            for i in range(hashes.shape[0]):
                self._push(hashes[i], mask_id, whole_name)
        self._depths |= ALL_DEPTHS if depths is None else depths

    cdef int _merge_duplicates(self) noexcept nogil:
        """Merges sorted entries with equal hashes (one name from several lists) by OR; -2 when the
        merged masks need more maskset ids than there are."""
        cdef size_t r
        cdef size_t w = 0
        cdef uint32_t a, b
        cdef int sub, ex
        for r in range(self._count):
            if w and self._entries[w - 1].hash == self._entries[r].hash:
                a = self._entries[w - 1].info
                b = self._entries[r].info
                sub = self._intern(self._masks[a >> 16] | self._masks[b >> 16])
                ex = self._intern(self._masks[a & 0xFFFF] | self._masks[b & 0xFFFF])
                if sub < 0 or ex < 0:
                    return -2
                self._entries[w - 1].info = (<uint32_t>sub << 16) | <uint32_t>ex
            else:
                self._entries[w] = self._entries[r]
                w += 1
        self._count = w
        return 0

    cdef uint64_t _slot_count(self, uint64_t capacity) noexcept nogil:
        """Slots needed: the capacity plus whatever the last run spills past it, plus the free slots
        that end every probe."""
        cdef uint64_t i
        cdef uint64_t end = 0   # one past the last position used
        cdef uint64_t home
        for i in range(self._count):
            home = sg_fastrange64(self._entries[i].hash, capacity)
            end = (home if home > end else end) + 1
        return (end if end > capacity else capacity) + PROBE_WINDOW

    cdef void _place(self, Slot* slots, uint64_t capacity, uint64_t slot_count) noexcept nogil:
        cdef uint64_t i, home
        cdef uint64_t end = 0
        for i in range(self._count):
            home = sg_fastrange64(self._entries[i].hash, capacity)
            while end < home:
                slots[end].hash = EMPTY_HASH
                slots[end].info = 0
                end += 1
            slots[end] = self._entries[i]
            end += 1
        while end < slot_count:
            slots[end].hash = EMPTY_HASH
            slots[end].info = 0
            end += 1

    def build(self, path: str | os.PathLike[str], metadata: dict | None = None) -> None:
        """Writes the table to path atomically: a temporary file in the same directory, fsynced, then
        renamed over path. metadata (JSON-serialisable, e.g. policy version and per-list counts) is
        stored in clear, so it must not name confidential entries. The builder stays usable."""
        cdef int status
        cdef uint64_t capacity, slot_count
        cdef uint8_t* base
        cdef FileHeader* header
        cdef Slot* slots
        cdef size_t size
        if not isinstance(metadata, dict | None):
            raise TypeError("metadata must be a dict")
        blob = json.dumps({} if metadata is None else metadata, sort_keys=True).encode()
        if len(blob) > METADATA_MAX:
            raise ValueError(f"metadata is over {METADATA_MAX} bytes")
        with nogil:
            status = radix_sort(self._entries, self._count)
            if status == 0:
                status = self._merge_duplicates()
        if status == -1:
            raise MemoryError()
        if status == -2:
            raise TableError(f"more than {MAX_MASKSETS - 1} distinct category combinations")
        capacity = max(<uint64_t>1, (self._count * 100 + LOAD_PERCENT - 1) // LOAD_PERCENT)
        with nogil:
            slot_count = self._slot_count(capacity)
        masks_off, slots_off, size = layout(self._mask_count, len(blob), slot_count)

        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o644)  # readable by the data plane's processes, like any table
            # Reserve the blocks first: a full disk is then an OSError here, not a SIGBUS while
            # writing through the mapping.
            os.posix_fallocate(fd, 0, size)
            base = <uint8_t*>mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            if <void*>base == MAP_FAILED:
                raise OSError(f"cannot map {tmp}")
            try:
                header = <FileHeader*>base
                memcpy(header.magic, MAGIC, 8)
                header.version = FORMAT_VERSION
                header.header_size = HEADER_SIZE
                header.entry_count = self._count
                header.capacity = capacity
                header.slot_count = slot_count
                header.maskset_count = self._mask_count
                header.metadata_len = len(blob)
                header.key_fingerprint = key_fingerprint(&self._key)
                header.created = int(time.time())
                header.depths = self._depths
                memcpy(base + HEADER_SIZE, PyBytes_AS_STRING(blob), len(blob))
                memcpy(base + <size_t>masks_off, self._masks, self._mask_count * sizeof(uint64_t))
                slots = <Slot*>(base + <size_t>slots_off)
                with nogil:
                    self._place(slots, capacity, slot_count)
                    header.checksum = xxh64(base + CHECKED_FROM, size - CHECKED_FROM)
            finally:
                munmap(base, size)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)


# ---- Loaded table

cdef enum SlotFault:
    SLOTS_OK = 0
    BAD_FREE_SLOT
    BAD_MASKSET
    BAD_ORDER
    BAD_POSITION
    BAD_COUNT
    BAD_TAIL

cdef dict SLOT_FAULTS = {
    BAD_FREE_SLOT: "a free slot carries data",
    BAD_MASKSET: "a slot names a maskset that does not exist",
    BAD_ORDER: "slot hashes are not in increasing order",
    BAD_POSITION: "an entry is not reachable from its home slot",
    BAD_COUNT: "the slots do not hold the header's entry count",
    BAD_TAIL: "the slots do not end with free slots",
}


cdef int check_slots(const TableView* t, uint64_t slot_count, uint32_t maskset_count,
                     uint64_t entry_count) noexcept nogil:
    """Checks the invariants every lookup relies on, so a well-checksummed but crafted file can
    neither make a lookup read outside the mapping nor miss an entry it holds."""
    cdef uint64_t i, home
    cdef uint64_t occupied = 0
    cdef uint64_t prev = 0
    cdef uint64_t after_free = 0     # first slot after the latest free one
    cdef uint32_t info
    for i in range(slot_count):
        info = t.slots[i].info
        if t.slots[i].hash == EMPTY_HASH:
            if info != 0:
                return BAD_FREE_SLOT
            after_free = i + 1
            continue
        if info == 0 or (info >> 16) >= maskset_count or (info & 0xFFFF) >= maskset_count:
            return BAD_MASKSET
        if occupied and t.slots[i].hash <= prev:
            return BAD_ORDER
        home = sg_fastrange64(t.slots[i].hash, t.capacity)
        if home > i or home < after_free:
            return BAD_POSITION
        prev = t.slots[i].hash
        occupied += 1
    if occupied != entry_count:
        return BAD_COUNT
    for i in range(slot_count - PROBE_WINDOW, slot_count):
        if t.slots[i].hash != EMPTY_HASH:
            return BAD_TAIL
    return SLOTS_OK


cdef class Match:
    """The outcome of DomainTable.lookup: OR'd categories and every matching entry."""

    cdef readonly object categories
    cdef readonly tuple hits

    def __cinit__(self, categories: int, hits: tuple):
        self.categories = categories
        self.hits = hits

    @property
    def matched(self) -> str | None:
        return self.hits[0][0] if self.hits else None

    @property
    def matched_len(self) -> int:
        return len(self.hits[0][0]) if self.hits else -1

    def __bool__(self) -> bool:
        return bool(self.hits)

    def __repr__(self) -> str:
        return f"Match(categories={self.categories:#x}, hits={self.hits!r})"


cdef class DomainTable:
    """A table file mapped read-only. Each instance keeps its own mapping until close(), so a new
    table can be built and opened beside it and swapped in, and the old one closed."""

    def __cinit__(self):
        self._closed = True
        self.metadata = {}

    def __dealloc__(self):
        if self._map != NULL:
            munmap(<void*>self._map, self._map_size)

    @staticmethod
    def open(path: str | os.PathLike[str], key: bytes) -> DomainTable:
        """Maps and validates a table file; raises TableError if it is corrupt, truncated, of an
        unknown format version or built with another key."""
        cdef DomainTable t = DomainTable.__new__(DomainTable)
        cdef SipKey k = key_from_bytes(key)
        t.path = os.fspath(path)
        fd = os.open(t.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise TableError(f"{t.path}: truncated ({size} bytes, shorter than the header)")
            # Populate: the checksum reads every page anyway, and one call beats a fault per page.
            t._map = <const unsigned char*>mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0)
            if <void*>t._map == MAP_FAILED:
                t._map = NULL
                raise OSError(f"cannot map {t.path}")
            t._map_size = size
        finally:
            os.close(fd)
        t._validate(k)
        t._closed = False
        return t

    cdef _validate(self, SipKey key):
        cdef const FileHeader* header = <const FileHeader*>self._map
        cdef uint64_t checksum
        cdef int fault
        name = self.path
        if memcmp(header.magic, MAGIC, 8) != 0:
            raise TableError(f"{name}: not a domain table file")
        if header.version != FORMAT_VERSION:
            raise TableError(f"{name}: unsupported format version {header.version}")
        if header.header_size != HEADER_SIZE:
            raise TableError(f"{name}: bad header size {header.header_size}")
        # As Python ints, so that no corrupt count can overflow the arithmetic.
        capacity, entries, slot_count = header.capacity, header.entry_count, header.slot_count
        if not (1 <= header.maskset_count <= MAX_MASKSETS and 1 <= capacity and entries <= capacity
                and (header.depths != 0 or entries == 0)
                and capacity + PROBE_WINDOW <= slot_count <= capacity + entries + PROBE_WINDOW
                and header.metadata_len <= METADATA_MAX):
            raise TableError(f"{name}: inconsistent counts in the header")
        masks_off, slots_off, size = layout(header.maskset_count, header.metadata_len, slot_count)
        if size != self._map_size:
            raise TableError(f"{name}: truncated or padded ({self._map_size} bytes, expected {size})")
        with nogil:
            checksum = xxh64(self._map + CHECKED_FROM, self._map_size - CHECKED_FROM)
        if checksum != header.checksum:
            raise TableError(f"{name}: checksum mismatch (corrupt file)")
        if header.key_fingerprint != key_fingerprint(&key):
            raise TableError(f"{name}: built with a different key")
        self.view.slots = <const Slot*>(self._map + <size_t>slots_off)
        self.view.masks = <const uint64_t*>(self._map + <size_t>masks_off)
        self.view.capacity = header.capacity
        self.view.depths = header.depths
        self.view.key = key
        if self.view.masks[0] != 0:
            raise TableError(f"{name}: maskset 0 is not empty")
        with nogil:
            fault = check_slots(&self.view, header.slot_count, header.maskset_count, header.entry_count)
        if fault != SLOTS_OK:
            raise TableError(f"{name}: {SLOT_FAULTS[fault]}")
        try:
            metadata = json.loads(self._map[HEADER_SIZE:HEADER_SIZE + header.metadata_len])
        except (ValueError, RecursionError) as e:  # JSON and UTF-8 errors, absurd nesting
            raise TableError(f"{name}: unreadable metadata ({e})") from None
        if not isinstance(metadata, dict):
            raise TableError(f"{name}: metadata is not a JSON object")
        self.metadata = metadata
        self.created = header.created
        self._entries = header.entry_count
        self.file_size = self._map_size

    cdef const TableView* acquire(self) except NULL:
        if self._closed:
            raise ValueError("the table is closed")
        self._users += 1
        return &self.view

    cdef void release(self) noexcept:
        self._users -= 1
        if self._closed and self._users == 0:
            self._unmap()

    cdef void _unmap(self) noexcept:
        if self._map != NULL:
            munmap(<void*>self._map, self._map_size)
            self._map = NULL

    def close(self) -> None:
        """Releases the mapping (once any batch running on another thread has finished with it)."""
        self._closed = True
        if self._users == 0:
            self._unmap()

    def __enter__(self) -> DomainTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._entries

    @property
    def depths(self) -> int:
        """The label counts entries have: bit d - 1 for d labels (bit 63: 64 or more)."""
        return self.view.depths

    def lookup(self, name: str | bytes) -> Match:
        """Every entry matching name (normalised as TableBuilder.add normalises), most specific first."""
        cdef bytes norm = entry_name(name)
        cdef SuffixHit hits[MAX_SUFFIXES]
        cdef const TableView* view = self.acquire()
        cdef int n = len(norm)
        cdef int count = table_match(view, norm, n, hits)
        cdef int i
        cdef uint64_t categories = 0
        self.release()
        text = norm.decode("ascii")
        for i in range(count):
            categories |= hits[i].mask
        return Match(categories, tuple([(text[n - hits[i].length:], hits[i].mask) for i in range(count)]))
