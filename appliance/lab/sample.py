"""The lab's sample policy (data/policy.toml), put in force in the gateway's appliance by `lab up` with
the same functions `appliance lists add` and `appliance policy allow` / `apply` call.

The lists are generated from the lab's internet (data/internet.toml): one list file per category that
a site is given, holding that site's names, as the trust's feed for the category would. So a lab name
is blocked only because a list holds it, as in a school."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance import audit
from appliance.lab.sites import Internet
from appliance.lists import catalogue, importer
from appliance.policy import generations, inputs, rules
from appliance.policy.generations import Generation
from appliance.policy.model import CATEGORIES, GROUPS
from appliance.store import Store

POLICY_FILE = Path(__file__).parent / "data" / "policy.toml"
DEFAULT_FORMAT = "plain"


@dataclass(frozen=True)
class SampleRule:
    group: str
    action: str
    names: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class SamplePolicy:
    actor: str
    reason: str
    formats: dict[str, str]  # category -> list format, for categories not in DEFAULT_FORMAT
    rules: tuple[SampleRule, ...]

    def list_format(self, category: str) -> str:
        return self.formats.get(category, DEFAULT_FORMAT)


@dataclass(frozen=True)
class Feed:
    """One generated list: its name in the appliance, format, category and the file it is read from."""

    name: str
    format: str
    category: str
    path: Path


def load(internet: Internet, path: Path = POLICY_FILE) -> SamplePolicy:
    raw = tomllib.loads(path.read_text())
    formats = dict(raw.get("formats", {}))
    for category, fmt in formats.items():
        if category not in CATEGORIES:
            raise ValueError(f"{path.name}: formats: unknown category {category!r}")
        if fmt not in catalogue.LIST_FORMATS:
            raise ValueError(f"{path.name}: formats.{category}: unknown list format {fmt!r}")
    sample_rules = tuple(
        SampleRule(r["group"], r["action"], tuple(r["names"]), r["reason"]) for r in raw.get("rule", [])
    )
    served = set(internet.names("web"))
    for r in sample_rules:
        if r.group not in GROUPS:
            raise ValueError(f"{path.name}: rule for unknown group {r.group!r}")
        missing = [n for n in r.names if n not in served]
        if missing:  # a rule for a name the lab does not serve could never be seen to work
            raise ValueError(f"{path.name}: rule names no lab web site: {', '.join(missing)}")
    return SamplePolicy(raw["actor"], raw["reason"], formats, sample_rules)


def categories(internet: Internet) -> dict[str, list[str]]:
    """Each category any lab site is in, with the names of those sites, in internet.toml's order."""
    found: dict[str, list[str]] = {}
    for site in internet.sites:
        if site.category is not None:
            found.setdefault(site.category, []).extend(site.names)
    return found


def write_feeds(internet: Internet, policy: SamplePolicy, folder: Path) -> list[Feed]:
    """One list file per category; each line is a name, which every format here reads as that name and
    everything under it (a bare host in the IWF and CTIRU formats is a whole-domain entry)."""
    folder.mkdir(parents=True, exist_ok=True)
    feeds = []
    for category, names in categories(internet).items():
        fmt = policy.list_format(category)
        path = folder / f"{category}.txt"
        path.write_text("".join(f"{n}\n" for n in names))
        feeds.append(Feed(f"lab-{category.replace('_', '-')}", fmt, category, path))
    return feeds


def apply(state_dir: Path, internet: Internet, feeds_dir: Path) -> Generation:
    """Adds and imports the lab's lists, adds the school rules and applies the policy, each step
    audited as the CLI's would be; raises RuntimeError if a list fails to import."""
    policy = load(internet)
    feeds = write_feeds(internet, policy, feeds_dir)
    with Store(state_dir) as store:
        with audit.change(store, policy.actor, policy.reason) as ch:
            for feed in feeds:
                padlocked = feed.format in catalogue.PADLOCKED_FORMATS
                category = None if padlocked else feed.category
                catalogue.add(ch, feed.name, feed.format, category, str(feed.path), None)
        for feed in feeds:
            result = importer.update(store, feed.name, policy.actor, policy.reason)
            if result.error:
                raise RuntimeError(f"the sample policy's list {feed.name} did not import: {result.error}")
        with audit.change(store, policy.actor, policy.reason) as ch:
            for r in policy.rules:
                for name in r.names:
                    rules.add(ch, rules.Rule(r.group, r.action, "name", name, r.reason, policy.actor, ch.now))
        now = datetime.now(UTC)
        return generations.apply(store, inputs.from_store(store, now), policy.actor, policy.reason, now)
