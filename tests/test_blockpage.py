"""The block page on a real gateway: `appliance run` (ruleset, resolver, DNS filter, web filter and the
block-page server) in a gateway namespace, curl and chromium in one client namespace per group, each
resolving names through the gateway as a pupil's device does.

    students (lan_st) --\
    staff    (lan_sf) ---  gateway -- wan0 -- inet
    exams    (lan_ex) --/

The policy: casino.test is on a gambling list, adult.test on a pornography list (locked by the trust),
terror.test on the CTIRU list, iwf-domain.test and a page on pages.test on the IWF list, denied.test
denied by a school rule. Set BLOCKPAGE_SCREENSHOTS=DIR to keep the screenshots.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import realclients as rc
from netns import THREE_GROUPS, Netns, netns_lab

from appliance import audit
from appliance.blockpage import PORT
from appliance.lab import netns as plumbing
from appliance.lists import catalogue, importer
from appliance.policy import generations, inputs, rules, timetable
from appliance.policy.rules import Rule
from appliance.store import Store
from webui import settings

pytestmark = pytest.mark.netns

BLOCK4, BLOCK6 = "192.0.2.1", "2001:db8::1"
WEBUI = "https://gateway.school.example"
SCHOOL = "Block Page Test Academy"
# The IWF's standard wording (appliance/blockpage/templates/page.html).
IWF_TEXT = (
    "Access has been denied by your internet access provider because this page may contain indecent "
    "images of children as identified by the Internet Watch Foundation."
)

CONFIG = """
[appliance]
name = "{school}"
state_dir = "{state}"

[wan]
interface = "wan0"

[dns]
forwarders = ["203.0.113.53"]
dnssec = false

{lans}"""

LISTS = {
    # name: (format, category, lines)
    "casinos": ("plain", "gambling", "casino.test\nxn--bcher-kva.test\n"),
    "adult": ("plain", "pornography", "adult.test\n"),
    "ctiru": ("ctiru", None, "terror.test\n"),
    "iwf": ("iwf", None, "iwf-domain.test\nhttp://pages.test/bad/page.html\n"),
}


@dataclass
class Gateway:
    gw: Netns
    clients: dict[str, Netns]
    state: Path
    run: subprocess.Popen[str]


def make_policy(state: Path, tmp: Path) -> None:
    with Store(state) as store:
        with audit.change(store, "it", "setup") as ch:
            for name, (fmt, category, lines) in LISTS.items():
                (tmp / f"{name}.txt").write_text(lines)
                catalogue.add(ch, name, fmt, category, str(tmp / f"{name}.txt"), None)
            rules.add(ch, Rule("students", "deny", "name", "denied.test", "pupils found it", "it", ch.now))
            settings.save(ch, {"url": WEBUI})
        for name in LISTS:
            assert importer.update(store, name, "it", "setup").error is None
        now = datetime.now(UTC)
        generations.apply(store, inputs.from_store(store, now), "it", "setup", now)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    if os.geteuid() != 0:
        pytest.fail("needs root for network namespaces")
    tmp = tmp_path_factory.mktemp("blockpage")
    state = tmp / "state"
    make_policy(state, tmp)
    with netns_lab() as lab:
        gw, inet = lab.namespace("gw"), lab.namespace("inet")
        lab.link(gw, "wan0", inet, "eth0")
        gw.addr("wan0", "203.0.113.1/24", "2001:db8:ff::1/64")
        inet.addr("eth0", "203.0.113.2/24", "2001:db8:ff::2/64")
        inet.route_default("203.0.113.1", "2001:db8:ff::1")
        gw.route_default("203.0.113.2", "2001:db8:ff::2")
        clients = lab.three_group_clients(gw)
        for client, net in zip(clients.values(), (10, 20, 30), strict=True):
            plumbing.write_etc(client.name, "resolv.conf", f"nameserver 10.{net}.0.1\n")
        config = tmp / "appliance.toml"
        config.write_text(CONFIG.format(school=SCHOOL, state=state, lans=THREE_GROUPS))
        log = tmp / "run.log"
        run = gw.popen(
            sys.executable, "-m", "appliance.cli", "run", "--config", str(config), stdout=log.open("w")
        )
        try:
            deadline = time.monotonic() + 40
            while "started blockpage" not in log.read_text() or not _listening(gw):
                assert run.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            yield Gateway(gw, clients, state, run)
        finally:
            run.terminate()
            run.wait(20)
        assert "Traceback" not in log.read_text(), log.read_text()


def _listening(gw: Netns) -> bool:
    return bool(gw.run("ss", "-H", "-ltn", f"sport = :{PORT}").stdout.strip())


def curl(client: Netns, url: str, *extra: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
    """curl as a pupil's device would: names resolved through the gateway; the status on the last line."""
    argv = ["curl", "-sS", "-m", str(timeout), "-w", "\n%{http_code}", *extra, url]
    return client.run(*argv, check=False, timeout=timeout + 5)


