# cython: language_level=3
"""The NFQUEUE consumer: the first packets of each web flow (TCP 80 and 443, UDP 443), straight from
nfnetlink_queue, classified by the TLS, HTTP and QUIC parsers and decided per group.

One Consumer serves one queue from one thread. Each batch is read with one recvmmsg and answered with
one sendmsg: individual verdicts for packets that decide a flow (the packet mark plus the allow or
block bit, which the ruleset turns into the flow's conntrack mark) or must be dropped, and one batch
verdict accepting everything else. Flow state is bounded: TCP streams in a stream.FlowTable, QUIC
Initial assemblers in a second FlowTable's slots; both evict the least recently used. A plain-HTTP
request blocked by name or page is answered with a redirect to the block page before its verdict
goes out (the block_page callable, appliance.blockpage.inject)."""

import ipaddress
import time

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset, strerror

from fastpath.names cimport NAME_BUF, NEED_MORE, NO_NAME, NOT_HANDLED, OK
from fastpath.quic cimport QuicFlowKey, QuicInitialAssembler, quic_flow_key
from fastpath.stream cimport HTTP as PROTO_HTTP, TLS as PROTO_TLS, StreamResult, flow_key_set
from fastpath.verdict import Reason

from fastpath.verdict cimport (ALLOW as ACTION_ALLOW, BLOCK as ACTION_BLOCK, CATEGORY, PADLOCKED,
                               SCHOOL_ALLOW, GroupPolicy, decide_c)

cdef extern from *:
    """
    #include <errno.h>
    #include <string.h>
    #include <time.h>
    #include <arpa/inet.h>
    #include <sys/socket.h>
    #include <unistd.h>
    #include <linux/netlink.h>
    #include <linux/netfilter.h>
    #include <libnetfilter_queue/libnetfilter_queue.h>

    #define NFQ_BATCH 32
    /* A whole packet (copy range 0xffff) plus the netlink and queue headers around it. */
    #define NFQ_RX_SIZE (0xffff + 1024)
    #define NFQ_TX_SIZE (NFQ_BATCH * 64 + 256)
    #define NFQ_PACKET_TYPE ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)

    static inline uint32_t nfq_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
    }
    static inline double nfq_unix_time(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    /* Between the packet thread and the control thread (no lock; a release store, an acquire load). */
    static inline uint32_t nfq_load(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void nfq_store(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline int nfq_load_int(const int* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void nfq_store_int(int* p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

    /* A netfilter netlink socket: -errno on failure. recv times out so the thread can notice stop(). */
    static int nfq_socket(int rcvbuf, int timeout_ms) {
        int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
        if (fd < 0) return -errno;
        struct sockaddr_nl local = {.nl_family = AF_NETLINK};
        if (bind(fd, (struct sockaddr*)&local, sizeof local) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        /* A queue burst must fit in the socket, else the kernel drops (and counts) the overflow. */
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        int one = 1;
        setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        return fd;
    }

    static void nfq_put_u32(struct nlmsghdr* nlh, uint16_t type, uint32_t value) {
        struct nlattr* a = (struct nlattr*)((char*)nlh + NLMSG_ALIGN(nlh->nlmsg_len));
        uint32_t be = htonl(value);
        a->nla_type = type;
        a->nla_len = NLA_HDRLEN + sizeof be;
        memcpy((char*)a + NLA_HDRLEN, &be, sizeof be);
        nlh->nlmsg_len = NLMSG_ALIGN(nlh->nlmsg_len) + NLA_ALIGN(a->nla_len);
    }

    /* Binds (bind != 0) or unbinds the queue, asking for the kernel's answer. With bind: whole
     * packets, the queue length, and GSO packets handed over unsegmented (they are only read). */
    static size_t nfq_config(char* buf, uint16_t queue, int bind, uint32_t maxlen, uint32_t seq) {
        struct nlmsghdr* nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue);
        nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, bind ? NFQNL_CFG_CMD_BIND : NFQNL_CFG_CMD_UNBIND);
        if (bind) {
            nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, 0xffff);
            nfq_nlmsg_cfg_put_qmaxlen(nlh, maxlen);
            nfq_put_u32(nlh, NFQA_CFG_FLAGS, NFQA_CFG_F_GSO);
            nfq_put_u32(nlh, NFQA_CFG_MASK, NFQA_CFG_F_GSO);
        }
        nlh->nlmsg_flags |= NLM_F_ACK;
        nlh->nlmsg_seq = seq;
        return NLMSG_ALIGN(nlh->nlmsg_len);
    }

    /* Appends one verdict message; batch covers every packet up to id. */
    static size_t nfq_verdict(char* buf, uint16_t queue, uint32_t id, int accept, int batch,
                              int with_mark, uint32_t mark) {
        struct nlmsghdr* nlh = nfq_nlmsg_put(buf, batch ? NFQNL_MSG_VERDICT_BATCH : NFQNL_MSG_VERDICT, queue);
        nfq_nlmsg_verdict_put(nlh, (int)id, accept ? NF_ACCEPT : NF_DROP);
        if (with_mark) nfq_nlmsg_verdict_put_mark(nlh, mark);
        return NLMSG_ALIGN(nlh->nlmsg_len);
    }

    static int nfq_send(int fd, const char* buf, size_t len) {
        struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
        for (;;) {
            if (sendto(fd, buf, len, 0, (struct sockaddr*)&kernel, sizeof kernel) >= 0) return 0;
            if (errno != EINTR) return -errno;
        }
    }

    static void* nfq_rx_alloc(uint8_t* rx) {
        struct mmsghdr* msgs = calloc(NFQ_BATCH, sizeof(struct mmsghdr) + sizeof(struct iovec));
        if (!msgs) return NULL;
        struct iovec* iov = (struct iovec*)(msgs + NFQ_BATCH);
        for (int i = 0; i < NFQ_BATCH; i++) {
            iov[i].iov_base = rx + (size_t)i * NFQ_RX_SIZE;
            iov[i].iov_len = NFQ_RX_SIZE;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        return msgs;
    }

    /* Waits for one datagram (up to the socket's timeout), then takes what else is already there. */
    static int nfq_recv(int fd, void* msgs) {
        int n = recvmmsg(fd, (struct mmsghdr*)msgs, NFQ_BATCH, MSG_WAITFORONE, NULL);
        if (n >= 0) return n;
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -errno;
    }

    static inline uint32_t nfq_msg_len(const void* msgs, int i) {
        return ((const struct mmsghdr*)msgs)[i].msg_len;
    }
    """
    enum:
        EPERM
        ETIMEDOUT
        NFQ_BATCH
        NFQ_RX_SIZE
        NFQ_TX_SIZE
        NFQ_PACKET_TYPE
        NLMSG_ERROR
        NFQA_PACKET_HDR
        NFQA_MARK
        NFQA_PAYLOAD
        NFQA_HWADDR
    uint32_t nfq_now_ms() nogil
    double nfq_unix_time() nogil
    uint32_t nfq_load(const uint32_t* p) nogil
    void nfq_store(uint32_t* p, uint32_t v) nogil
    int nfq_load_int(const int* p) nogil
    void nfq_store_int(int* p, int v) nogil
    int nfq_socket(int rcvbuf, int timeout_ms) nogil
    size_t nfq_config(char* buf, uint16_t queue, int bind, uint32_t maxlen, uint32_t seq) nogil
    size_t nfq_verdict(char* buf, uint16_t queue, uint32_t id, int accept, int batch, int with_mark,
                       uint32_t mark) nogil
    int nfq_send(int fd, const char* buf, size_t len) nogil
    void* nfq_rx_alloc(uint8_t* rx) nogil
    int nfq_recv(int fd, void* msgs) nogil
    uint32_t nfq_msg_len(const void* msgs, int i) nogil
    int sys_close "close"(int fd) nogil

