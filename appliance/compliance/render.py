"""A kept report as HTML (for the web UI and e-mail) and as PDF rendered from that HTML. Everything
shown comes from the stored document and the audit entry that recorded it, so the same report
renders to the same bytes every time."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from appliance.compliance import charts, checks, reports
from appliance.compliance.context import category_title
from appliance.policy.model import CATEGORIES
from appliance.store import Store

TEMPLATES = Path(__file__).parent / "templates"
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True
)


def _local(text: str, zone: ZoneInfo) -> str:
    return datetime.fromisoformat(text).astimezone(zone).strftime("%A %-d %B %Y, %H:%M %Z")


def _areas(results: list[checks.Result]) -> list[str]:
    used = {r.area for r in results}
    order = [c for c in CATEGORIES if c in used] + [a for a in checks.AREAS if a in used]
    return order


def _not_tested(results: list[checks.Result], areas: list[str], groups: list[str]) -> list[dict[str, Any]]:
    """What could not be tested, one row per area and reason, with the names and groups it held for
    (the same reason for many names and groups is one row, not dozens)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        if r.status != checks.Status.NOT_TESTED:
            continue
        row = rows.setdefault(
            (r.area, r.why), {"area": r.area, "why": r.why, "names": [], "groups": [], "checks": 0}
        )
        if r.target != "-" and r.target not in row["names"]:
            row["names"].append(r.target)
        if r.group not in row["groups"]:
            row["groups"].append(r.group)
        row["checks"] += 1
    for row in rows.values():
        row["groups"] = (
            "every group"
            if len(groups) > 1 and len(row["groups"]) == len(groups)
            else ", ".join(row["groups"])
        )
    return sorted(rows.values(), key=lambda row: (areas.index(row["area"]), row["why"]))


def model(store: Store, report: reports.Stored) -> dict[str, Any]:
    """What the template shows, all from the stored document."""
    doc = report.document
    zone = ZoneInfo(doc["timezone"])
    results = [checks.Result.from_dict(r) for r in doc["results"]]
    areas = _areas(results)
    groups = doc["groups"]
    matrix = {
        (g, a): Counter(r.status.value for r in results if r.group == g and r.area == a)
        for g in groups
        for a in areas
    }
    per_group = [(g, dict(Counter(r.status.value for r in results if r.group == g))) for g in groups]
    ctx = doc["context"]
    by_category: Counter[str] = Counter()
    by_group: Counter[str] = Counter()
    for row in ctx["blocked"]:
        by_category[category_title(row["category"])] += row["count"]
        by_group[row["group"]] += row["count"]
    return {
        "doc": doc,
        "report": report,
        "audit_seq": reports.audit_entry(store, report),
        "when": _local(doc["finished"], zone),
        "applied": _local(doc["policy"]["applied"], zone) if doc["policy"]["applied"] else None,
        "areas": [(a, checks.area_title(a)) for a in areas],
        "matrix": matrix,
        "findings": report.findings,
        "not_tested": _not_tested(results, areas, groups),
        "untested_groups": report.untested_groups,
        "counts": report.counts,
        "results_chart": charts.stacked("Checks by group: pass, fail, not tested", per_group),
        "blocked_by_category": by_category.most_common(),
        "blocked_by_group": by_group.most_common(),
        "category_chart": charts.bars("Blocked attempts by category", by_category.most_common(12)),
        "group_chart": charts.bars("Blocked attempts by group", by_group.most_common()),
        "category_title": category_title,
        "area_title": checks.area_title,
    }


def html(store: Store, report: reports.Stored) -> str:
    return _env.get_template("report.html").render(model(store, report))


def as_pdf(store: Store, report: reports.Stored) -> bytes:
    return pdf(html(store, report))


def pdf(document: str) -> bytes:
    import weasyprint  # loaded only when a PDF is made: it is slow to import

    # Fonts embedded whole: WeasyPrint's font subsets differ from one rendering to the next, and the
    # same report must give the same PDF.
    return weasyprint.HTML(string=document, base_url=str(TEMPLATES)).write_pdf(optimize_size=())
