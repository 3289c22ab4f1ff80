"""DNS filtering side by side (BENCHMARKS.md): the appliance's DNS filter, unbound (`local-zone ...
always_nxdomain`) and dnsmasq (`address=/d/`), each loaded with the same N synthetic blocked domains
(bench.common's seeded generator) and run in its own network namespace on 127.0.0.1:53, one server
thread each, loaded with `dnsperf -c 4`.

For each: the time from start to the first answer, qps for blocked names and for allowed cached
names, the server's CPU time per answered query (utime+stime of /proc/PID/stat over the run, divided
by the queries completed), and its resident memory afterwards.

Allowed names are 1000 names the list does not hold. unbound answers them from local data; the filter
forwards them to its resolver, an unbound at 127.0.0.1:5353 in its namespace holding the same local
data (a warm cache); dnsmasq forwards to the same kind of unbound and answers from its own cache. The
resolver behind the filter and dnsmasq is reported on its own line: its CPU is part of what an
allowed query costs.

Latency (issue 3: the filter's added latency over unbound alone, p50 and p99): one namespace holds an
unbound with the blocklist and the allowed names on 127.0.0.1:5353, and the filter on 127.0.0.1:53
with that unbound as its resolver. The same blocked and allowed queries go to each, one at a time
(`dnsperf -c 1 -q 1`, which times every answer), in alternating rounds so that both see the same
disturbance from the machine's other tenants; the allowed names are asked once beforehand, so the
filter answers them from its cache as unbound does from its local data.

Targets (issue 3): at least unbound's qps, and no more memory than dnsmasq.

    .venv/bin/python bench/bench_dns.py [--domains 1000000] [--seconds 3] [--latency-queries 8000]
                                        [--work DIR]

BENCHMARKS.md runs dnsperf for 8 seconds (--seconds 8); the default is shorter while the machine is
shared. The generated lists and the filter's compiled policy are kept in --work and reused (made
again when the list store's file format changes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance import audit  # noqa: E402
from appliance.lists import catalogue, importer  # noqa: E402
from appliance.lists.entries import MAGIC as LIST_FORMAT  # noqa: E402
from appliance.policy import generations, inputs  # noqa: E402
from appliance.store import Store  # noqa: E402
from bench.common import COMMON_HOSTS, synthetic_domains  # noqa: E402

SEED = 1
ALLOWED_ZONE = "allowed-school.org"
ALLOWED = 1000
BLOCKED_QUERIES = 100_000
RESOLVER_PORT = 5353
CLIENTS = 4
MiB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")
# Sends a query for a blocked name to a port every 5 ms until one is answered; prints when
# (CLOCK_MONOTONIC is shared by every namespace, so the parent's start time compares with it).
PROBE = """
import socket, struct, sys, time
name, port = sys.argv[1], int(sys.argv[2])
query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"".join(
    bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0\\0\\1\\0\\1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.005)
while True:
    s.sendto(query, ("127.0.0.1", port))
    try:
        if s.recv(512)[:2] == query[:2]:
            break
    except OSError:
        time.sleep(0.005)
print(time.monotonic())
"""
# Asks each name once and prints what came back: "block" (NXDOMAIN, or the filter's block-page
# address), an address, or the rcode.
CHECK = """
import sys, dns.message, dns.query, dns.rcode
for name in sys.argv[1:]:
    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", timeout=2)
    addresses = [rd.address for rrset in reply.answer for rd in rrset if rrset.rdtype == 1]
    block = reply.rcode() == dns.rcode.NXDOMAIN or addresses == ["192.0.2.1"]
    print("block" if block else addresses[0] if addresses else dns.rcode.to_text(reply.rcode()))