cdef enum:
    TCP_SYN = 0x02
    TCP_RST = 0x04
    TCP_ACK = 0x10
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    # How long a decision answers packets that were queued before its verdict took effect; far longer
    # than a queue takes to drain, far shorter than a client takes to reuse its port.
    RECALL_MS = 2000
    DECIDED_SLOTS = 4096
    RECV_TIMEOUT_MS = 200
    # Extension headers walked before an IPv6 packet counts as malformed.
    IPV6_EXT_MAX = 8
    NLMSG_HDRLEN = 16
    NFGENMSG_LEN = 4

BIND_TIMEOUT = 2.0  # seconds to wait for the kernel's answer to the bind

RULE_NAMES = {r.value: r.name.removeprefix("RULE_") for r in Rule}
LAYER_NAMES = {Layer.LAYER_TLS: "tls", Layer.LAYER_QUIC: "quic", Layer.LAYER_HTTP: "http"}


cdef inline uint16_t be16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef int parse_packet(const uint8_t* d, size_t n, Packet* out) noexcept nogil:
    cdef size_t off, end, length, header
    cdef uint8_t nh
    cdef int family, hops
    cdef const uint8_t* src
    cdef const uint8_t* dst
    if n < 1:
        return -1
    if d[0] >> 4 == 4:
        header = (d[0] & 15) * 4
        if n < 20 or header < 20 or header > n:
            return -1
        length = be16(d + 2)
        if length == 0:
            length = n  # a GSO packet over 64 KiB (BIG TCP) leaves its length to the kernel
        elif length < header:
            return -1
        # A fragment: conntrack reassembles before the forward hook, so one here is not sane.
        if be16(d + 6) & 0x3FFF:
            return -1
        family, nh, off = 4, d[9], header
        src, dst = d + 12, d + 16
    elif d[0] >> 4 == 6:
        if n < 40:
            return -1
        length = be16(d + 4)
        length = 40 + length if length else n
        family, nh, off = 6, d[6], 40
        src, dst = d + 8, d + 24
        hops = 0
        while nh == 0 or nh == 43 or nh == 44 or nh == 51 or nh == 60:
            hops += 1
            if hops > IPV6_EXT_MAX or off + 8 > n:
                return -1
            if nh == 44:
                if be16(d + off + 2) & 0xFFF9:  # offset or more-fragments set
                    return -1
                header = 8
            elif nh == 51:
                header = (<size_t>d[off + 1] + 2) * 4
            else:
                header = (<size_t>d[off + 1] + 1) * 8
            nh = d[off]
            off += header
    else:
        return -1
    end = length if length < n else n  # the copy may stop short of a GSO packet's end
    if off > end:
        return -1
    if nh == IPPROTO_TCP:
        if off + 20 > end:
            return -1
        header = (d[off + 12] >> 4) * 4
        if header < 20 or off + header > end:
            return -1
        out.seq = be32(d + off + 4)
        out.tcp_flags = d[off + 13]
    elif nh == IPPROTO_UDP:
        if off + 8 > end:
            return -1
        header = 8
        length = be16(d + off + 4)
        if length < 8:
            return -1
        if off + length < end:
            end = off + length
        out.seq = 0
        out.tcp_flags = 0
    else:
        return -1
    flow_key_set(&out.key, family, src, dst, be16(d + off), be16(d + off + 2))
    out.data = d
    out.n = n
    out.l4 = nh
    out.payload = d + off + header
    out.payload_len = end - off - header
    return 0