class Page(HTMLParser):
    """A page's text (as a reader sees it, whitespace collapsed) and its links."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self._skip = 0
        self.feed(html)
        self.close()
        self.text = re.sub(r"\s+", " ", "".join(self.parts)).strip()

    BLOCKS = ("p", "h1", "h2", "div", "dt", "dd", "li", "footer")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in self.BLOCKS:
            self.parts.append(" ")
        if tag in ("style", "title"):
            self._skip += 1
        if tag == "a":
            self.links += [v or "" for k, v in attrs if k == "href"]

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS:
            self.parts.append(" ")
        if tag in ("style", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def fetch(client: Netns, url: str, *extra: str) -> tuple[int, Page]:
    result = curl(client, url, *extra)
    assert result.returncode == 0, result.stderr
    body, _, code = result.stdout.rpartition("\n")
    return int(code), Page(body)


def unblock_query(page: Page) -> dict[str, str]:
    [link] = [link for link in page.links if link.startswith(WEBUI)]
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{WEBUI}/requests/new"
    return dict(parse_qsl(parts.query))


@pytest.mark.parametrize("family", ["-4", "-6"])
def test_a_blocked_category_shows_why_and_how_to_ask(gateway: Gateway, family: str) -> None:
    code, page = fetch(gateway.clients["students"], "http://casino.test/some/page?x=1", family)
    assert code == 403
    assert "This site is blocked" in page.text
    assert SCHOOL in page.text
    assert "You can't open casino.test on the school network." in page.text
    assert "It is in the category Gambling: Enables gambling." in page.text
    assert "Teachers can ask IT to unblock it (staff sign-in): Ask IT to unblock this site" in page.text
    assert unblock_query(page) == {"site": "casino.test", "group": "students", "layer": "dns"}
    client = "10.10.0.2" if family == "-4" else "fd00:10::2"
    assert f"Device {client}" in page.text
    assert "Group students" in page.text


def test_the_group_is_the_client_s(gateway: Gateway) -> None:
    """Gambling is blocked for staff too, and the link asks for staff; denied.test is denied by a
    school rule for students."""
    code, page = fetch(gateway.clients["staff"], "http://casino.test/")
    assert code == 403
    assert unblock_query(page)["group"] == "staff"
    code, page = fetch(gateway.clients["students"], "http://denied.test/")
    assert code == 403
    assert "Your school has chosen to block it on this network." in page.text
    assert "pupils found it" not in page.text  # the rule's reason is for IT, not for the page
    assert unblock_query(page) == {"site": "denied.test", "group": "students", "layer": "dns"}


def test_exams_reach_only_what_the_school_allows(gateway: Gateway) -> None:
    code, page = fetch(gateway.clients["exams"], "http://revision.test/")
    assert code == 403
    assert "On this network, only sites the school has allowed can be opened." in page.text
    assert unblock_query(page)["group"] == "exams"


def test_exam_mode_says_so(gateway: Gateway) -> None:
    """Exam mode switched on for staff takes effect on the page within a refresh (about a second)."""
    with Store(gateway.state) as store:
        with audit.change(store, "it", "mock exam") as ch:
            timetable.exam_on(ch, "staff", None)
        try:
            # The DNS filter and the block page each see exam mode within a second; until the DNS
            # filter does, the name is looked up upstream (which the test network does not answer).
            deadline = time.monotonic() + 5
            while True:
                result = curl(gateway.clients["staff"], "http://revision.test/")
                if result.stdout.endswith("\n403"):
                    break
                assert time.monotonic() < deadline, "exam mode did not take effect"
                time.sleep(0.2)
            page = Page(result.stdout.rpartition("\n")[0])
            assert "Exam mode is on: only sites the school has allowed for exams can be opened." in page.text
            assert "Group staff (exam mode)" in page.text
        finally:
            with audit.change(store, "it", "mock exam over") as ch:
                timetable.exam_off(ch, "staff")


def test_the_iwf_list_shows_the_iwf_wording_and_nothing_to_ask(gateway: Gateway) -> None:
    for client in gateway.clients.values():
        code, page = fetch(client, "http://iwf-domain.test/")
        assert code == 403
        assert IWF_TEXT in page.text
        assert "Access denied" in page.text
        assert not page.links
        assert "unblock" not in page.text.lower()
        assert "Child sexual abuse" not in page.text  # the IWF's words only, no category of ours


@pytest.mark.parametrize(
    ("site", "why"),
    [
        ("terror.test", "It is on a list of illegal content that is blocked for everyone."),
        (
            "adult.test",
            "Your school's trust (the group of schools it belongs to) has blocked it on this network.",
        ),
    ],
)
def test_padlocked_sites_say_they_cannot_be_unblocked(gateway: Gateway, site: str, why: str) -> None:
    code, page = fetch(gateway.clients["students"], f"http://{site}/")
    assert code == 403
    assert why in page.text
    assert "No. Nobody at school can unblock it." in page.text
    assert not page.links


def test_the_http_filter_s_redirect_explains_a_blocked_page(gateway: Gateway) -> None:
    """What the injected redirect leads to: the block address with the site and, for a page-level
    entry, the page. The IWF page is blocked; its site and its other pages are not."""
    students = gateway.clients["students"]
    code, page = fetch(students, f"http://{BLOCK4}/?site=pages.test&path=%2Fbad%2Fpage.html")
    assert code == 403
    assert IWF_TEXT in page.text
    assert not page.links
    code, page = fetch(students, f"http://[{BLOCK6}]/?site=pages.test&path=%2Fgood.html")
    assert code == 200
    assert "This site isn't blocked now" in page.text
    code, page = fetch(students, f"http://{BLOCK4}/?site=casino.test")
    assert code == 403
    assert unblock_query(page) == {"site": "casino.test", "group": "students", "layer": "http"}


def test_a_site_no_longer_blocked_says_so(gateway: Gateway) -> None:
    """A device that remembers an old block answer (here: told to) is told to try again."""
    code, page = fetch(
        gateway.clients["students"], "http://allowed.test/", "--resolve", f"allowed.test:80:{BLOCK4}"
    )
    assert code == 200
    assert "allowed.test isn't blocked on this network any more." in page.text
    assert not page.links


def test_the_block_address_itself_explains_the_page(gateway: Gateway) -> None:
    code, page = fetch(gateway.clients["students"], f"http://{BLOCK4}/")
    assert code == 200
    assert "This is the school's web filter" in page.text


@pytest.mark.parametrize("url", ["https://casino.test/", f"https://{BLOCK4}/", f"https://[{BLOCK6}]/"])
def test_https_to_the_block_address_fails_at_once(gateway: Gateway, url: str) -> None:
    start = time.monotonic()
    result = curl(gateway.clients["students"], url, timeout=10)
    assert time.monotonic() - start < 1.5
    assert result.returncode == 7, result.stderr  # couldn't connect: refused by a reset


@pytest.mark.parametrize("address", [BLOCK4, BLOCK6])
def test_quic_to_the_block_address_fails_at_once(gateway: Gateway, address: str) -> None:
    """Port unreachable, so a browser falls back at once instead of waiting for QUIC to time out."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.connect((sys.argv[1], 443))\n"
        "s.settimeout(2)\n"
        "s.send(b'\\xc0' + bytes(1199))\n"  # the size and first byte of a QUIC Initial
        "try:\n"
        "    s.recv(100)\n"
        "except ConnectionRefusedError:\n"
        "    print('refused')\n"
        "except TimeoutError:\n"
        "    print('timeout')\n"
    )
    result = gateway.clients["students"].run(sys.executable, "-c", code, address)
    assert result.stdout.strip() == "refused"


