"""`appliance compliance run` in the lab, with the appliance in the lab's gateway and the lab's sample
policy in force, through the real CLI, with real clients in each group's namespace and the shipped
test set (appliance/compliance/data/testset.toml).

- The policy as the lab sets it passes: no check fails, and every check that could not run says why,
  each reason seen to hold from outside the filter.
- The production probe (a namespace spliced into the gateway's LAN interface with tc) gets the same
  results as the group's own client, and leaves nothing behind.
- Each deliberate break makes exactly the checks it should fail, and the report (its HTML, and its
  PDF read back with pdftotext) names the failure: a required category allowed for students, an
  educational site denied them, the DoH canary turned off, QUIC let past the web filter, the exam
  group's isolation turned off. Each break is undone, and seen to be undone, before the next.

One lab serves the module; `lab down` takes it away at the end."""

from __future__ import annotations

import contextlib
import html
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from labs import appliance

from appliance import config
from appliance.compliance import checks, reports, testset, vantage
from appliance.dataplane import ruleset
from appliance.lab import gateway, netns, processes, service
from appliance.lab.topology import GROUP_VLANS, Lab
from appliance.store import Store

pytestmark = pytest.mark.netns

LAB_PREFIX = "cp"
GROUPS = list(GROUP_VLANS)
TESTS = testset.load()  # the shipped defaults: what a school runs unless it writes its own
REASON = "compliance test: a deliberate break"
PROBES = {"students": ["10.10.0.250", "fd00:10::250"]}  # on the students' VLAN, outside the lab's clients
WEB_TITLES = dict((title, protocol) for protocol, title in checks.WEB)


def latest_results(state: Path) -> list[dict[str, Any]]:
    """The results of the newest report kept in the state directory."""
    with Store(state) as store:
        report = reports.latest(store)
    assert report is not None
    return list(report.document["results"])


Key = tuple[str, str, str, str]  # group, area, check, target


def squeezed(text: str) -> str:
    """Text with all white space taken out: a PDF wraps lines anywhere, even after a hyphen."""
    return "".join(text.split())


@dataclass(frozen=True)
class Run:
    """One `compliance run`: its exit status and output, its results, and its report as text."""

    returncode: int
    output: str
    results: list[dict[str, Any]]
    html_text: str  # the HTML with its tags taken out
    pdf_text: str  # pdftotext, in reading order

    def keys(self, status: str, group: str | None = None) -> set[Key]:
        return {
            (r["group"], r["area"], r["check"], r["target"])
            for r in self.results
            if r["status"] == status and group in (None, r["group"])
        }

    def assert_reported(self, group: str, target: str, area: str, kind: str, *phrases: str) -> None:
        """The finding's heading, and each phrase (the rule or setting behind it, the check), are in
        the HTML and in the PDF."""
        heading = f"{group}: {target} ({checks.area_title(area)}): {kind}"
        for where, text in (("HTML", self.html_text), ("PDF", self.pdf_text)):
            for wanted in (heading, *phrases):
                assert squeezed(wanted) in squeezed(text), f"{where} report does not say {wanted!r}"


def compliance(lab: Lab, out: Path, groups: list[str], *options: str) -> Run:
    """`appliance compliance run` for groups (by default from the lab's client namespaces), with its
    report written to out as HTML and PDF."""
    where = options or ("--lab", lab.name)
    run = appliance("compliance", "run", *where, "--groups", *groups, "--out", str(out), timeout=300)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    found = re.search(r"^compliance report (\d+):", run.stdout, re.M)
    assert found, run.stdout
    with Store(lab.appliance_state_dir) as store:
        report = reports.get(store, int(found.group(1)))
    page = (out / f"{report.stem}.html").read_text()
    pdf = subprocess.run(
        ["pdftotext", str(out / f"{report.stem}.pdf"), "-"], capture_output=True, text=True, check=True
    )
    return Run(
        run.returncode,
        run.stdout + run.stderr,
        report.document["results"],
        html.unescape(re.sub(r"<[^>]+>", " ", page)),
        pdf.stdout,
    )


