"""End to end in the lab: `appliance lab up` runs the appliance in the lab's gateway with the lab's
sample policy, and real clients in each group's namespace (dig, curl, openssl, the lab's aioquic
client, chromium, firefox-esr) talk to the lab's real servers through it, over IPv4 and IPv6.

What each group should get comes from the policy in force (`policy explain`, the same code as the
`lab check` policy column) and the group's DNS settings in the lab's appliance config, never from a
list in this file; a few standards hold whatever the policy says (the IWF and CTIRU lists block for
everyone, exams reach only their allowlist). One lab serves the whole module and `lab down` at the
end must leave nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import labs
import pytest
import realclients as rc
from labs import appliance

from appliance import config, dnsfilter, events
from appliance.dataplane import ruleset
from appliance.lab import check, netns, processes, sample
from appliance.lab.sites import Site, load_internet
from appliance.lab.topology import GROUP_VLANS, Lab
from appliance.store import Store

pytestmark = pytest.mark.netns

INTERNET = load_internet()
GROUPS = list(GROUP_VLANS)
FAMILIES = (4, 6)
RESOLVER = INTERNET.site(INTERNET.check_resolvers[0])
RESTART_LIMIT = 2.0  # seconds from the web filter's restart until service is back
REFUSED_FAST = 2.0  # seconds: a refusal is a reset or an ICMP error, never a timeout


def run(ns: str, *argv: str, timeout: float = 30, **kw: object) -> subprocess.CompletedProcess[str]:
    return rc.run(ns, list(argv), timeout=timeout, **kw)


@dataclass
class School:
    lab: Lab
    config: config.Config
    verdicts: dict[tuple[str, str], str]  # (group, name) -> "allow" or "block", from the policy in force
    reports: dict[str, check.Report]  # `lab check`'s probes, per group
    started: datetime

    def ns(self, group: str) -> str:
        return self.lab.client(group).netns

    def verdict(self, group: str, name: str) -> str:
        return self.verdicts[(group, name)]

    def block_answer(self, family: int) -> str:
        if self.config.dns.block_answer == "nxdomain":
            return "NXDOMAIN"
        return str(self.config.dns.block_ipv4 if family == 4 else self.config.dns.block_ipv6)

    def special(self, group: str, name: str) -> str | None:
        """What the group's DNS settings do with name: a safe-search target, "NXDOMAIN" (the DoH
        canary, Private Relay) or None."""
        g = self.config.group(group)
        for feature, names in dnsfilter.feature_names().items():
            if name not in names:
                continue
            if feature in dnsfilter.SAFE_TARGETS:
                return None if g.safesearch == "off" else dnsfilter.SAFE_TARGETS[feature][g.safesearch]
            on = g.block_doh_canary if feature == "doh_canary" else g.block_private_relay
            return "NXDOMAIN" if on else None
        return None

    def blocked_site(self, group: str) -> Site:
        """The first web site the policy blocks for the group by a list category."""
        return next(
            INTERNET.site(n)
            for n in INTERNET.check_web
            if self.verdict(group, n) == "block" and INTERNET.site(n).category
        )

    def allowed_site(self, group: str) -> Site:
        """The first checked web site the group may reach, unchanged by its DNS settings."""
        return next(
            INTERNET.site(n)
            for n in INTERNET.check_web
            if self.verdict(group, n) == "allow" and self.special(group, n) is None
        )

    def web_log(self) -> str:
        return processes.log_file(self.lab.state_dir, "web").read_text()

    def events(self, group: str, name: str) -> list[events.BlockEvent]:
        with Store(self.lab.appliance_state_dir) as store:
            return events.search(store, events.Query(name=name, group=group, start=self.started))


LAB_PREFIX = "e2e"  # the conftest's appliance_lab fixture names this module's lab from it


@pytest.fixture(scope="module")
def school(appliance_lab: Lab) -> School:
    lab = appliance_lab
    started = datetime.now(UTC)
    names = INTERNET.names("web")
    words = check.policy_verdicts(lab, GROUPS, names)
    reports = {r.client.group: r for r in check.run(lab, INTERNET, GROUPS)}
    return School(
        lab,
        config.load(lab.appliance_config),
        {key: text.split()[0] for key, text in words.items()},
        reports,
        started,
    )


def parallel(*calls: Callable[[], object]) -> list[object]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


# --- the sample policy ---------------------------------------------------------------------------


def test_sample_policy_came_through_the_lists_and_policy_code(school: School) -> None:
    state = str(school.lab.appliance_state_dir)
    stats = appliance("lists", "stats", "--state-dir", state)
    assert stats.returncode == 0, stats.stderr
    for category, names in sample.categories(INTERNET).items():
        row = re.search(rf"^lab-{category.replace('_', '-')} +{category} +(\d+) ", stats.stdout, re.M)
        assert row and int(row.group(1)) == len(names), (category, stats.stdout)
    status = appliance("policy", "status", "--state-dir", state)
    assert status.returncode == 0 and "WARNING" not in status.stdout, status.stdout
    iwf = len(sample.categories(INTERNET)["iwf"])
    assert f"lab-iwf: {iwf} entries enforced at DNS, TLS, QUIC and HTTP" in status.stdout
    policy = sample.load(INTERNET)
    listed = appliance("policy", "rules", "--state-dir", state).stdout
    for r in policy.rules:
        for name in r.names:
            assert f"{r.action} {name} for {r.group}" in listed, listed
    assert appliance("audit", "verify", "--state-dir", state).returncode == 0


def test_the_policy_keeps_the_standards(school: School) -> None:
    """Whatever else the sample policy says: the IWF and CTIRU lists and pornography (trust-locked)
    block for every group, and exams reach only what the school allows them."""
    exams_allowed = {n for r in sample.load(INTERNET).rules if r.group == "exams" for n in r.names}
    assert exams_allowed
    for name in INTERNET.names("web"):
        category = INTERNET.site(name).category
        for group in GROUPS:
            if category in ("iwf", "ctiru", "pornography"):
                assert school.verdict(group, name) == "block", (group, name)
        assert school.verdict("exams", name) == ("allow" if name in exams_allowed else "block"), name


# --- what each group reaches ---------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_every_checked_name_is_as_the_policy_and_dns_settings_say(school: School, group: str) -> None:
    """DNS (A and AAAA), HTTPS, HTTP/3 and HTTP over IPv4 and IPv6, for every name `lab check` probes."""
    report = school.reports[group]
    for name in INTERNET.check_web:
        special = school.special(group, name)
        for family in FAMILIES:
            got = {p: report.get(name, p, family) for p in ("dns", *check.WEB_PROBES)}
            where = (group, name, family, got)
            if special == "NXDOMAIN":  # negative even where the policy blocks the name
                assert got["dns"].detail == "NXDOMAIN", where
                assert {got[p].detail for p in check.WEB_PROBES} == {"no address"}, where
            elif school.verdict(group, name) == "block":
                assert got["dns"].detail == school.block_answer(family), where
                assert got["https"].detail in ("refused", "reset", "TLS failed"), where
                assert got["h3"].detail == "refused", where
                assert got["http"].detail == "block page", where
            elif special is not None:
                target = INTERNET.site(special).address(family)
                assert got["dns"].detail == f"{target} via {special}", where
                assert {got[p].detail for p in check.WEB_PROBES} == {f"served by {special}"}, where
            else:
                assert all(o.ok for o in got.values()), where


@pytest.mark.parametrize("group", GROUPS)
def test_a_blocked_site_is_refused_however_the_client_goes_about_it(school: School, group: str) -> None:
    """A foreign resolver asked directly, the site's own address with the right SNI (curl, openssl),
    plain HTTP to its address, and QUIC to its address: each refused, at once, over IPv4 and IPv6."""
    ns, ca = school.ns(group), str(school.lab.ca_cert)
    site = school.blocked_site(group)
    name = site.names[0]
    for family in FAMILIES:
        addr = site.address(family)
        # DNS sent to a public resolver's address is the gateway's to answer.
        asked = check.dig(ns, name, family, "", [f"@{RESOLVER.address(family)}"], family)
        assert asked.detail == school.block_answer(family), asked
        assert check.identity(ns, RESOLVER.address(family), family).detail != "lab public resolver"
        start = time.monotonic()
        https = rc.curl(ns, f"https://{name}/", name, addr, 443, "--cacert", ca, timeout=5)
        plain = rc.curl(ns, f"http://{name}/", name, addr, 80, timeout=5)
        hello = rc.openssl_hello(ns, name, addr)
        took = time.monotonic() - start
        h3 = run(ns, sys.executable, "-m", "appliance.lab.h3client", "--cacert", ca, "--timeout", "3",
                 "--address", addr, name)  # fmt: skip
        assert https.returncode in (35, 56), https.stderr  # reset during the handshake, not a timeout
        # Plain HTTP is refused, or answered by the appliance with a pointer to its block page.
        assert "lab site" not in plain.stdout, plain.stdout
        assert plain.returncode in (52, 56) or school.block_answer(family) in plain.stdout, plain
        assert "BEGIN CERTIFICATE" not in hello.stdout and hello.returncode != 0, hello.stdout
        assert took < 3 * REFUSED_FAST, "a refusal that took a timeout"
        [result] = [json.loads(line) for line in h3.stdout.splitlines()]
        assert result["status"] is None and result["error"], result
    assert f"host={name} " not in school.web_log()
    layers = {e.layer for e in school.events(group, name)}
    assert {"dns", "tls", "http", "quic"} <= layers, layers


def _hellos(capture: Path) -> list[dict[str, str]]:
    """Each TLS ClientHello in a capture: its SNI, how many TCP segments carried it, its key shares."""
    fields = [
        "tls.handshake.extensions_server_name",
        "tcp.segment.count",
        "tls.handshake.extensions_key_share_group",
    ]
    argv = [
        "tshark",
        "-r",
        str(capture),
        "-Y",
        "tls.handshake.type == 1",
        "-T",
        "fields",
        "-E",
        "separator=|",
    ]
    out = subprocess.run(
        [*argv, *(a for f in fields for a in ("-e", f))], capture_output=True, text=True, check=True
    )
    return [
        dict(zip(("sni", "segments", "groups"), line.split("|"), strict=True))
        for line in out.stdout.splitlines()
    ]


class Capture:
    """tcpdump on the gateway's side of a group's LAN link, for TCP 443."""

    def __init__(self, school: School, group: str, path: Path) -> None:
        self.path = path
        gw_if = school.lab.client(group).gateway_if
        # --immediate-mode: each packet is handed over as it comes, not a buffer-full at a time.
        argv = ["tcpdump", "-i", gw_if, "--immediate-mode", "-U", "-s", "0", "-w", str(path), "tcp port 443"]
        self.proc = subprocess.Popen(netns.in_ns(school.lab.gateway_ns, argv), stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        self.proc.stderr.readline()  # "listening on ...": it is capturing

    def stop(self) -> list[dict[str, str]]:
        time.sleep(0.5)  # what is in flight reaches the file
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        return _hellos(self.path)


BROWSERS = {g: ("chromium", "firefox-esr")[i % 2] for i, g in enumerate(GROUPS)}
POST_QUANTUM = "4588"  # X25519MLKEM768 (0x11EC), STANDARDS.md section 6


def browse(school: School, group: str, browser: str, url: str, addr: str, done: Callable[[], bool]) -> None:
    if browser == "chromium":
        rc.chromium(school.ns(group), url, addr)
    else:
        # Stopped as soon as done() says so; the long timeout is for a slow start on a busy machine.
        rc.firefox(school.ns(group), url, addr, until=done, timeout=40)


def served(school: School, scheme: str, address: str, name: str) -> int:
    """How many times the lab's web server has served name's page at address over scheme."""
    line = rf"^{scheme} \S+ -> {re.escape(address)} host={re.escape(name)} status=200$"
    return len(re.findall(line, school.web_log(), re.M))


@pytest.mark.parametrize("browser", ["chromium", "firefox-esr"])
def test_browsers_load_an_allowed_site_through_the_gateway(
    school: School, browser: str, tmp_path: Path
) -> None:
    """The control for the refusals below: through the same gateway, each browser loads a page its
    group may reach. chromium over HTTPS, its ClientHello post-quantum and in several segments;
    firefox-esr, which trusts no lab CA (its own store, no way to add one here), over plain HTTP."""
    group = next(g for g, b in BROWSERS.items() if b == browser and g != "exams")
    site = school.allowed_site(group)
    name, scheme = site.names[0], "https" if browser == "chromium" else "http"
    before = served(school, scheme, site.ipv6, name)
    capture = Capture(school, group, tmp_path / "lan.pcap")
    try:
        url = f"{scheme}://{name}/"
        browse(
            school, group, browser, url, site.ipv6, lambda: served(school, scheme, site.ipv6, name) > before
        )
    finally:
        hellos = capture.stop()
    assert served(school, scheme, site.ipv6, name) > before, hellos
    if scheme == "https":
        mine = [h for h in hellos if h["sni"] == name]
        assert mine, hellos
        for hello in mine:
            assert int(hello["segments"] or 1) >= 2 and POST_QUANTUM in hello["groups"].split(","), hello


@pytest.mark.parametrize("group", GROUPS)
def test_a_browsers_split_post_quantum_hello_for_a_blocked_site_is_refused(
    school: School, group: str, tmp_path: Path
) -> None:
    """chromium or firefox-esr, told the blocked site's real address (so DNS is out of the way), sends
    its real ClientHello: the web filter finds the name across the segments and refuses the flow."""
    browser = BROWSERS[group]
    site = school.blocked_site(group)
    name = site.names[0]
    seen = lambda: any(e.layer == "tls" for e in school.events(group, name) if e.ts >= began)  # noqa: E731
    began = datetime.now(UTC)
    capture = Capture(school, group, tmp_path / "lan.pcap")
    try:
        browse(school, group, browser, f"https://{name}/", site.ipv4, seen)
    finally:
        hellos = capture.stop()
    mine = [h for h in hellos if h["sni"] == name]
    assert mine, hellos
    assert all(int(h["segments"] or 1) >= 2 and POST_QUANTUM in h["groups"].split(",") for h in mine), mine
    deadline = time.monotonic() + 3  # the web filter writes its events about once a second
    while not seen():
        assert time.monotonic() < deadline, "no TLS block event"
        time.sleep(0.2)
    assert f"host={name} " not in school.web_log()


# --- circumvention -------------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_dot_and_doh_endpoints_are_refused_by_name_and_by_address(school: School, group: str) -> None:
    ns, ca = school.ns(group), str(school.lab.ca_cert)
    want = INTERNET.site(INTERNET.resolver_query)
    for family in FAMILIES:
        addr = RESOLVER.address(family)
        for server in (RESOLVER.names[0], addr):
            for transport in ("+tls", "+https", "+https-get"):
                start = time.monotonic()
                outcome = check.dig(
                    ns, want.names[0], 4, want.ipv4, [f"@{server}", transport, f"+tls-ca={ca}"], family
                )
                assert outcome.detail == "no reply", (server, transport, family, outcome)
                assert time.monotonic() - start < REFUSED_FAST, (server, transport, family)


def test_doh_endpoint_addresses_are_learnt_from_the_list_and_from_blocked_queries(school: School) -> None:
    """A client that knows a DoH server's address never asks DNS for it. Staff fail open, so an
    address without a name passes their web filter: only the doh_ipv4/doh_ipv6 sets, which the DNS
    filter fills from the DoH list's names, stop it."""
    staff, ca = school.ns("staff"), str(school.lab.ca_cert)
    gw = school.lab.gateway_ns
    want = INTERNET.site(INTERNET.resolver_query)

    def doh(family: int) -> check.Outcome:
        server = RESOLVER.address(family)
        return check.dig(
            staff, want.names[0], 4, want.ipv4, [f"@{server}", "+https", f"+tls-ca={ca}"], family
        )

    def in_set(family: int) -> bool:
        set_name = "doh_ipv4" if family == 4 else "doh_ipv6"
        out = run(gw, "nft", "-j", "list", "set", ruleset.FAMILY, ruleset.TABLE, set_name).stdout
        [nft_set] = [o["set"] for o in json.loads(out)["nftables"] if "set" in o]
        return any(e["elem"]["val"] == RESOLVER.address(family) for e in nft_set.get("elem", []))

    # From the list, at start: the endpoint's addresses are refused; any other address is not.
    other = school.allowed_site("staff")
    for family in FAMILIES:
        assert in_set(family), family
        assert doh(family).detail == "no reply"
        addr = other.address(family)
        host = rc.host_port(addr, 443)[: -len(":443")]
        page = rc.curl(staff, f"https://{host}/", "x", addr, 443, "-k")
        assert page.stdout == f"no lab site {host}\n", page.stderr
    # Without the set, DoH to the address works: the set is what refuses it.
    for family in FAMILIES:
        set_name = "doh_ipv4" if family == 4 else "doh_ipv6"
        element = f"{{ {RESOLVER.address(family)} }}"
        run(gw, "nft", "delete", "element", ruleset.FAMILY, ruleset.TABLE, set_name, element)
        assert not in_set(family)
        assert doh(family).ok, doh(family)
    # A query for the endpoint's name is blocked in the DoH category: the filter looks the name up at
    # once and its addresses are refused again.
    for family in FAMILIES:
        asked = check.dig(staff, RESOLVER.names[0], family, "")
        assert asked.detail == school.block_answer(family), asked
    deadline = time.monotonic() + 5
    while not all(in_set(f) for f in FAMILIES):
        assert time.monotonic() < deadline, processes.log_tail(school.lab.state_dir, "gateway", 30)
        time.sleep(0.2)
    for family in FAMILIES:
        assert doh(family).detail == "no reply"


