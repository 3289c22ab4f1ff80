"""A small HTTP/3 client (aioquic) for the lab: Debian's curl has no HTTP/3. Run it inside a client
namespace; it resolves each name through that namespace's resolver, as a browser would, and prints one
JSON line per name and address family:

    {"name": "www.bbc.co.uk", "family": 4, "address": "203.0.113.20", "status": 200, "body": "...",
     "error": null}

python -m appliance.lab.h3client --cacert CA [--family 4] [--family 6] [--timeout S] [--address A] NAME...

It speaks from a connected UDP socket, so a refusal (ICMP port unreachable, which the gateway sends
for a block-page address) ends the attempt at once as "refused" instead of running into the timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent

PORT = 443
TIMEOUT = 10.0
# aioquic's handshakes cost CPU on both ends (the lab's web server is one Python process): a few at a
# time, each with its own timeout, rather than all at once racing one shared clock.
CONCURRENCY = 4
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self._waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._status: dict[int, int] = {}
        self._body: dict[int, bytes] = {}
        self.refused: Exception | None = None

    async def get(self, authority: str, path: str = "/") -> tuple[int, bytes]:
        stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"appliance-lab-h3client"),
        ]
        self._h3.send_headers(stream_id, headers, end_stream=True)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[stream_id] = waiter
        self.transmit()
        return await waiter

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self._h3.handle_event(event):
            self._h3_event(h3_event)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error on the connected socket: give up on the handshake and on every request."""
        self.refused = exc
        waiters = [self._connected_waiter, *self._waiting.values()]
        self._connected_waiter = None  # aioquic must not complete it again later
        for waiter in waiters:
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            self._status[event.stream_id] = int(dict(event.headers).get(b":status", b"0"))
        elif isinstance(event, DataReceived):
            self._body[event.stream_id] = self._body.get(event.stream_id, b"") + event.data
        else:
            return
        waiter = self._waiting.get(event.stream_id)
        if event.stream_ended and waiter is not None and not waiter.done():
            waiter.set_result((self._status.get(event.stream_id, 0), self._body.get(event.stream_id, b"")))


@contextlib.asynccontextmanager
async def connect(address: str, configuration: QuicConfiguration) -> AsyncIterator[H3Client]:
    """A QUIC connection to address, port PORT, over a connected UDP socket (aioquic's own connect
    uses an unconnected one, which never hears of ICMP errors)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((address, PORT))
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: H3Client(QuicConnection(configuration=configuration)), sock=sock
    )
    try:
        protocol.connect(sock.getpeername())
        await protocol.wait_connected()
        yield protocol
        protocol.close()
        await protocol.wait_closed()
    finally:
        transport.close()


async def fetch(
    name: str,
    family: int,
    cacert: str,
    slots: asyncio.Semaphore,
    timeout: float = TIMEOUT,
    address: str | None = None,
) -> dict[str, Any]:
    async with slots:
        return await _fetch(name, family, cacert, timeout, address)


async def _fetch(name: str, family: int, cacert: str, timeout: float, address: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": name,
        "family": family,
        "address": address,
        "status": None,
        "body": None,
        "error": None,
    }
    if address is None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, PORT, family=FAMILIES[family], type=socket.SOCK_DGRAM)
        except socket.gaierror as e:
            result["error"] = f"no address: {e.strerror}"
            return result
        result["address"] = infos[0][4][0]
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=name, idle_timeout=timeout)
    config.load_verify_locations(cafile=cacert)
    try:
        async with asyncio.timeout(timeout):
            async with connect(result["address"], config) as proto:
                status, body = await proto.get(name)
        result["status"] = status
        result["body"] = body.decode("utf-8", "replace")
    except TimeoutError:
        result["error"] = "timeout"
    except ConnectionRefusedError:
        result["error"] = "refused"
    except (ConnectionError, ssl.SSLError, OSError) as e:
        result["error"] = f"{type(e).__name__}: {e}".rstrip(": ")
    return result


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m appliance.lab.h3client")
    parser.add_argument("--cacert", required=True)
    parser.add_argument("--family", type=int, choices=sorted(FAMILIES), action="append")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help=f"seconds a name (default {TIMEOUT})")
    parser.add_argument(
        "--address",
        help="connect to this address instead of resolving each name (a client with a hard-coded address)",
    )
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    families = args.family or [4, 6]
    if args.address:
        families = [6 if ":" in args.address else 4]
    slots = asyncio.Semaphore(CONCURRENCY)
    results = await asyncio.gather(
        *(fetch(n, f, args.cacert, slots, args.timeout, args.address) for n in args.names for f in families)
    )
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
