"""`appliance lists ...`: add, import, update and remove block lists, and see their state."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance import audit
from appliance.lists import catalogue, importer, ut1
from appliance.lists.catalogue import ListInfo
from appliance.lists.importer import ImportResult
from appliance.lists.progress import Progress
from appliance.policy import upkeep
from appliance.policy.model import CATEGORIES, PolicyError, check_category
from appliance.store import Store, add_state_dir_argument, command

SHOWN_PROBLEMS = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("lists", help="block lists: import, update, stats")
    sub = p.add_subparsers(dest="lists_command", metavar="ACTION", required=True)

    def leaf(
        name: str, func: Callable[[argparse.Namespace, Store], int], help: str
    ) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help, description=help)
        add_state_dir_argument(q)
        q.set_defaults(func=command(func))
        return q

    q = leaf("add", _cmd_add, "add a list and import it")
    q.add_argument("name", help="a short name, e.g. ut1-adult")
    q.add_argument("--format", required=True, choices=catalogue.LIST_FORMATS)
    q.add_argument(
        "--category",
        choices=[c for c, v in CATEGORIES.items() if not v.padlocked],
        help="the category its entries are in (not needed for iwf and ctiru)",
    )
    q.add_argument("--source", required=True, help="a file, a folder (ut1), or an http(s) URL")
    q.add_argument("--every", type=float, metavar="HOURS", help="fetch again this often (lists update --due)")
    q.add_argument("--no-import", action="store_true", help="only register it")
    audit.add_change_arguments(q)

    q = leaf("import-set", _cmd_import_set, "add every mapped category of a UT1/squidGuard set")
    q.add_argument("folder", type=Path)
    q.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FOLDER=CATEGORY",
        help="map (or re-map) a set folder to one of our categories",
    )
    q.add_argument("--prefix", default="ut1-", help="list name prefix (default ut1-)")
    q.add_argument("--every", type=float, metavar="HOURS")
    audit.add_change_arguments(q)

    q = leaf("update", _cmd_update, "fetch lists from their sources and import them")
    q.add_argument("names", nargs="*", help="lists to update (default: all)")
    q.add_argument("--due", action="store_true", help="only lists whose --every interval has passed")
    q.add_argument("--force", action="store_true", help="import even if the source is unchanged")
    q.add_argument("--apply", action="store_true", help="put updated lists in the live policy at once")
    q.add_argument("--by", default=None, help="who (default: your user name)")
    q.add_argument("--reason", default="update from the list's source")

    q = leaf("source", _cmd_source, "change where a list is fetched from")
    q.add_argument("name")
    q.add_argument("--source", required=True)
    q.add_argument("--every", type=float, metavar="HOURS")
    audit.add_change_arguments(q)

    q = leaf("remove", _cmd_remove, "remove a list")
    q.add_argument("name")
    audit.add_change_arguments(q)

    leaf("stats", _cmd_stats, "per-list counts, age and last error")
    q = leaf("problems", _cmd_problems, "the bad lines found by a list's last import")
    q.add_argument("name")


def _report(result: ImportResult) -> bool:
    """Prints an import's outcome; False if it failed."""
    if result.error:
        print(f"{result.name}: FAILED, previous version kept: {result.error}")
        return False
    if result.unchanged:
        print(f"{result.name}: source unchanged")
        return True
    print(
        f"{result.name}: {result.domains + result.exact:,} names ({result.exact:,} exact), "
        f"{result.pages:,} pages; +{result.added:,} -{result.removed:,}"
    )
    for line in result.sample[:SHOWN_PROBLEMS]:
        print(f"  skipped {line}")
    if result.problems > SHOWN_PROBLEMS:
        print(
            f"  ... and {result.problems - SHOWN_PROBLEMS:,} more bad lines"
            f" (`appliance lists problems {result.name}`)"
        )
    for reason, count in result.skipped.items():
        print(f"  ignored {count:,} {reason}")
    return True


