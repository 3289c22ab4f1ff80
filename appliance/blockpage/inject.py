"""The block page for plain-HTTP requests that the NFQUEUE consumer blocks at a site's real address.

The consumer has queued the client's request segment and judged it blocked; the client waits for the
server's answer. Before the consumer sends its verdict (which drops the segment, after which the
ruleset resets the flow), it calls `Injector.redirect` with that packet, which sends through raw IP
sockets:

- to the client, as the server: an HTTP 302 to the block page, ending with FIN. It starts at the
  request's acknowledgement number and acknowledges the whole request, so the client's TCP takes it
  as the server's answer;
- to the server, as the client: a RST at the request's sequence number (the first byte the server has
  not seen: the request is dropped), so the server stops waiting for it. Conntrack matches it to the
  flow and masquerades it like the client's own packets.

The reset the ruleset then sends the client for the dropped request has the sequence number the
redirect started at, which the client has already passed, so it is ignored (RFC 5961 3.2). Later
packets of the flow are reset too, but by then the redirect is in the client's receive buffer, which
a reset does not empty.

The segments carry no TCP options: without a timestamp the client skips its PAWS check, which a
made-up timestamp could fail.
"""

from __future__ import annotations

import html
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlencode

from appliance.config import IPAddress

TCP = 6
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
# Payload per forged segment: fits the IPv6 minimum MTU (1280) with both headers, so no path needs
# fragmenting it.
SEGMENT_PAYLOAD = 1200
WINDOW = 8192
TTL = 64
IPV6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options: walked over
IPV6_FRAGMENT = 44


@dataclass(frozen=True)
class Segment:
    """The parts of a client's TCP segment that an answer needs."""

    version: int
    client: IPAddress
    server: IPAddress
    client_port: int
    server_port: int
    seq: int
    ack: int
    flags: int
    payload_len: int

    @property
    def end(self) -> int:
        """The sequence number after this segment (SYN and FIN count one each)."""
        return (self.seq + self.payload_len + bool(self.flags & SYN) + bool(self.flags & FIN)) & 0xFFFFFFFF


class Answer(NamedTuple):
    client: list[bytes]  # the redirect, in order; the last segment carries FIN
    server: bytes  # the reset


def parse(packet: bytes) -> Segment:
    """The TCP segment in an IPv4 or IPv6 packet (network header onwards, as NFQUEUE hands it over);
    ValueError if it is not one. A GSO packet may give no length (0): its data runs to the end."""
    if len(packet) < 20:
        raise ValueError("too short for an IP packet")
    version = packet[0] >> 4
    if version == 4:
        header = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0] or len(packet)
        if header < 20 or total < header or total > len(packet):
            raise ValueError("bad IPv4 header")
        if struct.unpack_from("!H", packet, 6)[0] & 0x3FFF:
            raise ValueError("an IPv4 fragment")
        if packet[9] != TCP:
            raise ValueError("not TCP")
        src, dst, offset = packet[12:16], packet[16:20], header
    elif version == 6:
        if len(packet) < 40:
            raise ValueError("too short for IPv6")
        payload = struct.unpack_from("!H", packet, 4)[0]
        total = 40 + payload if payload else len(packet)
        if total > len(packet):
            raise ValueError("bad IPv6 length")
        next_header, offset = packet[6], 40
        while next_header in IPV6_EXTENSIONS:
            if offset + 8 > total:
                raise ValueError("bad IPv6 extension header")
            next_header, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        if next_header == IPV6_FRAGMENT:
            raise ValueError("an IPv6 fragment")
        if next_header != TCP:
            raise ValueError("not TCP")
        src, dst = packet[8:24], packet[24:40]
    else:
        raise ValueError(f"IP version {version}")
    if offset + 20 > total:
        raise ValueError("truncated TCP header")
    sport, dport, seq, ack, data_offset, flags = struct.unpack_from("!HHIIBB", packet, offset)
    tcp_header = (data_offset >> 4) * 4
    if tcp_header < 20 or offset + tcp_header > total:
        raise ValueError("bad TCP header length")
    return Segment(
        version,
        ipaddress.ip_address(src),
        ipaddress.ip_address(dst),
        sport,
        dport,
        seq,
        ack,
        flags,
        total - offset - tcp_header,
    )


