"""A server that accepts whatever clients send and answers as little as possible, for capturing
real clients' first packets: TCP connections are read and closed once quiet for a moment (so the
client's whole first flight arrives, and the client gives up at once); UDP 53 answers every query with
NXDOMAIN (so dig does not retry); other UDP ports only listen.

Usage: python sink_server.py ADDRESS [ADDRESS ...]   (runs until killed)"""

from __future__ import annotations

import selectors
import socket
import sys
import time

TCP_PORTS = (80, 443, 53)
UDP_PORTS = (443, 53)
QUIET = 0.3  # seconds without data before a TCP connection is closed


def nxdomain(query: bytes) -> bytes:
    # QR=1, keep opcode and RD, RA=1, RCODE=3; the question is echoed, no records.
    if len(query) < 12:
        return b""
    flags = 0x8000 | (query[2] << 8 & 0x7900) | 0x0080 | 3
    return query[:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00" + _question(query)


def _question(query: bytes) -> bytes:
    i = 12
    while i < len(query) and query[i]:
        i += query[i] + 1
    return query[12 : i + 5]


def main(addresses: list[str]) -> None:
    sel = selectors.DefaultSelector()
    for addr in addresses:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        for port in TCP_PORTS:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(64)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, "accept")
        for port in UDP_PORTS:
            u = socket.socket(family, socket.SOCK_DGRAM)
            u.bind((addr, port))
            sel.register(u, selectors.EVENT_READ, "udp")
    last_data: dict[socket.socket, float] = {}
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        for conn, seen in list(last_data.items()):
            if now - seen > QUIET:
                del last_data[conn]
                sel.unregister(conn)
                conn.close()
        for key, _ in sel.select(timeout=0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "accept":
                conn, _ = sock.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, "conn")
                last_data[conn] = time.monotonic()
            elif key.data == "conn":
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if data:
                    last_data[sock] = time.monotonic()
                elif sock in last_data:
                    del last_data[sock]
                    sel.unregister(sock)
                    sock.close()
            else:
                data, peer = sock.recvfrom(65536)
                if sock.getsockname()[1] == 53 and (reply := nxdomain(data)):
                    sock.sendto(reply, peer)


if __name__ == "__main__":
    main(sys.argv[1:])
