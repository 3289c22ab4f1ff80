"""`appliance policy ...`: the school's rules, schedules, terms and exam mode; explain, diff, apply
and rollback. Every change takes --reason (and --by, default the Unix user) for the audit trail."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, date, datetime

from appliance import audit
from appliance.lists.progress import Progress
from appliance.policy import diff, explain, generations, inputs, rules, timetable, upkeep
from appliance.policy.generations import Generation
from appliance.policy.model import ALL_GROUPS, GROUPS, PolicyError, group_label
from appliance.policy.schedules import Dated, Schedule, Term, Weekly
from appliance.store import Store, add_state_dir_argument, command


def _group(text: str) -> str:
    return ALL_GROUPS if text in ("all", ALL_GROUPS) else text


def _when(text: str | None, store: Store) -> datetime:
    """A local date-time from the command line (default: now)."""
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise PolicyError(f"{text!r}: expected a local time, YYYY-MM-DDTHH:MM") from None
    return when if when.tzinfo else when.replace(tzinfo=store.zone())


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("policy", help="filtering policy: rules, schedules, exam mode, apply")
    sub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    def leaf(
        name: str, func: Callable[[argparse.Namespace, Store], int], help: str, change: bool = False
    ) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help, description=help)
        add_state_dir_argument(q)
        if change:
            audit.add_change_arguments(q)
        q.set_defaults(func=command(func))
        return q

    for action in ("allow", "deny"):
        q = leaf(action, _cmd_rule, f"{action} a domain (and everything under it) or a category", change=True)
        target = q.add_mutually_exclusive_group(required=True)
        target.add_argument("name", nargs="?", help="domain name")
        target.add_argument("--category", help="a category instead of a name")
        q.add_argument("--group", required=True, help=f"{', '.join(GROUPS)} or all")
        q.add_argument("--expires", help="last day (YYYY-MM-DD) or moment (YYYY-MM-DDTHH:MM), local time")
        q.add_argument("--schedule", help="only while this schedule is on")
        q.add_argument("--ticket", help="helpdesk ticket or unblock request this rule answers")
        q.set_defaults(action=action)
    q = leaf("remove", _cmd_remove, "remove a school rule", change=True)
    q.add_argument("rule", type=int, help="rule number (see `policy rules`)")
    q = leaf("rules", _cmd_rules, "list the school's rules")
    q.add_argument("--group", help="only rules that apply to this group")

    q = leaf("schedule", _cmd_schedule_set, "create or replace a named schedule", change=True)
    q.add_argument("schedule", help="name, e.g. lunch")
    q.add_argument("--weekly", action="append", default=[], help='e.g. "mon-fri 12:00-13:00" (repeatable)')
    q.add_argument("--dated", action="append", default=[], help='e.g. "2025-05-12T09:00/2025-05-12T12:00"')
    q.add_argument(
        "--terms",
        choices=["any", "in", "out"],
        default="any",
        help="only in term time (in), only outside it (out), or either (any)",
    )
    q = leaf("unschedule", _cmd_schedule_remove, "remove a named schedule", change=True)
    q.add_argument("schedule")
    leaf("schedules", _cmd_schedules, "list schedules and term dates")
    q = leaf("term", _cmd_term_set, "set a term's dates", change=True)
    q.add_argument("term", help='name, e.g. "Autumn 1"')
    q.add_argument("--start", required=True, type=date.fromisoformat, help="first day, YYYY-MM-DD")
    q.add_argument("--end", required=True, type=date.fromisoformat, help="last day, YYYY-MM-DD")
    q = leaf("unterm", _cmd_term_remove, "remove a term", change=True)
    q.add_argument("term")

    q = leaf("exam", _cmd_exam, "exam mode: on or off now, or scheduled", change=True)
    q.add_argument("mode", choices=["on", "off", "schedule", "unschedule"])
    q.add_argument("--group", required=True, choices=[g for g in GROUPS if g != timetable.EXAMS])
    q.add_argument("--until", help="with on: switch off by itself at this local time")
    q.add_argument("--schedule", help="with schedule/unschedule: the schedule")

    q = leaf("explain", _cmd_explain, "the verdict on a name for a group, and why")
    q.add_argument("name")
    q.add_argument("--group", required=True, choices=GROUPS)
    q.add_argument("--at", help="local time to judge at (default now)")
    q.add_argument("--pending", action="store_true", help="explain the working policy, not the live one")
    q.add_argument("--json", action="store_true")
    leaf("diff", _cmd_diff, "what applying the working policy would change")
    leaf("apply", _cmd_apply, "put the working policy in force", change=True)
    leaf("rollback", _cmd_rollback, "put the previous policy back in force", change=True)
    leaf("status", _cmd_status, "the policy in force and what it enforces where")
    leaf("expire", _cmd_expire, "remove expired rules from the live policy (run by a timer)")


def _cmd_rule(args: argparse.Namespace, store: Store) -> int:
    kind, target = ("category", args.category) if args.category else ("name", args.name)
    now = datetime.now(UTC)
    rule = rules.Rule(
        group=_group(args.group),
        action=args.action,
        kind=kind,
        target=target,
        reason=args.reason,
        author=audit.actor(args),
        created=now,
        schedule=args.schedule,
        source=args.ticket,
        expires=rules.parse_expiry(args.expires, store.zone()) if args.expires else None,
    )
    with audit.change(store, audit.actor(args), args.reason, now) as ch:
        stored = rules.add(ch, rule)
    print(
        f"rule {stored.id}: {stored.describe(store.zone())} (pending: see `policy diff`, then `policy apply`)"
    )
    return 0


def _cmd_remove(args: argparse.Namespace, store: Store) -> int:
    with audit.change(store, audit.actor(args), args.reason) as ch:
        rule = rules.remove(ch, args.rule)
    print(f"removed rule {rule.id}: {rule.describe(store.zone())} (pending until `policy apply`)")
    return 0


def _cmd_rules(args: argparse.Namespace, store: Store) -> int:
    zone = store.zone()
    for r in rules.all_rules(store):
        if args.group and r.group not in (args.group, ALL_GROUPS):
            continue
        ticket = f" [{r.source}]" if r.source else ""
        print(
            f"{r.id:5d}  {r.describe(zone)}{ticket}\n"
            f"       by {r.author} on {r.created.astimezone(zone):%Y-%m-%d}: {r.reason}"
        )
    return 0


def _cmd_schedule_set(args: argparse.Namespace, store: Store) -> int:
    schedule = Schedule(
        tuple(Weekly.parse(w) for w in args.weekly), tuple(Dated.parse(d) for d in args.dated), args.terms
    )
    with audit.change(store, audit.actor(args), args.reason) as ch:
        timetable.set_schedule(ch, args.schedule, schedule)
    print(f"schedule {args.schedule}: {schedule}")
    return 0


def _cmd_schedule_remove(args: argparse.Namespace, store: Store) -> int:
    with audit.change(store, audit.actor(args), args.reason) as ch:
        timetable.remove_schedule(ch, args.schedule)
    return 0


def _cmd_schedules(args: argparse.Namespace, store: Store) -> int:
    cal = timetable.calendar(store)
    now = datetime.now(UTC)
    print(f"time zone {cal.zone.key}")
    for name, s in cal.schedules.items():
        print(f"  {name}: {s} ({'on' if cal.active(name, now) else 'off'} now)")
    for t in cal.terms:
        print(f"  term {t.name}: {t.start} to {t.end}")
    for group, names in timetable.exam_schedules(store).items():
        if names:
            print(f"  exam mode for {group} during {', '.join(names)}")
    return 0


def _cmd_term_set(args: argparse.Namespace, store: Store) -> int:
    with audit.change(store, audit.actor(args), args.reason) as ch:
        timetable.set_term(ch, Term(args.term, args.start, args.end))
    return 0


def _cmd_term_remove(args: argparse.Namespace, store: Store) -> int:
    with audit.change(store, audit.actor(args), args.reason) as ch:
        timetable.remove_term(ch, args.term)
    return 0


def _cmd_exam(args: argparse.Namespace, store: Store) -> int:
    if args.mode in ("schedule", "unschedule") and not args.schedule:
        raise PolicyError(f"exam {args.mode} needs --schedule")
    with audit.change(store, audit.actor(args), args.reason) as ch:
        if args.mode == "on":
            timetable.exam_on(ch, args.group, _when(args.until, store) if args.until else None)
        elif args.mode == "off":
            timetable.exam_off(ch, args.group)
        elif args.mode == "schedule":
            timetable.schedule_exam(ch, args.group, args.schedule)
        else:
            timetable.unschedule_exam(ch, args.group, args.schedule)
    if args.mode in ("on", "off"):
        print(f"exam mode {args.mode} for {args.group}: in force now")
    else:
        print("exam schedule changed (pending until `policy apply`)")
    return 0


def _cmd_explain(args: argparse.Namespace, store: Store) -> int:
    at = _when(args.at, store)
    if args.pending:
        result = explain.pending(store, args.name, args.group, at, Progress())
    else:
        live = generations.current(store)
        if live is None:
            raise PolicyError("no policy has been applied yet (try --pending)")
        with explain.Explainer(store, live, at) as ex:
            result = ex.explain(args.name, args.group)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text())
    return 0


def _cmd_diff(args: argparse.Namespace, store: Store) -> int:
    lines = diff.pending(store, datetime.now(UTC), Progress())
    print("\n".join(lines) if lines else "no changes: the working policy is the one in force")
    return 0


def _cmd_apply(args: argparse.Namespace, store: Store) -> int:
    now = datetime.now(UTC)
    gen = generations.apply(
        store, inputs.from_store(store, now), audit.actor(args), args.reason, now, Progress()
    )
    _print_enforcement(gen)
    print(f"policy generation {gen.id} in force")
    return 0


def _cmd_rollback(args: argparse.Namespace, store: Store) -> int:
    gen = generations.rollback(store, audit.actor(args), args.reason)
    print(f"policy generation {gen.id} in force again")
    return 0


def _print_enforcement(gen: Generation) -> None:
    for name, counts in gen.manifest["enforcement"].items():
        print(
            f"  {name}: {counts['every_path']:,} entries enforced at DNS, TLS, QUIC and HTTP; "
            f"{counts['http_only']:,} page entries on plain HTTP only"
        )


def _cmd_status(args: argparse.Namespace, store: Store) -> int:
    live = generations.current(store)
    if live is None:
        print("no policy applied yet")
        return 1
    now = datetime.now(UTC)
    print(f"policy generation {live.id}, applied {live.manifest['created']}")
    _print_enforcement(live)
    if not any(ref.category == "iwf" for ref in live.compiled().inputs.lists):
        print("  WARNING: no IWF list is loaded")
    if not any(ref.category == "ctiru" for ref in live.compiled().inputs.lists):
        print("  WARNING: no CTIRU list is loaded")
    compiled = live.compiled()
    exams = frozenset(timetable.exam_now(store, now))
    for g in GROUPS:
        m = compiled.masks(g, now, exams)
        mode = " (exam mode)" if m.exam else ""
        blocked = ", ".join(sorted(compiled.blocked_categories(m.policy_group, now))) or "nothing"
        print(f"  {group_label(g)}{mode}: default {m.default.value}; blocks {blocked}")
    return 0


def _cmd_expire(args: argparse.Namespace, store: Store) -> int:
    gen = upkeep.expire(store)
    if gen:
        print(f"expired rules removed; policy generation {gen.id} in force")
    return 0
