"""`appliance inspect CAPTURE`: what the fast path sees in a packet capture, flow by flow.

IT staff use it to check a capture taken on a school network (which names were asked for, and with
a policy what each group would get); we use it to test the parsers on real traffic."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from appliance.capture.flows import FlowRecord, classify
from appliance.capture.packets import decode
from appliance.capture.pcapfile import CaptureError, read_frames
from appliance.config import Config, ConfigError
from appliance.config import load as config_load
from appliance.policy.live import LivePolicy
from appliance.policy.model import PolicyError
from fastpath import verdict

# Given a record, the group its client is in and the verdict (group, verdict, reason).
Judge = Callable[[FlowRecord], tuple[str, str, str]]


def inspect_capture(path: str | Path) -> Iterator[FlowRecord]:
    packets = (p for f in read_frames(path) if (p := decode(f.linktype, f.data)) is not None)
    return classify(packets)


def format_text(record: FlowRecord, judged: tuple[str, str, str] | None) -> str:
    client = f"{_host(record.src)}:{record.sport}"
    server = f"{_host(record.dst)}:{record.dport}"
    what = record.name or f"(none: {record.note})"
    line = f"{record.transport:<3} {client:>28} -> {server:<28} {record.protocol:<4} {what}"
    if record.detail:
        line += f"  [{record.detail}]"
    if judged:
        group, verdict, reason = judged
        line += f"  => {group}: {verdict} ({reason})"
    return line


def format_json(record: FlowRecord, judged: tuple[str, str, str] | None) -> str:
    obj: dict[str, object] = asdict(record)
    if judged:
        obj["group"], obj["verdict"], obj["reason"] = judged
    return json.dumps(obj)


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def policy_judge(state_dir: Path, group_of: Callable[[str], str | None]) -> Judge:
    """Judges records with the policy applied in an appliance state directory, as the data plane would
    now: the client's group from group_of, then the fast path's own decision on the name."""
    live = LivePolicy(state_dir)
    live.refresh()
    snap = live.snapshot
    if snap is None:
        raise PolicyError(f"{state_dir}: no policy has been applied there yet (appliance policy apply)")

    def judge(record: FlowRecord) -> tuple[str, str, str]:
        group = group_of(record.src)
        if group is None:
            return "-", "-", "the client is in no configured subnet"
        if record.name is None:
            return group, "-", "no name to judge"
        v = verdict.decide(snap.table, record.name, snap.policies[group])
        why = ", ".join(b.describe() for b in snap.compiled.describe(v.bits))
        reason = v.reason.name.lower().replace("_", " ") + (f": {why}" if why else "")
        return group, "block" if v.blocked else "allow", reason

    return judge


def subnet_groups(config: Config) -> Callable[[str], str | None]:
    def group_of(address: str) -> str | None:
        ip = ipaddress.ip_address(address)
        return next((lan.group for lan in config.lans for net in lan.subnets if ip in net), None)

    return group_of


def run(args: argparse.Namespace) -> int:
    judge: Judge | None = None
    try:
        if args.policy:
            if args.group:
                judge = policy_judge(Path(args.policy), lambda _addr: args.group)
            elif args.config:
                judge = policy_judge(Path(args.policy), subnet_groups(config_load(args.config)))
            else:
                raise PolicyError("--policy needs --config (to map clients to groups) or --group")
    except (PolicyError, ConfigError, OSError) as e:
        print(f"appliance inspect: {e}", file=sys.stderr)
        return 2
    fmt = format_json if args.json else format_text
    try:
        for record in inspect_capture(args.capture):
            print(fmt(record, judge(record) if judge else None))
    except (CaptureError, OSError) as e:
        print(f"appliance inspect: {e}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="show the names and verdicts the fast path finds in a pcap/pcapng capture",
        description="One record per DNS query and per TLS, QUIC or HTTP flow: transport, client and "
        "server address and port, protocol, and the name found (or why none was found).",
    )
    p.add_argument("capture", help="a pcap or pcapng file (tcpdump -w, tshark -w, Wireshark)")
    p.add_argument(
        "--policy",
        metavar="STATE_DIR",
        help="judge each record with the policy applied in this appliance state directory "
        "(e.g. /var/lib/appliance); adds group, verdict and reason",
    )
    p.add_argument(
        "--config", help="appliance config whose subnets map clients to groups (with --policy)"
    )
    p.add_argument("--group", help="judge every client as this group instead (with --policy)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)
