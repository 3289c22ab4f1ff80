"""`appliance dnsfilter --config FILE`: the DNS filter that every LAN client's DNS is redirected to.

It listens on [dns] listen_port on every address, UDP and TCP, IPv4 and IPv6, and forwards what
each group's policy allows to the appliance's own unbound ([dns] upstream). The work per query is
fastpath.dnsfilter's: a batched UDP loop without the GIL in its own thread. This module wires it up:

- the group of each [[lan]] interface (by ifindex, looked up again as interfaces come and go) and
  subnet, and each group's DNS settings (safe search, ECH stripping, DoH canary, Private Relay);
- the policy in force (appliance.policy.live): checked every second and on SIGHUP, and swapped in
  whole, the old table kept mapped until the loop has moved to the new one;
- TCP (low volume): a thread per connection, one upstream TCP connection per forwarded query; a TCP
  client's group comes from the interface its packets arrived on (appliance.dataplane.ingress);
- block events: a thread drains the engine's ring into SQLite (appliance.events) about once a
  second, with the client's MAC from the neighbour table, and prunes events past their retention.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance import config as config_module
from appliance import events, resolver
from appliance.config import Config, Group
from appliance.dataplane import ruleset
from appliance.dataplane.ingress import ingress_ifindex, record_ingress
from appliance.dataplane.nft import Nft, NftError
from appliance.dataplane.supervisor import Service
from appliance.lists import catalogue, importer
from appliance.lists.sources import FetchError
from appliance.policy.compiled import CompiledPolicy
from appliance.policy.live import LivePolicy, Snapshot
from appliance.store import Store
from fastpath import dnsfilter, verdict

log = logging.getLogger(__name__)

GOOGLE_DOMAINS = Path(__file__).parent / "data" / "google_search_domains.txt"
# Seconds: under the 5 s that stub resolvers wait, so a client hears SERVFAIL rather than nothing.
UPSTREAM_TIMEOUT = 4.0
REFRESH_INTERVAL = 1.0
EVENT_FLUSH_INTERVAL = 1.0
EVENT_RING = 4096  # block events waiting for the writer; beyond that they are counted, not kept
EVENT_CHUNK = 1024  # block events per transaction
EVENT_RETENTION = timedelta(days=90)
PRUNE_INTERVAL = 3600.0
# The policy category whose names are DoH (and DoT) endpoints, and how often their addresses are looked
# up again: half the nftables sets' timeout, so an address that still resolves never lapses.
DOH_CATEGORY = "doh_dot"
DOH_REFRESH = ruleset.DOH_TIMEOUT / 2
DOH_ASKED_AGAIN = 1.0  # seconds before a name blocked again is looked up again: a flood costs one a second
DOH_ASKED_MAX = 1024  # blocked DoH names waiting to be looked up; beyond that they wait for the next block
TCP_IDLE_TIMEOUT = 10.0
TCP_MAX_CONNECTIONS = 256
RECEIVE_BUFFER = 4 << 20  # bursts of queries wait in the kernel, not on the floor
SO_RCVBUFFORCE = 33  # beyond net.core.rmem_max (root); Python's socket module does not name it

# Names rewritten to a safe-search target (STANDARDS.md section 4), per search engine, and the
# targets at each safesearch level.
YOUTUBE = (
    "www.youtube.com",
    "m.youtube.com",
    "youtubei.googleapis.com",
    "youtube.googleapis.com",
    "www.youtube-nocookie.com",
)
SAFE_TARGETS: dict[str, dict[str, str]] = {
    "google": {"strict": "forcesafesearch.google.com", "moderate": "forcesafesearch.google.com"},
    "youtube": {"strict": "restrict.youtube.com", "moderate": "restrictmoderate.youtube.com"},
    "bing": {"strict": "strict.bing.com", "moderate": "strict.bing.com"},
    "duckduckgo": {"strict": "safe.duckduckgo.com", "moderate": "safe.duckduckgo.com"},
}
# Answered NXDOMAIN when the group turns the setting on (STANDARDS.md section 5).
DOH_CANARY = ("use-application-dns.net",)
PRIVATE_RELAY = ("mask.icloud.com", "mask-h2.icloud.com")


def google_search_names() -> tuple[str, ...]:
    """Every Google search domain and its www. name."""
    domains = [line.strip().lstrip(".") for line in GOOGLE_DOMAINS.read_text().splitlines()]
    domains = [d for d in domains if d and not d.startswith("#")]
    return tuple(name for d in domains for name in (d, f"www.{d}"))


def feature_names() -> dict[str, tuple[str, ...]]:
    """The special names of each feature, in feature-id order."""
    return {
        "google": google_search_names(),
        "youtube": YOUTUBE,
        "bing": ("www.bing.com",),
        "duckduckgo": ("duckduckgo.com", "www.duckduckgo.com"),
        "doh_canary": DOH_CANARY,
        "private_relay": PRIVATE_RELAY,
    }


def feature_action(group: Group, feature: str, targets: list[str]) -> int:
    """What the group does with a feature's names (its [groups.NAME] DNS settings), as the engine takes
    it: FEATURE_OFF, FEATURE_NXDOMAIN, or the index of a CNAME target in targets."""
    if feature in SAFE_TARGETS:
        if group.safesearch == "off":
            return dnsfilter.FEATURE_OFF
        return targets.index(SAFE_TARGETS[feature][group.safesearch])
    on = group.block_doh_canary if feature == "doh_canary" else group.block_private_relay
    return dnsfilter.FEATURE_NXDOMAIN if on else dnsfilter.FEATURE_OFF


def new_engine(config: Config, upstream_timeout: float = UPSTREAM_TIMEOUT) -> dnsfilter.Engine:
    names = feature_names()
    targets = sorted({t for by_level in SAFE_TARGETS.values() for t in by_level.values()})
    return dnsfilter.Engine(
        len(config.groups),
        block_ipv4=str(config.dns.block_ipv4),
        block_ipv6=str(config.dns.block_ipv6),
        nxdomain=config.dns.block_answer == "nxdomain",
        ttl=config.dns.block_ttl,
        special_names={name: i for i, group in enumerate(names.values()) for name in group},
        targets=targets,
        actions=[[feature_action(g, feature, targets) for feature in names] for g in config.groups],
        strip_ech=[g.strip_ech for g in config.groups],
        upstream_timeout=upstream_timeout,
        events=EVENT_RING,
    )


# --- the policy in force -------------------------------------------------------------------------


class PolicyFollower:
    """Keeps the engine on the policy in force and on the interfaces as they are now."""

    def __init__(self, engine: dnsfilter.Engine, config: Config) -> None:
        self.engine = engine
        self.config = config
        self.live = LivePolicy(config.appliance.state_dir)
        self.generation = 0
        # Which compiled policy names the bits of the events of each generation (the writer reads it).
        self.compiled: dict[int, CompiledPolicy | None] = {}
        self._lans: list[tuple[int, int]] | None = None
        self._index = {g.name: i for i, g in enumerate(config.groups)}
        self._subnets = [(net, self._index[lan.group]) for lan in config.lans for net in lan.subnets]

    def close(self) -> None:
        self.live.close()

    def refresh(self) -> None:
        try:
            changed = self.live.refresh()
        except (OSError, ValueError, KeyError, sqlite3.Error) as e:  # keep filtering with the one we have
            log.error("cannot load the policy in force, keeping the current one: %s", e)
            changed = False
        lans = self._interfaces()
        if changed or lans != self._lans:
            self._publish(lans)

    def _interfaces(self) -> list[tuple[int, int]]:
        lans = []
        for lan in self.config.lans:
            with contextlib.suppress(OSError):  # not there (yet): its subnets still place its clients
                lans.append((socket.if_nametoindex(lan.interface), self._index[lan.group]))
        return lans

    def _policy(self, snap: Snapshot | None, group: Group) -> verdict.GroupPolicy:
        if snap is not None and group.name in snap.policies:
            return snap.policies[group.name]
        # No policy for the group (none applied yet): what the group does when filtering is down.
        closed = group.fail == "closed"
        return verdict.GroupPolicy(default_action=verdict.Action.BLOCK if closed else verdict.Action.ALLOW)

    def _publish(self, lans: list[tuple[int, int]]) -> None:
        snap = self.live.snapshot
        self.generation += 1
        self.compiled[self.generation] = snap.compiled if snap else None
        policies = [self._policy(snap, g) for g in self.config.groups]
        self.engine.set_state(snap.table if snap else None, policies, self.generation, lans, self._subnets)
        self._lans = lans
        for old in [g for g in self.compiled if g < self.generation - 64]:
            del self.compiled[old]
        log.info(
            "policy %s, %d of %d LAN interfaces present",
            snap.generation if snap else "(none applied)",
            len(lans),
            len(self.config.lans),
        )


# --- block events --------------------------------------------------------------------------------


class Neighbours:
    """MAC addresses from the kernel's neighbour table (clients on the appliance's own segments)."""

    MAX_AGE = 30.0
    MISS_RETRY = 2.0

    def __init__(self) -> None:
        self._macs: dict[str, str] = {}
        self._read_at = -self.MAX_AGE

    def mac(self, address: str) -> str | None:
        age = time.monotonic() - self._read_at
        if age > self.MAX_AGE or (address not in self._macs and age > self.MISS_RETRY):
            self._read()
        return self._macs.get(address)

    def _read(self) -> None:
        self._read_at = time.monotonic()
        try:
            out = subprocess.run(["ip", "-j", "neigh", "show"], capture_output=True, text=True, timeout=5)
            entries = json.loads(out.stdout or "[]")
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            log.warning("cannot read the neighbour table: %s", e)
            return
        self._macs = {e["dst"]: e["lladdr"] for e in entries if "lladdr" in e and "dst" in e}


def prune(store: Store, before: datetime) -> int:
    """Deletes block events older than before; returns how many."""
    cursor = store.db.execute(
        "DELETE FROM block_events WHERE ts < ?", (before.astimezone(UTC).isoformat(timespec="microseconds"),)
    )
    return cursor.rowcount


class EventWriter(threading.Thread):
    """Drains the engine's block events into SQLite, off the hot path: the loop never waits for it,
    and what the ring cannot hold is counted by the engine and reported here."""

    def __init__(
        self,
        engine: dnsfilter.Engine,
        follower: PolicyFollower,
        retention: timedelta,
        doh: DohAddresses | None = None,
    ) -> None:
        super().__init__(name="dnsfilter-events", daemon=True)
        self.engine = engine
        self.follower = follower
        self.retention = retention
        self.doh = doh  # told of each name blocked in the DoH category
        self.groups = [g.name for g in follower.config.groups]
        self.neighbours = Neighbours()
        self.written = 0
        self.lost = 0  # events a failed write lost
        self._done = threading.Event()
        self._dropped_reported = 0
        self._pruned_at = -PRUNE_INTERVAL

    def stop(self) -> None:
        self._done.set()

    def run(self) -> None:
        with Store(self.follower.config.appliance.state_dir) as store:
            events.ensure(store)
            while not self._done.wait(EVENT_FLUSH_INTERVAL):
                self.flush(store)
            self.flush(store)

    def flush(self, store: Store) -> None:
        # At most a ring's worth a flush: under a flood the writer's work stays bounded, and the ring
        # (not the writer) decides what is dropped.
        for _ in range(EVENT_RING // EVENT_CHUNK):
            batch = self.engine.drain_events(EVENT_CHUNK)
            if not batch:
                break
            rows = [self._event(*raw) for raw in batch]
            if self.doh is not None:
                for row in rows:
                    if row.category == DOH_CATEGORY:
                        self.doh.blocked(row.name)
            try:
                self.written += events.record(store, rows)
            except sqlite3.Error as e:
                self.lost += len(rows)
                log.error("cannot record %d block events: %s", len(rows), e)
            if len(batch) < EVENT_CHUNK:
                break
        dropped = self.engine.stats()["events_dropped"]
        if dropped > self._dropped_reported:
            log.warning("block event ring full: %d events not recorded", dropped - self._dropped_reported)
            self._dropped_reported = dropped
        if time.monotonic() - self._pruned_at >= PRUNE_INTERVAL:
            self._pruned_at = time.monotonic()
            try:
                pruned = prune(store, datetime.now(UTC) - self.retention)
            except sqlite3.Error as e:
                log.error("cannot prune block events: %s", e)
            else:
                if pruned:
                    log.info("pruned %d block events older than %s", pruned, self.retention)

    def _event(
        self, ts_us: int, generation: int, group: int, client: str, name: str, reason: int, bits: int
    ) -> events.BlockEvent:
        compiled = self.follower.compiled.get(generation)
        category = None
        if compiled is not None:
            category = next((b.category for b in compiled.describe(bits) if b.kind == "category"), None)
        return events.BlockEvent(
            ts=datetime.fromtimestamp(ts_us / 1e6, UTC),
            client_ip=client,
            group=self.groups[group],
            name=name,
            layer="dns",
            rule=verdict.Reason(reason).name,
            category=category,
            mac=self.neighbours.mac(client),
        )


# --- DoH endpoints by address ----------------------------------------------------------------------


class DohAddresses(threading.Thread):
    """Keeps the ruleset's doh_ipv4 and doh_ipv6 sets holding the addresses of known DoH endpoints, so
    that a client which already knows an endpoint's address (and so never asks DNS for it) is still
    refused on 443. Off the hot path: it resolves through the appliance's own unbound, which answers
    unfiltered, and writes the sets with python-nftables, each address for the sets' timeout
    (ruleset.DOH_TIMEOUT), renewed while the name still resolves to it.

    Which names: the names of the lists in the DoH category in the policy in force, read in clear from
    their sources (a DoH list is not confidential; a source is read again only once an import has
    changed it), each that the policy blocks for at least one group; resolved at start, on every new
    policy and every DOH_REFRESH. And every name the filter blocks in that category, resolved as
    soon as its block event is written: a list entry covers its subdomains, which no list can name."""

    def __init__(self, follower: PolicyFollower) -> None:
        super().__init__(name="dnsfilter-doh", daemon=True)
        self.follower = follower
        self.upstream = follower.config.dns.upstream
        self.asked: queue.Queue[str] = queue.Queue(DOH_ASKED_MAX)
        self._wake = threading.Event()
        self._done = threading.Event()
        self._names: dict[tuple[str, str | None], list[str]] = {}  # (list, source digest) -> names
        self._resolved: dict[str, float] = {}  # name -> when it was looked up, for DOH_ASKED_AGAIN
        self._later: set[str] = set()  # blocked names to look up once DOH_ASKED_AGAIN has passed
        self._nft_error: str | None = None

    def stop(self) -> None:
        self._done.set()
        self._wake.set()

    def blocked(self, name: str) -> None:
        """A query for name was blocked in the DoH category: resolve it soon (called by the writer).
        Under a flood of names (random subdomains, say) the queue is full and the name is let go: a
        client that keeps asking comes back, and the addresses of the listed names are kept anyway."""
        with contextlib.suppress(queue.Full):
            self.asked.put_nowait(name)
        self._wake.set()

    def run(self) -> None:
        nft = Nft()
        generation = None
        due = 0.0
        with Store(self.follower.config.appliance.state_dir) as store:
            while not self._done.is_set():
                snap = self.follower.live.snapshot  # one attribute read; the snapshot is immutable
                names = []
                if snap is not None and (snap.generation != generation or time.monotonic() >= due):
                    generation, due = snap.generation, time.monotonic() + DOH_REFRESH
                    names = self._listed(store, snap)
                now = time.monotonic()
                self._resolved = {n: t for n, t in self._resolved.items() if now - t < DOH_ASKED_AGAIN}
                while not self.asked.empty():
                    self._later.add(self.asked.get_nowait())
                # A name looked up moments ago waits for its turn rather than being dropped: the set
                # may have lost its addresses since (expired, or flushed by an administrator).
                ready = {n for n in self._later if n not in self._resolved}
                self._later -= ready
                names += sorted(ready)
                self._add(nft, list(dict.fromkeys(names)))
                self._wake.wait(REFRESH_INTERVAL)  # a new policy is noticed within a second
                self._wake.clear()

    def _listed(self, store: Store, snap: Snapshot) -> list[str]:
        """The names of the policy's DoH lists that it blocks for at least one group."""
        names: list[str] = []
        for ref in snap.compiled.inputs.lists:
            if ref.category != DOH_CATEGORY:
                continue
            try:
                info = catalogue.get(store, ref.name)
                key = (info.name, info.source_sha256)
                if key not in self._names:
                    self._names = {k: v for k, v in self._names.items() if k[0] != info.name}
                    self._names[key] = importer.read_names(info, store.lists_dir)
            except (ValueError, OSError, FetchError, importer.ImportFailed, sqlite3.Error) as e:
                log.warning("DoH endpoints: cannot read the names of list %s: %s", ref.name, e)
                continue
            names += self._names[key]
        policies = [snap.policies[g.name] for g in self.follower.config.groups if g.name in snap.policies]
        return [
            n
            for n in names
            if any(verdict.decide(snap.table, n, p).action == verdict.Action.BLOCK for p in policies)
        ]

    def _add(self, nft: Nft, names: list[str]) -> None:
        if not names:
            return
        found: dict[str, set[str]] = {"doh_ipv4": set(), "doh_ipv6": set()}
        for name in names:
            for address in resolver.lookup(self.upstream, name):
                found["doh_ipv6" if ":" in address else "doh_ipv4"].add(address)
            self._resolved[name] = time.monotonic()
        commands = []
        for set_name, addresses in found.items():
            if addresses:
                element = {"family": ruleset.FAMILY, "table": ruleset.TABLE, "name": set_name}
                element["elem"] = sorted(addresses)
                # Add (so that the delete finds it), delete, add: each address gets a fresh timeout.
                commands += [{"add": {"element": element}}, {"delete": {"element": element}}]
                commands.append({"add": {"element": element}})
        if not commands:
            return
        try:
            nft.run(commands)
        except NftError as e:
            if str(e) != self._nft_error:  # said once, not every refresh (say, no table yet)
                log.warning("DoH endpoints: cannot update the nftables sets: %s", e)
            self._nft_error = str(e)
            return
        self._nft_error = None
        log.info(
            "DoH endpoints: %d names, %d IPv4 and %d IPv6 addresses refused on 443",
            len(names),
            len(found["doh_ipv4"]),
            len(found["doh_ipv6"]),
        )