"""
SAMPLE = 25
LATENCY_ROUNDS = 8


def sh(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


# --- the same inputs for everyone ----------------------------------------------------------------


def prepare(work: Path, n: int) -> list[str]:
    """Writes the blocklist in each server's form and the dnsperf query files; compiles the filter's
    policy from the list. Returns the blocked names (kept across runs with the same n)."""
    stamp = work / "prepared.json"
    made = {"domains": n, "seed": SEED, "list_format": LIST_FORMAT.decode()}
    if stamp.exists() and json.loads(stamp.read_text()) == made:
        return (work / "blocked.txt").read_text().split()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    names = synthetic_domains(n, seed=SEED)
    (work / "blocked.txt").write_text("\n".join(names) + "\n")
    (work / "unbound-blocklist.conf").write_text(
        "".join(f'local-zone: "{d}." always_nxdomain\n' for d in names)
    )
    (work / "dnsmasq-blocklist.conf").write_text("".join(f"address=/{d}/\n" for d in names))
    rng = random.Random(SEED + 1)
    # Half listed names as they are, half hosts under them: each server must match suffixes.
    picks = [rng.choice(names) for _ in range(BLOCKED_QUERIES)]
    queries = [p if i % 2 else f"{rng.choice(COMMON_HOSTS)}.{p}" for i, p in enumerate(picks)]
    (work / "blocked.queries").write_text("".join(f"{q} A\n" for q in queries))
    (work / "allowed.queries").write_text("".join(f"h{i}.{ALLOWED_ZONE} A\n" for i in range(ALLOWED)))
    print(f"generated {n} domains and query files in {time.monotonic() - t0:.1f} s", flush=True)
    t0 = time.monotonic()
    with Store(work / "state") as store:
        with audit.change(store, "bench", "setup") as ch:
            catalogue.add(ch, "bench", "plain", "gambling", str(work / "blocked.txt"), None)
        result = importer.update(store, "bench", "bench", "setup")
        if result.error:
            raise SystemExit(f"import failed: {result.error}")
        generations.apply(store, inputs.from_store(store, datetime.now(UTC)), "bench", "setup")
    print(f"compiled the filter's policy in {time.monotonic() - t0:.1f} s", flush=True)
    stamp.write_text(json.dumps(made))
    return names


def unbound_conf(work: Path, port: int, blocklist: bool) -> Path:
    """unbound answering the allowed names from local data; with the blocklist too for the peer."""
    lines = [
        "server:",
        f"  interface: 127.0.0.1@{port}",
        "  do-ip6: no",
        '  chroot: ""',
        '  username: ""',
        f'  directory: "{work}"',
        '  pidfile: ""',
        "  use-syslog: no",
        '  logfile: ""',
        "  do-daemonize: no",
        "  num-threads: 1",
        '  module-config: "iterator"',
        "  access-control: 127.0.0.0/8 allow",
        f'  local-zone: "{ALLOWED_ZONE}." static',
        *(f'  local-data: "h{i}.{ALLOWED_ZONE}. 300 IN A 198.51.100.{i % 250 + 1}"' for i in range(ALLOWED)),
    ]
    if blocklist:
        lines.append(f'  include: "{work / "unbound-blocklist.conf"}"')
    lines += ["remote-control:", "  control-enable: no", ""]
    path = work / (f"unbound-{port}.conf")
    path.write_text("\n".join(lines))
    return path


def filter_conf(work: Path) -> Path:
    path = work / "appliance.toml"
    path.write_text(
        f"""[appliance]
name = "bench"
state_dir = "{work / "state"}"

[wan]
interface = "wan0"

[dns]
listen_port = 53
upstream = "127.0.0.1:{RESOLVER_PORT}"

[[lan]]
interface = "lo"
group = "students"
subnets = ["127.0.0.0/8", "::1/128"]

