"""The DNS filter's block-event housekeeping on a real state database: retention pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance import dnsfilter, events
from appliance.store import Store


def test_prune_deletes_only_events_past_retention(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with Store(tmp_path) as store:
        events.ensure(store)
        events.record(
            store,
            [
                events.BlockEvent(
                    now - timedelta(days=age), "10.10.0.2", "students", f"d{age}.example", "dns", "CATEGORY"
                )
                for age in (1, 89, 91, 400)
            ],
        )
        assert dnsfilter.prune(store, now - dnsfilter.EVENT_RETENTION) == 2
        kept = sorted(e.name for e in events.search(store, events.Query()))
    assert kept == ["d1.example", "d89.example"]
