"""`appliance compliance run` against the lab's plain gateway (a router with no filter), through the
real CLI, with real clients in a group's namespace: every required block must be reported as FAIL,
educational sites as PASS, and what cannot run as "not tested" with its reason. So every kind of
check can fail: with nothing in the way, none of them may pass."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from labs import appliance
from test_compliance_lab import latest_results

from appliance.lab.topology import Lab

pytestmark = pytest.mark.netns

TESTSET = """
[categories]
iwf = ["iwf.testfiltering.com"]
gambling = ["www.bet365.com"]
self_harm = ["self-harm-forum.example.org"]
[sites]
swgfl = ["iwf.testfiltering.com"]
educational = ["www.bbc.co.uk"]
[required]
all = ["iwf"]
students = ["gambling", "self_harm"]
[circumvention]
resolvers = ["dns.google"]
doh_canary = "use-application-dns.net"
private_relay = ["mask.icloud.com"]
ech = ["crypto.cloudflare.com"]
[safe_search]
names = ["www.bing.com"]
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    target = Lab(f"cu{os.getpid() % 100000}")
    try:
        up = appliance("lab", "--name", target.name, "up", "--gateway", "plain")
        assert up.returncode == 0, up.stdout + up.stderr
        yield target
    finally:
        down = appliance("lab", "--name", target.name, "down")
        assert down.returncode == 0, down.stdout + down.stderr


def test_unfiltered_gateway_is_reported_truthfully(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "compliance.toml").write_text(TESTSET)
    state = tmp_path / "state"
    run = appliance(
        "compliance", "run", "--lab", lab.name, "--groups", "students",
        "--testset", str(tmp_path / "compliance.toml"), "--state-dir", str(state), "--out", str(tmp_path),
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr  # findings
    found = latest_results(state)
    by = lambda area, status: [r for r in found if r["area"] == area and r["status"] == status]  # noqa: E731
    # Nothing filters: every required category is reachable over DNS, HTTPS, HTTP/3 and HTTP.
    for area in ("iwf", "gambling", "self_harm"):
        assert by(area, "pass") == []
        assert {r["check"] for r in by(area, "fail")} >= {
            "DNS A",
            "DNS AAAA",
            "HTTPS over IPv4",
            "HTTP/3 over IPv6",
        }
    # And the circumvention routes are open: a client with the real address, DoT, DoH, the canary.
    failed = {r["check"].split(" (")[0].split(" to ")[0] for r in by("circumvention", "fail")}
    assert {"DNS over TLS", "DNS over HTTPS", "DoH canary", "iCloud Private Relay", "HTTP/3"} <= failed
    assert any("ECH" in r["check"] for r in by("circumvention", "fail"))
    # Educational sites are reachable: those checks pass, each having run.
    assert len(by("educational", "pass")) == 8 and by("educational", "fail") == []
    # What could not run says why and never claims a pass.
    for r in (r for r in found if r["status"] == "not tested"):
        assert r["why"] and r["observed"] == ""
    assert "under-blocked" in (tmp_path / "compliance-report-1.html").read_text()
    assert (tmp_path / "compliance-report-1.pdf").read_bytes().startswith(b"%PDF")
    listed = appliance("compliance", "list", "--state-dir", str(state))
    assert listed.returncode == 0 and "run by hand" in listed.stdout
