"""`python -m appliance.blockpage --config FILE`: the block-page HTTP server, a child of `appliance run`.

It listens on PORT on every address (IPv4 and IPv6); nftables redirects LAN clients' TCP 80 to the
block addresses here. The standard library's threaded HTTP server is enough for a few pages a second
and keeps the server in one small process beside the policy it explains; what a production server
would add is done here: a cap on connections at once, a timeout on every socket, GET and HEAD only,
no request body read, no files served, every response closed after one page.

What a request shows:
- Host is a name (the DNS filter pointed it at a block address): why that site is blocked (layer dns);
- Host is an address with ?site=NAME[&path=PATH] (the HTTP filter's redirect): why that site, or that
  page on it, is blocked (layer http);
- otherwise, what this page is.

The client's group is its [[lan]]: the interface the connection came in on, with the client's address
in one of that LAN's subnets (what the ruleset requires before it redirects anything here). Nothing
else is served: a connection from anywhere else gets a bare 403.

The main thread follows the policy in force (appliance.policy.live) about once a second and on SIGHUP,
and publishes it with the web UI's address in one assignment, which request threads only read.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import ipaddress
import logging
import signal
import socket
import sqlite3
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

from appliance import config as config_module
from appliance.blockpage import PORT, page, reason
from appliance.config import Config, Lan
from appliance.dataplane.ingress import ingress_ifindex, record_ingress
from appliance.dataplane.supervisor import Service
from appliance.lists.lookup import ListLookup
from appliance.policy.live import LivePolicy, Snapshot
from appliance.policy.model import PolicyError
from fastpath.names import normalise

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 1.0
# Connections at once, in all and from one device (a browser opens up to 6 to a host); more are closed
# at once, so one device holding connections open cannot keep other pupils from their pages.
MAX_CONNECTIONS = 64
MAX_PER_CLIENT = 8
SOCKET_TIMEOUT = 5.0  # seconds a client may take to send its request
SITE_PARAMETER_LIMIT = 300  # characters of ?site= looked at (a name is at most 253)
WEBUI_URL = "webui.url"  # the settings key the web UI keeps its address in


@dataclass(frozen=True)
class Published:
    """What request threads read: the policy in force, its list lookup, and the web UI's address."""

    snapshot: Snapshot | None = None
    lookup: ListLookup | None = None
    webui_url: str = ""


@dataclass(frozen=True)
class Request:
    """What a request asks about: site is None for no site, "" for one that is not a valid name."""

    site: str | None
    path: bytes | None
    layer: str


def host_of(header: str) -> str:
    """The host in a Host header: no port, no brackets around an IPv6 address. Text that came as
    UTF-8 (http.server reads headers as Latin-1) is made text again; other bytes stay as they are and
    fail to be a name."""
    with contextlib.suppress(UnicodeError):
        header = header.encode("latin-1").decode("utf-8")
    header = header.strip()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    host, colon, port = header.rpartition(":")
    return host if colon and port.isdigit() and ":" not in host else header


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_request(host_header: str | None, target: str) -> Request:
    """The site a request is about, from its Host header or, when the Host is an address (a block
    address, after the HTTP filter's redirect), from its query."""
    host = host_of(host_header or "")
    if host and not _is_address(host):
        return Request(normalise(host) or "", None, "dns")
    query = dict(parse_qsl(urlsplit(target).query, encoding="latin-1"))  # latin-1: bytes kept as sent
    if "site" not in query:
        return Request(None, None, "http")
    site = normalise(query["site"][:SITE_PARAMETER_LIMIT]) or ""
    path = query["path"].encode("latin-1") if "path" in query else None
    return Request(site if site and not _is_address(site) else "", path, "http")


def lan_of(config: Config, ifindex: int, client: str) -> Lan | None:
    """The [[lan]] a connection belongs to: the one on its ingress interface whose subnets hold the
    client (the ruleset's own condition for giving a packet that LAN's group)."""
    try:
        interface = socket.if_indextoname(ifindex)
        address = ipaddress.ip_address(client)
    except (OSError, ValueError):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for lan in config.lans:
        if lan.interface == interface and any(address in net for net in lan.subnets):
            return lan
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    server: HttpServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT
    server_version = "appliance-blockpage"
    sys_version = ""

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        app = self.server.app
        client = self.client_address[0]
        lan = lan_of(app.config, ingress_ifindex(self.connection), client)
        if lan is None:
            status, html = 403, page.NOT_HERE
        else:
            status, html = app.render(parse_request(self.headers.get("Host"), self.path), lan, client)
        data = html.encode("utf-8")
        self.close_connection = True
        self.send_response(status)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def end_headers(self) -> None:
        # Every response, error pages included: nothing cached (the same name may be unblocked in a
        # minute), nothing framed, fetched or run.
        for name, value in page.SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        # No request lines in the log: they hold the names and pages pupils asked for. Block events
        # are the record of those.
        pass


class HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, family: socket.AddressFamily, app: BlockPageServer) -> None:
        self.address_family = family
        self.app = app
        super().__init__(
            ("::" if family == socket.AF_INET6 else "0.0.0.0", PORT), Handler, bind_and_activate=False
        )
        try:
            record_ingress(self.socket)
            if family == socket.AF_INET6:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        if not self.app.slots.take(client_address[0]):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.app.slots.give_back(client_address[0])
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.app.slots.give_back(client_address[0])

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away
        log.exception("error serving a block page")


class Slots:
    """Connections being served, in all and per client address."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.held: dict[str, int] = {}
        self.lock = threading.Lock()

    def take(self, client: str) -> bool:
        with self.lock:
            if sum(self.held.values()) >= self.total or self.held.get(client, 0) >= self.per_client:
                return False
            self.held[client] = self.held.get(client, 0) + 1
            return True

    def give_back(self, client: str) -> None:
        with self.lock:
            self.held[client] -= 1
            if not self.held[client]:
                del self.held[client]


class BlockPageServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.zone = ZoneInfo(config.appliance.timezone)
        self.published = Published()
        self.slots = Slots(MAX_CONNECTIONS, MAX_PER_CLIENT)
        families = [socket.AF_INET, *([socket.AF_INET6] if Path("/proc/net/if_inet6").exists() else [])]
        self.servers = [HttpServer(family, self) for family in families]

    def render(self, request: Request, lan: Lan, client: str) -> tuple[int, str]:
        published = self.published  # one read: a consistent policy for the whole page
        now = datetime.now(UTC)
        view = page.View(
            school=self.config.appliance.name,
            site=request.site,
            group=lan.group,
            layer=request.layer,
            client=client,
            time=now.astimezone(self.zone),
            webui_url=published.webui_url,
        )
        if not request.site or published.snapshot is None or published.lookup is None:
            return page.render(view, None)
        try:
            found = reason.find(
                published.snapshot, published.lookup, request.site, lan.group, now, request.path
            )
        except PolicyError:  # a group the policy does not know: it goes by its fail setting
            found = None
        return page.render(view, found)

    def follow(self, stop: threading.Event, wake: threading.Event) -> None:
        """Keeps `published` up to date until stop is set; wake makes it look at once."""
        live = LivePolicy(self.config.appliance.state_dir)
        try:
            while not stop.is_set():
                try:
                    self._refresh(live)
                # A damaged generation or a busy database: keep what was published.
                except (OSError, ValueError, KeyError, sqlite3.Error) as e:
                    log.error("cannot load the policy in force, keeping the current one: %s", e)
                wake.wait(REFRESH_INTERVAL)
                wake.clear()
        finally:
            live.close()

    def _refresh(self, live: LivePolicy) -> None:
        old = self.published
        changed = live.refresh()
        url = live.store.setting(WEBUI_URL, "").rstrip("/")
        if not changed and url == old.webui_url:
            return
        snapshot, lookup = live.snapshot, old.lookup
        if snapshot is not None and (old.snapshot is None or old.snapshot.generation != snapshot.generation):
            lists = snapshot.compiled.inputs.lists
            lookup = ListLookup(live.store.key(), [(r.name, r.category, r.path) for r in lists])
            log.info("policy %s in force", snapshot.generation)
        self.published = Published(snapshot, lookup, url)

    def serve(self) -> int:
        """Serves until SIGTERM or SIGINT; SIGHUP looks at the policy at once."""
        stop, wake = threading.Event(), threading.Event()

        def on_stop(signum: int, frame: FrameType | None) -> None:
            stop.set()
            wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, lambda signum, frame: wake.set())
        threads = [threading.Thread(target=s.serve_forever, name="blockpage-http") for s in self.servers]
        for thread in threads:
            thread.start()
        log.info("serving block pages on port %d", PORT)
        try:
            self.follow(stop, wake)
        finally:
            for server in self.servers:
                server.shutdown()
                server.server_close()
            for thread in threads:
                thread.join()
        return 0


def service(config: Config, config_path: str | Path) -> Service:
    """The block page as a child of `appliance run`: ready once it accepts connections."""
    return Service(
        name="blockpage",
        argv=[sys.executable, "-m", "appliance.blockpage", "--config", str(config_path)],
        ready=lambda: _accepts(("127.0.0.1", PORT)),
    )


def _accepts(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=0.5).close()
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.blockpage", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="the appliance's TOML configuration")
    args = parser.parse_args(argv)
    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as e:
        print(f"invalid configuration:\n{e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        server = BlockPageServer(config)
    except OSError as e:
        log.error("cannot start: %s", e)
        return 1
    return server.serve()