@pytest.fixture(scope="module")
def lab(appliance_lab: Lab) -> Lab:
    """The module's lab (tests/conftest.py), named cpPID."""
    return appliance_lab


@pytest.fixture(scope="module")
def correct(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Every group, with the lab's sample policy and gateway config as `lab up` made them."""
    return compliance(lab, tmp_path_factory.mktemp("correct"), GROUPS)


# --- the lab's policy, as it should be -----------------------------------------------------------


def test_the_labs_policy_passes_every_check_that_can_run(lab: Lab, correct: Run) -> None:
    failed = [r for r in correct.results if r["status"] == "fail"]
    assert failed == [], "\n".join(f"{r['group']} {r['check']} {r['target']}: {r['why']}" for r in failed)
    assert correct.returncode == 0, correct.output
    # Each group was really tested, in every area the standards speak to.
    running = config.load(lab.appliance_config)
    for group in GROUPS:
        passed = {area for _, area, _, _ in correct.keys("pass", group)}
        named = {c for c in TESTS.required_for(group) if TESTS.categories.get(c)}
        areas = {"iwf", "ctiru", "swgfl", "circumvention"} | named
        exam = running.group(group).internet == "allowlist"
        areas |= {"exam"} if exam else {"educational", "safe_search"}
        assert areas <= passed, (group, areas - passed)
    for text in (correct.html_text, correct.pdf_text):
        assert squeezed("No findings: every check that ran passed") in squeezed(text)


def test_every_check_that_could_not_run_says_a_reason_that_holds(lab: Lab, correct: Run) -> None:
    """Each reason given for "not tested" is checked from outside the filter (the lab's internet) or
    against the policy in force; a reason of any other kind fails this test until it is checked here."""
    untested = [r for r in correct.results if r["status"] == "not tested"]
    assert untested and all(r["observed"] == "" for r in untested)
    silent: set[tuple[str, str, int]] = set()  # (name, protocol, family): no answer over it
    blocked: set[tuple[str, str]] = set()  # (name, group): the policy blocks it
    unexplained = []
    for r in untested:
        silence = re.fullmatch(
            r"the site does not answer over (\S+) even outside the filter \(.+\)", r["why"]
        )
        rewrite = re.fullmatch(
            r"the policy blocks (\S+) for this group, so there is nothing to rewrite", r["why"]
        )
        if r["why"] == checks.UNNAMED:  # a required category the test set has no name for
            assert r["area"] in TESTS.required_for(r["group"]) and not TESTS.categories.get(r["area"]), r
        elif silence:
            over = re.fullmatch(r"\S+ (?:over IPv([46])|to its real address (\S+) \(.*\))", r["check"])
            assert over, r
            family = int(over.group(1)) if over.group(1) else (6 if ":" in over.group(2) else 4)
            silent.add((r["target"], WEB_TITLES[silence.group(1)], family))
        elif rewrite:
            blocked.add((rewrite.group(1), r["group"]))
        else:
            unexplained.append(r)
    assert unexplained == []
    ns, ca = lab.internet_ns, str(lab.ca_cert)
    for name, protocol, family in sorted(silent):
        if protocol == "h3":
            argv = [sys.executable, "-m", "appliance.lab.h3client", "--cacert", ca, "--timeout", "3"]
            proc = netns.run(netns.in_ns(ns, [*argv, "--family", str(family), name]))
            [answer] = [json.loads(line) for line in proc.splitlines()]
            assert answer["status"] is None and answer["error"], (name, protocol, family, answer)
        else:
            argv = ["curl", "-sS", f"-{family}", "-m", "5", "--cacert", ca, "-o", "/dev/null"]
            proc = subprocess.run(netns.in_ns(ns, [*argv, f"{protocol}://{name}/"]), capture_output=True)
            assert proc.returncode != 0, (name, protocol, family, "answers outside the filter")
    state = str(lab.appliance_state_dir)
    for name, group in blocked:
        said = appliance("policy", "explain", name, "--group", group, "--json", "--state-dir", state)
        assert json.loads(said.stdout)["action"] == "block", (name, group)


# --- the production probe ------------------------------------------------------------------------


def test_a_probe_spliced_into_the_lan_sees_what_the_groups_client_sees(
    lab: Lab, correct: Run, tmp_path: Path
) -> None:
    """The appliance's own way (docs/compliance.md, "Probes"): a namespace spliced into lan10 with tc,
    the appliance's resolver as the reference, in the gateway namespace as if it were the appliance."""
    defaults = testset.DEFAULTS.read_text()
    probes = "".join(f"{group} = {json.dumps(addresses)}\n" for group, addresses in PROBES.items())
    (tmp_path / "compliance.toml").write_text(f"{defaults}\n[probes]\n{probes}")
    gw = lab.gateway_ns
    # Interface names only: how `ip` names a veth's peer namespace depends on every namespace there is.
    shown = {
        "neigh": ["ip", "neigh", "show", "dev", "lan10"],
        "qdisc": ["tc", "qdisc", "show", "dev", "lan10"],
        "links": ["ip", "-br", "link", "show"],
    }
    before = {what: netns.run(netns.in_ns(gw, argv)) for what, argv in shown.items()}
    spliced = compliance(
        lab, tmp_path, ["students"],
        "--config", str(lab.appliance_config), "--testset", str(tmp_path / "compliance.toml"),
        "--appliance-netns", gw, "--cacert", str(lab.ca_cert),
    )  # fmt: skip
    assert spliced.returncode == 0, spliced.output
    outcome = lambda run: {  # noqa: E731
        (r["area"], r["check"], r["target"], r["status"]) for r in run.results if r["group"] == "students"
    }
    assert outcome(spliced) == outcome(correct)
    probe_ns = f"{vantage.PROBE_PREFIX}students"
    assert not netns.exists(probe_ns) and not (netns.NETNS_ETC / probe_ns).exists()
    after = {what: netns.run(netns.in_ns(gw, argv)) for what, argv in shown.items()}
    assert not any(a in after["neigh"] for a in PROBES["students"])
    assert after["qdisc"] == before["qdisc"]
    names = lambda shown: sorted(line.split()[0] for line in shown.splitlines())  # noqa: E731
    assert names(after["links"]) == names(before["links"])


# --- deliberate breaks ---------------------------------------------------------------------------


def in_force(lab: Lab, generation: str, timeout: float = 10) -> None:
    """Waits until the DNS filter and the web filter both say the policy generation is in force."""
    said = (
        f"appliance.dnsfilter: policy {generation},",
        f"appliance.webfilter: policy {generation} in force",
    )
    log = processes.log_file(lab.state_dir, gateway.PROCESS)
    deadline = time.monotonic() + timeout
    while not all(line in log.read_text() for line in said):
        assert time.monotonic() < deadline, processes.log_tail(lab.state_dir, gateway.PROCESS)
        time.sleep(0.1)


def policy(lab: Lab, *args: str) -> str:
    done = appliance("policy", *args, "--reason", REASON, "--state-dir", str(lab.appliance_state_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def apply(lab: Lab) -> None:
    applied = re.search(r"^policy generation (\d+) in force", policy(lab, "apply"), re.M)
    assert applied
    in_force(lab, applied.group(1))


def verdict(lab: Lab, name: str, group: str) -> dict[str, Any]:
    state = str(lab.appliance_state_dir)
    said = appliance("policy", "explain", name, "--group", group, "--json", "--state-dir", state)
    assert said.returncode == 0, said.stderr
    return dict(json.loads(said.stdout))


@contextlib.contextmanager
def school_rule(lab: Lab, action: str, name: str, group: str) -> Iterator[None]:
    """A school rule (`appliance policy allow|deny`), applied; removed and the policy applied again
    afterwards."""
    before = verdict(lab, name, group)
    added = re.match(r"rule (\d+):", policy(lab, action, name, "--group", group))
    assert added
    try:
        apply(lab)
        yield
    finally:
        policy(lab, "remove", added.group(1))
        apply(lab)
    restored = verdict(lab, name, group)
    assert (restored["action"], restored["reason"]) == (before["action"], before["reason"])


def restart_gateway(lab: Lab, text: str) -> None:
    """Restarts the appliance in the lab's gateway with text as its config, by the same command line
    `lab up` started it with (read from the running process), and waits for its READY=1."""
    [(_, ns, pid)] = [r for r in processes.recorded(lab.state_dir) if r[0] == gateway.PROCESS]
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")]
    processes.end([pid], grace=15)
    assert not processes.alive(pid)
    lab.appliance_config.write_text(text)
    state = gateway.notify_state_file(lab)
    state.unlink(missing_ok=True)
    started = processes.start(lab.state_dir, gateway.PROCESS, ns, argv)
    deadline = time.monotonic() + gateway.READY_TIMEOUT
    while service.read_state(state).get("READY") != "1":
        assert processes.alive(started) and time.monotonic() < deadline, processes.log_tail(
            lab.state_dir, gateway.PROCESS
        )
        time.sleep(0.2)


def with_setting(text: str, group: str, key: str, value: str) -> str:
    """The config text with key set to value (TOML) in [groups.GROUP], whatever it was before."""
    header = f"[groups.{group}]\n"
    start = text.index(header) + len(header)
    end = text.find("\n[", start)
    end = len(text) if end < 0 else end + 1
    lines = [line for line in text[start:end].splitlines(keepends=True) if line.split("=")[0].strip() != key]
    return text[:start] + f"{key} = {value}\n" + "".join(lines) + text[end:]


@contextlib.contextmanager
def gateway_setting(lab: Lab, group: str, key: str, value: str) -> Iterator[config.Config]:
    """The gateway's appliance restarted with a group's setting changed; restarted as it was
    afterwards."""
    original = lab.appliance_config.read_text()
    changed = with_setting(original, group, key, value)
    parsed = config.parse(changed, source="changed lab config")
    try:
        restart_gateway(lab, changed)
        yield parsed
    finally:
        restart_gateway(lab, original)
    assert lab.appliance_config.read_text() == original


def assert_breaks_exactly(correct: Run, broken: Run, group: str, expected: set[Key]) -> None:
    """The break failed the expected checks, each of which passed before it, and nothing else that
    had not already failed."""
    assert expected and expected <= correct.keys("pass", group)
    assert broken.keys("fail") == correct.keys("fail", group) | expected, (
        sorted(broken.keys("fail") - correct.keys("fail", group) - expected),
        sorted(expected - broken.keys("fail")),
    )
    assert broken.returncode == 1


def test_a_required_category_allowed_for_students_is_reported(lab: Lab, correct: Run, tmp_path: Path) -> None:
    """A school allow for a site in a category the standards require blocked for students."""
    required = TESTS.required_for("students")
    # A site its category blocks (a school rule can override that; padlocked lists ignore it).
    category, name = next(
        (c, n)
        for c, names in TESTS.categories.items()
        if c in required
        for n in names
        if verdict(lab, n, "students")["reason"] == "CATEGORY"
    )
    with school_rule(lab, "allow", name, "students"):
        broken = compliance(lab, tmp_path, ["students"])
    expected = {k for k in correct.keys("pass", "students") if k[3] == name}
    assert {"DNS A", "HTTPS over IPv4", "HTTP/3 over IPv6", "HTTP over IPv4"} <= {k[2] for k in expected}
    assert any(k[1] == "circumvention" and "(QUIC)" in k[2] for k in expected)
    assert_breaks_exactly(correct, broken, "students", expected)
    broken.assert_reported("students", name, category, "under-blocked", f"allow {name} for students")


def test_an_educational_site_denied_students_is_reported_as_over_blocking(
    lab: Lab, correct: Run, tmp_path: Path
) -> None:
    name = TESTS.educational[0]
    with school_rule(lab, "deny", name, "students"):
        broken = compliance(lab, tmp_path, ["students"])
    expected = {k for k in correct.keys("pass", "students") if k[3] == name}
    # DNS A and AAAA, and HTTPS, HTTP/3 and HTTP over IPv4 and IPv6.
    assert {k[1] for k in expected} == {"educational"} and len(expected) == 8
    assert_breaks_exactly(correct, broken, "students", expected)
    broken.assert_reported("students", name, "educational", "over-blocked", f"deny {name} for students")


def test_the_doh_canary_turned_off_is_reported(lab: Lab, correct: Run, tmp_path: Path) -> None:
    with gateway_setting(lab, "students", "block_doh_canary", "false") as changed:
        assert not changed.group("students").block_doh_canary
        broken = compliance(lab, tmp_path, ["students"])
    expected = {k for k in correct.keys("pass", "students") if k[3] == TESTS.doh_canary}
    assert [k[2] for k in expected] == ["DoH canary (Firefox turns off its DNS over HTTPS)"]
    assert_breaks_exactly(correct, broken, "students", expected)
    broken.assert_reported(
        "students", TESTS.doh_canary, "circumvention", "circumvention route open", "block_doh_canary = false"
    )


@contextlib.contextmanager
def nft_rule(lab: Lab, chain: str, rule: str) -> Iterator[None]:
    """A rule inserted at the top of a chain of the appliance's table, as someone at the gateway's
    console might; deleted afterwards."""
    table = [ruleset.FAMILY, ruleset.TABLE, chain]
    added = netns.run(
        netns.in_ns(lab.gateway_ns, ["nft", "-e", "-a", "insert", "rule", *table, *rule.split()])
    )
    handle = re.search(r"# handle (\d+)", added)
    assert handle, added
    try:
        yield
    finally:
        netns.run(netns.in_ns(lab.gateway_ns, ["nft", "delete", "rule", *table, "handle", handle.group(1)]))
    listed = netns.run(netns.in_ns(lab.gateway_ns, ["nft", "-a", "list", "chain", *table]))
    assert f"# handle {handle.group(1)}\n" not in listed


def test_quic_let_past_the_web_filter_is_reported(lab: Lab, correct: Run, tmp_path: Path) -> None:
    """UDP 443 accepted before the group chains mark it for the web filter: no QUIC Initial is seen,
    so a client with a blocked site's address reaches it over HTTP/3."""
    with nft_rule(lab, "forward", "meta l4proto udp th dport 443 accept"):
        broken = compliance(lab, tmp_path, ["students"])
    expected = {k for k in correct.keys("pass", "students") if k[2].startswith("HTTP/3 to its real address")}
    assert_breaks_exactly(correct, broken, "students", expected)
    for _, _, check, target in expected:
        broken.assert_reported("students", target, "circumvention", "under-blocked", check)


def test_the_exam_group_no_longer_isolated_is_reported(lab: Lab, correct: Run, tmp_path: Path) -> None:
    """The exams group's config turned from an allowlist to a filtered internet: names are still
    blocked by its policy, but other ports are forwarded."""
    with gateway_setting(lab, "exams", "internet", '"filtered"') as changed:
        assert changed.group("exams").internet == "filtered"
        broken = compliance(lab, tmp_path, ["exams"])
    expected = {k for k in correct.keys("pass", "exams") if k[1] == "exam" and k[2].startswith("TCP to port")}
    assert_breaks_exactly(correct, broken, "exams", expected)
    [(_, _, check, target)] = expected
    broken.assert_reported("exams", target, "exam", "under-blocked", check)
