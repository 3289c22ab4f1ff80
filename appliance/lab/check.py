"""`appliance lab check`: what each group can reach, found with real clients run inside its namespace
(dig for DNS, DoT and DoH; curl for HTTPS and HTTP; the lab's aioquic client for HTTP/3).

An outcome is ok only when the client reached the real lab server for that name unchanged: the lab's own
address in DNS, the site's own page from the site's own address over the web. Anything else (a block
answer, a safe-search CNAME, the block page, a refused connection) is reported as what the client saw.
Beside it, when the gateway runs the appliance, is what the policy in force says (`policy explain`),
so the table shows both what should happen and what does."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from appliance.lab import gateway, netns
from appliance.lab.sites import Internet
from appliance.lab.topology import Client, Lab
from appliance.policy import generations
from appliance.policy.explain import Explainer, Explanation
from appliance.store import Store

FAMILIES = (4, 6)
WEB_PROBES = ("https", "h3", "http")
RESOLVER_PROBES = ("do53", "dot", "doh", "doh-get")
DIG = ["dig", "+time=2", "+tries=1", "+noall", "+comments", "+answer"]
# At most 6 connections at once, as a browser to one host: the block page refuses more from one device.
CURL = ["curl", "-sS", "--parallel", "--parallel-max", "6", "--connect-timeout", "5", "--max-time", "10"]
H3_TIMEOUT = 5.0  # seconds per name: a lab handshake takes well under one
# curl exit codes a probe meets, in words (see curl(1), EXIT CODES).
CURL_ERRORS = {
    6: "no address",
    7: "refused",
    28: "timeout",
    35: "TLS failed",
    52: "empty reply",
    56: "reset",
    60: "bad certificate",
}
# Probes wait on the network, not the CPU: enough at once that timeouts overlap.
WORKERS = 48
STATUS_RE = re.compile(r"status: ([A-Z]+)")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # "ok", an answer, or what went wrong, in a few words


@dataclass
class Report:
    client: Client
    # (name, probe, family) -> outcome; probes: dns, https, h3, http, do53, dot, doh, doh-get, id
    results: dict[tuple[str, str, int], Outcome] = field(default_factory=dict)

    def get(self, name: str, probe: str, family: int) -> Outcome:
        return self.results[(name, probe, family)]


Probe = Callable[[], dict[tuple[str, str, int], Outcome]]


def run(lab: Lab, internet: Internet, groups: list[str]) -> list[Report]:
    """Probes every check name from each group's namespace; groups and probes run in parallel."""
    reports = [Report(lab.client(g)) for g in groups]
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [(r, pool.submit(p)) for r in reports for p in _probes(lab, internet, r.client)]
        for report, future in futures:
            report.results.update(future.result())
    return reports


def _keyed(
    key: tuple[str, str, int], probe: Callable[..., Outcome], *args: object
) -> dict[tuple[str, str, int], Outcome]:
    return {key: probe(*args)}


def _probes(lab: Lab, internet: Internet, client: Client) -> list[Probe]:
    ns, ca = client.netns, str(lab.ca_cert)
    names = list(internet.check_web)
    probes: list[Probe] = [partial(h3, internet, ns, names, ca)]
    for family in FAMILIES:
        probes += [partial(curl, internet, ns, names, scheme, family, ca) for scheme in ("https", "http")]
        for name in names:
            want = internet.site(name).address(family)
            probes.append(partial(_keyed, (name, "dns", family), dig, ns, name, family, want))
        # Each resolver is asked for resolver_query's A record over every transport it offers; DoT and
        # DoH find the resolver by name, through the gateway, as a browser or phone would.
        want = internet.site(internet.resolver_query).ipv4
        for name in internet.check_resolvers:
            addr = internet.site(name).address(family)
            transports = {
                "do53": [f"@{addr}"],
                "dot": [f"@{name}", "+tls", f"+tls-ca={ca}"],
                "doh": [f"@{name}", "+https", f"+tls-ca={ca}"],
                "doh-get": [f"@{name}", "+https-get", f"+tls-ca={ca}"],
            }
            for probe, options in transports.items():
                key = (name, probe, family)
                probes.append(
                    partial(_keyed, key, dig, ns, internet.resolver_query, 4, want, options, family)
                )
            probes.append(partial(_keyed, (name, "id", family), identity, ns, addr, family))
    return probes


