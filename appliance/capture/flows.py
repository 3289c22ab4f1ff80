"""Turns decoded packets into classified flows: one record per DNS query, and one per TLS, QUIC or
HTTP flow with the name its client asked for (or why none was found).

Reassembly and parsing are the fast path's own (fastpath.stream, fastpath.quic, fastpath.dns), so a
capture is read exactly as the appliance reads live traffic."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from appliance.capture.packets import TCP_ACK, TCP_SYN, Packet
from fastpath import dns, quic
from fastpath.names import ParseStatus
from fastpath.stream import Assembler, Proto

DNS_PORT = 53
# Ports whose protocol is known before any payload (needed when a flow's first segment is missing).
TLS_PORTS = {443, 853, 8443, 993, 995, 465, 636}
HTTP_PORTS = {80, 8080, 3128}
HTTP_METHODS = (
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
)

NOTES = {
    ParseStatus.NO_NAME: "no server name in the message",
    ParseStatus.NEED_MORE: "incomplete: the capture ended before the whole message",
    ParseStatus.MALFORMED: "malformed",
    ParseStatus.NOT_HANDLED: "not classified (not a client hello, query or request this parser reads)",
}


@dataclass(frozen=True, slots=True)
class FlowRecord:
    transport: str
    src: str
    sport: int
    dst: str
    dport: int
    protocol: str  # dns, tls, quic, http
    name: str | None
    note: str  # why no name was found; empty when a name was
    detail: str = ""  # protocol specifics: DNS type, ALPN, ECH, HTTP path


FlowKey = tuple[str, int, str, int]


class _TcpFlow:
    __slots__ = ("assembler", "dns_buffer", "isn", "protocol")

    def __init__(self) -> None:
        self.protocol: str | None = None
        self.assembler: Assembler | None = None
        self.isn: int | None = None
        self.dns_buffer = b""


def classify(packets: Iterable[Packet]) -> Iterator[FlowRecord]:
    """Records in the order their message completed; flows still open at the end are reported last."""
    tcp: dict[FlowKey, _TcpFlow] = {}
    quic_flows: dict[FlowKey, quic.QuicInitialAssembler] = {}
    done: set[FlowKey] = set()
    for pkt in packets:
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        if key in done:
            continue
        if pkt.transport == "udp":
            yield from _udp(pkt, key, quic_flows, done)
        else:
            yield from _tcp(pkt, key, tcp, done)
    for key, flow in tcp.items():
        if key not in done and flow.protocol in ("tls", "http") and flow.assembler is not None:
            yield _record("tcp", key, flow.protocol, None, ParseStatus.NEED_MORE)
    for key, assembler in quic_flows.items():
        if key not in done:
            yield _record("udp", key, "quic", None, assembler.status)


def _udp(pkt: Packet, key: FlowKey, flows: dict, done: set[FlowKey]) -> Iterator[FlowRecord]:
    if pkt.dport == DNS_PORT:
        yield _dns_record("udp", key, pkt.payload)
        return
    if pkt.sport == DNS_PORT:
        return  # an answer
    assembler = flows.get(key)
    if assembler is None:
        assembler = quic.QuicInitialAssembler.from_datagram(pkt.payload)
        if assembler is None:
            return
        flows[key] = assembler
    assembler.feed(pkt.payload)
    # A datagram that fails authentication is MALFORMED on its own but leaves the connection open.
    status = assembler.status
    if status != ParseStatus.NEED_MORE:
        done.add(key)
        del flows[key]
        detail = _hello_detail(assembler.alpn, assembler.has_ech) if status == ParseStatus.OK else ""
        yield _record("udp", key, "quic", assembler.sni, status, detail)


def _tcp(
    pkt: Packet, key: FlowKey, flows: dict[FlowKey, _TcpFlow], done: set[FlowKey]
) -> Iterator[FlowRecord]:
    flow = flows.get(key)
    if pkt.flags & TCP_SYN:
        if not pkt.flags & TCP_ACK:  # the client's SYN: this direction is client to server
            flow = flows[key] = _TcpFlow()
            flow.isn = pkt.seq
        return
    if not pkt.payload:
        return
    if flow is None:
        reverse = (pkt.dst, pkt.dport, pkt.src, pkt.sport)
        if reverse in flows or reverse in done or not _looks_client_side(pkt):
            return  # server to client
        flow = flows[key] = _TcpFlow()
    if flow.protocol is None:
        flow.protocol = _tcp_protocol(pkt)
        if flow.protocol in ("tls", "http"):
            flow.assembler = Assembler(Proto.TLS if flow.protocol == "tls" else Proto.HTTP)
            if flow.isn is not None:
                flow.assembler.syn(flow.isn)
    if flow.protocol == "dns":
        yield from _dns_over_tcp(key, flow, pkt.payload)
        return
    if flow.assembler is None:
        done.add(key)
        return
    result = flow.assembler.feed(pkt.seq, pkt.payload)
    if result.status == ParseStatus.NEED_MORE:
        return
    done.add(key)
    if flow.protocol == "tls":
        detail = _hello_detail(result.alpn, result.has_ech) if result.status == ParseStatus.OK else ""
        yield _record("tcp", key, "tls", result.sni, result.status, detail)
    else:
        path = result.path.decode("latin-1") if result.path else ""
        status = result.status
        yield _record("tcp", key, "http", result.host, status, f"path={path}" if path else "")


def _dns_over_tcp(key: FlowKey, flow: _TcpFlow, payload: bytes) -> Iterator[FlowRecord]:
    # DNS over TCP carries whole messages behind 2-byte lengths; captures of it arrive in order.
    flow.dns_buffer += payload
    while (length := dns.frame_length(flow.dns_buffer)) is not None:
        yield _dns_record("tcp", key, flow.dns_buffer[2 : 2 + length])
        flow.dns_buffer = flow.dns_buffer[2 + length :]


def _dns_record(transport: str, key: FlowKey, message: bytes) -> FlowRecord:
    query = dns.parse_query(message)
    detail = f"type={query.qtype}" if query.status == ParseStatus.OK else ""
    return _record(transport, key, "dns", query.name, query.status, detail)


def _tcp_protocol(pkt: Packet) -> str:
    if pkt.dport == DNS_PORT:
        return "dns"
    if pkt.dport in TLS_PORTS:
        return "tls"
    if pkt.dport in HTTP_PORTS:
        return "http"
    if pkt.payload[:1] == b"\x16":
        return "tls"
    if pkt.payload.startswith(HTTP_METHODS):
        return "http"
    return "other"


def _looks_client_side(pkt: Packet) -> bool:
    """Without the handshake, the client is the side talking to a well-known port."""
    known = TLS_PORTS | HTTP_PORTS | {DNS_PORT}
    return pkt.dport in known or (pkt.sport not in known and _tcp_protocol(pkt) != "other")


def _hello_detail(alpn: tuple[str, ...], has_ech: bool) -> str:
    parts = [f"alpn={','.join(alpn)}"] if alpn else []
    if has_ech:
        parts.append("ech")
    return " ".join(parts)


def _record(
    transport: str, key: FlowKey, protocol: str, name: str | None, status: int, detail: str = ""
) -> FlowRecord:
    found = name if status == ParseStatus.OK else None
    note = "" if found else NOTES.get(ParseStatus(status), "no name")
    src, sport, dst, dport = key
    return FlowRecord(
        transport, _canonical(src), sport, _canonical(dst), dport, protocol, found, note, detail
    )


def _canonical(addr: str) -> str:
    return str(ipaddress.ip_address(addr))
