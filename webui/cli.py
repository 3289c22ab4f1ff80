"""`appliance webui ...`: serve the web UI, and create the first administrator from the console.

appliance webui serve --config /etc/appliance/appliance.toml [--bind 0.0.0.0:443] [--cert F --key F]
appliance webui create-admin --config /etc/appliance/appliance.toml --username NAME --email ADDRESS
"""

from __future__ import annotations

import argparse
import getpass
import logging
import socket
import sys
from pathlib import Path

from appliance import audit, config
from appliance.store import Store, add_state_dir_argument, state_dir
from webui import accounts, settings
from webui.errors import InputError
from webui.roles import Role


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("webui", help="the web UI: serve it, create the first administrator")
    sub = p.add_subparsers(dest="webui_command", metavar="ACTION", required=True)

    s = sub.add_parser("serve", help="serve the web UI over HTTPS (run by appliance-webui.service)")
    _where(s)
    s.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="ADDRESS:PORT",
        help="where to listen, repeatable (default 0.0.0.0:443); IPv6 as [::]:443",
    )
    s.add_argument("--cert", help="the school's own certificate (PEM, with its chain); default: self-signed")
    s.add_argument("--key", help="the private key of --cert (PEM)")
    s.add_argument(
        "--hostname",
        action="append",
        default=[],
        help="a name or address for the self-signed certificate, repeatable (default: this host's name)",
    )
    s.add_argument("--threads", type=int, default=8, help="requests served at once (default 8)")
    s.set_defaults(func=_cmd_serve)

    a = sub.add_parser("create-admin", help="create a trust administrator account (first start)")
    _where(a)
    a.add_argument("--username", required=True)
    a.add_argument("--email", required=True)
    a.add_argument("--name", help="full name (default: the user name)")
    a.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input, not the terminal",
    )
    a.set_defaults(func=_cmd_create_admin)


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="the appliance's TOML configuration (its state_dir is used)")
    add_state_dir_argument(parser)


def _load(args: argparse.Namespace) -> tuple[config.Config | None, Path] | None:
    """The configuration (if given) and the state directory; None, having said why, when the
    configuration is invalid."""
    try:
        cfg = config.load(args.config) if args.config else None
    except config.ConfigError as e:
        print(f"invalid configuration:\n{e}", file=sys.stderr)
        return None
    if args.state_dir:
        return cfg, state_dir(args.state_dir)
    return cfg, state_dir(cfg.appliance.state_dir if cfg else None)


def _cmd_serve(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return 2
    cfg, directory = loaded
    if bool(args.cert) != bool(args.key):
        print("error: give both --cert and --key, or neither", file=sys.stderr)
        return 2
    # Here, not at the top: other `appliance` commands need not load Flask and gunicorn.
    from webui import server, tls
    from webui.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = args.hostname or [socket.getfqdn(), socket.gethostname()]
    if args.cert:
        cert, key, own = args.cert, args.key, True
    else:
        generated = tls.ensure(directory, names)
        cert, key, own = str(generated[0]), str(generated[1]), False
    with (
        Store(directory) as store,
        audit.change(store, "system", "first start: the web address staff use") as ch,
    ):
        settings.set_default_url(ch, names[0])
    overrides = {"HSTS": own, "MAIL_SENDER": True}
    server.Server(
        lambda: create_app(directory, cfg, overrides),
        server.options(args.bind or ["0.0.0.0:443"], cert, key, args.threads),
    ).run()
    return 0


def _cmd_create_admin(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return 2
    _, directory = loaded
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"Password for {args.username}: ")
        if password != getpass.getpass("The same password again: "):
            print("error: the two passwords are not the same", file=sys.stderr)
            return 2
    try:
        with (
            Store(directory) as store,
            audit.change(store, audit.default_actor(), "administrator created from the console") as ch,
        ):
            user = accounts.create(
                ch, args.username, args.name or args.username, args.email, Role.ADMIN.value, password, False
            )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"administrator {user.username} created; sign in at https://<this appliance>/login")
    return 0
