"""`appliance compliance run | report | list | action` (docs/compliance.md)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from appliance import audit
from appliance import config as config_module
from appliance.compliance import notify, render, reports, schedule, testset
from appliance.compliance.run import run
from appliance.compliance.vantage import appliance_site, lab_site
from appliance.config import Config
from appliance.lab import gateway
from appliance.lab.topology import Lab
from appliance.store import Store, add_state_dir_argument, command

DEFAULT_CONFIG = Path("/etc/appliance/appliance.toml")
SCHEDULE_ACTOR = "the schedule (appliance-compliance.timer)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compliance", help="termly filtering tests and their reports for the DSL")
    sub = p.add_subparsers(dest="compliance_command", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="probe every group through the real path and make a report")
    r.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help=f"appliance config (default {DEFAULT_CONFIG})"
    )
    r.add_argument("--lab", metavar="NAME", help="probe the lab NAME from its client namespaces instead")
    r.add_argument("--testset", type=Path, help="what to probe (default: compliance.toml beside the config)")
    r.add_argument("--groups", nargs="+", help="only these groups")
    r.add_argument(
        "--appliance-netns", help="the network namespace the appliance runs in (default: this one)"
    )
    r.add_argument("--cacert", help="CA certificates the probes trust (default: the system's)")
    r.add_argument("--due", action="store_true", help="only if a scheduled run is due (the timer's way)")
    r.add_argument("--by", help="who is running the tests (default: your user name)")
    r.add_argument("--out", type=Path, help="also write the report's HTML and PDF into this folder")
    r.set_defaults(func=_run)
    add_state_dir_argument(r)
    rep = sub.add_parser("report", help="write a kept report as HTML and PDF (the same document every time)")
    rep.add_argument("report", type=int)
    rep.add_argument("--out", type=Path, default=Path.cwd(), help="folder (default: here)")
    rep.set_defaults(func=command(_report))
    ls = sub.add_parser("list", help="the kept reports")
    ls.set_defaults(func=command(_list))
    a = sub.add_parser("action", help="record what was done about a finding of a report")
    a.add_argument("report", type=int)
    a.add_argument("--finding", type=int, required=True, help="the finding's number in the report")
    a.add_argument("--text", required=True, help="what was done, by whom, and when")
    a.add_argument("--by", help="who is recording it (default: your user name)")
    a.set_defaults(func=command(_action))
    for leaf in (rep, ls, a):
        add_state_dir_argument(leaf)


def _lab_config(name: str) -> tuple[Lab, Config]:
    """The config of the appliance in the lab's gateway, as it runs (its groups' DNS settings are
    what the checks are judged by); for a plain gateway, which runs none, the one the lab would give
    it (its groups, subnets and block addresses)."""
    lab = Lab(name)
    if lab.appliance_config.exists():
        return lab, config_module.load(lab.appliance_config)
    return lab, config_module.parse(gateway.appliance_config(lab), source=f"lab {name}")


def _run(args: argparse.Namespace) -> int:
    try:
        if args.lab:
            lab, config = _lab_config(args.lab)
            tests = testset.load(args.testset)
        else:
            lab, config = None, config_module.load(args.config)
            tests = testset.load(args.testset or testset.path_beside(args.config))
    except (config_module.ConfigError, testset.TestSetError, ValueError) as e:
        print(f"compliance run: {e}", file=sys.stderr)
        return 2
    groups = args.groups or [g.name for g in config.groups]
    unknown = [g for g in groups if g not in {c.name for c in config.groups}]
    if unknown:
        print(f"compliance run: no such group {', '.join(unknown)}", file=sys.stderr)
        return 2
    with Store(args.state_dir or config.appliance.state_dir) as store:
        trigger = schedule.due(store, datetime.now(UTC)) if args.due else "run by hand"
        if trigger is None:
            notify.retry(store, config, tests)
            print("no compliance run is due")
            return 0
        actor = SCHEDULE_ACTOR if args.due else (args.by or audit.default_actor())
        if lab is not None:
            report = run(store, config, lab_site(lab, config, groups), tests, groups, actor, trigger)
        else:
            with appliance_site(config, tests.probes, groups, args.appliance_netns, args.cacert) as site:
                report = run(store, config, site, tests, groups, actor, trigger)
        notify.send(store, config, tests, report)
        if args.out:
            _write(store, report, args.out)
        _print_summary(report)
        return 1 if report.failures or report.untested_groups else 0


def _print_summary(report: reports.Stored) -> None:
    counts = report.counts
    print(
        f"compliance report {report.id}: {counts['pass']} checks passed, {counts['fail']} failed,"
        f" {counts['not tested']} not tested; {len(report.findings)} findings"
    )
    if report.untested_groups:
        print(f"  nothing could be tested for {', '.join(report.untested_groups)} (see Not tested)")
    for n, f in enumerate(report.findings, start=1):
        seen = "; ".join(f"{c['check']}: {c['observed']}" for c in f["checks"][:3])
        more = f" (+{len(f['checks']) - 3} more)" if len(f["checks"]) > 3 else ""
        print(
            f"  {n:3d}. {f['group']}: {f['target']} expected {f['expected']}: {seen}{more}\n       {f['why']}"
        )


def _write(store: Store, report: reports.Stored, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    html = render.html(store, report)
    paths = [out / f"{report.stem}.html", out / f"{report.stem}.pdf"]
    paths[0].write_text(html)
    paths[1].write_bytes(render.pdf(html))
    return paths


def _report(args: argparse.Namespace, store: Store) -> int:
    report = reports.get(store, args.report)
    problem = reports.verify(store, report)
    if problem:
        print(f"TAMPERED: {problem}", file=sys.stderr)
        return 1
    for path in _write(store, report, args.out):
        print(path)
    return 0


def _list(args: argparse.Namespace, store: Store) -> int:
    zone = store.zone()
    for r in reports.listing(store):
        when = r.created.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        acted = len(reports.actions(store, r.id))
        print(
            f"{r.id:5d}  {when}  {r.failures:3d} failures  {acted} actions  policy {r.generation or '-'}"
            f"  {r.trigger} by {r.document['who']}  sha256 {r.sha256[:16]}"
        )
    return 0


def _action(args: argparse.Namespace, store: Store) -> int:
    report = reports.get(store, args.report)
    action = reports.add_action(
        store, report, args.finding, args.text, args.by or audit.default_actor(), datetime.now(UTC)
    )
    print(f"action {action.id} recorded on report {report.id}, finding {action.finding}")
    return 0
