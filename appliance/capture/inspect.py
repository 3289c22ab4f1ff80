"""`appliance inspect CAPTURE`: what the fast path sees in a packet capture, flow by flow.

IT staff use it to check a capture taken on a school network (which names were asked for, and with
a policy what each group would get); we use it to test the parsers on real traffic."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from appliance.capture.flows import FlowRecord, classify
from appliance.capture.packets import decode
from appliance.capture.pcapfile import CaptureError, read_frames

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


def run(args: argparse.Namespace) -> int:
    judge: Judge | None = None
    if args.policy:
        from appliance.policy.judge import load_judge

        judge = load_judge(Path(args.policy), Path(args.config) if args.config else None)
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
    p.add_argument("--policy", help="a policy to judge each record with (adds group, verdict, reason)")
    p.add_argument("--config", help="appliance config mapping client subnets to groups (with --policy)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)
