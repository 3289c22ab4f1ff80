"""The checks of a compliance run: for each group, from its probe namespace, every test name over
DNS, HTTPS, HTTP/3 and HTTP, the circumvention routes, safe search and exam isolation, each judged
against what the group should get (appliance.compliance.expect).

Every check first asks the reference view (outside the filter) whether there is anything to test: a
name that does not resolve, or a site that does not answer over a protocol even without the filter,
cannot show whether the filter blocks it, so that check is "not tested", with the reason, and never
"pass"."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from appliance import dnsfilter
from appliance.compliance import probes
from appliance.compliance.expect import Expectation, PolicyView, expect
from appliance.compliance.testset import TestSet
from appliance.compliance.vantage import Site, Vantage
from appliance.config import Group
from appliance.lab import netns
from appliance.policy import timetable
from appliance.policy.model import CATEGORIES

WORKERS = 12
UNNAMED = "the test set (compliance.toml [categories]) names no site in this category to probe"
# HTTP/3 fetches at once of names a group should not reach (see GroupRun._names).
H3_BLOCKED_AT_ONCE = 16
RTYPES = {4: "A", 6: "AAAA"}
WEB = (("https", "HTTPS"), ("h3", "HTTP/3"), ("http", "HTTP"))
# The matrix's columns besides the categories.
AREAS = {
    "swgfl": "SWGfL Test Filtering",
    "educational": "Educational sites (over-blocking)",
    "circumvention": "Circumvention",
    "safe_search": "Safe search",
    "exam": "Exam isolation",
}


class Status(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_TESTED = "not tested"


@dataclass(frozen=True)
class Result:
    group: str
    area: str  # a category name or a key of AREAS: the column of the matrix
    check: str  # what was done, e.g. "HTTPS over IPv6"
    target: str  # the name or endpoint
    expected: str  # e.g. "blocked", "reachable", "no address"
    status: Status
    observed: str  # what the client saw; "" when not tested
    why: str  # the basis of the expectation and what the policy says, or why it was not tested

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        return cls(**{**d, "status": Status(d["status"])})


def area_title(area: str) -> str:
    return CATEGORIES[area].title if area in CATEGORIES else AREAS[area]


def _untried(resolver: str, target: str | None) -> str:
    """Why a route to a foreign resolver could not be tried."""
    if target is None:
        return "no test name is blocked for this group"
    return f"{resolver} does not resolve even outside the filter"


def _setting(key: str, value: bool) -> str:
    """A group's setting in the appliance config, as a reason's tail."""
    return f" (the group's setting {key} = {str(value).lower()})"


def _family(version: int) -> str:
    return f"IPv{version}"


class _Reference:
    """What each name resolves to and which of its sites answer, seen from outside the filter."""

    def __init__(self, site: Site, pool: ThreadPoolExecutor) -> None:
        self.site = site
        self.pool = pool
        self.wrap = site.reference.argv
        self.addresses: dict[tuple[str, int], tuple[str, ...]] = {}
        self.records: dict[str, probes.Answer] = {}
        self.web: dict[tuple[str, str, int], probes.Fetch] = {}

    def resolve(self, names: set[str], https_records: set[str]) -> None:
        jobs = {
            (n, f): self.pool.submit(probes.dig, self.wrap, n, RTYPES[f], self.site.reference.dig_server)
            for n in names
            for f in RTYPES
        }
        typed = {
            n: self.pool.submit(probes.dig, self.wrap, n, "HTTPS", self.site.reference.dig_server)
            for n in https_records
        }
        self.addresses = {k: j.result().addresses for k, j in jobs.items()}
        self.records = {n: j.result() for n, j in typed.items()}

    def address(self, name: str, family: int) -> str | None:
        found = self.addresses.get((name, family), ())
        return found[0] if found else None

    def fetch_all(self, names: set[str]) -> None:
        """Each site over each protocol and family, from the reference view, at its real address."""
        jobs: list[tuple[str, int, Future[dict[Any, probes.Fetch]]]] = []
        for family in RTYPES:
            known = sorted(n for n in names if self.address(n, family))
            for scheme, port in (("https", 443), ("http", 80)):
                resolve = {f"{n}:{port}": self.address(n, family) or "" for n in known}
                urls = [f"{scheme}://{n}/" for n in known]
                job = self.pool.submit(probes.curl, self.wrap, urls, family, self.site.cacert, resolve)
                jobs.append((scheme, family, job))
        specs = [(n, f, self.address(n, f)) for n in sorted(names) for f in RTYPES if self.address(n, f)]
        h3 = self.pool.submit(probes.h3, self.wrap, specs, self.site.cacert)
        for scheme, family, job in jobs:
            for url, fetch in job.result().items():
                self.web[(url.split("/")[2], scheme, family)] = fetch
        for (name, family, _), fetch in h3.result().items():
            self.web[(name, "h3", family)] = fetch

    def answers(self, name: str, protocol: str, family: int) -> probes.Fetch | None:
        return self.web.get((name, protocol, family))


@dataclass(frozen=True)
class NameCheck:
    """One name for one group: where its results go and what is expected."""

    name: str
    area: str
    expectation: Expectation | None


class GroupRun:
    """The checks of one group, from its vantage."""

    def __init__(
        self,
        site: Site,
        ref: _Reference,
        vantage: Vantage,
        group: Group,
        names: list[NameCheck],
        testset: TestSet,
        view: PolicyView,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.site = site
        self.ref = ref
        self.vantage = vantage
        self.group = group
        self.names = names
        self.testset = testset
        self.view = view
        self.pool = pool
        self.wrap: probes.Wrap = partial(netns.in_ns, vantage.netns)
        self.results: list[Result] = []

    def add(
        self, area: str, check: str, target: str, expected: str, status: Status, observed: str, why: str
    ) -> None:
        self.results.append(Result(self.group.name, area, check, target, expected, status, observed, why))

    def not_tested(self, area: str, check: str, target: str, expected: str, why: str) -> None:
        self.add(area, check, target, expected, Status.NOT_TESTED, "", why)

    def blocked_by_dns(self, answer: probes.Answer) -> bool | None:
        """True: a block answer; False: a real one; None: no usable answer."""
        if answer.status in ("NXDOMAIN", "REFUSED"):
            return True
        if answer.status != "NOERROR":
            return None
        return not answer.addresses or set(answer.addresses) <= self.site.block_addresses

    def blocked_by_web(self, fetch: probes.Fetch) -> bool:
        """No answer, the block page's address, or a redirect there (the web filter's answer to a
        blocked plain-HTTP request at the site's real address)."""
        blocks = self.site.block_addresses
        return not fetch.answered or fetch.remote_ip in blocks or fetch.redirect_host in blocks

    def judge(self, nc: NameCheck, check: str, blocked: bool | None, observed: str) -> None:
        e = nc.expectation
        assert e is not None
        expected = "blocked" if e.block else "reachable"
        why = f"{e.basis}; {e.policy}"
        if blocked is None:
            self.add(nc.area, check, nc.name, expected, Status.FAIL, observed, f"no usable answer; {why}")
        elif blocked == e.block:
            self.add(nc.area, check, nc.name, expected, Status.PASS, observed, why)
        else:
            kind = "under-blocked" if e.block else "over-blocked"
            self.add(nc.area, check, nc.name, expected, Status.FAIL, observed, f"{kind}: {why}")

    def run(self) -> list[Result]:
        # A category the standards require blocked, with no name to probe it by: the report must show
        # that it was not tested, not leave it out.
        required = self.testset.required_for(self.group.name)
        for category in (c for c in CATEGORIES if c in required and not self.testset.categories.get(c)):
            self.not_tested(category, "all probes", "-", "blocked", UNNAMED)
        testable = []
        for nc in self.names:
            if nc.expectation is None:
                self.not_tested(
                    nc.area,
                    "all probes",
                    nc.name,
                    "-",
                    "neither the policy nor a standard says what this group should get",
                )
            elif not any(self.ref.address(nc.name, f) for f in self.vantage.families):
                self.not_tested(
                    nc.area, "all probes", nc.name, "-", "the name does not resolve even outside the filter"
                )
            else:
                testable.append(nc)
        self._names(testable)
        self._circumvention(testable)
        if self.is_exam():
            self._exam_isolation()
        else:
            self._safe_search()
        return self.results

    def is_exam(self) -> bool:
        return (
            self.group.internet == "allowlist"
            or self.group.name == timetable.EXAMS
            or self.view.in_exam_mode(self.group.name)
        )

    def _names(self, names: list[NameCheck]) -> None:
        dns = {
            (nc.name, f): self.pool.submit(probes.dig, self.wrap, nc.name, RTYPES[f])
            for nc in names
            for f in self.vantage.families
            if self.ref.address(nc.name, f)
        }
        fetches: dict[tuple[str, str, int], Callable[[], probes.Fetch]] = {}
        direct: dict[tuple[str, str, int], Callable[[], probes.Fetch]] = {}
        for family in self.vantage.families:
            known = [nc for nc in names if self.ref.address(nc.name, family)]
            blocked = [nc for nc in known if nc.expectation and nc.expectation.block]
            for scheme, port in (("https", 443), ("http", 80)):
                by_name = self.pool.submit(
                    probes.curl,
                    self.wrap,
                    [f"{scheme}://{nc.name}/" for nc in known],
                    family,
                    self.site.cacert,
                )
                resolve = {f"{nc.name}:{port}": self.ref.address(nc.name, family) or "" for nc in blocked}
                by_ip = self.pool.submit(
                    probes.curl,
                    self.wrap,
                    [f"{scheme}://{nc.name}/" for nc in blocked],
                    family,
                    self.site.cacert,
                    resolve,
                )
                for nc in known:
                    fetches[(nc.name, scheme, family)] = partial(
                        lambda j, u: j.result()[u], by_name, f"{scheme}://{nc.name}/"
                    )
                for nc in blocked:
                    direct[(nc.name, scheme, family)] = partial(
                        lambda j, u: j.result()[u], by_ip, f"{scheme}://{nc.name}/"
                    )
        reachable, blocked_specs = [], []
        for nc in names:
            block = bool(nc.expectation and nc.expectation.block)
            for f in self.vantage.families:
                if self.ref.address(nc.name, f):
                    (blocked_specs if block else reachable).append((nc.name, f, None))
                    if block:
                        blocked_specs.append((nc.name, f, self.ref.address(nc.name, f)))
        # What should be blocked never reaches a server, so many can wait out their timeouts at once;
        # what should be reached goes a few at a time, so that no handshake times out for want of CPU.
        h3 = [
            self.pool.submit(probes.h3, self.wrap, reachable, self.site.cacert),
            self.pool.submit(probes.h3, self.wrap, blocked_specs, self.site.cacert, H3_BLOCKED_AT_ONCE),
        ]
        for job in h3:
            for (name, family, address), fetch in job.result().items():
                (direct if address else fetches)[(name, "h3", family)] = partial(lambda v: v, fetch)
        for nc in names:
            for family in self.vantage.families:
                if (nc.name, family) not in dns:
                    continue
                answer = dns[(nc.name, family)].result()
                self.judge(nc, f"DNS {RTYPES[family]}", self.blocked_by_dns(answer), answer.words())
                for protocol, title in WEB:
                    self._web(nc, protocol, family, title, fetches)
        for nc in names:
            for family in self.vantage.families:
                for protocol, title in WEB:
                    if (nc.name, protocol, family) in direct:
                        self._direct(nc, protocol, family, title, direct)

    def _web(
        self,
        nc: NameCheck,
        protocol: str,
        family: int,
        title: str,
        fetches: dict[tuple[str, str, int], Callable[[], probes.Fetch]],
    ) -> None:
        check = f"{title} over {_family(family)}"
        reference = self.ref.answers(nc.name, protocol, family)
        if reference is None or not reference.answered:
            seen = reference.words() if reference else "not tried"
            self.not_tested(
                nc.area,
                check,
                nc.name,
                "-",
                f"the site does not answer over {title} even outside the filter ({seen})",
            )
            return
        fetch = fetches[(nc.name, protocol, family)]()
        self.judge(nc, check, self.blocked_by_web(fetch), fetch.words())

    def _direct(
        self,
        nc: NameCheck,
        protocol: str,
        family: int,
        title: str,
        direct: dict[tuple[str, str, int], Callable[[], probes.Fetch]],
    ) -> None:
        """A client with the site's real address hard-coded: only the SNI (HTTPS), the QUIC Initial
        (HTTP/3) or the Host header (HTTP) can give it away."""
        address = self.ref.address(nc.name, family)
        what = {"https": "TLS SNI", "h3": "QUIC", "http": "HTTP Host"}[protocol]
        check = f"{title} to its real address {address} ({what})"
        reference = self.ref.answers(nc.name, protocol, family)
        if reference is None or not reference.answered:
            seen = reference.words() if reference else "not tried"
            self.not_tested(
                "circumvention",
                check,
                nc.name,
                "-",
                f"the site does not answer over {title} even outside the filter ({seen})",
            )
            return
        fetch = direct[(nc.name, protocol, family)]()
        circumvention = NameCheck(nc.name, "circumvention", nc.expectation)
        self.judge(circumvention, check, self.blocked_by_web(fetch), fetch.words())

    def _blocked_name(self) -> str | None:
        """A test name the group must not reach, to ask the circumvention routes for."""
        for nc in self.names:
            if nc.expectation and nc.expectation.block and self.ref.address(nc.name, 4):
                return nc.name
        return None

    def _circumvention(self, names: list[NameCheck]) -> None:
        target = self._blocked_name()
        area = "circumvention"
        for resolver in self.testset.resolvers:
            for family in self.vantage.families:
                address = self.ref.address(resolver, family)
                routes = {
                    f"DNS to {resolver} ({address}) on port 53": (f"@{address}",),
                    f"DNS over TLS to {resolver} ({address}) on port 853": (f"@{address}", "+tls"),
                }
                for check, server in routes.items():
                    if address is None or target is None:
                        self.not_tested(area, check, resolver, "blocked", _untried(resolver, target))
                        continue
                    ref_answer = probes.dig(self.ref.wrap, target, "A", server)
                    if not ref_answer.addresses:
                        self.not_tested(
                            area,
                            check,
                            resolver,
                            "blocked",
                            f"it does not answer this way even outside the filter ({ref_answer.words()})",
                        )
                        continue
                    answer = probes.dig(self.wrap, target, "A", server)
                    bypass = bool(answer.addresses) and not set(answer.addresses) <= self.site.block_addresses
                    self._circumvented(check, resolver, bypass, f"asked for {target}: {answer.words()}")
                self._doh(resolver, family, address, target)
        self._negative(
            "DoH canary (Firefox turns off its DNS over HTTPS)",
            [self.testset.doh_canary] if self.testset.doh_canary else [],
            "Firefox keeps its own DNS over HTTPS on, past the filter, while this name has an address"
            + _setting("block_doh_canary", self.group.block_doh_canary),
        )
        self._negative(
            "iCloud Private Relay",
            list(self.testset.private_relay),
            "Apple devices keep iCloud Private Relay on, past the filter, while this name has an address"
            + _setting("block_private_relay", self.group.block_private_relay),
        )
        for name in self.testset.ech:
            check = "ECH keys in the HTTPS record"
            reference = self.ref.records.get(name)
            if reference is None or not any("ech=" in r for r in reference.records):
                self.not_tested(
                    area, check, name, "no ech", "the name publishes no ECH keys even outside the filter"
                )
                continue
            answer = probes.dig(self.wrap, name, "HTTPS")
            ech = any("ech=" in r for r in answer.records)
            setting = _setting("strip_ech", self.group.strip_ech)
            self._circumvented(check, name, ech, answer.words()[:160], "ECH keys stripped", setting)

    def _circumvented(
        self,
        check: str,
        target: str,
        bypass: bool,
        observed: str,
        expected: str = "blocked",
        setting: str = "",
    ) -> None:
        """setting: the group's configuration behind this route, named in the report."""
        status = Status.FAIL if bypass else Status.PASS
        why = (
            "circumvention route open: this group can get past the filter"
            if bypass
            else "circumvention route closed"
        )
        self.add("circumvention", check, target, expected, status, observed, why + setting)

    def _doh(self, resolver: str, family: int, address: str | None, target: str | None) -> None:
        check = f"DNS over HTTPS to {resolver} ({address})"
        if address is None or target is None:
            self.not_tested("circumvention", check, resolver, "blocked", _untried(resolver, target))
            return
        url = probes.doh_url(resolver, target)
        extra = ("-H", "accept: application/dns-message")
        resolve = {f"{resolver}:443": address}
        reference = probes.curl(self.ref.wrap, [url], family, self.site.cacert, resolve, extra)[url]
        if reference.status != 200:
            self.not_tested(
                "circumvention",
                check,
                resolver,
                "blocked",
                f"the resolver does not answer DoH even outside the filter ({reference.words()})",
            )
            return
        fetch = probes.curl(self.wrap, [url], family, self.site.cacert, resolve, extra)[url]
        self._circumvented(check, resolver, fetch.status == 200, fetch.words())

    def _negative(self, check: str, names: list[str], open_why: str) -> None:
        """Names a client asks before it goes round the filter: they must get no address (NXDOMAIN or
        none). A block answer is an address too, so the client carries on (STANDARDS.md section 5).
        open_why: what an address lets clients do, and the group's setting behind it."""
        for name in names:
            if not self.ref.address(name, 4):
                self.not_tested(
                    "circumvention",
                    check,
                    name,
                    "no address",
                    "the name has no address even outside the filter, so a negative answer proves nothing",
                )
                continue
            answer = probes.dig(self.wrap, name, "A")
            if not answer.addresses:
                why, status = "circumvention route closed: the name has no address", Status.PASS
            else:
                why, status = f"circumvention route open: {open_why}", Status.FAIL
                if set(answer.addresses) <= self.site.block_addresses:
                    why += "; the policy blocks the name, and a block answer is an address too"
            self.add("circumvention", check, name, "no address", status, answer.words(), why)

    def _safe_search(self) -> None:
        level = self.group.safesearch
        features = dnsfilter.feature_names()
        for name in self.testset.safe_search:
            feature = next((f for f in dnsfilter.SAFE_TARGETS if name in features[f]), None)
            check = f"safe search ({level})"
            if feature is None:
                self.not_tested(
                    "safe_search", check, name, "-", "the DNS filter has no safe-search rewrite for this name"
                )
                continue
            target = None if level == "off" else dnsfilter.SAFE_TARGETS[feature][level]
            expected = f"rewritten to {target}" if target else "not rewritten"
            e = self.view.explain(name, self.group.name)
            if e is not None and e.action == "block":
                self.not_tested(
                    "safe_search",
                    check,
                    name,
                    expected,
                    f"the policy blocks {name} for this group, so there is nothing to rewrite",
                )
                continue
            real = self.ref.addresses.get((target or name, 4), ())
            if not real:
                self.not_tested(
                    "safe_search",
                    check,
                    name,
                    expected,
                    f"{target or name} does not resolve even outside the filter",
                )
                continue
            answer = probes.dig(self.wrap, name, "A")
            rewritten = (target in answer.cnames) if target else bool(answer.cnames)
            ok = bool(answer.addresses) and set(answer.addresses) <= set(real) and (rewritten == bool(target))
            why = f"the group's safe search setting is {level}"
            self.add(
                "safe_search", check, name, expected, Status.PASS if ok else Status.FAIL, answer.words(), why
            )

    def _exam_isolation(self) -> None:
        """Beyond names: an address with no name over HTTPS, and a port that is not the web's."""
        address = next(
            (self.ref.address(n, 4) for n in self.testset.resolvers if self.ref.address(n, 4)), None
        )
        checks = ["HTTPS to an address with no name (no SNI)", "TCP to port 22 (not the web)"]
        if address is None:
            for check in checks:
                self.not_tested(
                    "exam",
                    check,
                    "-",
                    "blocked",
                    "no address to try: no resolver resolves outside the filter",
                )
            return
        why = "exam groups reach nothing but their allowlist"
        url = f"https://{address}/"
        fetch = probes.curl(self.wrap, [url], 4, None, extra=("-k",))[url]
        self.add(
            "exam",
            checks[0],
            address,
            "blocked",
            Status.FAIL if fetch.answered else Status.PASS,
            fetch.words(),
            why,
        )
        seen = probes.tcp_connect(self.wrap, address, 22)
        # A reset may come from the server (it got through); only silence shows the packet was dropped.
        self.add(
            "exam",
            checks[1],
            address,
            "blocked",
            Status.PASS if seen == "timeout" else Status.FAIL,
            seen,
            why,
        )


