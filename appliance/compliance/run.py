"""One compliance run: probe every group, gather the report's other sections, store the report."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from appliance import __version__, events
from appliance.compliance import checks, context, reports
from appliance.compliance.expect import PolicyView
from appliance.compliance.testset import TestSet
from appliance.compliance.vantage import Site
from appliance.config import Config
from appliance.store import Store

# The run under way, until its report is kept (a settings key): {"started": ..., "addresses": [...]}.
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
    ]
    running = store.setting(RUNNING, "")
    if running:
        under_way = json.loads(running)
        start = datetime.fromisoformat(under_way["started"])
        windows.append(events.Window(start, start + LONGEST_RUN, tuple(under_way["addresses"])))
    return [w for w in [*windows, *extra] if w.addresses]


@contextlib.contextmanager
def probing(store: Store, started: str, addresses: list[str]) -> Iterator[None]:
    """Marks a run under way from these addresses until its report is kept, so that the alerts raised
    meanwhile leave its attempts out."""
    marker = json.dumps({"started": started, "addresses": addresses})
    store.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (RUNNING, marker))
    try:
        yield
    finally:
        store.db.execute("DELETE FROM settings WHERE key = ?", (RUNNING,))


def run(
    store: Store, config: Config, site: Site, testset: TestSet, groups: list[str], actor: str, trigger: str
) -> reports.Stored:
    started = _now()
    addresses = checks.addresses_of(site)
    with probing(store, started, addresses):
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
