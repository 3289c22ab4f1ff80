"""Issue 5's workflow end to end in the lab, with a real pupil's device: chromium in the students
namespace hits the block page of a site blocked for students and finds the "ask IT to unblock" link; a
teacher follows it in the web UI (`appliance lab webui`, on 127.0.0.1) and asks; IT reviews and the DSL
approves (three accounts the trust administrator, made with the CLI, added on the Accounts page, each
in their own browser, all Debian's chromium driven by Playwright); the pupil's namespace then resolves
the site to its real address and loads its page over HTTPS through the appliance's data plane; and when
the allow ends, the expiry timer's command takes it away and the site is blocked again, at DNS and on a
TLS connection straight to its address. A padlocked (IWF) site's block page offers no request, and its
request form says why in plain words.

The sites are chosen from the lab's data by category (a social-media site, the IWF test site), and
what each is meant to do comes from the policy in force, never from a list here. Screenshots of the
pages go to $WEBUI_SCREENSHOTS if set (docs/webui.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit
from zoneinfo import ZoneInfo

import pytest
import realclients as rc
from labs import appliance
from playwright.sync_api import Browser
from test_webui_support import CHROMIUM, CHROMIUM_ARGS, PASSWORD, Person, free_port

from appliance import config
from appliance.lab import check, processes
from appliance.lab import webui as lab_webui
from appliance.lab.sites import load_internet
from appliance.lab.topology import Lab
from appliance.policy.model import CATEGORIES
from appliance.store import Store, iso
from webui.times import local

pytestmark = pytest.mark.netns

LAB_PREFIX = "wl"  # the conftest's appliance_lab fixture names this module's lab from it
INTERNET = load_internet()
PUPIL = "students"
# What the teacher asks for: the lab's social-media site. The IWF test site is padlocked by law.
REQUESTED = next(s for s in INTERNET.sites if s.category == "social_media")
PADLOCKED = next(s for s in INTERNET.sites if s.category == "iwf")
FAMILIES = (4, 6)
ADMIN = "head"  # the trust administrator, made with `appliance webui create-admin`
FIRST_PASSWORD = "first one from the trust"  # what the administrator gives each new account
ACCOUNTS = {  # user name: (role, full name), added by the administrator on the Accounts page
    "teacher": ("teacher", "Tess Teacher"),
    "ittech": ("it", "Ian Technician"),
    "dsl": ("dsl", "Dee Safeguarding"),
}
# How long the approved allow lasts. The form's shortest is "until a date", today, which ends at
# midnight; once IT has reviewed the request, the test moves its end to this long ahead (School.end_at),
# so that the allow the DSL then puts in force ends during the test.
ALLOW_FOR = timedelta(seconds=40)
IN_FORCE_WITHIN = 10.0  # seconds for the data plane to follow a new policy generation (about 1 s)
REFUSED = (35, 56)  # curl: reset during the TLS handshake
REASON = "Year 8 media studies: how a social platform presents the news"


@dataclass
class School:
    lab: Lab
    config: config.Config
    base: str  # the web UI from this machine
    link_base: str  # the web address the block page links to (the gateway's first LAN address)
    zone: ZoneInfo
    first_signed_in: set[str] = field(default_factory=set)

    @property
    def ca(self) -> str:
        return str(self.lab.ca_cert)

    def verdict(self, name: str) -> str:
        """What the policy in force says about name for the pupil's group, e.g. "block (category)"."""
        return check.policy_verdicts(self.lab, [PUPIL], [name])[(PUPIL, name)]

    def block_answer(self, family: int) -> str:
        return str(self.config.dns.block_ipv4 if family == 4 else self.config.dns.block_ipv6)

    def sign_in(self, person: Person, going_to: str) -> None:
        """person, on the sign-in page on the way to going_to, signs in. The first time, the web UI
        makes them change the administrator's first password (to PASSWORD); either way they arrive
        where they were going."""
        page = person.page
        if person.username in self.first_signed_in:
            person.sign_in()
        else:
            page.fill("input[name=username]", person.username)
            page.fill("input[name=password]", FIRST_PASSWORD)
            page.click("button:has-text('Sign in')")
            assert "Change your password" in page.inner_text("h1"), page.url
            assert "Please choose your own password" in page.inner_text("main")
            page.fill("input[name=current]", FIRST_PASSWORD)
            page.fill("input[name=new]", PASSWORD)
            page.fill("input[name=again]", PASSWORD)
            page.click("button:has-text('Change password')")
            self.first_signed_in.add(person.username)
        assert page.url == self.base + going_to, (person.username, page.url)

    def end_at(self, request_id: int, ends: datetime) -> None:
        """Stands in for the clock: the request's allow will end at ends rather than at midnight. Done
        before the DSL approves, so the rule the DSL's approval stores, and the policy it puts in force,
        carry this end, as they would any other."""
        with Store(self.lab.appliance_state_dir) as store:
            moved = store.db.execute(
                "UPDATE unblock_requests SET expires = ? WHERE id = ? AND status = 'waiting_dsl'",
                (iso(ends), request_id),
            )
            assert moved.rowcount == 1

    def served(self, name: str) -> int:
        """How many requests for name the lab's web server has answered."""
        return processes.log_file(self.lab.state_dir, "web").read_text().count(f" host={name} ")


