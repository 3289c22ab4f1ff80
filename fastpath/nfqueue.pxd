# C-level NFQUEUE consumer: the first packets of each web flow, from nfnetlink_queue to a verdict.
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from fastpath.names cimport NAME_BUF
from fastpath.stream cimport FlowKey, FlowTable
from fastpath.table cimport DomainTable, TableView
from fastpath.verdict cimport GroupPolicyC, VerdictC

# What the consumer does with one packet.
cpdef enum PacketVerdict:
    PASS = 0      # accept with the mark unchanged: the flow is not decided yet
    ALLOW = 1     # accept with the allow bit added to the mark: the ruleset keeps the flow allowed
    BLOCK = 2     # accept with the block bit added: the ruleset refuses it (TCP reset) and the flow
    DROP = 3      # drop this packet only (it cannot be vetted); the flow stays undecided

# Which parser saw the flow (the block event's layer).
cpdef enum Layer:
    LAYER_TLS = 1
    LAYER_QUIC = 2
    LAYER_HTTP = 3

# Why a flow was decided: a fastpath.verdict.Reason when there was a name, else one of these, and
# then the group's fail setting decides (fail closed: block; fail open: allow).
cpdef enum Rule:
    RULE_NO_NAME = 16       # complete, but no name: no SNI or Host, or an IP literal
    RULE_MALFORMED = 17     # not a valid ClientHello, request head or QUIC Initial
    RULE_NOT_HANDLED = 18   # another protocol on a web port, or QUIC other than a v1/v2 Initial
    RULE_PACKET_BUDGET = 19 # nothing complete within the packets the ruleset queues
    RULE_NO_POLICY = 20     # no policy applied yet, or none for this group

cdef enum:
    GROUPS = 256            # group ids are the packet mark's low byte
    EVENT_RING = 1024       # block events held between drains (a power of two)

cdef struct Packet:
    const uint8_t* data     # the whole packet, from its network header (for the block-page redirect)
    size_t n
    FlowKey key             # ports in host order
    uint8_t l4              # IPPROTO_TCP or IPPROTO_UDP
    uint8_t tcp_flags
    uint32_t seq
    const uint8_t* payload
    size_t payload_len

# Parses an IPv4 or IPv6 packet (from its network header) down to the TCP or UDP payload: 0, or -1
# for another protocol or anything inconsistent (lengths, fragments, extension header chains).
cdef int parse_packet(const uint8_t* data, size_t n, Packet* out) noexcept nogil

# One datagram's way through a QUIC flow's assembler.
cdef struct QuicStep:
    int32_t flow            # the flow's slot; -1 when the datagram could not open one
    int status              # the datagram's ParseStatus
    int final               # the connection's: NEED_MORE until it is decided
    int name_len
    char name[NAME_BUF]     # the SNI when final is OK

# A flow decided moments ago, for its packets that were already queued when the verdict went out.
cdef struct Decided:
    FlowKey key
    uint32_t expires        # coarse monotonic milliseconds; 0 when the entry is free
    uint8_t l4
    uint8_t verdict

cdef struct BlockRecord:
    double time             # unix seconds
    uint8_t client[16]
    uint8_t server[16]
    uint8_t family
    uint8_t has_mac
    uint8_t mac[6]
    uint8_t group
    uint8_t layer           # a Layer
    uint8_t rule            # a verdict.Reason or a Rule
    uint64_t bits           # the categories behind the verdict
    char name[NAME_BUF]     # empty when the flow had no name

cdef struct PolicyC:
    const TableView* view
    GroupPolicyC groups[GROUPS]
    uint8_t known[GROUPS]       # the policy has masks for this group id
    uint64_t pages_bit          # hosts with page-level entries (0: none, or no lookup given)

# A policy in force: holds its table acquired for as long as it lives.
cdef class Policy:
    cdef PolicyC c
    cdef DomainTable table
    cdef object page_lookup     # (host, path) -> the page's category mask