# --- TCP -----------------------------------------------------------------------------------------


def _host(address: str) -> str:
    return address.partition("%")[0]  # a link-local peer comes with its scope


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """n bytes, or None if the peer closes first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _recv_message(sock: socket.socket) -> bytes | None:
    head = _recv_exact(sock, 2)
    return None if head is None else _recv_exact(sock, struct.unpack("!H", head)[0])


class TcpServer:
    """DNS over TCP: a thread per connection (there are few), queries answered in order."""

    def __init__(self, engine: dnsfilter.Engine, upstream: config_module.Endpoint, timeout: float) -> None:
        self.engine = engine
        self.upstream = upstream
        self.timeout = timeout
        self.slots = threading.BoundedSemaphore(TCP_MAX_CONNECTIONS)
        self.done = threading.Event()

    def accept(self, listener: socket.socket) -> None:
        """Takes connections until stop()."""
        listener.settimeout(REFRESH_INTERVAL)
        while not self.done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError as e:
                log.warning("TCP accept failed: %s", e)
                continue
            if not self.slots.acquire(blocking=False):
                conn.close()  # too many: the client retries, or falls back to UDP
                continue
            threading.Thread(target=self._serve, args=(conn,), name="dnsfilter-tcp", daemon=True).start()

    def stop(self) -> None:
        self.done.set()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(TCP_IDLE_TIMEOUT)
                client = _host(conn.getpeername()[0])
                local = _host(conn.getsockname()[0])
                ifindex = ingress_ifindex(conn)
                while (message := _recv_message(conn)) is not None:
                    result = self.engine.query(message, client, local, ifindex)
                    if isinstance(result, dnsfilter.Forward):
                        result = self._forward(result)
                    if result is not None:
                        conn.sendall(struct.pack("!H", len(result)) + result)
        except OSError:  # idle timeout, reset: the connection is done
            pass
        finally:
            self.slots.release()

    def _forward(self, forward: dnsfilter.Forward) -> bytes | None:
        deadline = time.monotonic() + self.timeout
        try:
            address = (str(self.upstream.address), self.upstream.port)
            with socket.create_connection(address, timeout=self.timeout) as upstream:
                upstream.sendall(struct.pack("!H", len(forward.message)) + forward.message)
                upstream.settimeout(max(0.001, deadline - time.monotonic()))
                answer = _recv_message(upstream)
        except OSError:
            answer = None
        reply = self.engine.answer(forward, answer) if answer is not None else None
        return reply if reply is not None else self.engine.servfail(forward)


# --- the process ---------------------------------------------------------------------------------


def _udp_socket(family: socket.AddressFamily, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    return sock


def _tcp_socket(family: socket.AddressFamily, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    record_ingress(sock)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    sock.listen(128)
    return sock


class DnsFilter:
    def __init__(
        self,
        config: Config,
        upstream_timeout: float = UPSTREAM_TIMEOUT,
        retention: timedelta = EVENT_RETENTION,
    ) -> None:
        self.config = config
        self.engine = new_engine(config, upstream_timeout)
        port = config.dns.listen_port
        self.sockets: list[socket.socket] = []
        self.udp = [self._own(_udp_socket(f, port)) for f in self._families()]
        self.tcp = [self._own(_tcp_socket(f, port)) for f in self._families()]
        upstream = config.dns.upstream
        family = socket.AF_INET6 if upstream.address.version == 6 else socket.AF_INET
        self.upstream = self._own(socket.socket(family, socket.SOCK_DGRAM))
        self.upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.upstream.connect((str(upstream.address), upstream.port))
        self.follower = PolicyFollower(self.engine, config)
        self.follower.refresh()
        self.doh = DohAddresses(self.follower)
        self.writer = EventWriter(self.engine, self.follower, retention, self.doh)
        self.tcp_server = TcpServer(self.engine, upstream, upstream_timeout)
        self.wake = threading.Event()  # the main loop's: refresh now (SIGHUP), or stop
        self.failed = False

    @staticmethod
    def _families() -> list[socket.AddressFamily]:
        # A kernel without IPv6 (ipv6.disable=1) still gets an IPv4 filter.
        return [socket.AF_INET, *([socket.AF_INET6] if Path("/proc/net/if_inet6").exists() else [])]

    def _own(self, sock: socket.socket) -> socket.socket:
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.follower.close()

    def _serve_udp(self) -> None:
        fd6 = self.udp[1].fileno() if len(self.udp) > 1 else -1
        try:
            self.engine.serve_udp(self.udp[0].fileno(), fd6, self.upstream.fileno())
        except OSError as e:
            log.error("UDP loop failed: %s", e)
            self.failed = True
        finally:
            self.wake.set()

    def serve(self) -> int:
        """Serves until SIGTERM or SIGINT; SIGHUP re-reads the policy at once."""
        stop = threading.Event()

        def on_stop(signum: int, frame: object) -> None:
            stop.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, lambda signum, frame: self.wake.set())
        udp = threading.Thread(target=self._serve_udp, name="dnsfilter-udp")
        accept = [threading.Thread(target=self.tcp_server.accept, args=(s,)) for s in self.tcp]
        threads = [udp, *accept]
        for thread in threads:
            thread.start()
        self.writer.start()
        self.doh.start()
        log.info("serving DNS on port %d for %d groups", self.config.dns.listen_port, len(self.config.groups))
        try:
            while not stop.is_set() and udp.is_alive():
                self.wake.wait(REFRESH_INTERVAL)
                self.wake.clear()
                self.follower.refresh()
        finally:
            self.tcp_server.stop()
            self.engine.stop()
            for thread in threads:
                thread.join()
            self.writer.stop()
            self.writer.join()
            self.doh.stop()
            self.doh.join(timeout=UPSTREAM_TIMEOUT)
            self.close()
        log.info("stopped: %s, %d block events recorded", self.engine.stats(), self.writer.written)
        return 1 if self.failed else 0


# --- supervisor and CLI --------------------------------------------------------------------------


def service(config: Config, config_path: str | os.PathLike[str]) -> Service:
    """The DNS filter as a child of `appliance run`, ready once it answers on 127.0.0.1 (REFUSED,
    unless loopback is a [[lan]]: an answer all the same)."""
    return Service(
        name="dnsfilter",
        argv=[sys.executable, "-m", "appliance.cli", "dnsfilter", "--config", str(config_path)],
        ready=lambda: resolver.answers("127.0.0.1", config.dns.listen_port),
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dnsfilter", help="run the DNS filter (a child of `appliance run`)")
    parser.add_argument("--config", required=True, help="the appliance's TOML configuration")
    parser.add_argument(
        "--upstream-timeout",
        type=float,
        default=UPSTREAM_TIMEOUT,
        help=f"seconds until an unanswered forwarded query gets SERVFAIL (default {UPSTREAM_TIMEOUT})",
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as e:
        print(f"invalid configuration:\n{e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        dns_filter = DnsFilter(config, args.upstream_timeout)
    except OSError as e:
        log.error("cannot start: %s", e)
        return 1
    return dns_filter.serve()