@pytest.fixture(scope="module")
def school(appliance_lab: Lab) -> School:
    """The lab's appliance with its web UI (`appliance lab webui`) and a trust administrator made with
    the CLI, as docs/webui.md's first start says; `lab down` (appliance_lab's) stops the web UI."""
    lab = appliance_lab
    port = free_port()
    served = appliance("lab", "--name", lab.name, "webui", "--port", str(port))
    assert served.returncode == 0, served.stdout + served.stderr
    made = appliance(
        "webui", "create-admin", "--config", str(lab.appliance_config),
        "--username", ADMIN, "--email", f"{ADMIN}@lab.example", "--password-stdin",
        input=PASSWORD + "\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    here, lan = lab_webui.urls(lab, port)
    with Store(lab.appliance_state_dir) as store:
        zone = store.zone()
    return School(lab, config.load(lab.appliance_config), here, lan[0], zone)


@pytest.fixture(scope="module")
def staff(school: School, browser: Browser) -> School:
    """The administrator signs in and adds the teacher, the IT technician and the DSL on the Accounts
    page, each with a first password they must change when they first sign in."""
    admin = Person(browser, school.base, ADMIN)
    admin.go("/accounts")
    admin.sign_in()
    assert admin.page.url == school.base + "/accounts"
    form = "form:has(button:has-text('Add account'))"
    for username, (role, full_name) in ACCOUNTS.items():
        admin.page.fill(f"{form} input[name=username]", username)
        admin.page.fill(f"{form} input[name=display_name]", full_name)
        admin.page.fill(f"{form} input[name=email]", f"{username}@lab.example")
        admin.page.select_option(f"{form} select[name=role]", role)
        admin.page.fill(f"{form} input[name=password]", FIRST_PASSWORD)
        admin.page.click("button:has-text('Add account')")
        assert f"Account {username} added." in admin.page.inner_text("main")
    admin.shot("lab-00-accounts")
    assert admin.problems == [], admin.problems
    admin.context.close()
    return school


@pytest.fixture(scope="module")
def pupil_browser(
    appliance_lab: Lab,
    browser: Browser,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Browser]:
    """Debian's chromium run in the pupil's group's namespace, so it finds names through the gateway
    (its resolv.conf) and reaches the lab's internet only through the appliance, as a pupil's device
    does."""
    launcher = tmp_path_factory.mktemp("pupil") / "chromium"
    launcher.write_text(
        f'#!/bin/sh\nexec ip netns exec {appliance_lab.client(PUPIL).netns} {CHROMIUM} "$@"\n'
    )
    launcher.chmod(0o755)
    pupil = browser.browser_type.launch(executable_path=str(launcher), args=CHROMIUM_ARGS)
    yield pupil
    pupil.close()


def blocked_page_problems(pupil: Person) -> list[str]:
    """What the pupil's browser said about the block page beyond what it says of every block page
    served over plain HTTP: its 403 status, and that a Cross-Origin-Opener-Policy header means nothing
    on an origin that is not HTTPS. A script run, or anything the page asked for and the Content
    Security Policy refused, would be here."""
    expected = ("status of 403 (Forbidden)", "Cross-Origin-Opener-Policy header has been ignored")
    return pupil.dialogs + [p for p in pupil.problems if not any(e in p for e in expected)]


def until(check_: Callable[[], bool], what: str, within: float = IN_FORCE_WITHIN) -> None:
    """Waits for check_() to be true: the data plane follows a new policy generation within a second
    or so of its being put in force."""
    deadline = time.monotonic() + within
    while not check_():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_pupil_is_blocked_a_teacher_asks_it_and_dsl_approve_and_the_allow_ends(
    staff: School,
    browser: Browser,
    pupil_browser: Browser,
) -> None:
    school = staff
    name = REQUESTED.names[0]
    ns = school.lab.client(PUPIL).netns
    assert school.verdict(name) == "block (category)"

    # 1. A pupil opens the site: DNS answers with the block address, and the block page says why and
    #    carries the link for teachers to the web UI's request form.
    pupil = Person(pupil_browser, "", "pupil")
    response = pupil.page.goto(f"http://{name}/")
    assert response is not None and response.status == 403
    text = pupil.page.inner_text("main")
    assert "This site is blocked" in text and name in text
    assert CATEGORIES[REQUESTED.category].title in text
    [href] = [a.get_attribute("href") or "" for a in pupil.page.locator("a").all()]
    link = urlsplit(href)
    assert f"{link.scheme}://{link.netloc}" == school.link_base
    assert link.path == "/requests/new"
    assert parse_qs(link.query) == {"site": [name], "group": [PUPIL], "layer": ["dns"]}
    pupil.shot("lab-01-pupil-block-page")
    form_path = f"{link.path}?{link.query}"

    # 2. The teacher opens the link, signs in, and finds the form filled in: the site, the pupil's
    #    group ticked (only that one), and why it is blocked for them.
    teacher = Person(browser, school.base, "teacher")
    teacher.go(form_path)
    assert urlsplit(teacher.page.url).path == "/login"
    school.sign_in(teacher, form_path)
    page = teacher.page
    main = page.inner_text("main")
    assert page.locator("h2", has_text=name).is_visible()
    category = CATEGORIES[REQUESTED.category].title
    assert f"It is in a category blocked for {PUPIL}: {category}." in main
    assert page.is_checked(f"input[name=groups][value={PUPIL}]")
    assert page.locator("input[name=groups]:checked").count() == 1
    page.fill("textarea[name=reason]", REASON)
    page.check("input[name=until][value=date]")
    today = datetime.now(school.zone).date()
    page.fill("input[name=until_date]", today.isoformat())
    teacher.shot("lab-02-request-form")
    page.click("button:has-text('Send request')")
    assert "Waiting for IT review" in page.inner_text("h1")
    main = page.inner_text("main")
    assert REASON in main and "DNS (name lookup)" in main  # where the pupil was blocked, for IT
    request_path = urlsplit(page.url).path
    request_id = int(request_path.rsplit("/", 1)[1])
    teacher.shot("lab-03-request-sent")

    # 3. IT reviews the technical side; the site stays blocked until the DSL approves.
    it = Person(browser, school.base, "ittech")
    it.go(request_path)
    school.sign_in(it, request_path)
    assert REASON in it.page.inner_text("main")
    it.page.fill("form:has(input[value=approve]) textarea[name=note]", "One site, nothing to install")
    it.page.click("button:has-text('Approve: technical side is fine')")
    assert "Waiting for DSL approval" in it.page.inner_text("h1")
    assert school.verdict(name) == "block (category)"

    ends = datetime.now(UTC).replace(microsecond=0) + ALLOW_FOR
    school.end_at(request_id, ends)
    dsl = Person(browser, school.base, "dsl")
    dsl.go(request_path)
    school.sign_in(dsl, request_path)
    main = dsl.page.inner_text("main")
    assert "One site, nothing to install" in main
    assert f"blocked again from {local(ends, school.zone)}" in main
    dsl.shot("lab-04-dsl-approval")
    dsl.page.click("button:has-text('Approve: put it in force')")
    assert "Approved and in force" in dsl.page.inner_text("h1")
    dsl.shot("lab-05-approved")

    # 4. The pupil's namespace now gets the site's real addresses from DNS, and its page over HTTPS
    #    (the lab CA's certificate checked) from the site's own address, through the data plane: the
    #    DNS filter and the web filter each follow the policy in force, about once a second.
    assert school.verdict(name) == "allow (school rule)"
    for family in FAMILIES:
        until(
            lambda f=family: check.dig(ns, name, f, REQUESTED.address(f)).ok,
            f"DNS still blocks {name} (IPv{family}) after the approval",
        )
        until(
            lambda f=family: check.curl(INTERNET, ns, [name], "https", f, school.ca)[(name, "https", f)].ok,
            f"HTTPS to {name} (IPv{family}) does not load its page after the approval",
        )
    assert datetime.now(UTC) < ends, "the checks took longer than the allow lasted: make ALLOW_FOR longer"
    assert "Approved and in force" in teacher.go(request_path).inner_text("h1")

    # 5. Once the end has passed, the expiry timer's command removes the allow and puts the policy in
    #    force again: blocked at DNS, and a TLS connection straight to the site's address is refused.
    time.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 1)
    expired = appliance("policy", "expire", "--state-dir", str(school.lab.appliance_state_dir))
    assert expired.returncode == 0 and "expired rules removed" in expired.stdout, expired
    assert school.verdict(name) == "block (category)"

    def refused(family: int) -> bool:
        direct = rc.curl(ns, f"https://{name}/", name, REQUESTED.address(family), 443, "--cacert", school.ca)
        return direct.returncode in REFUSED

    for family in FAMILIES:
        until(
            lambda f=family: check.dig(ns, name, f, "").detail == school.block_answer(f),
            f"DNS did not block {name} (IPv{family}) again after the expiry",
        )
        until(
            lambda f=family: refused(f), f"TLS to {name}'s address (IPv{family}) not refused after the expiry"
        )
    served = school.served(name)
    assert all(refused(f) for f in FAMILIES)
    assert school.served(name) == served
    assert "Ended" in teacher.go(request_path).inner_text("h1")
    teacher.shot("lab-06-request-ended")
    audit = appliance("audit", "verify", "--state-dir", str(school.lab.appliance_state_dir))
    assert audit.returncode == 0, audit.stdout + audit.stderr

    assert blocked_page_problems(pupil) == []
    for person in (teacher, it, dsl):
        assert person.dialogs == [] and person.problems == [], (person.username, person.problems)
    for person in (pupil, teacher, it, dsl):
        person.context.close()