@pytest.mark.parametrize("group", GROUPS)
def test_firefox_canary_and_private_relay_are_negative(school: School, group: str) -> None:
    ns = school.ns(group)
    names = [n for feature in ("doh_canary", "private_relay") for n in dnsfilter.feature_names()[feature]]
    for name in names:
        for family in FAMILIES:
            for transport in ([], ["+tcp"]):
                got = check.dig(ns, name, family, "", transport).detail
                # Negative whether or not the policy blocks the name: an address of any kind, the
                # block page's included, would keep the browser's own resolver on.
                assert school.special(group, name) == "NXDOMAIN" and got == "NXDOMAIN", (name, got)


@pytest.mark.parametrize("group", GROUPS)
def test_safe_search_rewrites_where_the_group_has_them(school: School, group: str) -> None:
    ns = school.ns(group)
    safe = set(dnsfilter.feature_names()["google"] + dnsfilter.feature_names()["youtube"])
    safe |= {"www.bing.com", "duckduckgo.com"}
    names = [n for n in INTERNET.names("web") if n in safe]
    assert len(names) >= 6
    for name in names:
        target = school.special(group, name)
        for family in FAMILIES:
            got = check.dig(ns, name, family, "").detail
            if school.verdict(group, name) == "block":
                assert got == school.block_answer(family), (name, family)
            elif target is None:
                assert got == INTERNET.site(name).address(family), (name, family, got)
            else:
                assert got == f"{INTERNET.site(target).address(family)} via {target}", (name, family, got)


