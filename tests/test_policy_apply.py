"""Applying policy: atomic generations, rollback, diff, explain, expiry, list refresh, the live view
the data plane uses, and kill -9 at random moments of an apply."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance import audit
from appliance.cli import main
from appliance.lists import catalogue, importer
from appliance.policy import generations, inputs, rules, timetable, upkeep
from appliance.policy.live import LivePolicy
from appliance.policy.model import PolicyError
from appliance.policy.rules import Rule
from appliance.policy.schedules import Schedule, Weekly
from appliance.store import Store
from fastpath import verdict
from fastpath.table import DomainTable

DATA = Path(__file__).parent / "data" / "lists"
ROOT = Path(__file__).parent.parent


def add_rule(
    store: Store,
    group: str,
    action: str,
    target: str,
    kind: str = "name",
    reason: str = "test",
    schedule: str | None = None,
    expires: datetime | None = None,
) -> Rule:
    with audit.change(store, "alice", reason) as ch:
        rule = Rule(group, action, kind, target, reason, "alice", ch.now, expires=expires, schedule=schedule)
        return rules.add(ch, rule)


def apply(store: Store, now: datetime | None = None) -> generations.Generation:
    return generations.apply(store, inputs.from_store(store, now or datetime.now(UTC)), "alice", "test", now)


def live_verdict(state: Path, name: str, group: str, now: datetime | None = None) -> verdict.Verdict:
    live = LivePolicy(state)
    try:
        assert live.refresh(now)
        snap = live.snapshot
        assert snap is not None
        return verdict.decide(snap.table, name, snap.policies[group])
    finally:
        live.close()


def test_apply_swaps_current_and_rollback_returns(store: Store) -> None:
    assert generations.current(store) is None
    first = apply(store)
    assert os.readlink(store.policy_dir / "current") == f"generations/{first.id}"
    assert live_verdict(store.dir, "casino-a.example", "staff").action == verdict.Action.BLOCK
    add_rule(store, "staff", "allow", "casino-a.example")
    second = apply(store)
    assert second.previous == first.id
    assert live_verdict(store.dir, "casino-a.example", "staff").action == verdict.Action.ALLOW
    assert generations.rollback(store, "bob", "the allow was a mistake").id == first.id
    assert live_verdict(store.dir, "casino-a.example", "staff").action == verdict.Action.BLOCK
    with pytest.raises(PolicyError, match="no earlier policy"):
        generations.rollback(store, "bob", "again")
    actions = [(e.action, e.actor) for e in audit.entries(store)][-3:]
    assert actions == [("rule.add", "alice"), ("policy.apply", "alice"), ("policy.rollback", "bob")]
    assert audit.verify(store).ok


def test_old_generations_are_collected(store: Store) -> None:
    ids = [apply(store).id for _ in range(7)]
    kept = sorted(p.name for p in (store.policy_dir / "generations").iterdir())
    assert kept == ids[-generations.KEEP :]


def test_table_is_reused_when_only_the_timetable_changes(store: Store) -> None:
    first = apply(store)
    with audit.change(store, "it", "lunch") as ch:
        timetable.set_schedule(ch, "lunch", Schedule((Weekly.parse("mon-fri 12:00-13:00"),)))
    second = apply(store)
    assert second.manifest["table_reused"]
    assert second.table_path.stat().st_ino == first.table_path.stat().st_ino
    add_rule(store, "staff", "allow", "new.example")
    third = apply(store)
    assert not third.manifest["table_reused"]


def test_compiled_table_probes_only_the_depths_its_names_have(store: Store) -> None:
    """Lists pass their depth masks to the table: the fixtures' names have 2 and 3 labels."""
    with DomainTable.open(apply(store).table_path, store.key()) as table:
        assert table.depths == 0b110


def test_rules_for_all_groups_and_lists_are_enforced_on_each_path(store: Store) -> None:
    gen = apply(store)
    assert gen.manifest["enforcement"]["iwf"] == {"every_path": 2, "http_only": 3}
    assert gen.manifest["enforcement"]["gambling"] == {"every_path": 2, "http_only": 1}
    live = LivePolicy(store.dir)
    live.refresh()
    snap = live.snapshot
    assert snap is not None
    pages_bit = snap.compiled.pages_bit
    # a host with IWF pages is marked for the HTTP filter, but not blocked at DNS
    v = verdict.decide(snap.table, "iwf-fixture-one.example", snap.policies["students"])
    assert v.action == verdict.Action.ALLOW and v.categories & pages_bit
    assert snap.pages.lookup("iwf-fixture-one.example", "/abc/def.jpg") == snap.compiled.category_bit("iwf")
    assert snap.pages.lookup("iwf-fixture-one.example", "/abc/other.jpg") == 0
    live.close()