cdef class Consumer:
    cdef readonly int queue
    cdef int fd
    cdef uint32_t budget
    cdef uint32_t group_mask
    cdef uint32_t verdict_mask
    cdef uint32_t allow_bit
    cdef uint32_t block_bit
    cdef uint8_t fail_closed[GROUPS]    # 1 for fail-closed groups and for ids not in the config
    cdef Policy policy
    cdef object block_page              # (packet, host, path or None) -> None: see redirect
    cdef bint has_block_page
    cdef PolicyC* active                # &policy.c, or NULL without a policy
    cdef Policy pending
    cdef int policy_waiting             # set (atomically) when pending holds a newer policy
    cdef FlowTable tcp
    cdef FlowTable quic
    # A QuicInitialAssembler per slot of the quic table (owned references; NULL until the slot's first
    # flow), reset for each flow the slot holds: pointers, so that the packet path needs no GIL.
    cdef PyObject** assemblers
    cdef uint8_t* tcp_packets           # packets seen per slot of each table
    cdef uint8_t* quic_packets
    cdef Decided* decided
    cdef uint32_t decided_mask
    cdef uint32_t now_ms
    cdef uint32_t heartbeat_ms          # when the packet thread last came round its loop
    cdef BlockRecord* events
    cdef uint32_t events_head           # advanced by the packet thread
    cdef uint32_t events_tail           # advanced by the draining thread
    cdef int stopping
    cdef uint32_t config_seq
    cdef int config_result              # 1 while waiting for the kernel's answer, else -errno or 0
    cdef void* rx_msgs
    cdef uint8_t* rx
    cdef char* tx
    cdef size_t tx_len
    cdef uint32_t pass_id
    cdef bint pass_pending
    cdef readonly uint64_t packets
    cdef readonly uint64_t passed
    cdef readonly uint64_t dropped
    cdef readonly uint64_t flows_allowed
    cdef readonly uint64_t flows_blocked
    cdef readonly uint64_t malformed
    cdef readonly uint64_t events_lost
    cdef readonly uint64_t kernel_errors
    cdef readonly uint64_t redirect_errors

    # The verdict for one packet (its network header onwards) with its mark and source MAC.
    cdef int handle(self, const uint8_t* data, size_t n, uint32_t mark, const uint8_t* mac) noexcept nogil
    cdef int handle_tcp(self, const Packet* p, int group, const uint8_t* mac) noexcept nogil
    cdef int handle_quic(self, const Packet* p, int group, const uint8_t* mac) noexcept nogil
    cdef void quic_step(self, const Packet* p, QuicStep* q) noexcept nogil
    cdef int decide_name(self, const Packet* p, int group, int layer, const char* name, int n,
                         const uint8_t* path, size_t path_len, const uint8_t* mac) noexcept nogil
    cdef void check_page(self, const GroupPolicyC* g, const char* host, int n, const uint8_t* path,
                         size_t path_len, VerdictC* v) noexcept with gil
    cdef void redirect(self, const Packet* p, const char* host, int n, const uint8_t* path,
                       size_t path_len) noexcept with gil
    cdef int unvetted(self, int group) noexcept nogil
    cdef int fail_decision(self, const Packet* p, int group, int layer, int rule,
                           const uint8_t* mac) noexcept nogil
    cdef int settle(self, const Packet* p, int group, int layer, int verdict, int rule, uint64_t bits,
                    const char* name, int n, const uint8_t* mac) noexcept nogil
    cdef void record(self, const Packet* p, int group, int layer, int rule, uint64_t bits,
                     const char* name, int n, const uint8_t* mac) noexcept nogil
    cdef int recall(self, const Packet* p) noexcept nogil
    cdef void take_policy(self) noexcept with gil
    cdef void release(self) noexcept
    # One batch from the socket: handled and answered. Messages read, 0 on timeout, or -errno.
    cdef int receive(self) noexcept nogil
    cdef void on_datagram(self, const uint8_t* data, size_t n) noexcept nogil
    cdef void on_packet(self, const uint8_t* msg, size_t n) noexcept nogil
    cdef void add_verdict(self, uint32_t packet_id, int verdict, uint32_t mark) noexcept nogil
    cdef uint32_t verdict_mark(self, int verdict, uint32_t mark) noexcept nogil
    cdef void flush_verdicts(self) noexcept nogil
