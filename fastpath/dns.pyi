"""DNS for the fast path, sans-IO: query parsing, TCP framing, response building and ECH stripping.

Typical use by the DNS filter:

    query = parse_query(datagram)
    if query.status is ParseStatus.OK:      # decide on query.name / query.qtype, then answer with
        reply = nxdomain(query)             # ... or nodata, block_answer, cname_answer, refused
    elif query.status is ParseStatus.MALFORMED and query.has_header:
        reply = formerr(query)
    elif query.status is ParseStatus.NOT_HANDLED and query.opcode != 0 and not query.flags & 0x8000:
        reply = notimp(query)               # responses (QR set) are never answered

Over TCP, frame each message with frame_length and build with tcp=True where offered. Every response
echoes ID, opcode, RD and CD, sets QR and RA, repeats the question exactly as the client sent it
(case kept, so 0x20 randomisation survives), and carries an OPT record (payload 1232, DO echoed) when
the query had EDNS. A UDP response larger than the client accepts (512 bytes without EDNS, else its
EDNS size capped at 1232) is cut to header, question and OPT with TC set. Builders raise ValueError
when the query cannot be answered that way (no header, or no question for an answer).
"""

from typing import TypeAlias

from fastpath.names import ParseStatus

Buffer: TypeAlias = bytes | bytearray | memoryview

class Query:
    """A parsed DNS query: the outcome of parse_query and the input of the response builders."""

    @property
    def status(self) -> ParseStatus:
        """OK: a standard query (opcode QUERY) with one question whose name is a valid host name.
        NOT_HANDLED: a response (QR set), another opcode, or qdcount != 1. MALFORMED: truncated, bad
        labels or compression pointers, an invalid name, or more than one OPT record (FORMERR)."""
    @property
    def has_header(self) -> bool:
        """At least the 12-byte header was present, so a response can be addressed."""
    @property
    def id(self) -> int: ...
    @property
    def flags(self) -> int:
        """Header bytes 2..3 as sent (QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode)."""
    @property
    def opcode(self) -> int: ...
    @property
    def qdcount(self) -> int: ...
    @property
    def rd(self) -> bool: ...
    @property
    def cd(self) -> bool: ...
    @property
    def name(self) -> str | None:
        """The question name normalised by the rules of fastpath.names (lower case, no trailing dot;
        "" for the root), or None when no question was parsed."""
    @property
    def qtype(self) -> int: ...
    @property
    def qclass(self) -> int: ...
    @property
    def question_end(self) -> int:
        """Offset just past the question in the message (0 when no question was parsed)."""
    @property
    def message_end(self) -> int:
        """Offset just past the last record when the query parsed; any bytes after it are ignored."""
    @property
    def has_edns(self) -> bool:
        """Exactly one valid OPT record was present."""
    @property
    def udp_size(self) -> int:
        """The client's EDNS UDP payload size as sent (0 without EDNS)."""
    @property
    def edns_version(self) -> int:
        """Non-zero versions should be answered with badvers (RFC 6891)."""
    @property
    def dnssec_ok(self) -> bool:
        """The DO bit."""
    @property
    def max_udp_response(self) -> int:
        """The largest UDP response this client takes: 512 without EDNS, else its size in 512..1232."""

def parse_query(data: Buffer) -> Query:
    """Parses a DNS query message (without the TCP length prefix). Never raises for any input."""

def frame_length(buf: Buffer) -> int | None:
    """DNS over TCP: the length of the first message in buf (which is buf[2:2 + length]), or None
    until buf holds the 2-byte length prefix and the whole message."""

def nxdomain(query: Query, ttl: int = 60) -> bytes:
    """NXDOMAIN with a synthetic SOA (owner the root) whose TTL and minimum are ttl, so negative caches
    keep the block for ttl seconds at most."""

def nodata(query: Query, ttl: int = 60) -> bytes:
    """NOERROR with no answer, and the same synthetic SOA as nxdomain."""

def block_answer(query: Query, ipv4: str | None = None, ipv6: str | None = None, ttl: int = 60) -> bytes:
    """The block page's address: an A record (ipv4) for an IN A query, AAAA (ipv6) for AAAA, each with
    TTL ttl; nodata for other types, other classes, or when that address is None."""

def cname_answer(query: Query, target: str, upstream: Buffer, ttl: int = 60, *, tcp: bool = False) -> bytes:
    """Safe-search rewrite. upstream is the upstream server's response for (target, query.qtype,
    query.qclass); the result is the client's question, a CNAME from it to target (TTL ttl), then
    upstream's answer and authority records, with upstream's rcode and TC bit. Upstream's names are
    written in full, so its compression does not matter. tcp=True lifts the UDP size limit. Raises
    ValueError if target is not a host name, or upstream is malformed, answers another question, or
    carries an extended rcode (BADVERS, BADCOOKIE: no answer, so retry or answer SERVFAIL)."""

def refused(query: Query) -> bytes: ...
def servfail(query: Query) -> bytes: ...
def formerr(query: Query) -> bytes:
    """Also for MALFORMED queries: the question is repeated only if it was parsed."""

def notimp(query: Query) -> bytes:
    """For opcodes other than QUERY."""

def badvers(query: Query) -> bytes:
    """For EDNS versions other than 0 (rcode 16, carried in the OPT record); needs EDNS in the query."""

def strip_ech(response: Buffer) -> tuple[ParseStatus, bytes, int]:
    """Removes the ech SvcParam (key 5), and its entry in mandatory, from every HTTPS and SVCB record
    of a response, fixing RDLENGTH and every compression pointer the removal shifts. Returns (OK, the
    rewritten message, how many were removed); with nothing removed the message is returned unchanged.
    (NOT_HANDLED, response, 0) for a query; (MALFORMED, response, 0) for an upstream answer that
    cannot be parsed or rewritten safely (answer SERVFAIL), such as one with a compression pointer to
    anything but a label of an earlier name (compressors never write those)."""