def test_a_padlocked_site_offers_no_request_and_its_form_says_why(
    staff: School,
    browser: Browser,
    pupil_browser: Browser,
) -> None:
    school = staff
    name = PADLOCKED.names[0]
    assert school.verdict(name) == "block (padlocked)"
    pupil = Person(pupil_browser, "", "pupil")
    response = pupil.page.goto(f"http://{name}/")
    assert response is not None and response.status == 403
    text = pupil.page.inner_text("main")
    assert "Internet Watch Foundation" in text
    assert pupil.page.locator("a").count() == 0
    assert "unblock" not in text.lower() and "request" not in text.lower()
    pupil.shot("lab-07-pupil-iwf-page")

    # What the block page would have linked to, had it offered a request: the form explains, in words
    # a teacher understands, that nobody in the school can unblock it, and offers nothing to send.
    form_path = "/requests/new?" + urlencode({"site": name, "group": PUPIL, "layer": "dns"})
    teacher = Person(browser, school.base, "teacher")
    teacher.go(form_path)
    school.sign_in(teacher, form_path)
    main = teacher.page.inner_text("main")
    assert "This site cannot be requested" in main
    assert "illegal content" in main
    assert "Nobody in the school can unblock it" in main
    assert teacher.page.locator("button:has-text('Send request')").count() == 0
    assert teacher.page.locator("textarea[name=reason]").count() == 0
    teacher.shot("lab-08-padlocked-form")
    assert blocked_page_problems(pupil) == []
    assert teacher.dialogs == [] and teacher.problems == [], teacher.problems
    for person in (pupil, teacher):
        person.context.close()