@pytest.mark.parametrize("group", GROUPS)
def test_ech_is_stripped_from_https_records(school: School, group: str) -> None:
    sites = [s for s in INTERNET.sites if s.ech_public_name]
    assert sites
    for site in sites:
        name = site.names[0]
        # At its source the record carries ECH keys.
        source = run(school.lab.internet_ns, "dig", "+short", f"@{INTERNET.nameserver.ipv4}", name, "HTTPS")
        assert "ech=" in source.stdout, source.stdout
        for family in FAMILIES:
            gateway = school.lab.client(group).gateway_address(family)
            answer = run(school.ns(group), "dig", "+time=2", "+tries=1", f"@{gateway}", name, "HTTPS")
            records = re.findall(rf"^{re.escape(name)}\.\s+\d+\s+IN\s+HTTPS\s+(.*)$", answer.stdout, re.M)
            assert "status: NOERROR" in answer.stdout, answer.stdout
            if school.verdict(group, name) == "block":
                assert records == [], answer.stdout  # NODATA: the block answer for other types
            elif school.config.group(group).strip_ech:
                assert len(records) == 1 and "alpn=" in records[0] and "ech=" not in records[0], records
            else:
                assert len(records) == 1 and "ech=" in records[0], records


def test_exams_reach_nothing_but_their_allowlist(school: School) -> None:
    """Every lab web name by DNS and by its own address with the right SNI, over IPv4 and IPv6; and an
    allowlisted server's address without a name, or another port on it, go nowhere either."""
    ns, ca = school.ns("exams"), str(school.lab.ca_cert)
    allowed = {n for r in sample.load(INTERNET).rules if r.group == "exams" for n in r.names}
    names = INTERNET.names("web")
    for family in FAMILIES:
        argv = ["curl", "-sS", "--parallel", "--max-time", "5", "--cacert", ca, "-w", "%{url} %{exitcode}\\n"]
        for name in names:
            addr = INTERNET.site(name).address(family)
            argv += ["--resolve", f"{name}:443:{addr if family == 4 else f'[{addr}]'}", "-o", "/dev/null"]
            argv.append(f"https://{name}/")
        result = run(ns, *argv, timeout=30)
        exits = dict(line.rsplit(" ", 1) for line in result.stdout.splitlines())
        for name in names:
            dns = check.dig(ns, name, family, INTERNET.site(name).address(family))
            if name in allowed:
                assert dns.ok and exits[f"https://{name}/"] == "0", (name, family, dns)
            else:
                # The DoH canary and Private Relay names are negative even though exams block them.
                negative = school.special("exams", name) == "NXDOMAIN"
                expected = "NXDOMAIN" if negative else school.block_answer(family)
                assert dns.detail == expected, (name, family, dns)
                assert exits[f"https://{name}/"] != "0", (name, family)
    site = INTERNET.site(sorted(allowed)[0])
    for family in FAMILIES:
        host = rc.host_port(site.address(family), 443)[: -len(":443")]
        no_name = rc.curl(ns, f"https://{host}/", "x", site.address(family), 443, "-k", timeout=3)
        assert no_name.returncode != 0, no_name.stdout
        # Another port on the same server: staff (a filtered group) reach it and are refused by the
        # server itself at once; exams get nothing back, the gateway drops it.
        other_port = ["curl", "-sS", "-m", "2", f"-{family}", f"http://{host}:8080/"]
        assert run(school.ns("staff"), *other_port).returncode == 7  # connection refused
        assert run(ns, *other_port).returncode == 28  # timeout