def test_the_headers_are_strict(gateway: Gateway) -> None:
    result = gateway.clients["students"].run(
        "curl", "-sS", "-D", "-", "-o", "/dev/null", "http://casino.test/"
    )
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in result.stdout.splitlines()[1:])
        if value
    }
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert re.search(r"style-src 'sha256-[A-Za-z0-9+/=]+'", csp)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["content-type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    ("host", "status", "expected"),
    [
        ("<script>alert(1)</script>", 400, "That isn't a site name"),
        ("a" * 8000 + ".test", 400, "That isn't a site name"),
        ("bücher.test", 403, "You can't open xn--bcher-kva.test on the school network."),
        ("CASINO.test.:80", 403, "You can't open casino.test on the school network."),
        ('casino.test"><b>x</b>', 400, "That isn't a site name"),
        ("", 200, "This is the school's web filter"),
    ],
)
def test_hostile_host_headers_are_handled(gateway: Gateway, host: str, status: int, expected: str) -> None:
    result = curl(gateway.clients["students"], f"http://{BLOCK4}/", "-H", f"Host: {host}")
    assert result.returncode == 0, result.stderr
    body, _, code = result.stdout.rpartition("\n")
    assert int(code) == status
    assert expected in Page(body).text
    assert "<script>" not in body and "<b>" not in body


