"""The interface a TCP client's packets came in on, for the services that give LAN clients their group
by it (the DNS filter's TCP side, the block-page server).

Linux keeps the IP_PKTINFO / IPV6_PKTINFO of a connection's last packet when the listening socket asked
for it (record_ingress), and reports it through the IP_PKTOPTIONS / IPV6_2292PKTOPTIONS socket
options (ingress_ifindex).
"""

from __future__ import annotations

import socket
import struct

# Linux socket options Python's socket module does not name.
IP_PKTINFO = 8
IP_PKTOPTIONS = 9
IPV6_2292PKTOPTIONS = 6


def record_ingress(sock: socket.socket) -> None:
    """Asks the kernel to keep the ingress interface of each connection accepted on sock (a listening
    IPv4 or IPv6 TCP socket, before bind)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


def ingress_ifindex(sock: socket.socket) -> int:
    """The interface a TCP connection's packets came in on (0 if the kernel does not say), for a
    connection accepted on a socket passed to record_ingress."""
    if sock.family == socket.AF_INET:
        level, option, kind = socket.IPPROTO_IP, IP_PKTOPTIONS, IP_PKTINFO
    else:
        level, option, kind = socket.IPPROTO_IPV6, IPV6_2292PKTOPTIONS, socket.IPV6_PKTINFO
    try:
        raw = sock.getsockopt(level, option, 256)
    except OSError:
        return 0
    header = struct.calcsize("@Nii")  # struct cmsghdr
    pos = 0
    while pos + header <= len(raw):
        length, cmsg_level, cmsg_type = struct.unpack_from("@Nii", raw, pos)
        if length < header:
            break
        if cmsg_level == level and cmsg_type == kind:
            data = raw[pos + header : pos + length]
            # in_pktinfo starts with the ifindex; in6_pktinfo ends with it
            return struct.unpack_from("@i", data, 0 if kind == IP_PKTINFO else 16)[0]
        pos += (length + 7) & ~7
    return 0
