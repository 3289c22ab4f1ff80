"""The `appliance` command. Each subcommand lives in the module that owns its concept."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from appliance import __version__, audit, dnsfilter, resolver, webfilter
from appliance.capture import inspect
from appliance.compliance import cli as compliance_cli
from appliance.dataplane import run as dataplane_run
from appliance.lab import cli as lab_cli
from appliance.lists import cli as lists_cli
from appliance.policy import cli as policy_cli
from webui import cli as webui_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="School internet gateway appliance")
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    lab_cli.register(subparsers)
    dataplane_run.register(subparsers)
    resolver.register(subparsers)
    dnsfilter.register(subparsers)
    webfilter.register(subparsers)
    inspect.register(subparsers)
    policy_cli.register(subparsers)
    lists_cli.register(subparsers)
    audit.register(subparsers)
    compliance_cli.register(subparsers)
    webui_cli.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