cdef inline bint is_ip_literal(const char* name, int n) noexcept nogil:
    """A normalised name whose last label is all digits: an IPv4 address, not a host name."""
    cdef int i = n - 1
    if n <= 0:
        return False
    while i >= 0 and name[i] != 46:  # '.'
        if name[i] < 48 or name[i] > 57:
            return False
        i -= 1
    return True


cdef inline int rule_for(int status) noexcept nogil:
    if status == NO_NAME:
        return RULE_NO_NAME
    if status == NOT_HANDLED:
        return RULE_NOT_HANDLED
    return RULE_MALFORMED


cdef bytes page_target(const uint8_t* path, size_t n):
    """A request's path as the page table keys it: always from a '/' (absolute-form may have none)."""
    target = PyBytes_FromStringAndSize(<const char*>path, n)
    return target if target.startswith(b"/") else b"/" + target


cdef class Policy:
    """A policy for the consumer: a domain table, each group's masks by group id, and (for plain
    HTTP) the bit marking hosts with page-level entries and a lookup for those pages."""

    def __cinit__(self, DomainTable table not None, policies, uint64_t pages_bit=0, page_lookup=None):
        cdef GroupPolicy g
        for group_id, g in policies.items():
            if not 1 <= group_id < GROUPS:
                raise ValueError(f"group id {group_id} is outside 1..{GROUPS - 1}")
            self.c.groups[group_id] = g.c
            self.c.known[group_id] = 1
        self.c.pages_bit = pages_bit if page_lookup is not None else 0
        self.page_lookup = page_lookup
        self.c.view = table.acquire()
        self.table = table

    def __dealloc__(self):
        if self.c.view != NULL:
            self.table.release()


cdef PyObject* new_assembler() noexcept with gil:
    """An unkeyed QuicInitialAssembler for a flow slot (an owned reference), or NULL without memory for
    one. The only QUIC work that takes the GIL, once per slot."""
    try:
        assembler = QuicInitialAssembler.__new__(QuicInitialAssembler)
    except (MemoryError, RuntimeError):
        return NULL
    Py_INCREF(assembler)
    return <PyObject*>assembler