# --- the web UI (what scripts/lab.sh serves) ------------------------------------------------------


def test_web_ui_serves_this_machine_and_the_lab_clients(school: School) -> None:
    """`appliance lab webui`: https://127.0.0.1:PORT here, the gateway's LAN addresses for the lab's
    clients, where the block page's unblock link points. Without a terminal it makes no account and
    prints the command that does; `lab down` (the fixture's) stops it."""
    lab = school.lab
    port = 20000 + os.getpid() % 10000
    first = appliance("lab", "--name", lab.name, "webui", "--port", str(port))
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"appliance webui create-admin --config {lab.appliance_config}" in first.stdout
    here = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{port}/login"],
                          capture_output=True, text=True, timeout=20)  # fmt: skip
    assert here.stdout == "200", here.stderr
    for group in GROUPS:
        client = lab.client(group)
        for family in FAMILIES:
            host = rc.host_port(client.gateway_address(family), 443)[: -len(":443")]
            page = run(
                client.netns, "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://{host}/login"
            )
            assert page.stdout == "200", (group, family, page.stderr)
    # The block page links to it, at an address every client can reach.
    site = school.blocked_site("students")
    link = f'href="https://{lab.client(GROUPS[0]).gateway_address(4)}/requests/new?site={site.names[0]}'
    deadline = time.monotonic() + 5  # the block page reads the web UI's address about once a second
    while link not in (
        block_page := run(school.ns("students"), "curl", "-sS", f"http://{site.names[0]}/").stdout
    ):
        assert time.monotonic() < deadline, block_page
        time.sleep(0.2)
    # With an administrator it says no more about one, and a second start finds the one running.
    account = ["--username", "itadmin", "--email", "it@lab.example", "--password-stdin"]
    password = "correct horse battery staple\n"
    made = appliance("webui", "create-admin", "--config", str(lab.appliance_config), *account, input=password)
    assert made.returncode == 0, made.stderr
    again = appliance("lab", "--name", lab.name, "webui", "--port", str(port))
    assert again.returncode == 0 and "create-admin" not in again.stdout, again.stdout
    assert first.stdout.split(")")[0] == again.stdout.split(")")[0]  # "web UI (pid N"
    status = appliance("lab", "--name", lab.name, "status")
    assert re.search(r"^  webui +pid \d+ +running +in host ", status.stdout, re.M), status.stdout