def name_checks(testset: TestSet, view: PolicyView, group: Group, exam: bool) -> list[NameCheck]:
    required = testset.required_for(group.name)
    seen: dict[str, NameCheck] = {}
    ordered = [(n, c) for c, names in testset.categories.items() for n in names]
    ordered += [(n, testset.category_of(n) or "swgfl") for n in testset.swgfl]
    ordered += [(n, "exam" if exam else "educational") for n in testset.educational]
    for name, area in ordered:
        if name in seen:
            continue
        category = area if area in CATEGORIES else None
        e = expect(view, required, name in testset.educational, exam, group.name, name, category)
        seen[name] = NameCheck(name, area, e)
    return list(seen.values())


def run(site: Site, testset: TestSet, view: PolicyView, groups: list[Group]) -> list[Result]:
    results: list[Result] = []
    for group in groups:
        if group.name in site.unavailable:
            results.append(
                Result(
                    group.name,
                    "exam" if group.internet == "allowlist" else "circumvention",
                    "all probes",
                    "-",
                    "-",
                    Status.NOT_TESTED,
                    "",
                    site.unavailable[group.name],
                )
            )
    with ThreadPoolExecutor(WORKERS) as pool:
        ref = _Reference(site, pool)
        runs = []
        names: set[str] = set()
        for group in groups:
            vantage = site.vantages.get(group.name)
            if vantage is None:
                continue
            r = GroupRun(site, ref, vantage, group, [], testset, view, pool)
            r.names = name_checks(testset, view, group, r.is_exam())
            runs.append(r)
            names.update(nc.name for nc in r.names)
        extra = (
            set(testset.resolvers) | set(testset.private_relay) | set(testset.ech) | set(testset.safe_search)
        )
        extra |= {testset.doh_canary} - {""}
        targets = {t for by_level in dnsfilter.SAFE_TARGETS.values() for t in by_level.values()}
        ref.resolve(names | extra | targets, set(testset.ech))
        ref.fetch_all(names)
        with ThreadPoolExecutor(max(len(runs), 1)) as groups_pool:
            for result in groups_pool.map(GroupRun.run, runs):
                results.extend(result)
    return results


def addresses_of(site: Site) -> list[str]:
    """Every probe address of the run (their blocked attempts are the run's, not pupils')."""
    return sorted(
        {a for v in site.vantages.values() for a in v.addresses},
        key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)),
    )