def _cmd_add(args: argparse.Namespace, store: Store) -> int:
    with audit.change(store, audit.actor(args), args.reason) as ch:
        catalogue.add(ch, args.name, args.format, args.category, args.source, args.every)
    if args.no_import:
        return 0
    return 0 if _report(importer.update(store, args.name, audit.actor(args), args.reason)) else 1


def _cmd_import_set(args: argparse.Namespace, store: Store) -> int:
    mapping = dict(ut1.UT1_CATEGORIES)
    for item in args.map:
        folder, _, category = item.partition("=")
        mapping[folder] = check_category(category).name
    folders = ut1.category_folders(args.folder)
    if not folders:
        raise PolicyError(f"{args.folder}: no category folders (with domains or urls files) in it")
    known = {i.name for i in catalogue.all_lists(store)}
    added = []
    with audit.change(store, audit.actor(args), args.reason) as ch:
        for folder in folders:
            name = f"{args.prefix}{folder.name}"
            if folder.name not in mapping:
                print(f"{folder.name}: not mapped to a category, left out (use --map {folder.name}=CATEGORY)")
            elif name in known:
                print(f"{name}: already added (`appliance lists update {name}` refreshes it)")
            else:
                catalogue.add(ch, name, "ut1", mapping[folder.name], str(folder.resolve()), args.every)
                added.append(name)
    ok = all([_report(importer.update(store, name, audit.actor(args), args.reason)) for name in added])
    return 0 if ok else 1


def _due(info: ListInfo, now: datetime) -> bool:
    if info.every_hours is None:
        return False
    return info.last_attempt is None or now - info.last_attempt >= timedelta(hours=info.every_hours)


def _cmd_update(args: argparse.Namespace, store: Store) -> int:
    now = datetime.now(UTC)
    infos = [catalogue.get(store, n) for n in args.names] if args.names else catalogue.all_lists(store)
    if args.due:
        infos = [i for i in infos if _due(i, now)]
    actor = args.by or (upkeep.SYSTEM if args.due else audit.default_actor())
    results = [importer.update(store, i.name, actor, args.reason, args.force, Progress(), now) for i in infos]
    ok = all([_report(r) for r in results])
    if args.apply:
        changed = [r.name for r in results if not r.error and not r.unchanged]
        gen = upkeep.refresh_lists(store, changed, actor, args.reason, progress=Progress())
        if gen:
            print(f"policy generation {gen.id} in force with the updated lists")
    return 0 if ok else 1


def _cmd_source(args: argparse.Namespace, store: Store) -> int:
    with audit.change(store, audit.actor(args), args.reason) as ch:
        catalogue.set_source(ch, args.name, args.source, args.every)
    return 0


def _cmd_remove(args: argparse.Namespace, store: Store) -> int:
    with audit.change(store, audit.actor(args), args.reason) as ch:
        catalogue.remove(ch, args.name)
    print(f"removed list {args.name} (pending until `policy apply`)")
    return 0


def _age(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    seconds = (now - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "just now"


def _cmd_stats(args: argparse.Namespace, store: Store) -> int:
    now = datetime.now(UTC)
    infos = catalogue.all_lists(store)
    if not infos:
        print("no lists")
        return 0
    print(
        f"{'list':24} {'category':16} {'every path':>11} {'HTTP only':>10} {'updated':>10} {'bad lines':>9}"
        "  last error"
    )
    for i in infos:
        error = i.last_error or "-"
        print(
            f"{i.name:24} {i.category:16} {i.domains + i.exact:11,} {i.pages:10,} {_age(i.updated, now):>10} "
            f"{i.problems:9,}  {error}"
        )
    return 0


def _cmd_problems(args: argparse.Namespace, store: Store) -> int:
    info = catalogue.get(store, args.name)
    for line in info.problem_sample:
        print(line)
    if info.problems > len(info.problem_sample):
        print(f"... {info.problems - len(info.problem_sample):,} more not kept")
    return 0