# --- faults --------------------------------------------------------------------------------------


def _webfilter_pids(school: School) -> list[int]:
    return [
        pid
        for pid in netns.pids(school.lab.gateway_ns)
        if re.search(r"appliance\.cli webfilter ", labs.cmdline(Path(f"/proc/{pid}")))
    ]


def _queues_bound(school: School) -> bool:
    out = run(school.lab.gateway_ns, "cat", "/proc/net/netfilter/nfnetlink_queue").stdout
    return bool(out.strip())


def test_kill_9_of_the_web_filter_fails_closed_and_service_returns_within_2s(school: School) -> None:
    closed = [g.name for g in school.config.groups if g.fail == "closed"]
    opened = [g.name for g in school.config.groups if g.fail == "open"]
    assert closed and opened

    def fetch(group: str, timeout: float, scheme: str = "https") -> subprocess.CompletedProcess[str]:
        site = school.allowed_site(group)
        url = f"{scheme}://{site.names[0]}/"
        return run(
            school.ns(group), "curl", "-sS", "--cacert", str(school.lab.ca_cert), "-m", str(timeout), url
        )

    [pid] = _webfilter_pids(school)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while _queues_bound(school):
        assert time.monotonic() < deadline, "the killed web filter's queues stayed bound"
        time.sleep(0.02)
    # While it is down (`appliance run` restarts it a second or more later): no web flow starts for a
    # fail-closed group, over HTTPS or HTTP; a fail-open group's pass unfiltered.
    probes = [(g, scheme) for g in closed + opened for scheme in ("https", "http")]
    results = parallel(*(lambda g=g, s=s: (g, fetch(g, 0.6, s)) for g, s in probes))
    for group, result in results:  # type: ignore[misc]
        if group in closed:
            assert result.returncode == 28, (group, result.stdout, result.stderr)
        else:
            assert result.returncode == 0 and result.stdout.startswith("lab site "), (group, result.stderr)
    while not (pids := _webfilter_pids(school)):
        assert time.monotonic() < deadline + 30, "the web filter was not restarted"
        time.sleep(0.01)
    restarted = time.monotonic()
    assert pids != [pid]
    for group in closed:
        while fetch(group, 0.5).returncode != 0:
            assert time.monotonic() - restarted < RESTART_LIMIT, f"{group}: no service 2 s after the restart"
    assert time.monotonic() - restarted < RESTART_LIMIT
    # Filtering again, not just passing: a fail-open group's blocked site is refused once more.
    blocked = school.blocked_site("staff")
    again = rc.curl(
        school.ns("staff"), f"https://{blocked.names[0]}/", blocked.names[0], blocked.ipv4, 443, "-k"
    )
    assert again.returncode in (35, 56), again.stderr
