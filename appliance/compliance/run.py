"""One compliance run: probe every group, gather the report's other sections, store the report."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

from appliance import __version__, events
from appliance.compliance import checks, context, reports
from appliance.compliance.expect import PolicyView
from appliance.compliance.testset import TestSet
from appliance.compliance.vantage import Site
from appliance.config import Config
from appliance.store import Store

# The run under way, until its report is kept: {"started": ..., "addresses": [...]} (settings table).
RUNNING = "compliance.running"
# How long a run under way is taken to probe for at most (a run killed part-way never clears it).
LONGEST_RUN = timedelta(hours=2)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _window(started: str, finished: str, addresses: list[str]) -> events.Window:
    # The document keeps whole seconds: the run went on into finished's last second.
    end = datetime.fromisoformat(finished) + timedelta(seconds=1)
    return events.Window(datetime.fromisoformat(started), end, tuple(addresses))


def probe_windows(store: Store, extra: list[events.Window]) -> list[events.Window]:
    """When and from where every kept run probed, the run under way (if any), and extra."""
    windows = [
        _window(r.document["started"], r.document["finished"], r.document["probe_addresses"])
        for r in reports.listing(store)
        if r.document["probe_addresses"]
    ]
    running = store.setting(RUNNING, "")
    if running:
        under_way = json.loads(running)
        start = datetime.fromisoformat(under_way["started"])
        windows.append(events.Window(start, start + LONGEST_RUN, tuple(under_way["addresses"])))
    return windows + [w for w in extra if w.addresses]


def _set_running(store: Store, value: dict[str, object] | None) -> None:
    if value is None:
        store.db.execute("DELETE FROM settings WHERE key = ?", (RUNNING,))
    else:
        store.db.execute(
            "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (RUNNING, json.dumps(value))
        )


def run(
    store: Store, config: Config, site: Site, testset: TestSet, groups: list[str], actor: str, trigger: str
) -> reports.Stored:
    started = _now()
    addresses = checks.addresses_of(site)
    # Alerts raised before the report is kept learn of the probes from this.
    _set_running(store, {"started": started, "addresses": addresses})
    try:
        view = PolicyView(store, datetime.now(UTC))
        try:
            results = checks.run(site, testset, view, [config.group(g) for g in groups])
        finally:
            view.close()
        finished = _now()
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
                store, datetime.now(UTC), probe_windows(store, [_window(started, finished, addresses)])
            ),
        }
        failures = sum(1 for r in results if r.status == checks.Status.FAIL)
        reason = f"filtering compliance tests ({trigger}): {failures} failures"
        return reports.save(store, document, actor, reason)
    finally:
        _set_running(store, None)