cdef class Consumer:
    """Packets of one queue in, verdicts out. See fastpath/nfqueue.pyi."""

    def __cinit__(self, int queue, groups, int packets_per_flow, *, uint32_t group_mask,
                  uint32_t allow_bit, uint32_t block_bit, int max_flows=65536, int max_streams=1024,
                  int max_quic=1024, block_page=None):
        if not 0 <= queue <= 65535:
            raise ValueError(f"queue {queue} is outside 0..65535")
        if not 1 <= packets_per_flow <= 255:
            raise ValueError("packets_per_flow must be 1..255")
        if not 1 <= max_quic <= max_flows:
            raise ValueError("need 1 <= max_quic <= max_flows")
        if group_mask >= GROUPS or allow_bit & (group_mask | block_bit) or block_bit & group_mask:
            raise ValueError("the group mask must fit in a byte, and the verdict bits lie outside it")
        if block_page is not None and not callable(block_page):
            raise TypeError("block_page must be callable")
        self.block_page = block_page
        self.has_block_page = block_page is not None
        self.queue = queue
        self.fd = -1
        self.budget = packets_per_flow
        self.group_mask = group_mask
        self.allow_bit = allow_bit
        self.block_bit = block_bit
        self.verdict_mask = allow_bit | block_bit
        # Ids that no configured group has are treated as failing closed.
        memset(self.fail_closed, 1, GROUPS)
        for group_id, closed in groups:
            if not 1 <= group_id < GROUPS:
                raise ValueError(f"group id {group_id} is outside 1..{GROUPS - 1}")
            self.fail_closed[group_id] = 1 if closed else 0
        self.tcp = FlowTable(max_flows, max_streams)
        # Only the table's index is used (no stream buffers): a slot per QUIC flow, its assembler beside.
        self.quic = FlowTable(max_quic, 1, 64)
        self.assemblers = <PyObject**>calloc(max_quic, sizeof(PyObject*))
        self.tcp_packets = <uint8_t*>calloc(max_flows, 1)
        self.quic_packets = <uint8_t*>calloc(max_quic, 1)
        self.decided = <Decided*>calloc(DECIDED_SLOTS, sizeof(Decided))
        self.decided_mask = DECIDED_SLOTS - 1
        self.events = <BlockRecord*>calloc(EVENT_RING, sizeof(BlockRecord))
        if (self.tcp_packets == NULL or self.quic_packets == NULL or self.assemblers == NULL
                or self.decided == NULL or self.events == NULL):
            raise MemoryError()
        self.now_ms = nfq_now_ms()
        self.heartbeat_ms = self.now_ms

    def __dealloc__(self):
        cdef int32_t i
        self.release()
        if self.assemblers != NULL:
            for i in range(self.quic.max_flows):
                Py_XDECREF(self.assemblers[i])
            free(self.assemblers)
        free(self.tcp_packets)
        free(self.quic_packets)
        free(self.decided)
        free(self.events)

    # --- control (any thread) -------------------------------------------------------------------

    def set_policy(self, Policy policy) -> None:
        """Installs a policy (None: none); the packet thread takes it before its next batch."""
        self.pending = policy
        nfq_store_int(&self.policy_waiting, 1)

    def bind(self, int maxlen=4096, int rcvbuf=8 << 20) -> None:
        """Opens the netlink socket and binds the queue: whole packets, maxlen queued at most.
        OSError if the kernel refuses (EPERM: another program serves the queue)."""
        cdef int fd
        cdef int result
        cdef size_t n
        if self.fd >= 0:
            raise RuntimeError(f"queue {self.queue} is already bound")
        fd = nfq_socket(rcvbuf, RECV_TIMEOUT_MS)
        if fd < 0:
            raise OSError(-fd, f"netlink socket: {strerror(-fd).decode()}")
        self.fd = fd
        self.rx = <uint8_t*>calloc(NFQ_BATCH, NFQ_RX_SIZE)
        self.tx = <char*>calloc(1, NFQ_TX_SIZE)
        self.rx_msgs = nfq_rx_alloc(self.rx) if self.rx != NULL else NULL
        if self.rx_msgs == NULL or self.tx == NULL:
            self.release()
            raise MemoryError()
        self.config_seq += 1
        self.config_result = 1
        n = nfq_config(self.tx, <uint16_t>self.queue, 1, maxlen, self.config_seq)
        result = nfq_send(fd, self.tx, n)
        deadline = time.monotonic() + BIND_TIMEOUT
        # Packets may come before the answer: they are handled as usual.
        while result >= 0 and self.config_result == 1 and time.monotonic() < deadline:
            with nogil:
                result = self.receive()
        if result >= 0:
            result = -ETIMEDOUT if self.config_result == 1 else self.config_result
        if result < 0:
            self.release()
            # The kernel refuses a queue bound by another socket with EPERM, which would mislead.
            why = "another program serves it" if result == -EPERM else strerror(-result).decode()
            raise OSError(-result, f"cannot bind NFQUEUE {self.queue}: {why}")

    def run(self) -> None:
        """Serves the queue until stop() (from another thread); OSError if the socket fails."""
        cdef int result = 0
        if self.fd < 0:
            raise RuntimeError(f"queue {self.queue} is not bound")
        with nogil:
            while not nfq_load_int(&self.stopping):
                result = self.receive()
                if result < 0:
                    break
        if result < 0:
            raise OSError(-result, f"NFQUEUE {self.queue}: {strerror(-result).decode()}")

    def stop(self) -> None:
        nfq_store_int(&self.stopping, 1)

    def close(self) -> None:
        """Unbinds the queue (packets still queued are dropped by the kernel) and frees the buffers."""
        self.release()

    cdef void release(self) noexcept:
        cdef size_t n
        if self.fd >= 0:
            if self.tx != NULL:
                self.config_seq += 1
                n = nfq_config(self.tx, <uint16_t>self.queue, 0, 0, self.config_seq)
                nfq_send(self.fd, self.tx, n)
            sys_close(self.fd)
            self.fd = -1
        free(self.rx_msgs)
        free(self.rx)
        free(self.tx)
        self.rx_msgs = NULL
        self.rx = NULL
        self.tx = NULL

    @property
    def idle_seconds(self) -> float:
        """Time since the packet thread last came round its loop (it does at least every 0.2 s)."""
        return <int32_t>(nfq_now_ms() - nfq_load(&self.heartbeat_ms)) / 1000.0

    @property
    def flows_pending(self) -> int:
        return len(self.tcp) + len(self.quic)

    @property
    def evictions(self) -> int:
        return self.tcp.evictions + self.quic.evictions

    def drain_events(self) -> list:
        """Block events since the last drain, oldest first: (time, client, server, mac, group id,
        name, layer, rule, bits). name is None for a flow without one."""
        cdef uint32_t head = nfq_load(&self.events_head)
        cdef uint32_t tail = self.events_tail
        cdef BlockRecord* r
        out = []
        while tail != head:
            r = &self.events[tail & (EVENT_RING - 1)]
            size = 4 if r.family == 4 else 16
            rule = RULE_NAMES[r.rule] if r.rule in RULE_NAMES else Reason(r.rule).name
            out.append((
                r.time,
                str(ipaddress.ip_address(PyBytes_FromStringAndSize(<char*>r.client, size))),
                str(ipaddress.ip_address(PyBytes_FromStringAndSize(<char*>r.server, size))),
                ":".join(f"{b:02x}" for b in r.mac[:6]) if r.has_mac else None,
                r.group,
                r.name.decode("ascii") if r.name[0] else None,
                LAYER_NAMES[r.layer],
                rule,
                r.bits,
            ))
            tail += 1
        nfq_store(&self.events_tail, tail)
        return out

    def handle_packet(self, packet: bytes, uint32_t mark, mac: bytes = b"") -> tuple:
        """The verdict for one packet (IPv4 or IPv6 header onwards) as the queue loop would give it:
        (PacketVerdict, the mark it carries). Sans-IO: for tests and tools."""
        cdef const uint8_t[::1] view = packet
        cdef const uint8_t* hw = <const uint8_t*><const char*>mac if len(mac) == 6 else NULL
        cdef int v
        self.now_ms = nfq_now_ms()
        if nfq_load_int(&self.policy_waiting):
            self.take_policy()
        v = self.handle(&view[0] if view.shape[0] else NULL, view.shape[0], mark, hw)
        return PacketVerdict(v), self.verdict_mark(v, mark)

    # --- the packet path --------------------------------------------------------------------------

    cdef int handle(self, const uint8_t* data, size_t n, uint32_t mark, const uint8_t* mac) noexcept nogil:
        cdef Packet p
        cdef int group = mark & self.group_mask
        cdef int v
        self.packets += 1
        if data == NULL or parse_packet(data, n, &p) < 0:
            self.malformed += 1
            v = self.unvetted(group)
        elif p.l4 == IPPROTO_TCP and (p.key.dport == 443 or p.key.dport == 80):
            v = self.handle_tcp(&p, group, mac)
        elif p.l4 == IPPROTO_UDP and p.key.dport == 443:
            v = self.handle_quic(&p, group, mac)
        else:
            # The ruleset queues only web ports: anything else here is not ours to pass unvetted.
            self.malformed += 1
            v = self.unvetted(group)
        if v == PASS:
            self.passed += 1
        elif v == DROP:
            self.dropped += 1
        return v

    cdef int handle_tcp(self, const Packet* p, int group, const uint8_t* mac) noexcept nogil:
        cdef int32_t flow = self.tcp.flow_find(&p.key)
        cdef bint syn = (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN
        cdef int layer = LAYER_TLS if p.key.dport == 443 else LAYER_HTTP
        cdef uint32_t seq = p.seq
        cdef StreamResult r
        cdef const uint8_t* data
        cdef int status, v
        if flow < 0:
            # A SYN starts a connection: whatever was decided for an earlier one on these ports is moot.
            if not syn:
                v = self.recall(p)
                if v >= 0:
                    return v
            if p.tcp_flags & TCP_RST:
                return PASS
            flow = self.tcp.flow_open(&p.key, PROTO_TLS if layer == LAYER_TLS else PROTO_HTTP)
            self.tcp_packets[flow] = 0
        if self.tcp_packets[flow] < 255:
            self.tcp_packets[flow] += 1
        if p.tcp_flags & TCP_RST:
            self.tcp.flow_remove(flow)
            return PASS
        if syn:
            self.tcp.flow_syn(flow, p.seq)
            seq += 1  # data on a SYN (TCP Fast Open) starts after the SYN's own sequence number
        status = self.tcp.flow_feed(flow, seq, p.payload, p.payload_len, &r)
        if status == OK and layer == LAYER_TLS:
            v = self.decide_name(p, group, layer, r.tls.sni, r.tls.sni_len, NULL, 0, mac)
        elif status == OK:
            data = self.tcp.flow_data(flow)
            v = self.decide_name(p, group, layer, r.http.host, r.http.host_len, data + r.http.path_off,
                                 r.http.match_len, mac)
        elif status == NEED_MORE:
            if self.tcp_packets[flow] < self.budget:
                return PASS
            v = self.fail_decision(p, group, layer, RULE_PACKET_BUDGET, mac)
        else:
            v = self.fail_decision(p, group, layer, rule_for(status), mac)
        self.tcp.flow_remove(flow)
        return v

    cdef int handle_quic(self, const Packet* p, int group, const uint8_t* mac) noexcept nogil:
        cdef QuicStep q
        cdef int v
        q.flow = self.quic.flow_find(&p.key)
        if q.flow < 0:
            v = self.recall(p)
            if v >= 0:
                return v
        self.quic_step(p, &q)
        if q.flow < 0:
            if q.final == NEED_MORE:
                return self.unvetted(group)  # no memory for an assembler: try the next datagram
            # The first datagram of the flow is not a client Initial: nothing to read a name from.
            return self.fail_decision(p, group, LAYER_QUIC, rule_for(q.final), mac)
        if q.final == OK:
            v = self.decide_name(p, group, LAYER_QUIC, q.name, q.name_len, NULL, 0, mac)
        elif q.final != NEED_MORE:
            v = self.fail_decision(p, group, LAYER_QUIC, rule_for(q.final), mac)
        elif self.quic_packets[q.flow] >= self.budget:
            v = self.fail_decision(p, group, LAYER_QUIC, RULE_PACKET_BUDGET, mac)
        elif q.status == NEED_MORE:
            return PASS
        else:
            # A datagram that did not authenticate, or held no Initial: the connection goes on.
            return self.unvetted(group)
        self.quic.flow_remove(q.flow)
        return v

    cdef void quic_step(self, const Packet* p, QuicStep* q) noexcept nogil:
        """Feeds the datagram to its flow's assembler, first opening the flow (a slot, and the slot's
        assembler reset with the keys of this first Initial) if q.flow is -1."""
        cdef QuicFlowKey key
        cdef PyObject* assembler
        q.name_len = 0
        if q.flow < 0:
            q.final = quic_flow_key(p.payload, p.payload_len, &key)
            if q.final != OK:
                return
            q.flow = self.quic.flow_open(&p.key, PROTO_TLS)
            if self.assemblers[q.flow] == NULL:
                self.assemblers[q.flow] = new_assembler()
            assembler = self.assemblers[q.flow]
            if (assembler == NULL
                    or (<QuicInitialAssembler>assembler).reset(key.version, key.dcid, key.dcid_len) < 0):
                self.quic.flow_remove(q.flow)
                q.flow = -1
                q.final = NEED_MORE
                return
            self.quic_packets[q.flow] = 0
        else:
            assembler = self.assemblers[q.flow]  # every slot in the table has one, reset for its flow
        if self.quic_packets[q.flow] < 255:
            self.quic_packets[q.flow] += 1
        q.status = (<QuicInitialAssembler>assembler).feed_datagram(p.payload, p.payload_len)
        q.final = (<QuicInitialAssembler>assembler).status
        if q.final == OK:
            q.name_len = (<QuicInitialAssembler>assembler).info.sni_len
            memcpy(q.name, (<QuicInitialAssembler>assembler).info.sni, <size_t>q.name_len)

    cdef int decide_name(self, const Packet* p, int group, int layer, const char* name, int n,
                         const uint8_t* path, size_t path_len, const uint8_t* mac) noexcept nogil:
        cdef VerdictC v
        cdef const GroupPolicyC* g
        cdef bint page_block = False
        cdef int verdict
        if n <= 0 or is_ip_literal(name, n):
            return self.fail_decision(p, group, layer, RULE_NO_NAME, mac)
        if self.active == NULL or not self.active.known[group]:
            return self.settle(p, group, layer, BLOCK if self.fail_closed[group] else ALLOW, RULE_NO_POLICY,
                               0, name, n, mac)
        g = &self.active.groups[group]
        decide_c(self.active.view, g, name, n, &v)
        if v.action == ACTION_ALLOW and path != NULL and v.categories & self.active.pages_bit:
            self.check_page(g, name, n, path, path_len, &v)
            page_block = v.action == ACTION_BLOCK
        verdict = self.settle(p, group, layer, BLOCK if v.action == ACTION_BLOCK else ALLOW, v.reason,
                              v.bits, name, n, mac)
        if verdict == BLOCK and layer == LAYER_HTTP and self.has_block_page:
            self.redirect(p, name, n, path if page_block else NULL, path_len)
        return verdict

    cdef void check_page(self, const GroupPolicyC* g, const char* host, int n, const uint8_t* path,
                         size_t path_len, VerdictC* v) noexcept with gil:
        """A page-level entry for the request on an allowed host: padlocked pages always block, pages
        in a blocked category block unless the school allowed the host."""
        cdef uint64_t page
        try:
            page = self.policy.page_lookup(PyBytes_FromStringAndSize(host, n).decode("ascii"),
                                           page_target(path, path_len))
        except Exception:
            # A lookup that fails cannot clear the page: treat it as listed in every category.
            page = ~(<uint64_t>0)
        if page & g.padlocked:
            v.action = ACTION_BLOCK
            v.reason = PADLOCKED
            v.bits = page & g.padlocked
        elif v.reason != SCHOOL_ALLOW and page & g.blocked:
            v.action = ACTION_BLOCK
            v.reason = CATEGORY
            v.bits = page & g.blocked

    cdef void redirect(self, const Packet* p, const char* host, int n, const uint8_t* path,
                       size_t path_len) noexcept with gil:
        """Answers a blocked plain-HTTP request with the block page for host (and path, when only that
        page is blocked, else NULL). Called before the packet's verdict is sent: the redirect must
        reach the client before the ruleset's reset does."""
        try:
            self.block_page(PyBytes_FromStringAndSize(<const char*>p.data, p.n),
                            PyBytes_FromStringAndSize(host, n).decode("ascii"),
                            page_target(path, path_len) if path != NULL else None)
        except BaseException:
            # The flow is blocked whatever happens here; nothing may leave the packet path.
            self.redirect_errors += 1

    cdef int unvetted(self, int group) noexcept nogil:
        """A packet that cannot be read: dropped where the group fails closed, else passed."""
        return DROP if self.fail_closed[group] else PASS

    cdef int fail_decision(self, const Packet* p, int group, int layer, int rule,
                           const uint8_t* mac) noexcept nogil:
        return self.settle(p, group, layer, BLOCK if self.fail_closed[group] else ALLOW, rule, 0, NULL, 0, mac)

    cdef int settle(self, const Packet* p, int group, int layer, int verdict, int rule, uint64_t bits,
                    const char* name, int n, const uint8_t* mac) noexcept nogil:
        cdef Decided* d = &self.decided[(self.tcp.hash(&p.key) + p.l4) & self.decided_mask]
        d.key = p.key
        d.l4 = p.l4
        d.verdict = <uint8_t>verdict
        d.expires = self.now_ms + RECALL_MS
        if d.expires == 0:
            d.expires = 1  # 0 marks a free entry
        if verdict == BLOCK:
            self.flows_blocked += 1
            self.record(p, group, layer, rule, bits, name, n, mac)
        else:
            self.flows_allowed += 1
        return verdict

    cdef int recall(self, const Packet* p) noexcept nogil:
        """The verdict of a flow decided moments ago, or -1."""
        cdef Decided* d = &self.decided[(self.tcp.hash(&p.key) + p.l4) & self.decided_mask]
        if (d.expires and <int32_t>(d.expires - self.now_ms) > 0 and d.l4 == p.l4
                and memcmp(&d.key, &p.key, sizeof(p.key)) == 0):
            return d.verdict
        return -1

    cdef void record(self, const Packet* p, int group, int layer, int rule, uint64_t bits,
                     const char* name, int n, const uint8_t* mac) noexcept nogil:
        cdef uint32_t head = self.events_head
        cdef BlockRecord* r
        if head - nfq_load(&self.events_tail) >= EVENT_RING:
            self.events_lost += 1
            return
        r = &self.events[head & (EVENT_RING - 1)]
        r.time = nfq_unix_time()
        r.family = p.key.family
        memcpy(r.client, p.key.src, 16)
        memcpy(r.server, p.key.dst, 16)
        r.has_mac = mac != NULL
        if mac != NULL:
            memcpy(r.mac, mac, 6)
        r.group = <uint8_t>group
        r.layer = <uint8_t>layer
        r.rule = <uint8_t>rule
        r.bits = bits
        if n > 0:
            memcpy(r.name, name, <size_t>n)
        r.name[n if n > 0 else 0] = 0
        nfq_store(&self.events_head, head + 1)

    cdef void take_policy(self) noexcept with gil:
        self.policy = self.pending
        self.pending = None
        self.active = &self.policy.c if self.policy is not None else NULL
        nfq_store_int(&self.policy_waiting, 0)

    # --- the socket -------------------------------------------------------------------------------

    cdef int receive(self) noexcept nogil:
        cdef int count = nfq_recv(self.fd, self.rx_msgs)
        cdef int i
        self.now_ms = nfq_now_ms()
        nfq_store(&self.heartbeat_ms, self.now_ms)
        if count <= 0:
            return count
        if nfq_load_int(&self.policy_waiting):
            self.take_policy()
        for i in range(count):
            self.on_datagram(self.rx + <size_t>i * NFQ_RX_SIZE, nfq_msg_len(self.rx_msgs, i))
        self.flush_verdicts()
        return count

    cdef void on_datagram(self, const uint8_t* data, size_t n) noexcept nogil:
        cdef uint32_t length
        cdef uint16_t kind
        cdef int error
        while n >= NLMSG_HDRLEN:
            memcpy(&length, data, 4)
            if length < NLMSG_HDRLEN or length > n:
                return
            memcpy(&kind, data + 4, 2)
            if kind == NFQ_PACKET_TYPE:
                self.on_packet(data, length)
            elif kind == NLMSG_ERROR and length >= NLMSG_HDRLEN + 4:
                memcpy(&error, data + NLMSG_HDRLEN, 4)
                if self.config_result == 1 and memcmp(data + 8, &self.config_seq, 4) == 0:
                    self.config_result = error
                elif error != 0:
                    self.kernel_errors += 1
            length = (length + 3) & ~3u
            if length >= n:
                return
            data += length
            n -= length

    cdef void on_packet(self, const uint8_t* msg, size_t n) noexcept nogil:
        cdef size_t off = NLMSG_HDRLEN + NFGENMSG_LEN
        cdef uint16_t alen, kind
        cdef uint32_t packet_id = 0
        cdef uint32_t mark = 0
        cdef bint has_id = False
        cdef const uint8_t* payload = NULL
        cdef size_t payload_len = 0
        cdef const uint8_t* mac = NULL
        while off + 4 <= n:
            memcpy(&alen, msg + off, 2)
            memcpy(&kind, msg + off + 2, 2)
            kind &= 0x3FFF  # NLA_TYPE_MASK
            if alen < 4 or off + alen > n:
                break
            if kind == NFQA_PACKET_HDR and alen >= 4 + 4:
                packet_id = be32(msg + off + 4)
                has_id = True
            elif kind == NFQA_MARK and alen >= 4 + 4:
                mark = be32(msg + off + 4)
            elif kind == NFQA_PAYLOAD:
                payload = msg + off + 4
                payload_len = alen - 4
            elif kind == NFQA_HWADDR and alen >= 4 + 4 + 6 and be16(msg + off + 4) == 6:
                mac = msg + off + 8
            off += (alen + 3) & ~3
        if not has_id:
            self.kernel_errors += 1
            return
        self.add_verdict(packet_id, self.handle(payload, payload_len, mark, mac), mark)

    cdef void add_verdict(self, uint32_t packet_id, int verdict, uint32_t mark) noexcept nogil:
        if verdict == PASS:
            self.pass_id = packet_id
            self.pass_pending = True
            return
        if self.tx_len + 128 > NFQ_TX_SIZE:
            self.flush_verdicts()
        self.tx_len += nfq_verdict(self.tx + self.tx_len, <uint16_t>self.queue, packet_id, verdict != DROP, 0,
                                   verdict != DROP, self.verdict_mark(verdict, mark))

    cdef inline uint32_t verdict_mark(self, int verdict, uint32_t mark) noexcept nogil:
        """The mark a verdict gives the packet: a decision's bit added, else the mark unchanged."""
        if verdict == ALLOW:
            return (mark & ~self.verdict_mask) | self.allow_bit
        if verdict == BLOCK:
            return (mark & ~self.verdict_mask) | self.block_bit
        return mark

    cdef void flush_verdicts(self) noexcept nogil:
        """Sends the verdicts so far: the individual ones, then one batch accepting every other packet
        up to the last one passed (the batch leaves packets already given a verdict alone)."""
        if self.pass_pending:
            self.tx_len += nfq_verdict(self.tx + self.tx_len, <uint16_t>self.queue, self.pass_id, 1, 1, 0, 0)
            self.pass_pending = False
        if self.tx_len and nfq_send(self.fd, self.tx, self.tx_len) < 0:
            self.kernel_errors += 1
        self.tx_len = 0

