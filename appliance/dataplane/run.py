"""`appliance run --config FILE`: the data plane in the current network namespace.

Start: validate the config (a bad one stops here, with nothing applied), add the iptables-nft queue
fallback if the kernel lacks nft's queue, apply the nftables table in one transaction, turn on
forwarding, start the child services, then tell systemd READY=1 and keep its watchdog fed.
Stop (SIGTERM or SIGINT, or a failure at start): stop the services, put the sysctls back, and remove
the fallback rules and the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from appliance import config as config_module
from appliance import dnsfilter, resolver, webfilter
from appliance.blockpage import server as blockpage
from appliance.config import Config
from appliance.dataplane import kernel, queue, ruleset
from appliance.dataplane.nft import Nft, NftError
from appliance.dataplane.notify import Notifier
from appliance.dataplane.supervisor import Service, ServiceError, Supervisor

log = logging.getLogger(__name__)

# Child services in start order; each can be left to its own systemd unit with --skip NAME.
SERVICE_NAMES = ("resolver", "dnsfilter", "webfilter", "blockpage")


def services(config: Config, config_path: str, skip: set[str]) -> list[Service]:
    """The resolver first: the DNS filter forwards to it. Then the DNS filter, the NFQUEUE consumer and
    the block-page server."""
    candidates = [
        resolver.service(config),
        dnsfilter.service(config, config_path),
        webfilter.service(config, config_path),
        blockpage.service(config, config_path),
    ]
    return [s for s in candidates if s.name not in skip]


class DataPlane:
    """The kernel side: nftables table, queue fallback and sysctls; remove() undoes whatever apply() did."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.nft = Nft()
        self.sysctls = kernel.Sysctls()
        self.native_queue = queue.native_queue_supported(self.nft)

    def apply(self) -> None:
        if not self.native_queue:
            queue.apply_fallback(self.config)  # first: its rules act only on packets the table marks
        self.nft.run(ruleset.build(self.config, self.native_queue))
        self.sysctls.apply(kernel.settings(self.config))
        log.info(
            "applied table %s %s (queue: %s)",
            ruleset.FAMILY,
            ruleset.TABLE,
            "nft queue" if self.native_queue else "iptables-nft NFQUEUE fallback",
        )

    def remove(self) -> None:
        self.sysctls.restore()  # first: no forwarding once the filtering is gone
        if not self.native_queue:
            queue.remove_fallback(self.nft)
        self.nft.delete_table(ruleset.FAMILY, ruleset.TABLE)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(config: Config, config_path: str, skip: set[str], notifier: Notifier) -> int:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_stop)
    supervisor = Supervisor(services(config, config_path, skip))
    dataplane: DataPlane | None = None
    status = 0
    try:
        dataplane = DataPlane(config)
        dataplane.apply()
        supervisor.start()
        notifier.ready()
        notifier.status(f"filtering {len(config.lans)} LAN interfaces")
        interval = min(1.0, notifier.watchdog_interval or 1.0)
        while True:
            time.sleep(interval)
            supervisor.poll()
            notifier.watchdog()
    except _Stop as stop:
        log.info("stopping on %s", stop)
    except (NftError, ServiceError, subprocess.CalledProcessError, OSError) as e:
        log.error("%s", e)
        status = 1
    finally:
        # Nothing may interrupt the clean-up half-way.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
        notifier.stopping()
        supervisor.stop()
        if dataplane is not None:
            dataplane.remove()
    return status


def check(config: Config, config_path: str, skip: set[str]) -> str:
    """What `run` would apply, for --check (needs no privileges and changes nothing)."""
    out = ["groups (id: name, when the fast path is down, internet):"]
    out += [f"  {g.id}: {g.name}, fail {g.fail}, {g.internet}" for g in config.groups]
    out += ["LAN interfaces:"]
    out += [f"  {lan.interface} -> {lan.group} {', '.join(map(str, lan.subnets))}" for lan in config.lans]
    out += ["child services:"]
    out += [f"  {s.name}: {' '.join(s.argv)}" for s in services(config, config_path, skip)]
    out += [f"nftables table {ruleset.FAMILY} {ruleset.TABLE}, one python-nftables JSON command a line:"]
    out += [json.dumps(command) for command in ruleset.build(config, native_queue=True)]
    out += ["where the kernel lacks nft's queue, chain `queue` is left out and iptables-nft does its work:"]
    out += [queue.fallback_restore_script(config)]
    return "\n".join(out)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run", help="run the data plane (nftables, resolver, filters) until stopped"
    )
    parser.add_argument("--config", required=True, help="the appliance's TOML configuration")
    parser.add_argument("--check", action="store_true", help="validate and print what would be applied")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=SERVICE_NAMES,
        help="a child service run by its own systemd unit instead (repeatable)",
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as e:
        print(f"invalid configuration, nothing applied:\n{e}", file=sys.stderr)
        return 2
    config_path = str(Path(args.config).resolve())  # for the children, whatever their working folder
    if args.check:
        print(check(config, config_path, set(args.skip)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(config, config_path, set(args.skip), Notifier())
