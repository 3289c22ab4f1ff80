"""Compliance reports as kept records: each is one JSON document (the run's results and everything
else the report shows, gathered when it was made), stored once, never changed, and hashed into the
audit trail (`compliance.report`). Actions taken on its findings are appended beside it, each an
audit entry too (`compliance.action`). The HTML and PDF are rendered from the stored document alone,
so rendering a report again gives the same document."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance import audit
from appliance.store import Store

# The tables are compliance_reports and compliance_actions (appliance.store.SCHEMA); their triggers
# refuse changing or deleting a report and changing an action.
FORMAT = 1


def canonical(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Stored:
    id: int
    created: datetime
    trigger: str
    generation: str | None
    failures: int
    document: dict[str, Any]
    sha256: str
    mailed: datetime | None
    mail_error: str | None

    @classmethod
    def from_row(cls, row: Any) -> Stored:
        return cls(
            id=row["id"],
            created=datetime.fromisoformat(row["created"]),
            trigger=row["trigger"],
            generation=row["generation"],
            failures=row["failures"],
            document=json.loads(row["document"]),
            sha256=row["sha256"],
            mailed=datetime.fromisoformat(row["mailed"]) if row["mailed"] else None,
            mail_error=row["mail_error"],
        )

    @property
    def counts(self) -> Counter[str]:
        """How many checks passed, failed and were not tested."""
        return Counter(r["status"] for r in self.document["results"])

    @property
    def stem(self) -> str:
        """The name of its HTML and PDF files, without the suffix."""
        return f"compliance-report-{self.id}"

    @property
    def findings(self) -> list[dict[str, Any]]:
        """The failed checks, one finding per group, area and name (with every check that failed for
        it), numbered from 1 in the report's order: actions refer to these numbers. Each has a kind
        (finding_kind) for its heading."""
        grouped: dict[tuple[str, str, str], dict[str, Any]] = {}
        for r in self.document["results"]:
            if r["status"] != "fail":
                continue
            key = (r["group"], r["area"], r["target"])
            kind = finding_kind(r["area"], r["expected"])
            finding = grouped.setdefault(key, {**r, "kind": kind, "checks": []})
            finding["checks"].append({"check": r["check"], "observed": r["observed"]})
        return list(grouped.values())

    @property
    def untested_groups(self) -> list[str]:
        """The groups for which no check could run at all (no probe, say): a run that says nothing
        about them, which must never read as a pass."""
        ran = {r["group"] for r in self.document["results"] if r["status"] != "not tested"}
        return [g for g in self.document["groups"] if g not in ran]


def finding_kind(area: str, expected: str) -> str:
    """What a failed check means, in a few words for the DSL."""
    if expected == "blocked":
        return "under-blocked"
    if expected == "reachable":
        return "over-blocked"
    if area == "circumvention":
        return "circumvention route open"
    if area == "safe_search":
        return "safe search not as set"
    return "failed"


@dataclass(frozen=True)
class Action:
    id: int
    finding: int
    ts: datetime
    actor: str
    text: str


def save(store: Store, document: dict[str, Any], actor: str, reason: str) -> Stored:
    """Stores a new report and logs its hash, in one transaction."""
    text = canonical(document)
    sha = digest(text)
    failures = sum(1 for r in document["results"] if r["status"] == "fail")
    with audit.change(store, actor, reason) as ch:
        cur = ch.db.execute(
            "INSERT INTO compliance_reports (created, trigger, generation, failures, document, sha256)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                document["finished"],
                document["trigger"],
                document["policy"]["generation"],
                failures,
                text,
                sha,
            ),
        )
        report_id = int(cur.lastrowid or 0)
        ch.log(
            "compliance.report",
            f"compliance report {report_id}: {failures} failures",
            None,
            {"report": report_id, "sha256": sha},
        )
    return get(store, report_id)


def get(store: Store, report_id: int) -> Stored:
    row = store.db.execute("SELECT * FROM compliance_reports WHERE id = ?", (report_id,)).fetchone()
    if row is None:
        raise ValueError(f"no compliance report {report_id}")
    return Stored.from_row(row)


def listing(store: Store) -> list[Stored]:
    return [Stored.from_row(r) for r in store.db.execute("SELECT * FROM compliance_reports ORDER BY id DESC")]


def latest(store: Store) -> Stored | None:
    row = store.db.execute("SELECT * FROM compliance_reports ORDER BY id DESC LIMIT 1").fetchone()
    return Stored.from_row(row) if row else None


def verify(store: Store, report: Stored) -> str | None:
    """None if the stored document still matches its hash and the audit entry that recorded it;
    otherwise what is wrong."""
    row = store.db.execute("SELECT document FROM compliance_reports WHERE id = ?", (report.id,)).fetchone()
    if digest(row["document"]) != report.sha256:
        return f"report {report.id}: its document does not match its hash (edited)"
    logged = [
        e.after["sha256"]
        for e in audit.entries(store)
        if e.action == "compliance.report" and e.after and e.after.get("report") == report.id
    ]
    if logged != [report.sha256]:
        return f"report {report.id}: its hash is not the one the audit trail recorded"
    return None


def audit_entry(store: Store, report: Stored) -> int | None:
    """The sequence number of the audit entry that recorded the report."""
    for e in audit.entries(store):
        if e.action == "compliance.report" and e.after and e.after.get("report") == report.id:
            return e.seq
    return None


def add_action(store: Store, report: Stored, finding: int, text: str, actor: str, now: datetime) -> Action:
    """Appends what was done about finding number `finding` (from 1) of the report."""
    findings = report.findings
    if not 1 <= finding <= len(findings):
        raise ValueError(f"report {report.id} has findings 1 to {len(findings)}, not {finding}")
    if not text.strip():
        raise ValueError("an action needs a description")
    f = findings[finding - 1]
    with audit.change(store, actor, text, now) as ch:
        cur = ch.db.execute(
            "INSERT INTO compliance_actions (report, finding, ts, actor, text) VALUES (?, ?, ?, ?, ?)",
            (report.id, finding, now.isoformat(), actor, text.strip()),
        )
        ch.log(
            "compliance.action",
            f"compliance report {report.id}, finding {finding}: {f['group']} {f['target']}",
            None,
            {"report": report.id, "finding": finding, "action": text.strip()},
        )
    return Action(int(cur.lastrowid or 0), finding, now, actor, text.strip())


def actions(store: Store, report_id: int) -> list[Action]:
    rows = store.db.execute("SELECT * FROM compliance_actions WHERE report = ? ORDER BY id", (report_id,))
    return [
        Action(r["id"], r["finding"], datetime.fromisoformat(r["ts"]), r["actor"], r["text"]) for r in rows
    ]


def record_mail(store: Store, report_id: int, when: datetime | None, error: str | None) -> None:
    store.db.execute(
        "UPDATE compliance_reports SET mailed = ?, mail_error = ? WHERE id = ?",
        (when.isoformat() if when else None, error, report_id),
    )
