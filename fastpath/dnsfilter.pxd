# The DNS filter's engine: the per-query decision shared by UDP (the batched nogil loop) and TCP
# (driven from Python), the swappable policy state, and the ring of block events.
from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.dns cimport WIRE_NAME_MAX, DnsQuery
from fastpath.names cimport NAME_BUF
from fastpath.table cimport TableView
from fastpath.verdict cimport GroupPolicyC

cpdef enum:
    MAX_GROUPS = 256           # config groups, indexed from 0 in config order
    MAX_FEATURES = 16          # special-name features (safe search per engine, canaries)
    # What a feature does for a group (Rules.action); a value >= 0 is a safe-search target index.
    FEATURE_OFF = -2
    FEATURE_NXDOMAIN = -1

# What answer_query decided.
cdef enum Outcome:
    DROP = 0                   # no reply (a response, a message without a header, no room)
    REPLY = 1                  # the output answers the client
    FORWARD = 2                # the output goes upstream, its ID still to set; the Pending says how to answer

cdef struct Client:
    uint8_t family             # 4 or 6
    uint16_t port              # network byte order, as received
    int ifindex                # the interface the query came in on (0 when unknown)
    uint8_t addr[16]           # the client's address (IPv4 in the first 4 bytes)
    uint8_t local[16]          # the address the query was sent to (after any redirect): replies come from it

cdef struct Pending:
    DnsQuery q                 # the client's query
    Client client
    int target                 # safe-search target index, or -1 to relay the upstream answer
    bint strip                 # strip ECH from the upstream answer
    # Only the UDP loop's pending table uses these.
    int64_t deadline           # CLOCK_MONOTONIC ns
    int older                  # timeout order: doubly linked, oldest first (-1 ends)
    int newer
    int upstream_id            # the ID the query went upstream with

cdef struct Target:
    char name[NAME_BUF]
    int name_len
    uint8_t wire[WIRE_NAME_MAX]
    int wire_len

cdef struct SpecialName:
    uint64_t hash
    int feature                # -1 marks a free slot
    int length
    uint32_t offset            # into Rules.text

# Everything fixed for the life of the process (from the config).
cdef struct Rules:
    bint nxdomain              # blocked names get NXDOMAIN instead of the block page's address
    bint has_ipv4
    bint has_ipv6
    uint8_t ipv4[4]
    uint8_t ipv6[16]
    uint32_t ttl               # of every answer the filter makes up
    SpecialName* names         # open addressing, a power-of-two size
    uint64_t names_mask
    char* text
    Target* targets
    int16_t action[MAX_GROUPS][MAX_FEATURES]
    bint strip[MAX_GROUPS]
    int groups

cdef struct Lan:
    int ifindex
    int group

cdef struct Subnet:
    uint8_t family
    uint8_t prefix
    uint8_t addr[16]
    int group

# What a policy swap replaces as a whole: the table, each group's masks, and the interface map.
cdef struct State:
    const TableView* table     # NULL before any policy is applied (every group gets its default)
    GroupPolicyC policies[MAX_GROUPS]
    Lan* lans
    int lan_count
    Subnet* subnets
    int subnet_count
    uint32_t generation

cdef struct EventC:
    int64_t ts_us              # CLOCK_REALTIME
    uint32_t generation        # the State that decided, so its bits can be named
    int group
    int reason
    uint64_t bits
    uint8_t family
    uint8_t addr[16]
    int name_len
    char name[NAME_BUF]

# A bounded ring: the hot loop never waits for the writer; what does not fit is counted.
cdef struct Events:
    EventC* slots
    uint64_t mask
    uint64_t head              # next to write (producers, under lock)
    uint64_t tail              # next to read (the Python writer)
    uint64_t dropped
    int lock

cdef struct Counters:
    uint64_t queries
    uint64_t blocked
    uint64_t rewritten         # safe-search CNAMEs
    uint64_t negative          # feature NXDOMAINs (DoH canary, Private Relay)
    uint64_t forwarded         # queries sent upstream
    uint64_t answered          # replies made from upstream answers, fresh or cached
    uint64_t servfail          # upstream timeouts, overload and unusable upstream answers
    uint64_t errors            # FORMERR, NOTIMP, BADVERS and REFUSED replies
    uint64_t dropped           # responses and headerless messages
    uint64_t stray             # upstream messages matching no pending question
    uint64_t cached            # answered from the UDP loop's cache of upstream answers

cdef int group_of(const State* s, const Client* c) noexcept nogil
# The decision for one query message: an Outcome, with the reply or the upstream query in out (cap
# bytes, at least n) and its length in *length. p receives the parsed query and the client (and, for
# FORWARD, what the upstream answer needs).
cdef int answer_query(const Rules* r, const State* s, Events* ev, Counters* k, const uint8_t* msg,
                      size_t n, const Client* c, bint tcp, int64_t now_us, Pending* p, uint8_t* out,
                      size_t cap, int* length) noexcept nogil
# The reply to p's client from an upstream message, written to out (scratch holds n bytes): its length,
# 0 if none can be built, or -1 if the message does not answer the question p sent upstream.
cdef int answer_upstream(const Rules* r, const Pending* p, Counters* k, const uint8_t* msg, size_t n,
                         bint tcp, uint8_t* out, size_t cap, uint8_t* scratch) noexcept nogil
cdef int servfail_for(const Pending* p, bint tcp, uint8_t* out, size_t cap) noexcept nogil

cdef class Engine:
    cdef Rules rules
    cdef State* state          # the latest published state
    cdef State* loop_state     # what the UDP loop should use (atomic)
    cdef State* in_use         # what the UDP loop last took up (atomic)
    cdef int running           # atomic
    cdef int stopping          # atomic
    cdef int wake_fd
    cdef Events events
    cdef Counters udp
    cdef Counters tcp
    cdef int64_t timeout_ns
    cdef int pending_capacity
    cdef uint64_t rng
    cdef int in_flight
    cdef object _table         # the DomainTable the current state maps, kept alive with it
