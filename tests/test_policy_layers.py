"""The layer order: nothing a school writes can open an IWF, CTIRU or trust-locked entry; then the
school's rules (most specific first), the trust's default categories and the group's default."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import audit
from appliance.lists import catalogue, importer
from appliance.policy import generations, inputs, rules, timetable, trust
from appliance.policy.compiled import CompiledPolicy
from appliance.policy.model import ALL_GROUPS, GROUPS, PolicyError
from appliance.policy.rules import Rule
from appliance.policy.schedules import Schedule, Weekly
from appliance.store import Store
from fastpath import verdict
from fastpath.table import DomainTable

DATA = Path(__file__).parent / "data" / "lists"
NOW = datetime(2025, 6, 11, 10, 0, tzinfo=UTC)  # a Wednesday, 11:00 in London
LUNCH = datetime(2025, 6, 11, 11, 30, tzinfo=UTC)  # 12:30 in London

TRUST = """
[locked]
categories = ["pornography"]
domains = ["locked-everywhere.example"]

[groups.students]
blocked = ["gambling", "social_media"]
locked_categories = ["self_harm"]
locked_domains = ["locked-for-students.example"]

[groups.staff]
blocked = ["gambling", "social_media"]

[groups.exams]
default = "block"
"""

# Names that no school rule may open, and the groups they are padlocked for.
PADLOCKED = {
    "whole-domain.iwf-fixture.example": GROUPS,  # IWF, domain-level
    "sub.whole-domain.iwf-fixture.example": GROUPS,
    "iwf.testfiltering.com": GROUPS,  # the IWF list's test entry: an entry like any other
    "ctiru-whole.example": GROUPS,
    "locked-everywhere.example": GROUPS,  # trust-locked domain
    "adult-a.example": GROUPS,  # trust-locked category (pornography)
    "locked-for-students.example": ("students",),
    "selfharm.example": ("students",),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    state = tmp_path_factory.mktemp("layers") / "state"
    state.mkdir()
    (state / "trust.toml").write_text(TRUST)
    sh = state.parent / "selfharm.txt"
    sh.write_text("selfharm.example\n")
    social = state.parent / "social.txt"
    social.write_text("social.example\n")
    with Store(state) as s:
        with audit.change(s, "it", "setup") as ch:
            catalogue.add(ch, "iwf", "iwf", None, str(DATA / "iwf.txt"), None)
            catalogue.add(ch, "ctiru", "ctiru", None, str(DATA / "ctiru.txt"), None)
            catalogue.add(ch, "adult", "ut1", "pornography", str(DATA / "ut1" / "adult"), None)
            catalogue.add(ch, "gambling", "ut1", "gambling", str(DATA / "ut1" / "gambling"), None)
            catalogue.add(ch, "selfharm", "plain", "self_harm", str(sh), None)
            catalogue.add(ch, "social", "plain", "social_media", str(social), None)
            timetable.set_schedule(ch, "lunch", Schedule((Weekly.parse("mon-fri 12:00-13:00"),)))
        for info in catalogue.all_lists(s):
            assert importer.update(s, info.name, "it", "setup").error is None
        yield s


@contextlib.contextmanager
def compiled_policy(
    store: Store, extra: list[Rule], at: datetime = NOW
) -> Iterator[tuple[CompiledPolicy, DomainTable]]:
    """The working policy plus extra rules (as if written straight into the database), compiled."""
    base = inputs.from_store(store, at)
    policy = CompiledPolicy.compile(dataclasses.replace(base, rules=base.rules + tuple(extra)))
    with (
        generations.preview(store, policy, at) as gen,
        DomainTable.open(gen.table_path, store.key()) as table,
    ):
        yield policy, table


def decide(
    policy: CompiledPolicy,
    table: DomainTable,
    name: str,
    group: str,
    at: datetime = NOW,
    exams: frozenset[str] = frozenset(),
) -> verdict.Verdict:
    return verdict.decide(table, name, policy.masks(group, at, exams).group_policy())


def rule(
    group: str, action: str, target: str, kind: str = "name", schedule: str | None = None, id: int = 0
) -> Rule:
    return Rule(group, action, kind, target, "test", "tester", NOW, schedule=schedule, id=id)


def test_school_allows_can_never_open_padlocked_entries(store: Store) -> None:
    """Every kind of allow, for every group and for all groups, always on or scheduled, written
    straight into the policy without the checks that refuse it."""
    allows = [
        rule(g, "allow", name, schedule=s)
        for name in PADLOCKED
        for g in (*GROUPS, ALL_GROUPS)
        for s in (None, "lunch")
    ]
    allows += [
        rule(g, "allow", c, kind="category")
        for c in ("iwf", "ctiru", "pornography", "self_harm")
        for g in (*GROUPS, ALL_GROUPS)
    ]
    allows += [rule(g, "deny", "example", schedule="lunch") for g in GROUPS]  # unrelated deny on a parent
    with compiled_policy(store, allows) as (policy, table):
        for name, groups in PADLOCKED.items():
            for g in groups:
                for at in (NOW, LUNCH):
                    for exams in (frozenset(), frozenset({g})):
                        v = decide(policy, table, name, g, at, exams)
                        assert (v.action, v.reason) == (verdict.Action.BLOCK, verdict.Reason.PADLOCKED), (
                            name,
                            g,
                        )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*GROUPS, ALL_GROUPS]),
            st.sampled_from(["allow", "deny"]),
            st.sampled_from([*PADLOCKED, "example", "iwf-fixture.example", "testfiltering.com"]),
            st.sampled_from([None, "lunch"]),
        ),
        max_size=12,
    )
)
def test_no_combination_of_school_rules_opens_a_padlocked_entry(store: Store, specs: list) -> None:
    extra = [rule(g, a, t, schedule=s, id=i) for i, (g, a, t, s) in enumerate(specs)]
    with compiled_policy(store, extra) as (policy, table):
        for name, groups in PADLOCKED.items():
            for g in groups:
                assert decide(policy, table, name, g, LUNCH).reason == verdict.Reason.PADLOCKED


def test_school_commands_refuse_padlocked_allows(store: Store) -> None:
    cases = [
        ("staff", "name", "whole-domain.iwf-fixture.example", "on the iwf list"),
        ("students", "name", "deep.sub.ctiru-whole.example", "on the ctiru list"),
        (
            ALL_GROUPS,
            "name",
            "www.locked-everywhere.example",
            "locked locked-everywhere.example for students",
        ),
        (
            "students",
            "name",
            "locked-for-students.example",
            "locked locked-for-students.example for students",
        ),
        ("staff", "category", "pornography", "padlocked for staff"),
        (ALL_GROUPS, "category", "self_harm", "padlocked for students"),
        ("staff", "category", "ctiru", "padlocked for everyone"),
    ]
    for group, kind, target, message in cases:
        with (
            pytest.raises(PolicyError, match=f"refused: .*{message}"),
            audit.change(store, "it", "try") as ch,
        ):
            rules.add(ch, rule(group, "allow", target, kind=kind))
    assert rules.all_rules(store) == []
    # Opening these for a group they are not locked for is a school decision, and allowed
    with audit.change(store, "it", "sixth-form wellbeing research") as ch:
        stored = rules.add(ch, rule("staff", "allow", "selfharm.example"))
        rules.remove(ch, stored.id)


def test_school_commands_refuse_allows_for_names_in_a_trust_locked_category(store: Store) -> None:
    """The verdict would block them anyway, so the rule is refused rather than added to no effect."""
    cases = [
        (
            "staff",
            "www.adult-a.example",
            "on the adult list (Pornography), which the trust has locked for staff",
        ),
        (
            "students",
            "selfharm.example",
            "on the selfharm list (Self harm), which the trust has locked for students",
        ),
        (ALL_GROUPS, "selfharm.example", "which the trust has locked for students"),
    ]
    for group, target, message in cases:
        with (
            pytest.raises(PolicyError, match=re.escape(message)),
            audit.change(store, "it", "try") as ch,
        ):
            rules.add(ch, rule(group, "allow", target))
    assert rules.all_rules(store) == []
    with compiled_policy(store, []) as (policy, table):
        assert decide(policy, table, "www.adult-a.example", "staff").reason == verdict.Reason.PADLOCKED


def test_trust_default_categories_and_the_group_default(store: Store) -> None:
    with compiled_policy(store, []) as (policy, table):
        assert decide(policy, table, "casino-a.example", "students").reason == verdict.Reason.CATEGORY
        assert decide(policy, table, "www.casino-a.example", "staff").action == verdict.Action.BLOCK
        assert decide(policy, table, "casino-a.example", "specialist").reason == verdict.Reason.DEFAULT
        assert decide(policy, table, "casino-a.example", "specialist").action == verdict.Action.ALLOW
        assert decide(policy, table, "selfharm.example", "staff").action == verdict.Action.ALLOW
        assert decide(policy, table, "unlisted.example", "students").action == verdict.Action.ALLOW
        v = decide(policy, table, "unlisted.example", "exams")
        assert (v.action, v.reason) == (verdict.Action.BLOCK, verdict.Reason.DEFAULT)


def test_group_rule_beats_all_groups_rule_and_specific_names_beat_parents(store: Store) -> None:
    extra = [
        rule(ALL_GROUPS, "deny", "video.example", id=1),
        rule("staff", "allow", "video.example", id=2),
        rule("students", "deny", "school-site.example", id=3),
        rule("students", "allow", "www.school-site.example", id=4),
        rule("exams", "allow", "exam-board.example", id=5),
        rule("students", "allow", "casino-b.example", id=6),
    ]
    with compiled_policy(store, extra) as (policy, table):
        assert decide(policy, table, "video.example", "staff").reason == verdict.Reason.SCHOOL_ALLOW
        assert decide(policy, table, "cdn.video.example", "students").reason == verdict.Reason.SCHOOL_DENY
        assert decide(policy, table, "www.school-site.example", "students").action == verdict.Action.ALLOW
        assert decide(policy, table, "mail.school-site.example", "students").action == verdict.Action.BLOCK
        assert decide(policy, table, "school-site.example", "staff").action == verdict.Action.ALLOW
        assert decide(policy, table, "exam-board.example", "exams").reason == verdict.Reason.SCHOOL_ALLOW
        # a school allow opens a trust default category (layer 3 before layer 4) for that group only
        assert decide(policy, table, "casino-b.example", "students").reason == verdict.Reason.SCHOOL_ALLOW
        assert decide(policy, table, "casino-b.example", "staff").reason == verdict.Reason.CATEGORY


def test_scheduled_category_rule(store: Store) -> None:
    extra = [
        rule("staff", "allow", "social_media", kind="category", schedule="lunch", id=1),
        rule(ALL_GROUPS, "deny", "gambling", kind="category", id=2),
        rule("specialist", "allow", "gambling", kind="category", id=3),
    ]
    with compiled_policy(store, extra) as (policy, table):
        assert decide(policy, table, "social.example", "staff", NOW).action == verdict.Action.BLOCK
        assert decide(policy, table, "social.example", "staff", LUNCH).action == verdict.Action.ALLOW
        assert decide(policy, table, "social.example", "students", LUNCH).action == verdict.Action.BLOCK
        assert decide(policy, table, "casino-a.example", "guests").action == verdict.Action.BLOCK
        assert decide(policy, table, "casino-a.example", "specialist").action == verdict.Action.ALLOW
        assert policy.next_change(NOW) == datetime(2025, 6, 11, 11, 0, tzinfo=UTC)


def test_exam_mode_puts_a_group_on_the_exams_policy(store: Store) -> None:
    extra = [
        rule("exams", "allow", "exam-board.example", id=1),
        rule("students", "allow", "social.example", id=2),
    ]
    with compiled_policy(store, extra) as (policy, table):
        students_in_exams = frozenset({"students"})
        assert (
            decide(policy, table, "unlisted.example", "students", exams=students_in_exams).action
            == verdict.Action.BLOCK
        )
        assert (
            decide(policy, table, "exam-board.example", "students", exams=students_in_exams).action
            == verdict.Action.ALLOW
        )
        assert (
            decide(policy, table, "social.example", "students", exams=students_in_exams).action
            == verdict.Action.BLOCK
        )
        assert decide(policy, table, "social.example", "students").action == verdict.Action.ALLOW
        assert (
            decide(policy, table, "unlisted.example", "staff", exams=students_in_exams).action
            == verdict.Action.ALLOW
        )


@pytest.mark.parametrize(
    "text, message",
    [
        ("[groups.studnets]\nblocked = []\n", r"\[groups.studnets\]: unknown group 'studnets'"),
        ("[groups.staff]\nblocked = ['gambing']\n", r"\[groups.staff\] blocked: unknown category 'gambing'"),
        ("[groups.staff]\ndefault = 'deny'\n", r"\[groups.staff\]: default must be"),
        ("[groups.staff]\nblokced = []\n", r"\[groups.staff\]: unknown key 'blokced'"),
        ("[locked]\ndomains = ['bad..name']\n", r"\[locked\] domains: 'bad..name' is not a valid domain"),
        ("[locked]\ncategories = 'pornography'\n", r"\[locked\] categories: expected a list"),
        ("[locked\n", r"trust.toml: .*line 1"),
    ],
)
def test_trust_file_mistakes_are_reported(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "trust.toml").write_text(text)
    with pytest.raises(PolicyError, match=message):
        trust.load(tmp_path)


def test_trust_defaults_follow_the_seed_schools(tmp_path: Path) -> None:
    policy = trust.load(tmp_path)
    assert policy.source == "built-in defaults"
    assert policy.groups["exams"].default.value == "block"
    assert {"iwf", "ctiru", "pornography", "self_harm"} <= policy.locked_for("students")
    assert "self_harm" not in policy.locked_for("staff")
    # most restricted to least: students block the most, specialist staff the least
    blocked = {g: len(policy.groups[g].blocked | policy.locked_for(g)) for g in GROUPS}
    assert blocked["students"] > blocked["staff"] > blocked["specialist"]