def block_page_url(address: IPAddress, site: str, path: bytes | None = None) -> str:
    """The block page for site at a block address. path (as sent, for a page-level entry) lets the
    page explain a block of one page on an otherwise allowed site."""
    host = f"[{address}]" if address.version == 6 else str(address)
    query: dict[str, str | bytes] = {"site": site}
    if path is not None:
        query["path"] = path
    return f"http://{host}/?{urlencode(query)}"


def redirect_response(location: str) -> bytes:
    """A complete HTTP/1.1 302 to location (ASCII, as block_page_url makes it), with a link for
    clients that do not follow redirects."""
    body = (
        "<!doctype html><meta charset=utf-8><title>Blocked</title>"
        f'<p>This site is blocked. <a href="{html.escape(location)}">Find out why</a>.</p>\n'
    ).encode()
    head = (
        "HTTP/1.1 302 Found\r\n"
        f"Location: {location}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def answer(request: Segment, location: str) -> Answer:
    """The packets that answer a blocked request segment: the redirect to the client, then the
    reset to the server."""
    data = redirect_response(location)
    chunks = [data[i : i + SEGMENT_PAYLOAD] for i in range(0, len(data), SEGMENT_PAYLOAD)]
    to_client = []
    seq = request.ack
    for i, chunk in enumerate(chunks):
        flags = ACK | PSH | (FIN if i == len(chunks) - 1 else 0)
        to_client.append(
            tcp_packet(
                request.server,
                request.client,
                request.server_port,
                request.client_port,
                seq,
                request.end,
                flags,
                chunk,
            )
        )
        seq = (seq + len(chunk)) & 0xFFFFFFFF
    reset = tcp_packet(
        request.client,
        request.server,
        request.client_port,
        request.server_port,
        request.seq,
        request.ack,
        RST | ACK,
        b"",
    )
    return Answer(to_client, reset)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_packet(
    src: IPAddress, dst: IPAddress, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes
) -> bytes:
    """An IP packet holding one option-less TCP segment, checksums filled in."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, WINDOW, 0, 0) + payload
    if src.version == 4:
        pseudo = struct.pack("!BBH", 0, TCP, len(tcp))
    else:
        pseudo = struct.pack("!I3xB", len(tcp), TCP)
    tcp_sum = checksum(src.packed + dst.packed + pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", tcp_sum) + tcp[18:]
    if src.version == 6:
        return struct.pack("!IHBB16s16s", 6 << 28, len(tcp), TCP, TTL, src.packed, dst.packed) + tcp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, TTL, TCP, 0, src.packed, dst.packed)
    return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + tcp


class Injector:
    """Raw IP sockets (root) for the answers, and the block addresses the redirects point at."""

    def __init__(self, block_ipv4: ipaddress.IPv4Address, block_ipv6: ipaddress.IPv6Address) -> None:
        self.addresses: dict[int, IPAddress] = {4: block_ipv4, 6: block_ipv6}
        # IPPROTO_RAW: we write the IP header (IPv4: the kernel fills in the identification).
        self.sockets = {4: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)}
        if Path("/proc/net/if_inet6").exists():  # not on a kernel booted with ipv6.disable=1
            self.sockets[6] = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()

    def redirect(self, packet: bytes, site: str, path: bytes | None = None) -> None:
        """Answers the blocked request in packet with a redirect to site's block page (path only for
        a block of one page on the site). Call it before the packet's verdict is sent. ValueError for
        a packet that is not TCP over IP, OSError if the kernel refuses to send."""
        request = parse(packet)
        if request.version not in self.sockets:
            raise ValueError("IPv6 is off in this kernel")
        sock = self.sockets[request.version]
        packets = answer(request, block_page_url(self.addresses[request.version], site, path))
        for segment in packets.client:
            sock.sendto(segment, (str(request.client), 0))
        sock.sendto(packets.server, (str(request.server), 0))
