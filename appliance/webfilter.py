"""`appliance webfilter --config FILE`: the fast path's NFQUEUE consumer (TLS, QUIC and HTTP).

The ruleset queues the first packets of each web flow (fastpath.packets_per_flow of them, from the
client); one thread per queue (fastpath.queue .. queue + queue_count - 1, which the kernel balances by
flow) reads them, finds the name (TLS or QUIC SNI, HTTP Host), decides with the group's policy and
answers in the packet mark (appliance.dataplane.marks), which the ruleset turns into the flow's
conntrack mark: later packets of a decided flow never reach userspace.

A flow that cannot be decided by a name is decided by its group's `fail` setting: fail-closed groups
(and allowlist groups, which always fail closed) block it, fail-open groups allow it. That covers a
ClientHello or request without a name or with an IP literal, anything malformed or not TLS/HTTP/QUIC
on a web port, nothing complete within the queued packets, and no policy applied (yet) or none for
the group. A packet that cannot be read at all is dropped for a fail-closed group and passed for a
fail-open one.

A plain-HTTP request blocked by its host's verdict or a page-level entry is answered, before the
block, with a redirect to the block page ([dns] block_ipv4, block_ipv6; appliance.blockpage.inject),
so the pupil sees why. Flows decided by the fail setting are reset without one: there is no site to
explain.

The main thread follows the policy in force (about once a second, and at once on SIGHUP), writes block
events to the state database about once a second, and feeds systemd's watchdog while every queue
thread is alive and coming round its loop.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from appliance import config as config_module
from appliance import events
from appliance.blockpage.inject import Injector
from appliance.config import Config
from appliance.dataplane import marks
from appliance.dataplane.notify import Notifier
from appliance.dataplane.supervisor import Service
from appliance.policy.live import LivePolicy, Snapshot
from fastpath.nfqueue import Consumer, Policy

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between the main thread's rounds (policy, events, watchdog)
POLICY_EVERY = 1.0  # seconds between policy checks without a SIGHUP
# A queue thread comes round at least every 0.2 s; one that has not for this long is stuck.
STUCK_AFTER = 5.0
QUEUE_MAXLEN = 4096  # packets the kernel holds for a queue before dropping (the default is 1024)
PROC_QUEUES = Path("/proc/net/netfilter/nfnetlink_queue")


def bound_queues(proc: Path = PROC_QUEUES) -> set[int]:
    """The NFQUEUE numbers a program has bound in this network namespace."""
    try:
        lines = proc.read_text().splitlines()
    except FileNotFoundError:  # nfnetlink_queue not loaded: nothing is bound
        return set()
    return {int(line.split()[0]) for line in lines if line.strip()}


def service(config: Config, config_path: str | Path) -> Service:
    """The consumer as a child of `appliance run`: ready once every queue is bound (which happens
    after the policy is loaded)."""
    queues = set(config.fastpath.queues)
    return Service(
        name="webfilter",
        argv=[sys.executable, "-m", "appliance.cli", "webfilter", "--config", str(config_path)],
        ready=lambda: queues <= bound_queues(),
    )


def consumer_policy(config: Config, snapshot: Snapshot) -> Policy:
    """The snapshot's masks for each configured group that the policy knows (by name)."""
    policies = {g.id: snapshot.policies[g.name] for g in config.groups if g.name in snapshot.policies}
    return Policy(snapshot.table, policies, snapshot.compiled.pages_bit, snapshot.pages.lookup)