def dig(
    ns: str, name: str, family: int, want: str, server: list[str] | None = None, transport: int | None = None
) -> Outcome:
    """Asks for name's A (family 4) or AAAA record, through the namespace's resolver unless server
    (dig options such as @addr +tls) says otherwise; ok if the answer is exactly the lab's address."""
    rtype = "A" if family == 4 else "AAAA"
    argv = [*DIG, *(server or []), *([f"-{transport}"] if transport else []), name, rtype]
    proc = subprocess.run(netns.in_ns(ns, argv), capture_output=True, text=True, check=False)
    status = STATUS_RE.search(proc.stdout)
    if proc.returncode != 0 or status is None:
        return Outcome(False, "no reply")
    answers = [line.split() for line in proc.stdout.splitlines() if line and not line.startswith(";")]
    addresses = [a[4] for a in answers if len(a) > 4 and a[3] == rtype]
    cnames = [a[4].rstrip(".") for a in answers if len(a) > 4 and a[3] == "CNAME"]
    if status.group(1) != "NOERROR":
        return Outcome(False, status.group(1))
    if not addresses:
        return Outcome(False, "NODATA")
    detail = " ".join(addresses) + (f" via {cnames[-1]}" if cnames else "")
    return Outcome(addresses == [want] and not cnames, detail)


def identity(ns: str, addr: str, family: int) -> Outcome:
    """Who answers DNS sent to addr: `id.server` names the resolver (a gateway that redirects DNS
    answers for it itself)."""
    argv = ["dig", "+time=2", "+tries=1", "+short", f"-{family}", f"@{addr}", "id.server", "CH", "TXT"]
    proc = subprocess.run(netns.in_ns(ns, argv), capture_output=True, text=True, check=False)
    # On failure dig +short prints its ";;" complaints to stdout.
    text = " ".join(line.strip('"') for line in proc.stdout.splitlines() if not line.startswith(";"))
    return Outcome(proc.returncode == 0 and bool(text), text or "no answer")


def page(
    internet: Internet, name: str, protocol: str, status: int | None, body: str, content_type: str = ""
) -> Outcome:
    """ok if the lab's web server served this name's page over this protocol from the site's own
    address (a safe-search rewrite, say, is served from its target's)."""
    if status == 200 and body.startswith(f"lab site {name}\nprotocol {protocol}\n"):
        server = next((line[7:] for line in body.splitlines() if line.startswith("server ")), "")
        site = internet.site(name)
        if server in (site.ipv4, site.ipv6):
            return Outcome(True, "ok")
        return Outcome(False, f"served by {internet.name_at(server)}")
    if status == 200:
        return Outcome(False, "other page")
    if content_type.startswith("text/html"):  # the lab's own server only ever sends text/plain
        return Outcome(False, "block page")
    return Outcome(False, f"HTTP {status}")


def curl(
    internet: Internet, ns: str, names: list[str], scheme: str, family: int, ca: str
) -> dict[tuple[str, str, int], Outcome]:
    """One curl for all names (in parallel, so blocked names cost one timeout, not one each)."""
    with tempfile.TemporaryDirectory(prefix="lab-check-") as tmp:
        written = "%{url} %{exitcode} %{response_code} %{content_type}\\n"
        argv = [*CURL, f"-{family}", "--cacert", ca, "-w", written]
        for i, name in enumerate(names):
            argv += ["-o", f"{tmp}/{i}", f"{scheme}://{name}/"]
        proc = subprocess.run(netns.in_ns(ns, argv), capture_output=True, text=True, check=False)
        seen = {}
        for line in proc.stdout.splitlines():
            url, exitcode, code, content_type = (line + " ").split(" ", 3)
            seen[url] = (int(exitcode), int(code), content_type.strip())
        results = {}
        for i, name in enumerate(names):
            exitcode, code, content_type = seen.get(f"{scheme}://{name}/", (-1, 0, ""))
            if exitcode != 0:
                outcome = Outcome(False, CURL_ERRORS.get(exitcode, f"curl exit {exitcode}"))
            else:
                body = Path(f"{tmp}/{i}").read_text(errors="replace") if Path(f"{tmp}/{i}").exists() else ""
                outcome = page(internet, name, scheme, code, body, content_type)
            results[(name, scheme, family)] = outcome
    return results