def test_diff_shows_what_will_change(store: Store, capsys: pytest.CaptureFixture) -> None:
    apply(store)
    state = ["--state-dir", str(store.dir)]
    assert main(["policy", "diff", *state]) == 0
    assert capsys.readouterr().out.strip() == "no changes: the working policy is the one in force"
    add_rule(store, "*", "deny", "video.example")
    add_rule(store, "staff", "allow", "casino-a.example")
    add_rule(store, "students", "allow", "social_media", kind="category")
    add_rule(store, "students", "deny", "whole-domain.iwf-fixture.example")
    src = store.dir.parent / "extra.txt"
    src.write_text("extra-casino.example\n")
    with audit.change(store, "it", "more") as ch:
        catalogue.add(ch, "extra", "plain", "gambling", str(src), None)
    importer.update(store, "extra", "it", "more")
    assert main(["policy", "diff", *state]) == 0
    out = capsys.readouterr().out
    assert "+ list extra (Gambling): 1 names and 0 pages now blocked for every group" in out
    assert "video.example for students: allowed (default) -> blocked (school deny)" in out
    assert "video.example for exams: blocked (default) -> blocked (school deny)" in out
    assert "casino-a.example for staff: blocked (category) -> allowed (school allow)" in out
    assert "casino-a.example for students" not in out
    # a deny on a padlocked name changes nothing, so it is not listed as a change
    assert "whole-domain.iwf-fixture.example" not in out.split("Names now treated differently")[1]
    assert "+ rule 4: deny whole-domain.iwf-fixture.example for students (test)" in out
    assert "students: no longer blocks Social media" in out
    # diff builds beside the live policy and changes nothing
    assert not list((store.policy_dir / "generations").glob(".building-*"))
    assert live_verdict(store.dir, "video.example", "students").action == verdict.Action.ALLOW


