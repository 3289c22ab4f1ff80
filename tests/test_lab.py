"""`appliance lab`: the offline school in network namespaces, driven through the real CLI and probed
with real clients (dig, curl, the lab's aioquic client) from inside each group's namespace.

The gateway runs as a plain router here (--gateway plain): with no filter in the way every lab server
must be reachable from every group, over IPv4 and IPv6, by name through the gateway's resolver. The lab
with the appliance and its sample policy is tests/test_e2e_lab.py's; the sample policy's own code is
tested here, on a state directory of its own."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.lab import check, netns, processes, sample
from appliance.lab.sites import INTERNET_FILE, load_internet
from appliance.lab.topology import WAN_GATEWAY_IPV4, Lab

pytestmark = pytest.mark.netns

INTERNET = load_internet()
GROUPS = [c.group for c in Lab().clients]


def appliance(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "appliance.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def lab_name(role: str) -> str:
    # Unique per test run, so a developer's own lab (or another run) is never touched.
    return f"{role}{os.getpid() % 100000}"


def in_ns(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        netns.in_ns(ns, list(argv)), capture_output=True, text=True, timeout=30, check=False
    )


def nothing_left(lab: Lab) -> list[str]:
    left = [ns for ns in lab.namespaces if netns.exists(ns)]
    left += [str(p) for p in (lab.state_dir, *(netns.NETNS_ETC / ns for ns in lab.namespaces)) if p.exists()]
    return left


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    target = Lab(lab_name("lt"))
    try:
        up = appliance("lab", "--name", target.name, "up", "--gateway", "plain")
        assert up.returncode == 0, up.stdout + up.stderr
        yield target
    finally:
        appliance("lab", "--name", target.name, "down")
        assert nothing_left(target) == []


@pytest.fixture(scope="module")
def reports(lab: Lab) -> dict[str, check.Report]:
    return {r.client.group: r for r in check.run(lab, INTERNET, [c.group for c in lab.clients])}


def test_status_shows_every_namespace_and_server_running(lab: Lab) -> None:
    result = appliance("lab", "--name", lab.name, "status")
    assert result.returncode == 0, result.stdout
    assert "gateway runs a plain router (no filtering)" in result.stdout
    assert f"lab CA certificate: {lab.ca_cert}" in result.stdout
    for ns in lab.namespaces:
        assert re.search(rf"^  {ns} ", result.stdout, re.M), ns
    for server in ("gateway", "nameserver", "resolver", "web"):
        assert re.search(rf"^  {server} +pid \d+ +running", result.stdout, re.M), server
    for client in lab.clients:
        assert f"{client.address(4)}/24 {client.address(6)}/64" in result.stdout


def test_every_group_resolves_every_lab_name_through_the_gateway(lab: Lab) -> None:
    for client in lab.clients:
        resolv = (netns.NETNS_ETC / client.netns / "resolv.conf").read_text()
        servers = [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")]
        assert servers == [client.gateway_address(4), client.gateway_address(6)]
    # Every name the lab serves (safe-search targets, the DoH canary, DoH endpoints...), from one group.
    students = lab.client("students")
    for site in INTERNET.sites:
        for name in site.names:
            for family, rtype in ((4, "A"), (6, "AAAA")):
                outcome = check.dig(students.netns, name, family, site.address(family))
                assert outcome.ok, (name, rtype, outcome)


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_reaches_every_sample_site_over_https_h3_and_http(
    reports: dict[str, check.Report], group: str
) -> None:
    report = reports[group]
    for name in INTERNET.check_web:
        for probe in ("dns", *check.WEB_PROBES):
            for family in check.FAMILIES:
                assert report.get(name, probe, family).ok, (
                    group,
                    name,
                    probe,
                    family,
                    report.get(name, probe, family),
                )


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_reaches_the_public_resolver_over_do53_dot_and_doh(
    reports: dict[str, check.Report], group: str
) -> None:
    report = reports[group]
    for name in INTERNET.check_resolvers:
        for probe in check.RESOLVER_PROBES:
            for family in check.FAMILIES:
                assert report.get(name, probe, family).ok, (
                    group,
                    name,
                    probe,
                    family,
                    report.get(name, probe, family),
                )
        # Nothing redirects DNS yet: the foreign resolver itself answers queries sent to it.
        for family in check.FAMILIES:
            assert report.get(name, "id", family).detail == "lab public resolver"


def test_check_command_prints_a_table_per_group(lab: Lab) -> None:
    result = appliance("lab", "--name", lab.name, "check", "--group", "exams")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"exams (namespace {lab.client('exams').netns}")
    for name in INTERNET.check_web:
        site = INTERNET.site(name)
        row = re.search(rf"^  {re.escape(name)} .*$", result.stdout, re.M)
        assert row, name
        # No policy column: a plain router has none.
        assert row.group().split()[2:] == ["-", site.ipv4, site.ipv6, "ok", "ok", "ok"], row.group()


def test_pages_name_the_site_and_the_client_seen_by_the_internet(lab: Lab) -> None:
    staff = lab.client("staff")
    v4 = in_ns(staff.netns, "curl", "-4", "-sS", "--cacert", str(lab.ca_cert), "https://www.google.com/")
    assert v4.stdout.splitlines() == [
        "lab site www.google.com",
        "protocol https",
        "sni www.google.com",
        f"server {INTERNET.site('www.google.com').ipv4}",
        f"client {WAN_GATEWAY_IPV4}",  # IPv4 leaves the school masqueraded
    ], v4.stderr
    v6 = in_ns(staff.netns, "curl", "-6", "-sS", "http://www.google.com/")
    assert f"client {staff.address(6)}" in v6.stdout.splitlines(), v6.stderr  # IPv6 is routed


def test_tls_is_real_certificates_from_the_lab_ca(lab: Lab) -> None:
    ns = lab.client("students").netns
    site = INTERNET.site("www.bbc.co.uk")
    without_ca = in_ns(ns, "curl", "-sS", "https://www.bbc.co.uk/")
    assert without_ca.returncode == 60, without_ca.stderr  # the host's trust store knows no lab CA
    wrong_name = in_ns(
        ns,
        "curl",
        "-sS",
        "--cacert",
        str(lab.ca_cert),
        "--resolve",
        f"not-in-the-lab.example:443:{site.ipv4}",
        "https://not-in-the-lab.example/",
    )
    assert wrong_name.returncode == 60, wrong_name.stderr
    unknown_host = in_ns(ns, "curl", "-sS", "-H", "Host: not-in-the-lab.example", f"http://{site.ipv4}/")
    assert unknown_host.stdout == "no lab site not-in-the-lab.example\n"


def test_https_records_carry_an_ech_config(lab: Lab) -> None:
    ns = lab.client("students").netns
    for site in INTERNET.sites:
        if site.ech_public_name is None:
            continue
        answer = in_ns(ns, "dig", "+short", site.names[0], "HTTPS").stdout
        match = re.search(r"\bech=(\S+)", answer)
        assert match, answer
        assert ech_public_names(base64.b64decode(match.group(1))) == [site.ech_public_name]
    plain = in_ns(ns, "dig", "+short", "www.bbc.co.uk", "HTTPS").stdout.strip()
    assert plain == '1 . alpn="h3,h2"'


def ech_public_names(data: bytes) -> list[str]:
    """The public names in an ECHConfigList, parsed from the wire format (draft-ietf-tls-esni-18)."""
    (total,) = struct.unpack_from("!H", data)
    assert total == len(data) - 2
    names, pos = [], 2
    while pos < len(data):
        version, length = struct.unpack_from("!HH", data, pos)
        assert version == 0xFE0D
        body = data[pos + 4 : pos + 4 + length]
        key_len = struct.unpack_from("!H", body, 3)[0]
        suites_at = 5 + key_len
        suites_len = struct.unpack_from("!H", body, suites_at)[0]
        name_at = suites_at + 2 + suites_len + 1
        names.append(body[name_at + 1 : name_at + 1 + body[name_at]].decode())
        assert struct.unpack_from("!H", body, name_at + 1 + body[name_at])[0] == 0  # no extensions
        pos += 4 + length
    return names


def test_the_lab_root_is_authoritative_and_offline(lab: Lab) -> None:
    ns_host = INTERNET.nameserver
    root = in_ns(lab.internet_ns, "dig", "+norec", f"@{ns_host.ipv4}", ".", "NS")
    assert re.search(r"flags: qr aa;", root.stdout), root.stdout
    assert re.search(rf"^\.\s+\d+\s+IN\s+NS\s+{re.escape(ns_host.name)}\.$", root.stdout, re.M)
    hints = lab.root_hints.read_text()
    assert ns_host.ipv4 in hints and ns_host.ipv6 in hints
    # A name the lab does not serve does not exist: nothing reaches a real root.
    missing = in_ns(lab.client("guests").netns, "dig", "+time=2", "+tries=1", "no-such-site.example.com")
    assert "status: NXDOMAIN" in missing.stdout


def test_up_again_is_refused_and_leaves_the_lab_running(lab: Lab) -> None:
    again = appliance("lab", "--name", lab.name, "up", "--gateway", "plain")
    assert again.returncode == 1
    assert f"lab {lab.name!r} is already up" in again.stderr
    assert f"appliance lab down --name {lab.name}" in again.stderr
    assert appliance("lab", "--name", lab.name, "status").returncode == 0


def test_down_removes_everything_and_is_safe_to_repeat() -> None:
    target = Lab(lab_name("ld"))
    try:
        up = appliance("lab", "--name", target.name, "up", "--gateway", "plain")
        assert up.returncode == 0, up.stdout + up.stderr
        pids = [pid for ns in target.namespaces for pid in netns.pids(ns)]
        assert len(pids) >= 4  # gateway resolver, nameserver, public resolver, web server
        down = appliance("lab", "--name", target.name, "down")
        assert down.returncode == 0
        assert nothing_left(target) == []
        assert [p for p in pids if processes.alive(p)] == []
        assert not any(ns in netns.run(["ip", "netns", "list"]) for ns in target.namespaces)
        assert appliance("lab", "--name", target.name, "status").returncode == 1
        again = appliance("lab", "--name", target.name, "down")
        assert again.returncode == 0 and "was not up" in again.stdout
    finally:
        appliance("lab", "--name", target.name, "down")


def test_a_partly_built_lab_is_reported_and_cleared_by_down() -> None:
    target = Lab(lab_name("lp"))
    try:
        netns.add(target.client("exams").netns)  # as if an earlier `up` had died half way
        up = appliance("lab", "--name", target.name, "up", "--gateway", "plain")
        assert up.returncode == 1 and target.client("exams").netns in up.stderr
        assert appliance("lab", "--name", target.name, "down").returncode == 0
        assert nothing_left(target) == []
    finally:
        appliance("lab", "--name", target.name, "down")


def test_lab_names_and_data_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lab name"):
        Lab("Bad_Name")
    text = INTERNET_FILE.read_text()
    duplicate = tmp_path / "internet.toml"
    duplicate.write_text(text.replace('names = ["www.nhs.uk"]', 'names = ["www.bbc.co.uk"]'))
    with pytest.raises(ValueError, match=r"listed twice in internet.toml: www\.bbc\.co\.uk"):
        load_internet(duplicate)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(text.replace('category = "gambling"', 'category = "betting"'))
    with pytest.raises(ValueError, match="unknown category 'betting'"):
        load_internet(unknown)


def test_sample_policy_lists_are_the_lab_datas_categories(tmp_path: Path) -> None:
    policy = sample.load(INTERNET)
    feeds = sample.write_feeds(INTERNET, policy, tmp_path / "feeds")
    by_category = {f.category: f for f in feeds}
    assert set(by_category) == {s.category for s in INTERNET.sites if s.category}
    for category, feed in by_category.items():
        names = [n for s in INTERNET.sites if s.category == category for n in s.names]
        assert feed.path.read_text().split() == names
        assert feed.format == policy.formats.get(category, "plain")
    # The padlocked lists come in their own formats; the DoH endpoint list is there.
    assert (by_category["iwf"].format, by_category["ctiru"].format) == ("iwf", "ctiru")
    assert "doh_dot" in by_category


def test_sample_policy_applies_through_the_policy_code(tmp_path: Path) -> None:
    state = tmp_path / "appliance"
    gen = sample.apply(state, INTERNET, tmp_path / "feeds")
    assert gen.id == "000001"
    policy = sample.load(INTERNET)
    exams_allowed = {n for r in policy.rules if r.group == "exams" for n in r.names}

    def explain(name: str, group: str) -> dict[str, str]:
        out = appliance("policy", "explain", name, "--group", group, "--json", "--state-dir", str(state))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    for site in INTERNET.sites:
        if site.category in ("iwf", "ctiru"):
            verdict = explain(site.names[0], "specialist")
            assert (verdict["action"], verdict["reason"], verdict["iwf"]) == (
                "block",
                "PADLOCKED",
                site.category == "iwf",
            )
    for name in exams_allowed:
        assert explain(name, "exams")["action"] == "allow"
        assert explain(name, "exams")["reason"] == "SCHOOL_ALLOW"
    assert explain("www.bbc.co.uk", "exams")["action"] == "block"
    # Every step went through the audit trail, which still verifies.
    assert appliance("audit", "verify", "--state-dir", str(state)).returncode == 0


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('group = "exams"', 'group = "teachers"', "unknown group 'teachers'"),
        ('iwf = "iwf"', 'iwf = "csv"', "unknown list format 'csv'"),
        ('iwf = "iwf"', 'betting = "plain"', "unknown category 'betting'"),
        (
            '"www.aqa.org.uk"',
            '"www.not-in-the-lab.example"',
            "names no lab web site: www.not-in-the-lab.example",
        ),
    ],
)
def test_sample_policy_file_is_checked(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = sample.POLICY_FILE.read_text()
    assert old in text
    bad = tmp_path / "policy.toml"
    bad.write_text(text.replace(old, new))
    with pytest.raises(ValueError, match=re.escape(message)):
        sample.load(INTERNET, bad)