def h3(internet: Internet, ns: str, names: list[str], ca: str) -> dict[tuple[str, str, int], Outcome]:
    argv = [sys.executable, "-m", "appliance.lab.h3client", "--cacert", ca, "--timeout", str(H3_TIMEOUT)]
    argv += names
    proc = subprocess.run(netns.in_ns(ns, argv), capture_output=True, text=True, check=False)
    results = {(n, "h3", f): Outcome(False, "client failed") for n in names for f in FAMILIES}
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        if r["error"]:
            outcome = Outcome(False, "timeout" if r["error"] == "timeout" else r["error"].split(":")[0])
        else:
            outcome = page(internet, r["name"], "h3", r["status"], r["body"])
        results[(r["name"], "h3", r["family"])] = outcome
    return results


def policy_verdicts(lab: Lab, groups: list[str], names: list[str]) -> dict[tuple[str, str], str]:
    """(group, name) -> what the policy in force says, in a few words (`policy explain`); empty when
    the gateway runs no appliance or no policy is in force."""
    if gateway.current_mode(lab) != "appliance" or not lab.appliance_state_dir.is_dir():
        return {}
    with Store(lab.appliance_state_dir) as store:
        live = generations.current(store)
        if live is None:
            return {}
        with Explainer(store, live, datetime.now(UTC)) as explainer:
            return {(g, n): verdict_words(explainer.explain(n, g)) for g in groups for n in names}


def verdict_words(explanation: Explanation) -> str:
    why = {
        "PADLOCKED": "padlocked",
        "CATEGORY": "category",
        "SCHOOL_ALLOW": "school rule",
        "SCHOOL_DENY": "school rule",
        "DEFAULT": "default",
    }
    return f"{explanation.action} ({why[explanation.reason]})"


def cell(report: Report, name: str, probe: str) -> str:
    """Both families' outcomes in one cell ("ok" or what went wrong): one word if they agree, else
    each with its family."""
    outcomes = {f: report.get(name, probe, f) for f in FAMILIES}
    words = {f: "ok" if o.ok else o.detail for f, o in outcomes.items()}
    if len(set(words.values())) == 1:
        return words[FAMILIES[0]]
    return " ".join(f"{f}:{w}" for f, w in words.items())


def render(
    reports: list[Report], internet: Internet, verdicts: dict[tuple[str, str], str] | None = None
) -> str:
    """A table per group; with verdicts (policy_verdicts), a column of what the policy says."""
    out = []
    verdicts = verdicts or {}
    for report in reports:
        c = report.client
        out.append(f"{c.group} (namespace {c.netns}, VLAN {c.vlan}, {c.address(4)} {c.address(6)})")
        rows = [["name", "category", "policy", "DNS A", "DNS AAAA", "HTTPS", "HTTP/3", "HTTP"]]
        for name in internet.check_web:
            rows.append(
                [
                    name,
                    internet.site(name).category or "-",
                    verdicts.get((c.group, name), "-"),
                    report.get(name, "dns", 4).detail,
                    report.get(name, "dns", 6).detail,
                    *(cell(report, name, p) for p in WEB_PROBES),
                ]
            )
        out += _table(rows)
        rows = [["resolver", "Do53", "DoT", "DoH POST", "DoH GET", "id.server (Do53)"]]
        for name in internet.check_resolvers:
            ids = {report.get(name, "id", f).detail for f in FAMILIES}
            rows.append([name, *(cell(report, name, p) for p in RESOLVER_PROBES), " / ".join(sorted(ids))])
        out += _table(rows)
        out.append("")
    out.append(
        "policy: what the policy in force says (appliance policy explain). Other cells: what real clients "
        "in the group's namespace saw.\n"
        "ok: the client reached the lab's own server for that name, unchanged (DNS cells show the answer); "
        "where IPv4 and IPv6 differ a cell shows both (4:... 6:...).\n"
        "192.0.2.1 / 2001:db8::1: the appliance's block answer; refused / reset / timeout: the gateway "
        "stopped the connection; served by NAME: a safe-search rewrite took the client to NAME."
    )
    return "\n".join(out)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