def test_explain_names_layer_rule_list_and_category(store: Store, capsys: pytest.CaptureFixture) -> None:
    add_rule(store, "staff", "allow", "casino-a.example", reason="maths project on odds")
    apply(store)
    state = ["--state-dir", str(store.dir)]
    assert main(["policy", "explain", "www.casino-a.example", "--group", "staff", *state]) == 0
    out = capsys.readouterr().out
    assert out.startswith("www.casino-a.example for staff: ALLOW")
    assert "3. school rules  <- decided here" in out
    assert "rule 1: allow casino-a.example for staff (by alice: maths project on odds)" in out
    assert (
        "Gambling: blocked for staff by trust default for staff; casino-a.example (and everything under it)"
        in out
    )
    assert main(["policy", "explain", "casino-a.example", "--group", "students", "--json", *state]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["action"], result["reason"], result["layer"]) == ("block", "CATEGORY", 4)
    assert result["lists"] == ["gambling"] and result["categories"] == ["Gambling"]
    assert (
        main(
            [
                "policy",
                "explain",
                "a.whole-domain.iwf-fixture.example",
                "--group",
                "specialist",
                "--json",
                *state,
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert (result["action"], result["layer"], result["iwf"]) == ("block", 1, True)
    assert result["steps"][0]["findings"] == ["on the iwf list (Child sexual abuse content (IWF))"]
    assert "whole-domain" not in json.dumps(result["steps"])  # the entry itself is never shown
    assert main(["policy", "explain", "bad..name", "--group", "staff", *state]) == 2
    assert "not a valid domain name" in capsys.readouterr().err


def test_explain_pending_and_scheduled_rules(store: Store, capsys: pytest.CaptureFixture) -> None:
    with audit.change(store, "it", "lunch") as ch:
        timetable.set_schedule(ch, "lunch", Schedule((Weekly.parse("mon-fri 12:00-13:00"),)))
    add_rule(store, "staff", "allow", "casino-b.example", schedule="lunch")
    state = ["--state-dir", str(store.dir)]
    assert main(["policy", "explain", "casino-b.example", "--group", "staff", *state]) == 2
    assert "no policy has been applied yet" in capsys.readouterr().err
    args = ["policy", "explain", "casino-b.example", "--group", "staff", "--pending", *state]
    assert main([*args, "--at", "2025-06-11T12:30"]) == 0
    assert "staff: ALLOW" in capsys.readouterr().out
    assert main([*args, "--at", "2025-06-11T14:00"]) == 0
    out = capsys.readouterr().out
    assert "staff: BLOCK" in out and "not in force now (outside its schedule)" in out


def test_expired_rules_leave_the_live_policy(store: Store) -> None:
    now = datetime.now(UTC)
    add_rule(store, "students", "allow", "casino-a.example", expires=now + timedelta(hours=1))
    add_rule(store, "students", "deny", "pending.example")  # written but never applied
    with audit.change(store, "it", "x") as ch:
        rules.remove(ch, 2)
    gen = generations.apply(store, inputs.from_store(store, now).without_expired(now), "alice", "test", now)
    assert live_verdict(store.dir, "casino-a.example", "students", now).action == verdict.Action.ALLOW
    assert upkeep.expire(store, now + timedelta(minutes=59)) is None
    later = now + timedelta(hours=1)
    new = upkeep.expire(store, later)
    assert new is not None and new.previous == gen.id
    assert live_verdict(store.dir, "casino-a.example", "students", later).action == verdict.Action.BLOCK
    assert rules.all_rules(store) == []
    expiry = [e for e in audit.entries(store) if e.action == "rule.expire"]
    assert [(e.actor, e.subject.split(":")[0]) for e in expiry] == [("system", "rule 1")]
    assert upkeep.expire(store, later) is None


def test_list_refresh_applies_only_the_lists(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "l.txt"
    src.write_text("one.example\n")
    with audit.change(store, "it", "x") as ch:
        catalogue.add(ch, "l", "plain", "games", str(src), None)
    importer.update(store, "l", "it", "x")
    apply(store)
    add_rule(store, "students", "deny", "pending.example")  # not applied yet
    src.write_text("one.example\ntwo.example\n")
    importer.update(store, "l", "system", "scheduled update")
    gen = upkeep.refresh_lists(store, ["l"], "system", "scheduled update")
    assert gen is not None
    assert live_verdict(store.dir, "two.example", "students").reason == verdict.Reason.CATEGORY
    assert live_verdict(store.dir, "pending.example", "students").action == verdict.Action.ALLOW
    assert upkeep.refresh_lists(store, ["l"], "system", "nothing new") is None


def test_live_policy_follows_exam_mode_and_schedules(store: Store) -> None:
    with audit.change(store, "it", "mock exams") as ch:
        timetable.set_schedule(ch, "lunch", Schedule((Weekly.parse("daily 12:00-13:00"),)))
    add_rule(store, "staff", "allow", "social_media", kind="category", schedule="lunch")
    apply(store)
    live = LivePolicy(store.dir)
    morning = datetime(2025, 6, 11, 9, 0, tzinfo=UTC)  # 10:00 in London
    assert live.refresh(morning)
    first = live.snapshot
    assert first is not None and first.valid_until == datetime(2025, 6, 11, 11, 0, tzinfo=UTC)
    assert not live.refresh(morning + timedelta(minutes=5))  # nothing changed
    with audit.change(store, "head", "mock exam in the hall", morning) as ch:
        timetable.exam_on(ch, "students", until=morning + timedelta(hours=1))
    assert live.refresh(morning + timedelta(minutes=6))
    snap = live.snapshot
    assert snap is not None and snap.masks["students"].exam and snap.table is first.table
    assert (
        verdict.decide(snap.table, "unlisted.example", snap.policies["students"]).action
        == verdict.Action.BLOCK
    )
    assert live.refresh(morning + timedelta(hours=1))  # exam mode timed out
    assert live.snapshot is not None and not live.snapshot.masks["students"].exam
    assert live.refresh(datetime(2025, 6, 11, 11, 0, tzinfo=UTC))  # lunch starts
    live.close()


def test_cli_rule_lifecycle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    args = ["policy", "deny", "proxy.example", "--group", "all", "--reason", "pupils found it", "--by", "dsl"]
    assert main([*args, "--expires", "2099-07-18", "--ticket", "HD-123", *state]) == 0
    assert "rule 1: deny proxy.example for all groups to the end of 2099-07-18" in capsys.readouterr().out
    assert main(["policy", "rules", *state]) == 0
    out = capsys.readouterr().out
    assert "[HD-123]" in out and "by dsl on" in out and "pupils found it" in out
    assert main(["policy", "deny", "x.example", "--group", "pupils", "--reason", "r", *state]) == 2
    assert "unknown group 'pupils'" in capsys.readouterr().err
    assert (
        main(
            [
                "policy",
                "allow",
                "x.example",
                "--group",
                "staff",
                "--schedule",
                "nope",
                "--reason",
                "r",
                *state,
            ]
        )
        == 2
    )
    assert "no schedule named 'nope'" in capsys.readouterr().err
    assert main(["policy", "apply", "--reason", "termly review", *state]) == 0
    assert main(["policy", "status", *state]) == 0
    assert "WARNING: no IWF list is loaded" in capsys.readouterr().out
    assert main(["policy", "remove", "1", "--reason", "no longer needed", *state]) == 0
    assert main(["policy", "exam", "on", "--group", "students", "--reason", "mocks", *state]) == 0
    with pytest.raises(SystemExit):  # argparse refuses it: exams is always on the exam policy
        main(["policy", "exam", "on", "--group", "exams", "--reason", "x", *state])
    assert main(["audit", "verify", *state]) == 0


# --- crash safety ----------------------------------------------------------------------------------

APPLY = """
import sys, time
from datetime import UTC, datetime
from appliance.policy import generations, inputs
from appliance.store import Store
with Store(sys.argv[1]) as store:
    print("start", flush=True)
    started = time.monotonic()
    generations.apply(store, inputs.from_store(store, datetime.now(UTC)), "tester", "crash test")
    print(time.monotonic() - started, flush=True)
"""


ROUNDS = 12


def start_apply(state: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", APPLY, str(state)], env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"start\n"
    return proc


@pytest.mark.slow
def test_kill_9_during_apply_leaves_old_or_new_policy(tmp_path: Path) -> None:
    state = tmp_path / "state"
    big = tmp_path / "big.txt"
    big.write_text("".join(f"site{i}.example\n" for i in range(500_000)))
    with Store(state) as store:
        with audit.change(store, "it", "setup") as ch:
            catalogue.add(ch, "big", "plain", "games", str(big), None)
        importer.update(store, "big", "it", "setup")
        add_rule(store, "students", "deny", "calibration.example")
    calibration = start_apply(state)
    assert calibration.stdout is not None
    duration = float(calibration.stdout.readline())  # how long one apply takes here, uninterrupted
    assert calibration.wait() == 0
    rng = random.Random(4)
    outcomes = {"old": 0, "new": 0}
    for round_ in range(ROUNDS):
        with Store(state) as store:
            old = generations.current(store)
            assert old is not None
            # each round changes the policy with a new rule, so the table is rebuilt
            add_rule(store, "students", "deny", f"marker{round_}.example")
        proc = start_apply(state)
        # The first kill lands at once and the last after the apply has finished, so both outcomes are
        # always exercised; the rounds between land at random moments of the run.
        if round_ == ROUNDS - 1:
            proc.wait()
        else:
            time.sleep(0 if round_ == 0 else rng.uniform(0, duration * 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        with Store(state) as store:
            now_live = generations.current(store)
            assert now_live is not None
            marker = live_verdict(state, f"marker{round_}.example", "students")
            if now_live.id == old.id:
                outcomes["old"] += 1
                assert marker.action == verdict.Action.ALLOW
            else:
                outcomes["new"] += 1
                assert now_live.previous == old.id
                assert marker.reason == verdict.Reason.SCHOOL_DENY
            # whichever it is, it is whole: every list entry and every earlier rule is there
            assert live_verdict(state, "site499999.example", "students").reason == verdict.Reason.CATEGORY
            assert live_verdict(state, "calibration.example", "students").reason == verdict.Reason.SCHOOL_DENY
            assert audit.verify(store).ok
    with Store(state) as store:
        final = apply(store)  # recovers: abandoned builds removed, any missing apply entry logged
        assert not list((state / "policy" / "generations").glob(".building-*"))
        logged = {e.after["generation"] for e in audit.entries(store) if e.action == "policy.apply"}
        assert final.id in logged and final.previous in logged
        assert audit.verify(store).ok
    assert outcomes["old"] and outcomes["new"], outcomes  # kills landed both before and after the swap
