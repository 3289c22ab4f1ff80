"""`appliance compliance run` against the lab, through the real CLI, with real clients in each group's
namespace. The gateway here is the plain router (no filter): every required block must be reported
as FAIL, educational sites as PASS, and what cannot run as "not tested" with its reason. The
production attachment (a probe namespace spliced into a LAN interface with tc) is run against the
lab's gateway namespace and must leave nothing behind."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import resolver
from appliance.config import load
from appliance.lab import gateway, netns
from appliance.lab.topology import Lab

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

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
[probes]
students = ["10.10.0.250", "fd00:10::250"]
"""


def appliance(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "appliance.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    target = Lab(f"cl{os.getpid() % 100000}")
    try:
        up = appliance("lab", "--name", target.name, "up", "--gateway", "plain")
        assert up.returncode == 0, up.stdout + up.stderr
        yield target
    finally:
        appliance("lab", "--name", target.name, "down")


def results(state: Path) -> list[dict]:
    db = sqlite3.connect(state / "state.db")
    (doc,) = db.execute("SELECT document FROM compliance_reports ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(doc)["results"]


def test_unfiltered_gateway_is_reported_truthfully(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "compliance.toml").write_text(TESTSET)
    state = tmp_path / "state"
    run = appliance(
        "compliance", "run", "--lab", lab.name, "--groups", "students",
        "--testset", str(tmp_path / "compliance.toml"), "--state-dir", str(state), "--out", str(tmp_path),
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr  # findings
    found = results(state)
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


def test_probe_spliced_into_the_lan_gets_the_groups_path_and_leaves_nothing(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    text = gateway.appliance_config(lab).replace(
        str(lab.state_dir / "appliance"), str(tmp_path / "appliance")
    )
    config.write_text(text)
    # The appliance's own resolver (the reference view: what names really resolve to), which the
    # plain gateway does not run.
    parsed = load(config)
    resolver.write_conf(parsed)
    unbound = subprocess.Popen(netns.in_ns(lab.gateway_ns, resolver.argv(parsed)), stderr=subprocess.DEVNULL)
    (tmp_path / "compliance.toml").write_text(TESTSET)
    gw = lab.gateway_ns
    before = {
        what: netns.run(netns.in_ns(gw, argv))
        for what, argv in {
            "neigh": ["ip", "neigh", "show", "dev", "lan10"],
            "qdisc": ["tc", "qdisc", "show", "dev", "lan10"],
            "links": ["ip", "-o", "link", "show"],
        }.items()
    }
    state = tmp_path / "state"
    try:
        run = appliance(
            "compliance", "run", "--config", str(config), "--appliance-netns", gw, "--groups", "students",
            "--state-dir", str(state), "--cacert", str(lab.ca_cert),
        )  # fmt: skip
    finally:
        unbound.terminate()
        unbound.wait()
    assert run.returncode == 1, run.stdout + run.stderr
    found = results(state)
    # The plain gateway's resolver answers only its LAN subnets: these pass only if the probe's
    # traffic came in on lan10 from the students' subnet, as a pupil's does.
    educational = [r for r in found if r["area"] == "educational"]
    assert educational and all(r["status"] == "pass" for r in educational), educational
    assert [r for r in found if r["area"] == "iwf" and r["status"] == "pass"] == []
    assert not netns.exists("cmp-students")
    assert not (netns.NETNS_ETC / "cmp-students").exists()
    after = {
        "neigh": netns.run(netns.in_ns(gw, ["ip", "neigh", "show", "dev", "lan10"])),
        "qdisc": netns.run(netns.in_ns(gw, ["tc", "qdisc", "show", "dev", "lan10"])),
        "links": netns.run(netns.in_ns(gw, ["ip", "-o", "link", "show"])),
    }
    assert "10.10.0.250" not in after["neigh"] and "fd00:10::250" not in after["neigh"]
    assert after["qdisc"] == before["qdisc"] and after["links"] == before["links"]