class WebFilter:
    def __init__(self, config: Config, notifier: Notifier) -> None:
        self.config = config
        self.notifier = notifier
        self.live = LivePolicy(config.appliance.state_dir)
        events.ensure(self.live.store)
        self.group_names = {g.id: g.name for g in config.groups}
        groups = [(g.id, g.fail == "closed") for g in config.groups]
        self.injector = Injector(config.dns.block_ipv4, config.dns.block_ipv6)
        self.consumers = [
            Consumer(
                q,
                groups,
                config.fastpath.packets_per_flow,
                group_mask=marks.GROUP_MASK,
                allow_bit=marks.VERDICT_ALLOW,
                block_bit=marks.VERDICT_BLOCK,
                block_page=self.injector.redirect,
            )
            for q in config.fastpath.queues
        ]
        self.threads: list[threading.Thread] = []
        self.refresh_now = threading.Event()
        self.stopping = threading.Event()

    def refresh_policy(self) -> None:
        """Installs the policy in force if it changed (a new generation, exam mode, a schedule edge)."""
        previous = self.live.snapshot
        if not self.live.refresh():
            return
        # Events so far were decided under the previous policy, whose bits may mean other categories.
        self.record_events(previous)
        snapshot = self.live.snapshot
        assert snapshot is not None  # refresh() reports a change only once there is one
        for consumer in self.consumers:
            consumer.set_policy(consumer_policy(self.config, snapshot))
        unknown = [g.name for g in self.config.groups if g.name not in snapshot.policies]
        log.info(
            "policy %s in force%s",
            snapshot.generation,
            f"; no policy for {', '.join(unknown)} (decided by their fail setting)" if unknown else "",
        )

    def start(self) -> None:
        self.refresh_policy()
        if self.live.snapshot is None:
            log.warning("no policy applied yet: every flow is decided by its group's fail setting")
        for consumer in self.consumers:
            consumer.bind(QUEUE_MAXLEN)
        for consumer in self.consumers:
            thread = threading.Thread(target=consumer.run, name=f"nfqueue-{consumer.queue}", daemon=True)
            thread.start()
            self.threads.append(thread)
        queues = ", ".join(str(c.queue) for c in self.consumers)
        log.info("serving NFQUEUE %s, %d packets per flow", queues, self.config.fastpath.packets_per_flow)

    def record_events(self, snapshot: Snapshot | None) -> int:
        """Writes the queue threads' block events, naming categories by the snapshot's bits."""
        batch = []
        for consumer in self.consumers:
            for when, client, server, mac, group_id, name, layer, rule, bits in consumer.drain_events():
                batch.append(
                    events.BlockEvent(
                        ts=datetime.fromtimestamp(when, UTC),
                        client_ip=client,
                        group=self.group_names.get(group_id, str(group_id)),
                        # A flow without a name is recorded by the address it went to.
                        name=name or server,
                        layer=layer,
                        rule=rule,
                        category=category(snapshot, bits),
                        mac=mac,
                    )
                )
        return events.record(self.live.store, batch) if batch else 0

    def healthy(self) -> bool:
        return all(t.is_alive() for t in self.threads) and all(
            c.idle_seconds < STUCK_AFTER for c in self.consumers
        )

    def serve(self) -> int:
        """Runs until stop(); 1 if a queue thread died or got stuck (the supervisor restarts us)."""
        next_policy = time.monotonic() + POLICY_EVERY
        while not self.stopping.is_set():
            self.refresh_now.wait(TICK)
            if self.refresh_now.is_set() or time.monotonic() >= next_policy:
                self.refresh_now.clear()
                self.refresh_policy()
                next_policy = time.monotonic() + POLICY_EVERY
            self.record_events(self.live.snapshot)
            if not self.healthy():
                log.error("a queue thread died or is stuck; exiting so that it is restarted")
                return 1
            self.notifier.watchdog()
        return 0

    def stop(self) -> None:
        """Stops the queue threads, records their last events, unbinds the queues and closes the
        injector's sockets."""
        for consumer in self.consumers:
            consumer.stop()
        for thread in self.threads:
            thread.join(timeout=2.0)
        self.record_events(self.live.snapshot)
        running = {t.name for t in self.threads if t.is_alive()}
        for consumer in self.consumers:
            # A thread still inside its loop keeps its buffers; the process is exiting anyway.
            if f"nfqueue-{consumer.queue}" not in running:
                consumer.close()
        # A thread still running finds the sockets closed: its redirects fail, and are counted.
        self.injector.close()
        self.live.close()


def category(snapshot: Snapshot | None, bits: int) -> str | None:
    """The category behind a block (the first in the policy's order, so padlocked ones come first),
    or None when no category decided (a school rule, a trust-locked domain, the group's default)."""
    if snapshot is None:
        return None
    return next((b.category for b in snapshot.compiled.describe(bits) if b.kind == "category"), None)


def run(config: Config, notifier: Notifier) -> int:
    webfilter = WebFilter(config, notifier)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        webfilter.stopping.set()
        webfilter.refresh_now.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        webfilter.refresh_now.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        webfilter.start()
        notifier.ready()
        notifier.status(f"filtering web flows on {len(webfilter.consumers)} queue(s)")
        status = webfilter.serve()
    except OSError as e:
        log.error("%s", e)
        status = 1
    finally:
        notifier.stopping()
        webfilter.stop()
    return status


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "webfilter", help="run the fast path's NFQUEUE consumer (TLS, QUIC, HTTP) until stopped"
    )
    parser.add_argument("--config", required=True, help="the appliance's TOML configuration")
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as e:
        print(f"invalid configuration:\n{e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(config, Notifier())
