"""One compliance run: probe every group, gather the report's other sections, store the report."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from appliance import __version__
from appliance.compliance import checks, context, reports
from appliance.compliance.expect import PolicyView
from appliance.compliance.testset import TestSet
from appliance.compliance.vantage import Site
from appliance.config import Config
from appliance.store import Store


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def probe_windows(store: Store, extra: list[tuple[str, str, list[str]]]) -> list[tuple[str, str, list[str]]]:
    """When and from where every kept run probed, plus extra (the run being made)."""
    windows = [
        (r.document["started"], r.document["finished"], r.document["probe_addresses"])
        for r in reports.listing(store)
        if r.document["probe_addresses"]
    ]
    return windows + [w for w in extra if w[2]]


def run(
    store: Store, config: Config, site: Site, testset: TestSet, groups: list[str], actor: str, trigger: str
) -> reports.Stored:
    started = _now()
    view = PolicyView(store, datetime.now(UTC))
    try:
        results = checks.run(site, testset, view, [config.group(g) for g in groups])
    finally:
        view.close()
    finished = _now()
    addresses = checks.addresses_of(site)
    live = view.generation
    document = {
        "format": reports.FORMAT,
        "school": config.appliance.name,
        "appliance": {"hostname": socket.gethostname(), "probed_from": site.description},
        "firmware": __version__,
        "policy": {
            "generation": live.id if live else None,
            "fingerprint": live.manifest["fingerprint"] if live else None,
            "applied": live.manifest["created"] if live else None,
        },
        "started": started,
        "finished": finished,
        "timezone": store.zone().key,
        "trigger": trigger,
        "who": actor,
        "groups": groups,
        "probe_addresses": addresses,
        "testset": testset.source,
        "results": [r.to_dict() for r in results],
        "context": context.gather(
            store, datetime.now(UTC), probe_windows(store, [(started, finished, addresses)])
        ),
    }
    failures = sum(1 for r in results if r.status == checks.Status.FAIL)
    reason = f"filtering compliance tests ({trigger}): {failures} failures"
    return reports.save(store, document, actor, reason)
