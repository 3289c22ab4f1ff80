"""`policy explain`: the verdict on a name for a group, and the path that led to it, layer by layer.

The verdict itself comes from the fast path (fastpath.verdict.decide over the generation's table),
so the explanation can never disagree with what the data plane does; this module only names the
lists, rules and categories behind the bits. The same Explanation feeds the block page and the web
UI. Confidential lists are named, never their entries.

    with Explainer(store, generations.current(store), at) as ex:    # the table mapped once
        ex.explain("www.example.org", "students")
    explain.pending(store, "www.example.org", "students", at)       # the working policy, not applied"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from appliance.lists.catalogue import PADLOCKED_FORMATS
from appliance.lists.lookup import ListLookup, ListMatch
from appliance.lists.progress import Progress
from appliance.policy import generations, timetable
from appliance.policy.compiled import CompiledPolicy, name_rule_scopes
from appliance.policy.generations import Generation
from appliance.policy.model import CATEGORIES, PADLOCKED_CATEGORIES, Layer, PolicyError, check_group
from appliance.policy.rules import Rule
from appliance.store import Store
from fastpath import verdict
from fastpath.names import normalise
from fastpath.table import DomainTable

LAYER_TITLES = {
    Layer.PADLOCKED: "IWF and CTIRU lists",
    Layer.TRUST_LOCKED: "trust-locked categories and domains",
    Layer.SCHOOL: "school rules",
    Layer.TRUST_DEFAULT: "categories and default",
}


@dataclass
class Step:
    layer: int
    title: str
    findings: list[str]
    decided: bool = False


@dataclass
class Explanation:
    name: str
    group: str
    policy_group: str  # exams when the group is in exam mode
    at: str
    generation: str
    action: str  # "allow" or "block"
    reason: str  # fastpath.verdict.Reason name
    layer: int
    categories: list[str]  # titles of the categories the name is in
    lists: list[str]  # lists holding the name (confidential ones by name only)
    rule: dict[str, Any] | None  # the school rule that decided, if one did
    iwf: bool  # blocked by the IWF list: the block page shows the IWF's own wording
    steps: list[Step] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        exam = (
            f" (exam mode: the {self.policy_group} policy applies)" if self.policy_group != self.group else ""
        )
        lines = [
            f"{self.name} for {self.group}{exam}: {self.action.upper()}",
            f"  policy generation {self.generation}, at {self.at}",
        ]
        for s in self.steps:
            mark = "  <- decided here" if s.decided else ""
            lines.append(f"  {s.layer}. {s.title}{mark}")
            lines += [f"       {f}" for f in s.findings or ["no match"]]
        return "\n".join(lines)


def explain(
    compiled: CompiledPolicy,
    table: DomainTable,
    lookup: ListLookup,
    generation: str,
    name: str,
    group: str,
    at: datetime,
    exam_now: frozenset[str] = frozenset(),
) -> Explanation:
    check_group(group)
    norm = normalise(name)
    if norm is None:
        raise PolicyError(f"{name!r} is not a valid domain name")
    masks = compiled.masks(group, at, exam_now)
    v = verdict.decide(table, norm, masks.group_policy())
    g = masks.policy_group
    matches = lookup.matches(norm)
    refs = {ref.name: ref for ref in compiled.inputs.lists}
    in_categories = [b.category for b in compiled.describe(v.categories) if b.kind == "category"]
    trust = compiled.inputs.trust
    locked = trust.locked_for(group) | trust.locked_for(g)

    def list_findings(categories: set[str] | frozenset[str]) -> list[str]:
        return [
            _describe_match(m, refs[m.list].format in PADLOCKED_FORMATS)
            for m in matches
            if m.category in categories and m.kind != "page_hosts"
        ]

    padlocked = list_findings(set(PADLOCKED_CATEGORIES))
    pages = [
        f"the {m.list} list has page-level entries on this host (enforced on plain HTTP only)"
        for m in matches
        if m.kind == "page_hosts"
    ]
    step1 = Step(Layer.PADLOCKED, LAYER_TITLES[Layer.PADLOCKED], padlocked + pages)

    trust_domains = [
        f"{d}: locked by the trust for {'all groups' if scope == '*' else scope}"
        for scope, domains in [
            ("*", trust.locked_domains),
            (group, trust.groups[group].locked_domains),
            (g, trust.groups[g].locked_domains),
        ]
        for d in domains
        if norm == d or norm.endswith("." + d)
    ]
    locked_cats = locked - set(PADLOCKED_CATEGORIES)
    step2 = Step(
        Layer.TRUST_LOCKED,
        LAYER_TITLES[Layer.TRUST_LOCKED],
        list(dict.fromkeys(trust_domains)) + [f"locked category {f}" for f in list_findings(locked_cats)],
    )

    rule, school = _school_step(compiled, v, norm, g, at)
    step3 = Step(Layer.SCHOOL, LAYER_TITLES[Layer.SCHOOL], school)

    blocked_now = {b.category for b in compiled.describe(masks.blocked) if b.kind == "category"}
    category_rules = {r.target: r for r in compiled.category_rules(g, at)}
    step4 = Step(Layer.TRUST_DEFAULT, LAYER_TITLES[Layer.TRUST_DEFAULT], [])
    for c in in_categories:
        if c in PADLOCKED_CATEGORIES or c in locked_cats:
            continue
        state = "blocked" if c in blocked_now else "allowed"
        r = category_rules.get(c)
        why = f"school rule {r.id} ({r.reason})" if r else f"trust default for {g}"
        step4.findings.append(
            f"{CATEGORIES[c].title}: {state} for {g} by {why}; " + ", ".join(list_findings({c}))
        )
    if v.reason == verdict.Reason.DEFAULT:
        step4.findings.append(f"default for {g}: {masks.default.value}")

    decided = _decided_layer(v, compiled)
    by_school = {c for c, r in category_rules.items() if r.action == "deny"}
    if v.reason == verdict.Reason.CATEGORY and any(
        b.category in by_school for b in compiled.describe(v.bits)
    ):
        decided = Layer.SCHOOL
    for step in (step1, step2, step3, step4):
        step.decided = step.layer == decided
    return Explanation(
        name=norm,
        group=group,
        policy_group=g,
        at=at.isoformat(timespec="seconds"),
        generation=generation,
        action="block" if v.action == verdict.Action.BLOCK else "allow",
        reason=v.reason.name,
        layer=int(decided),
        categories=[CATEGORIES[c].title for c in in_categories],
        lists=list(dict.fromkeys(m.list for m in matches)),
        rule=rule.to_dict() if rule else None,
        iwf=v.reason == verdict.Reason.PADLOCKED and compiled.category_bit("iwf") & v.bits != 0,
        steps=[step1, step2, step3, step4],
    )


def _describe_match(m: ListMatch, confidential: bool) -> str:
    if confidential:
        return f"on the {m.list} list ({CATEGORIES[m.category].title})"
    how = {"subtree": "and everything under it", "exact": "that name only"}[m.kind]
    return f"{m.suffix} ({how}) on list {m.list}"


def _school_step(
    compiled: CompiledPolicy, v: verdict.Verdict, name: str, group: str, at: datetime
) -> tuple[Rule | None, list[str]]:
    """The school rule that decided (if any) and what the school layer holds for this name."""
    findings = []
    deciding = None
    scopes = name_rule_scopes(compiled.inputs.rules)
    in_force = {(b.action, b.group, b.schedule) for b in compiled.describe(v.bits) if b.kind == "school"}
    for (action, g, schedule), rules in scopes.items():
        if g != group:
            continue
        for r in rules:
            if not (name == r.target or name.endswith("." + r.target)):
                continue
            on = schedule is None or compiled.calendar.active(schedule, at)
            text = f"rule {r.id}: {r.describe(compiled.calendar.zone)} (by {r.author}: {r.reason})"
            if (action, g, schedule) in in_force and r.target == v.matched:
                deciding = deciding or r
                findings.insert(0, text)
            elif not on:
                findings.append(f"{text}; not in force now (outside its schedule)")
            else:
                findings.append(f"{text}; outweighed by a more specific or padlocked entry")
    return deciding, findings


def _decided_layer(v: verdict.Verdict, compiled: CompiledPolicy) -> Layer:
    if v.reason == verdict.Reason.PADLOCKED:
        lists = compiled.category_bit("iwf") | compiled.category_bit("ctiru")
        return Layer.PADLOCKED if v.bits & lists else Layer.TRUST_LOCKED
    if v.reason in (verdict.Reason.SCHOOL_ALLOW, verdict.Reason.SCHOOL_DENY):
        return Layer.SCHOOL
    return Layer.TRUST_DEFAULT


class Explainer:
    """A generation opened to explain names at one moment: its table and list files are mapped once,
    however many names and groups are asked about."""

    def __init__(self, store: Store, gen: Generation, at: datetime) -> None:
        self.generation = gen
        self.at = at
        self.compiled = gen.compiled()
        self.exam_now = frozenset(timetable.exam_now(store, at))
        key = store.key()
        self.lookup = ListLookup(key, [(r.name, r.category, r.path) for r in self.compiled.inputs.lists])
        self.table = DomainTable.open(gen.table_path, key)

    def explain(self, name: str, group: str) -> Explanation:
        return explain(
            self.compiled, self.table, self.lookup, self.generation.id, name, group, self.at, self.exam_now
        )

    def close(self) -> None:
        self.table.close()

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pending(
    store: Store, name: str, group: str, at: datetime, progress: Progress | None = None
) -> Explanation:
    """The verdict the working policy (changes made but not yet applied) would give at at."""
    with generations.preview_working(store, at, progress) as gen, Explainer(store, gen, at) as ex:
        return ex.explain(name, group)
