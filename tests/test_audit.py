"""The hash-chained audit trail: verify catches edits, deletions and insertions; the termly report."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from appliance import audit
from appliance.cli import main
from appliance.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "state") as s:
        yield s


def log(store: Store, n: int, when: datetime | None = None) -> None:
    for i in range(n):
        with audit.change(store, f"user{i}", f"reason {i}", when) as ch:
            ch.log("rule.add", f"rule {i}", None, {"target": f"site{i}.example"})


def test_change_and_entry_commit_together(store: Store) -> None:
    with pytest.raises(RuntimeError), audit.change(store, "alice", "oops") as ch:
        ch.log("rule.add", "a rule", None, {"x": 1})
        store.db.execute("INSERT INTO settings (key, value) VALUES ('k', 'v')")
        raise RuntimeError("the change failed half-way")
    assert list(audit.entries(store)) == []
    assert store.db.execute("SELECT COUNT(*) FROM settings").fetchone()[0] == 0


def test_reason_and_person_are_required(store: Store) -> None:
    with pytest.raises(ValueError, match="reason"), audit.change(store, "alice", "  "):
        pass
    with pytest.raises(ValueError, match="person"), audit.change(store, "", "why"):
        pass


def test_entries_record_who_when_what_why_before_after(store: Store) -> None:
    when = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    with audit.change(store, "alice", "ticket 42", when) as ch:
        ch.log("rule.remove", "rule 7", {"target": "a.example"}, None)
    (e,) = audit.entries(store)
    assert (e.actor, e.ts, e.action, e.subject, e.reason) == (
        "alice",
        when,
        "rule.remove",
        "rule 7",
        "ticket 42",
    )
    assert (e.before, e.after) == ({"target": "a.example"}, None)


def test_verify_passes_an_intact_log(store: Store) -> None:
    log(store, 5)
    result = audit.verify(store)
    assert result.ok and result.entries == 5


@pytest.mark.parametrize(
    "column, value",
    [
        ("reason", "a different reason"),
        ("actor", "mallory"),
        ("after", '{"target":"other.example"}'),
        ("ts", "2020-01-01T00:00:00.000000+00:00"),
        ("before", None),
    ],
)
def test_verify_catches_an_edit(store: Store, column: str, value: str | None) -> None:
    log(store, 5)
    store.db.execute(f"UPDATE audit SET {column} = ? WHERE seq = 3", (value if column != "before" else "{}",))
    result = audit.verify(store)
    assert not result.ok
    assert any("entry 3" in p and "edited" in p for p in result.problems)


def test_verify_catches_an_edit_with_a_recomputed_hash(store: Store) -> None:
    log(store, 5)
    row = store.db.execute("SELECT * FROM audit WHERE seq = 2").fetchone()
    forged = audit._entry_hash(
        2,
        row["ts"],
        row["actor"],
        row["action"],
        row["subject"],
        "forged",
        row["before"],
        row["after"],
        row["prev"],
    )
    store.db.execute("UPDATE audit SET reason = 'forged', hash = ? WHERE seq = 2", (forged,))
    assert any("entry 3" in p for p in audit.verify(store).problems)  # the next link breaks


def test_verify_catches_deletions(store: Store) -> None:
    log(store, 5)
    store.db.execute("DELETE FROM audit WHERE seq = 2")
    problems = audit.verify(store).problems
    assert any("entries 2..2 are missing" in p for p in problems)


def test_verify_catches_deleting_the_last_entries(store: Store) -> None:
    log(store, 5)
    store.db.execute("DELETE FROM audit WHERE seq >= 4")
    problems = audit.verify(store).problems
    assert problems == ["the log ends at entry 3 but entry 5 was written (deleted)"]


def test_verify_catches_a_rewritten_log(store: Store) -> None:
    log(store, 3)
    store.db.execute("DELETE FROM audit")
    with audit.change(store, "mallory", "cover tracks") as ch:
        ch.log("rule.add", "x")
        ch.log("rule.add", "y")
        ch.log("rule.add", "z")  # same length: only the head file catches it
    (store.dir / audit.HEAD_FILE).write_text(json.dumps({"seq": 3, "hash": "0" * 64}))
    assert any("rewritten" in p for p in audit.verify(store).problems)


def test_verify_cli_exit_status(store: Store, capsys: pytest.CaptureFixture) -> None:
    log(store, 2)
    assert main(["audit", "verify", "--state-dir", str(store.dir)]) == 0
    assert "audit log intact: 2 entries" in capsys.readouterr().out
    store.db.execute("UPDATE audit SET subject = 'changed' WHERE seq = 1")
    assert main(["audit", "verify", "--state-dir", str(store.dir)]) == 1
    assert "TAMPERED: entry 1" in capsys.readouterr().out


def test_termly_report(store: Store, capsys: pytest.CaptureFixture) -> None:
    def at(*args: int) -> datetime:
        return datetime(*args, tzinfo=UTC)

    with audit.change(store, "alice", "before the term", at(2025, 8, 31, 22, 59)) as ch:
        ch.log("rule.add", "rule 1: deny early.example for students")
    # 23:30 UTC on 31 August is 00:30 on 1 September in London (BST)
    with audit.change(store, "bob", "pupils found a proxy", at(2025, 8, 31, 23, 30)) as ch:
        ch.log("rule.add", "rule 2: deny proxy.example for students")
    with audit.change(store, "carol", "study of gambling maths ended", at(2025, 10, 1, 9)) as ch:
        ch.log("rule.remove", "rule 3: allow bet.example for staff")
    with audit.change(store, "system", "the rule's expiry date passed", at(2025, 11, 1, 9)) as ch:
        ch.log("rule.expire", "rule 4: allow game.example for students")
    with audit.change(store, "dave", "lunch time", at(2025, 12, 19, 23, 59)) as ch:
        ch.log("schedule.set", "schedule lunch: mon-fri 12:00-13:00")
    with audit.change(store, "erin", "after the term", at(2025, 12, 20, 0, 1)) as ch:
        ch.log("rule.add", "rule 5")
    sections = audit.report(store, date(2025, 9, 1), date(2025, 12, 19))
    assert [e.actor for e in sections["added"]] == ["bob"]
    assert [e.actor for e in sections["removed"]] == ["carol", "system"]
    assert [e.actor for e in sections["other"]] == ["dave"]
    args = ["audit", "report", "--from", "2025-09-01", "--to", "2025-12-19", "--state-dir", str(store.dir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Filters added (1)\n  2025-09-01 00:30  bob: rule 2: deny proxy.example for students\n" in out
    assert "why: pupils found a proxy" in out and "Audit log intact" in out
    assert main([*args, "--format", "csv"]) == 0
    csv_out = capsys.readouterr().out.splitlines()
    assert csv_out[0] == "section,when,who,change,what,why"
    added = "Filters added,2025-09-01 00:30,bob,rule.add,rule 2: deny proxy.example for students"
    assert csv_out[1] == f"{added},pupils found a proxy"
