"""Decoding captured frames down to TCP and UDP payloads (Ethernet, VLAN tags, Linux cooked, raw IP)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

# Link types from the tcpdump.org registry.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN_TAGS = {0x8100, 0x88A8, 0x9100}
PROTO_TCP = 6
PROTO_UDP = 17
# IPv6 extension headers that a payload may sit behind (fragment handled separately).
IPV6_EXTENSIONS = {0, 43, 60, 135, 139, 140}
IPV6_FRAGMENT = 44

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10


@dataclass(frozen=True, slots=True)
class Packet:
    transport: str  # "tcp" or "udp"
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    seq: int = 0  # TCP only
    flags: int = 0  # TCP only
    vlan: int | None = None


def decode(linktype: int, frame: bytes) -> Packet | None:
    """The TCP or UDP packet inside a frame, or None for anything else (ARP, ICMP, fragments, damage)."""
    try:
        vlan, ethertype, ip = _link(linktype, frame)
        if ethertype == ETH_IPV4:
            return _ipv4(ip, vlan)
        if ethertype == ETH_IPV6:
            return _ipv6(ip, vlan)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _link(linktype: int, frame: bytes) -> tuple[int | None, int, bytes]:
    if linktype == LINKTYPE_ETHERNET:
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        offset, vlan = 14, None
        while ethertype in ETH_VLAN_TAGS:
            vlan = struct.unpack_from("!H", frame, offset)[0] & 0x0FFF
            ethertype = struct.unpack_from("!H", frame, offset + 2)[0]
            offset += 4
        return vlan, ethertype, frame[offset:]
    if linktype == LINKTYPE_LINUX_SLL:
        return None, struct.unpack_from("!H", frame, 14)[0], frame[16:]
    if linktype == LINKTYPE_LINUX_SLL2:
        return None, struct.unpack_from("!H", frame, 0)[0], frame[20:]
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        version = frame[0] >> 4
        return None, ETH_IPV4 if version == 4 else ETH_IPV6, frame
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        version = frame[4] >> 4
        return None, ETH_IPV4 if version == 4 else ETH_IPV6, frame[4:]
    return None, 0, b""


def _ipv4(ip: bytes, vlan: int | None) -> Packet | None:
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    frag = struct.unpack_from("!H", ip, 6)[0]
    if ip[0] >> 4 != 4 or ihl < 20 or total < ihl:
        return None
    if frag & 0x3FFF:  # a fragment: the transport header may be elsewhere
        return None
    # With segmentation offload the capture may show total length 0; trust the frame then.
    end = total if total else len(ip)
    src = str(ipaddress.IPv4Address(ip[12:16]))
    dst = str(ipaddress.IPv4Address(ip[16:20]))
    return _transport(ip[9], ip[ihl:end], src, dst, vlan)


def _ipv6(ip: bytes, vlan: int | None) -> Packet | None:
    if ip[0] >> 4 != 6:
        return None
    plen = struct.unpack_from("!H", ip, 4)[0]
    nxt = ip[6]
    src = str(ipaddress.IPv6Address(ip[8:24]))
    dst = str(ipaddress.IPv6Address(ip[24:40]))
    body = ip[40 : 40 + plen] if plen else ip[40:]
    while nxt in IPV6_EXTENSIONS:
        nxt, hlen = body[0], (body[1] + 1) * 8
        body = body[hlen:]
    if nxt == IPV6_FRAGMENT:
        return None
    return _transport(nxt, body, src, dst, vlan)


def _transport(proto: int, seg: bytes, src: str, dst: str, vlan: int | None) -> Packet | None:
    if proto == PROTO_TCP:
        sport, dport, seq, _ack, off_flags = struct.unpack_from("!HHIIH", seg, 0)
        doff = (off_flags >> 12) * 4
        if doff < 20 or doff > len(seg):
            return None
        return Packet("tcp", src, sport, dst, dport, seg[doff:], seq, off_flags & 0x3F, vlan)
    if proto == PROTO_UDP:
        sport, dport, length = struct.unpack_from("!HHH", seg, 0)
        end = length if 8 <= length <= len(seg) else len(seg)
        return Packet("udp", src, sport, dst, dport, seg[8:end], vlan=vlan)
    return None