[groups.students]
"""
    )
    return path


# --- running one server --------------------------------------------------------------------------


@dataclass
class Run:
    qps: float
    completed: int
    lost: int
    cpu_us: float  # per completed query
    helper_cpu_us: float | None  # the resolver behind it, per completed query


@dataclass
class Result:
    name: str
    load_s: float = 0.0
    rss: int = 0
    helper_rss: int | None = None
    runs: dict[str, Run] = field(default_factory=dict)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of the whole line


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Namespace:
    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[bytes]] = []
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def start(self, *argv: str, log: Path) -> subprocess.Popen[bytes]:
        # `ip netns exec` execs the command, so the pid is the server's own.
        proc = subprocess.Popen(self.argv(*argv), stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


def wait_port(ns: Namespace, port: int) -> None:
    deadline = time.monotonic() + 60
    while not sh(*ns.argv("ss", "-Hlun", f"sport = :{port}")).stdout.strip():
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing listens on {port} in {ns.name}")
        time.sleep(0.05)


def dnsperf(ns: Namespace, queries: Path, seconds: float) -> tuple[float, int, int]:
    out = sh(
        *ns.argv("dnsperf", "-s", "127.0.0.1", "-d", str(queries), "-c", str(CLIENTS), "-l", str(seconds))
    )
    text = out.stdout
    completed = int(re.search(r"Queries completed:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    lost = int(re.search(r"Queries lost:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    return qps, completed, lost


def first_answer(
    ns: Namespace, server: subprocess.Popen[bytes], log: Path, probe_name: str, port: int
) -> float:
    """When the server on port first answered a query for a blocked name (CLOCK_MONOTONIC)."""
    probe = subprocess.run(
        ns.argv(sys.executable, "-c", PROBE, probe_name, str(port)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if server.poll() is not None:
        raise SystemExit(f"{log.stem} exited: {log.read_text()[-2000:]}")
    return float(probe.stdout)


def measure(
    name: str, argv: list[str], work: Path, seconds: float, probe_name: str, with_resolver: bool
) -> Result:
    result = Result(name)
    ns = Namespace(f"bench-dns-{name}-{os.getpid()}")
    try:
        helper = None
        if with_resolver:
            helper = ns.start(
                "unbound",
                "-d",
                "-c",
                str(unbound_conf(work, RESOLVER_PORT, False)),
                log=work / "resolver.log",
            )
            wait_port(ns, RESOLVER_PORT)
        started = time.monotonic()
        server = ns.start(*argv, log=work / f"{name}.log")
        result.load_s = first_answer(ns, server, work / f"{name}.log", probe_name, 53) - started
        # A short unmeasured pass, so that caches are as warm for dnsmasq as for the others.
        dnsperf(ns, work / "allowed.queries", 1)
        for kind in ("blocked", "allowed"):
            before = cpu_ticks(server.pid), cpu_ticks(helper.pid) if helper else 0
            qps, completed, lost = dnsperf(ns, work / f"{kind}.queries", seconds)
            after = cpu_ticks(server.pid), cpu_ticks(helper.pid) if helper else 0
            per = 1e6 / TICK / max(completed, 1)
            result.runs[kind] = Run(
                qps,
                completed,
                lost,
                (after[0] - before[0]) * per,
                (after[1] - before[1]) * per if helper else None,
            )
        result.rss = rss(server.pid)
        check_answers(ns, work, name)
        result.helper_rss = rss(helper.pid) if helper else None
    finally:
        ns.close()
    return result


def check_answers(ns: Namespace, work: Path, name: str) -> None:
    """The qps mean nothing unless the answers are right: a sample of each query file, asked once."""
    blocked = (work / "blocked.queries").read_text().split()[0 : 2 * SAMPLE : 2]
    allowed = (work / "allowed.queries").read_text().split()[0 : 2 * SAMPLE : 2]
    out = sh(*ns.argv(sys.executable, "-c", CHECK, *blocked, *allowed)).stdout.split()
    wrong = [(q, a) for q, a in zip(blocked, out[:SAMPLE], strict=True) if a != "block"]
    wrong += [(q, a) for q, a in zip(allowed, out[SAMPLE:], strict=True) if not a.startswith("198.51.100.")]
    if wrong:
        raise SystemExit(f"{name} answered wrongly: {wrong[:5]}")


# --- latency -------------------------------------------------------------------------------------

Latencies = dict[tuple[str, str], list[float]]  # (server, kind) -> µs per answer


def answer_times(ns: Namespace, queries: Path, port: int, expect: str | None) -> list[float]:
    """Answer times in µs of queries sent one at a time (dnsperf -c 1 -q 1 -v), each answered with
    rcode expect unless that is None."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-c", "1", "-q", "1"]
    text = sh(*ns.argv(*argv, "-n", "1", "-t", "1", "-v")).stdout
    answers = re.findall(r"^> (\S+) \S+ \S+ (\d+\.\d+)$", text, re.MULTILINE)
    lost = int(re.search(r"Queries lost:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    wrong = [rcode for rcode, _ in answers if expect and rcode != expect]
    if lost or wrong:
        raise SystemExit(f"{queries.name} on port {port}: {lost} lost, {len(wrong)} answered {wrong[:1]}")
    return [float(seconds) * 1e6 for _, seconds in answers]


def latency(work: Path, filter_argv: list[str], probe_name: str, count: int) -> Latencies:
    """unbound alone (the blocklist and the allowed names, on RESOLVER_PORT) and the filter in front
    of that same unbound (on 53), asked the same queries one at a time: count of each kind each."""
    per_round = count // LATENCY_ROUNDS
    blocked = (work / "blocked.queries").read_text().splitlines(keepends=True)[:per_round]
    allowed = (work / "allowed.queries").read_text().splitlines(keepends=True)
    files = {"blocked": work / "latency-blocked.queries", "allowed": work / "latency-allowed.queries"}
    files["blocked"].write_text("".join(blocked))
    files["allowed"].write_text("".join(allowed[i % len(allowed)] for i in range(per_round)))
    servers = {"unbound": RESOLVER_PORT, "dnsfilter": 53}
    times: Latencies = {(server, kind): [] for server in servers for kind in files}
    ns = Namespace(f"bench-dns-latency-{os.getpid()}")
    try:
        log = work / "latency-unbound.log"
        resolver = ns.start("unbound", "-d", "-c", str(unbound_conf(work, RESOLVER_PORT, True)), log=log)
        first_answer(ns, resolver, log, probe_name, RESOLVER_PORT)
        log = work / "latency-dnsfilter.log"
        first_answer(ns, ns.start(*filter_argv, log=log), log, probe_name, 53)
        check_answers(ns, work, "dnsfilter")
        answer_times(ns, files["allowed"], 53, None)  # the filter caches them, as unbound holds them
        for round_ in range(LATENCY_ROUNDS):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for kind, path in files.items():
                for server in order:
                    expect = "NOERROR" if kind == "allowed" else "NXDOMAIN" if server == "unbound" else None
                    times[server, kind] += answer_times(ns, path, servers[server], expect)
    finally:
        ns.close()
    return times


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def report_latency(times: Latencies) -> None:
    count = len(times["unbound", "blocked"])
    print(f"\nlatency, one query at a time (dnsperf -c 1 -q 1), {count} of each kind per server: p50 / p99")
    print(f"{'':<18}{'unbound alone':<18}{'filter in front of it':<24}added by the filter")
    for kind, label in (("blocked", "blocked"), ("allowed", "allowed (cached)")):
        theirs = [percentile(times["unbound", kind], p) for p in (50, 99)]
        ours = [percentile(times["dnsfilter", kind], p) for p in (50, 99)]
        added = [a - b for a, b in zip(ours, theirs, strict=True)]
        cells = [f"{theirs[0]:.0f} / {theirs[1]:.0f} µs", f"{ours[0]:.0f} / {ours[1]:.0f} µs"]
        print(f"{label:<18}{cells[0]:<18}{cells[1]:<24}{added[0]:+.0f} / {added[1]:+.0f} µs")


# --- the report ----------------------------------------------------------------------------------


def report(results: list[Result]) -> None:
    kinds = ("blocked", "allowed")
    heads = [f"{k}: qps, CPU/query" for k in kinds]
    print(f"\n{'server':<16}{'load':>8}{'RSS':>10}   {heads[0]:<32}{heads[1]:<32}")
    for r in results:
        cells = [
            f"{r.runs[k].qps / 1000:6.1f}k, {r.runs[k].cpu_us:5.1f} µs (lost {r.runs[k].lost})" for k in kinds
        ]
        print(f"{r.name:<16}{r.load_s:>7.2f}s{r.rss / MiB:>6.0f} MiB   {cells[0]:<32}{cells[1]:<32}")
        if r.helper_rss is not None:
            extra = [f"        +{r.runs[k].helper_cpu_us:5.1f} µs" for k in kinds]
            print(
                f"{'  its resolver':<16}{'':>8}{r.helper_rss / MiB:>6.0f} MiB   {extra[0]:<32}{extra[1]:<32}"
            )
    by = {r.name: r for r in results}
    ours, unbound, dnsmasq = by["dnsfilter"], by["unbound"], by["dnsmasq"]
    print()
    for kind in kinds:
        print(
            f"{kind}: dnsfilter qps = {ours.runs[kind].qps / unbound.runs[kind].qps:.2f} x unbound's, "
            f"{ours.runs[kind].qps / dnsmasq.runs[kind].qps:.2f} x dnsmasq's; CPU per query "
            f"{ours.runs[kind].cpu_us / unbound.runs[kind].cpu_us:.2f} x unbound's"
        )
    ratios = f"{ours.rss / dnsmasq.rss:.2f} x dnsmasq's, {ours.rss / unbound.rss:.2f} x unbound's"
    print(f"memory: dnsfilter RSS = {ratios}")
    print("start to first answer: " + ", ".join(f"{r.name} {r.load_s:.2f} s" for r in results))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", type=int, default=1_000_000, help="blocked domains (default 1M)")
    parser.add_argument("--seconds", type=float, default=3, help="dnsperf -l per run (BENCHMARKS.md: 8)")
    parser.add_argument(
        "--latency-queries", type=int, default=8000, help="of each kind per server, one at a time (0: none)"
    )
    parser.add_argument("--work", type=Path, help="where inputs are kept between runs")
    args = parser.parse_args()
    work = (args.work or Path(f"/tmp/bench_dns.{args.domains}")).resolve()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    names = prepare(work, args.domains)
    probe = names[len(names) // 2]
    ours = [sys.executable, "-m", "appliance.cli", "dnsfilter", "--config", str(filter_conf(work))]
    servers = [
        ("dnsfilter", ours, True),
        ("unbound", ["unbound", "-d", "-c", str(unbound_conf(work, 53, True))], False),
        ("dnsmasq", ["dnsmasq", "-k", f"--conf-file={work / 'dnsmasq-blocklist.conf'}",
                     "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
                     "--pid-file=", "--user=root", f"--server=127.0.0.1#{RESOLVER_PORT}",
                     "--cache-size=10000", "--log-facility=-"], True),
    ]  # fmt: skip
    results = []
    for name, argv, with_resolver in servers:
        print(f"measuring {name} ...", flush=True)
        results.append(measure(name, argv, work, args.seconds, probe, with_resolver))
    times = None
    if args.latency_queries:
        print("measuring latency ...", flush=True)
        times = latency(work, ours, probe, args.latency_queries)
    print(f"\n{args.domains} blocked domains, dnsperf -c {CLIENTS} -l {args.seconds:g}")
    report(results)
    if times:
        report_latency(times)


if __name__ == "__main__":
    main()
