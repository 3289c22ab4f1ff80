"""The lab's web server: one process answering every lab web site over HTTP (TCP 80), HTTPS (TCP 443)
and HTTP/3 (UDP 443) on each site address. Each page says which name was served and how, so a test can
tell what really reached the internet:

    lab site www.bbc.co.uk
    protocol https
    sni www.bbc.co.uk
    server 203.0.113.20
    client 198.51.100.2

Run inside the internet namespace: python -m appliance.lab.webserver --cert C --key K ADDRESS...
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from functools import partial

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent

from appliance.lab.sites import HTTP_PORT, HTTPS_PORT, load_internet

MAX_HEAD = 16384  # bytes of request head read before giving up on a request
READ_TIMEOUT = 10.0


def page(names: frozenset[str], host: str, protocol: str, details: dict[str, str]) -> tuple[int, bytes]:
    """The status and body for a request for host (a Host header or :authority); names outside the lab
    get a 404. Empty details are left out."""
    name = (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).lower().rstrip(".")
    if name not in names:
        return 404, f"no lab site {name or '(no host)'}\n".encode()
    lines = [f"lab site {name}", f"protocol {protocol}", *(f"{k} {v}" for k, v in details.items() if v)]
    return 200, ("\n".join(lines) + "\n").encode()


def log(protocol: str, client: str, server: str, host: str, status: int) -> None:
    print(f"{protocol} {client} -> {server} host={host or '-'} status={status}", flush=True)


async def handle_tcp(
    names: frozenset[str], protocol: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    server = writer.get_extra_info("sockname")[0]
    client = writer.get_extra_info("peername")[0]
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
        writer.close()
        return
    host = ""
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "host":
            host = value.strip()
    ssl_object = writer.get_extra_info("ssl_object")
    sni = getattr(ssl_object, "lab_sni", "") if ssl_object else ""
    status, body = page(names, host, protocol, {"sni": sni, "server": server, "client": client})
    log(protocol, client, server, host, status)
    reason = "OK" if status == 200 else "Not Found"
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    try:
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    except ConnectionError:
        pass


class H3Server(QuicConnectionProtocol):
    def __init__(self, *args: object, names: frozenset[str], server: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._names = names
        self._server = server
        self._h3: H3Connection | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._h3 = H3Connection(self._quic)
        if self._h3 is None:
            return
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                headers = dict(h3_event.headers)
                host = headers.get(b":authority", b"").decode("latin-1")
                status, body = page(self._names, host, "h3", {"server": self._server})
                log("h3", "-", self._server, host, status)
                self._h3.send_headers(
                    h3_event.stream_id,
                    [
                        (b":status", str(status).encode()),
                        (b"content-type", b"text/plain"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                )
                self._h3.send_data(h3_event.stream_id, body, end_stream=True)
                self.transmit()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])

    def remember_sni(ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        ssl_object.lab_sni = server_name or ""  # type: ignore[attr-defined]

    ctx.sni_callback = remember_sni
    return ctx


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m appliance.lab.webserver")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("addresses", nargs="+")
    args = parser.parse_args(argv)
    names = frozenset(load_internet().names("web"))
    ctx = tls_context(args.cert, args.key)
    quic = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    quic.load_cert_chain(args.cert, args.key)
    for addr in args.addresses:
        await asyncio.start_server(partial(handle_tcp, names, "http"), addr, HTTP_PORT, limit=MAX_HEAD)
        await asyncio.start_server(
            partial(handle_tcp, names, "https"), addr, HTTPS_PORT, ssl=ctx, limit=MAX_HEAD
        )
        await serve(
            addr, HTTPS_PORT, configuration=quic, create_protocol=partial(H3Server, names=names, server=addr)
        )
    print(f"serving {len(names)} names on {' '.join(args.addresses)}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