def test_hostile_queries_are_handled(gateway: Gateway) -> None:
    students = gateway.clients["students"]
    code, page = fetch(students, f"http://{BLOCK4}/?site=%3Cscript%3Ealert(1)%3C/script%3E")
    assert code == 400 and "That isn't a site name" in page.text
    assert "script" not in page.tags
    code, page = fetch(students, f"http://{BLOCK4}/?site={BLOCK4}")
    assert code == 400
    code, page = fetch(students, f"http://{BLOCK4}/?site=casino.test&path=%FF%00")
    assert code == 403  # the site is blocked whatever the page


def test_a_device_holding_connections_open_does_not_hold_up_others(gateway: Gateway) -> None:
    """One device opens many connections and sends nothing; another device's page still comes at once."""
    code = (
        "import socket, sys, time\n"
        "held = [socket.create_connection((sys.argv[1], 80)) for _ in range(100)]\n"
        "print('holding', flush=True)\n"
        "time.sleep(30)\n"
    )
    holder = gateway.clients["students"].popen(sys.executable, "-c", code, BLOCK4)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        start = time.monotonic()
        status, page = fetch(gateway.clients["staff"], "http://casino.test/")
        assert status == 403 and "This site is blocked" in page.text
        assert time.monotonic() - start < 1
    finally:
        holder.kill()
        holder.wait()


def test_only_the_school_network_is_served(gateway: Gateway) -> None:
    """The server's own port from the gateway itself (no LAN): nothing is explained."""
    result = gateway.gw.run(
        "curl", "-sS", "-w", "\n%{http_code}", "-H", "Host: casino.test", f"http://127.0.0.1:{PORT}/"
    )
    body, _, code = result.stdout.rpartition("\n")
    assert code == "403"
    assert "This page is for the school network only." in body
    assert "casino" not in body


@pytest.mark.slow
def test_screenshots_on_a_phone(gateway: Gateway) -> None:
    """Headless chromium, phone-sized, resolving through the gateway: each kind of page renders, and
    none asks for anything from outside (the CSP would refuse it; chromium would log it)."""
    keep = os.environ.get("BLOCKPAGE_SCREENSHOTS")
    out = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="blockpage-shots-"))
    out.mkdir(parents=True, exist_ok=True)
    for name, client, url in (
        ("category", "students", "http://casino.test/"),
        ("iwf", "students", "http://iwf-domain.test/"),
        ("trust", "students", "http://adult.test/"),
        ("exams", "exams", "http://revision.test/"),
    ):
        shot = out / f"{name}.png"
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            argv = ["chromium", *rc.CHROMIUM_QUIET, f"--user-data-dir={profile}", f"--screenshot={shot}"]
            argv += ["--window-size=400,800", "--hide-scrollbars", url]
            result = rc.run(gateway.clients[client].name, argv, timeout=30, env=rc._browser_env(profile))
        assert shot.exists() and shot.stat().st_size > 5000, result.stderr
        assert "Content Security Policy" not in result.stderr, result.stderr
