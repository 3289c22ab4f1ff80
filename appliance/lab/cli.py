"""`appliance lab up | down | status | check`: the offline school in network namespaces (docs/lab.md)."""

from __future__ import annotations

import argparse
import sys

from appliance.lab.gateway import MODES
from appliance.lab.topology import GROUP_VLANS, Lab
from appliance.lab.webui import PORT as WEBUI_PORT

# The handlers import the lab's modules when run, so that every other `appliance` command does not
# pay for loading cryptography.


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("lab", help="a whole school in network namespaces, offline (needs root)")
    p.add_argument(
        "--name", default=Lab().name, type=_name, help="lab name, the prefix of its namespaces (default: lab)"
    )
    sub = p.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)
    u = sub.add_parser("up", help="build the lab and start its servers and gateway")
    u.add_argument(
        "--gateway",
        choices=MODES,
        default="auto",
        help="appliance: run the appliance in the gateway; plain: a router with no filtering; "
        "auto (default): the appliance if this build has `appliance run`",
    )
    u.add_argument("--check", action="store_true", help="then print what each group can reach")
    u.set_defaults(func=_up)
    sub.add_parser("down", help="remove everything the lab made").set_defaults(func=_down)
    sub.add_parser("status", help="namespaces, addresses and servers").set_defaults(func=_status)
    c = sub.add_parser("check", help="per group: DNS, HTTPS, HTTP/3 and HTTP for the sample names")
    c.add_argument("--group", action="append", choices=GROUP_VLANS, help="only this group (repeatable)")
    c.set_defaults(func=_check)
    w = sub.add_parser(
        "webui",
        help="serve the web UI for the lab's appliance (on 127.0.0.1 and the gateway's LAN addresses)",
    )
    w.add_argument("--port", type=int, default=WEBUI_PORT, help=f"port on 127.0.0.1 (default {WEBUI_PORT})")
    w.set_defaults(func=_webui)


def _name(text: str) -> str:
    try:
        return Lab(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _up(args: argparse.Namespace) -> int:
    from appliance.lab import lab

    target = Lab(args.name)
    try:
        lab.up(target, args.gateway)
    except (lab.LabError, RuntimeError) as e:
        print(f"lab up: {e}", file=sys.stderr)
        return 1
    print(f"lab {target.name!r} is up")
    print(lab.status(target)[1])
    return _check(args) if args.check else 0


def _down(args: argparse.Namespace) -> int:
    from appliance.lab import lab

    try:
        removal = lab.down(Lab(args.name))
    except RuntimeError as e:
        print(f"lab down: {e}", file=sys.stderr)
        return 1
    removed = removal.removed
    print(f"removed {', '.join(removed)}" if removed else f"lab {args.name!r} was not up")
    if removal.left_behind:
        tables = ", ".join(removal.left_behind)
        print(f"lab down: the stopped appliance left nftables tables behind: {tables}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from appliance.lab import lab

    healthy, report = lab.status(Lab(args.name))
    print(report)
    return 0 if healthy else 1


def _check(args: argparse.Namespace) -> int:
    from appliance.lab import check, lab
    from appliance.lab.sites import load_internet

    target = Lab(args.name)
    if not lab.status(target)[0]:
        print(
            f"lab check: lab {target.name!r} is not (fully) up; see `appliance lab status`", file=sys.stderr
        )
        return 1
    internet = load_internet()
    groups = getattr(args, "group", None) or [c.group for c in target.clients]
    reports = check.run(target, internet, groups)
    verdicts = check.policy_verdicts(target, groups, list(internet.check_web))
    print(check.render(reports, internet, verdicts))
    return 0


def _webui(args: argparse.Namespace) -> int:
    from appliance.lab import lab, webui

    target = Lab(args.name)
    if not lab.status(target)[0]:
        print(
            f"lab webui: lab {target.name!r} is not (fully) up; see `appliance lab status`",
            file=sys.stderr,
        )
        return 1
    try:
        pid = webui.start(target, args.port)
    except (webui.WebUiError, OSError) as e:
        print(f"lab webui: {e}", file=sys.stderr)
        return 1
    here, lan = webui.urls(target, args.port)
    print(f"web UI (pid {pid}): {here} from this machine; {lan[0]} (or any LAN address of the gateway)")
    print("from the lab's clients (the block page's unblock link). Its certificate is self-signed.")
    if webui.administrators(target):
        return 0
    command = " ".join(webui.create_admin_argv(target))
    if not sys.stdin.isatty():
        print(
            f"no administrator yet; create the first (it asks for a password) with:\n  sudo {command} "
            "--username NAME --email ADDRESS"
        )
        return 0
    print("no administrator yet: create the first now (there is no default account or password).")
    username = input("  user name [admin]: ").strip() or "admin"
    email = input("  e-mail address: ").strip()
    status = webui.create_admin(target, username, email)
    if status != 0:
        print(f"not created; try again with:\n  sudo {command} --username {username} --email ADDRESS")
    return status
