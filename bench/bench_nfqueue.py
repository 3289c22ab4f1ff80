"""NFQUEUE throughput: the fast path's consumer beside the C floor, on this kernel, in one run.

BENCHMARKS.md (NFQUEUE): real ClientHellos (OpenSSL, through Python's ssl) and QUIC Initials (aioquic),
each the first packet of its own flow, are written to a pcap; tcprewrite sets the destination MAC to
the gateway's LAN interface; tcpreplay --topspeed sends them from a client namespace into a gateway
namespace that runs the appliance's own ruleset (appliance.dataplane: nftables, plus the iptables-nft
NFQUEUE fallback where the kernel lacks nft's queue). Queue 0 is served by either

    floor     bench/nfq_floor.c, built here with cc: accepts every packet at once, one verdict each
    fastpath  fastpath.nfqueue.Consumer: parses, classifies and decides every packet (half the names
              are on a block list of BLOCKLIST synthetic domains), as `appliance webfilter` does

and we count what the consumer handled plus the queue's own drop counters (read inside the namespace).
Rate = packets handled / (from the replay's start until the queue is empty). The two alternate for
ROUNDS rounds; each line is one round, and the summary compares the best round of each.

    sudo .venv/bin/python bench/bench_nfqueue.py [--packets N] [--rounds R]
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from appliance.dataplane import marks
from appliance.lab import netns
from fastpath.nfqueue import Consumer, Policy
from fastpath.table import DomainTable, TableBuilder
from fastpath.verdict import GroupPolicy

# Columns of /proc/net/netfilter/nfnetlink_queue: waiting now, dropped because the queue was full,
# dropped because the consumer's socket was, and the last packet id (packets queued so far).
QUEUE_COLUMNS = {"total": 2, "dropped": 5, "user_dropped": 6, "seen": 7}
FLOOR_SOURCE = Path(__file__).with_name("nfq_floor.c")
QUEUE_MAXLEN = 4096  # both consumers ask for the same queue length and socket buffer
RCVBUF = 8 << 20
BLOCKLIST = 100_000
POOL = 256  # distinct first flights of each kind, reused over many flows
CLIENT_NET, GATEWAY_LAN = "10.10.0.0/16", "10.10.0.1/16"
GATEWAY_WAN, SERVER_WAN = "203.0.113.1/24", "203.0.113.2/24"
SERVERS = "198.51.100.0/24"  # routed to the server namespace, which silently drops them

CONFIG = """
[appliance]
name = "bench"
state_dir = "{state}"
[wan]
interface = "wan0"
[dns]
forwarders = ["203.0.113.53"]
dnssec = false
[fastpath]
queue = 0
packets_per_flow = 6
[[lan]]
interface = "lan0"
group = "students"
subnets = ["{clients}"]
[groups.students]
fail = "closed"
"""


# --- packets --------------------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp(
    sport: int, dport: int, seq: int, flags: int, payload: bytes = b"", ack: int = 0
) -> tuple[int, bytes]:
    """(protocol, segment) with a zero checksum, which ip_packet fills in."""
    return 6, struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes) -> tuple[int, bytes]:
    return 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ip_packet(src: str, dst: str, l4: tuple[int, bytes], ttl: int = 64) -> bytes:
    """An IPv4 or IPv6 packet around a TCP or UDP payload, with correct checksums (conntrack checks
    them: a bad one makes the packet invalid, and the ruleset drops invalid packets)."""
    proto, body = l4
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, proto, len(body))
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", len(body), proto)
    at = 16 if proto == 6 else 6
    body = body[:at] + struct.pack("!H", checksum(pseudo + body)) + body[at + 2 :]
    if s.version == 6:
        return struct.pack("!IHBB", 6 << 28, len(body), proto, ttl) + s.packed + d.packed + body
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(body), 0, 0x4000, ttl, proto, 0) + s.packed + d.packed
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + body


def write_pcap(path: Path, frames: list[bytes]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet
        for frame in frames:
            f.write(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame)


def load_common():
    spec = importlib.util.spec_from_file_location("bench_common", Path(__file__).with_name("common.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workload(packets: int, blocked: list[str], allowed: list[str], kinds: str) -> list[bytes]:
    """One IPv4 packet per flow: TCP ClientHellos and QUIC Initials in turn (or only one kind), half of
    them for blocked names, each flow from its own client address and port."""
    common = load_common()
    rng = random.Random(7)
    names = [rng.choice(blocked if i % 2 else allowed) for i in range(POOL)]
    hellos = [common.client_hello(n) for n in names]
    initials = [common.quic_initial(n) for n in names]
    clients = list(ipaddress.ip_network(CLIENT_NET).hosts())[256:]
    servers = list(ipaddress.ip_network(SERVERS).hosts())
    out = []
    for i in range(packets):
        src, dst = str(clients[i % len(clients)]), str(servers[i % len(servers)])
        sport = 1024 + i // len(clients)
        if kinds == "quic" or (kinds == "both" and i % 2):
            l4 = udp(sport, 443, initials[(i // 2) % POOL])
        else:
            l4 = tcp(sport, 443, 1000 + i, 0x18, hellos[(i // 2) % POOL], ack=1)
        out.append(ip_packet(src, dst, l4))
    return out


# --- namespaces -----------------------------------------------------------------------------------


class Bench:
    """A client, a gateway (the appliance's ruleset) and a server namespace, made afresh per run so
    that every run starts with an empty conntrack table."""

    def __init__(self, tag: str, work: Path) -> None:
        prefix = f"nfqb{os.getpid()}-{tag}"
        self.gw, self.cli, self.srv = f"{prefix}-gw", f"{prefix}-cli", f"{prefix}-srv"
        for ns in (self.gw, self.cli, self.srv):
            netns.add(ns)
        netns.link(self.gw, "lan0", self.cli, "eth0")
        netns.link(self.gw, "wan0", self.srv, "eth0")
        for ns, ifname, addr in (
            (self.gw, "lan0", GATEWAY_LAN),
            (self.gw, "wan0", GATEWAY_WAN),
            (self.cli, "eth0", "10.10.0.2/16"),
            (self.srv, "eth0", SERVER_WAN),
        ):
            netns.add_address(ns, ifname, addr)
        netns.add_route(self.gw, SERVERS, SERVER_WAN.split("/")[0])
        self.gw_mac = mac(self.gw, "lan0")
        self.cli_mac = mac(self.cli, "eth0")
        config = work / "appliance.toml"
        config.write_text(CONFIG.format(state=work / "state", clients=CLIENT_NET))
        apply = "import sys; from appliance import config; from appliance.dataplane.run import DataPlane; "
        apply += "DataPlane(config.load(sys.argv[1])).apply()"
        netns.run(netns.in_ns(self.gw, [sys.executable, "-c", apply, str(config)]))

    def destroy(self) -> None:
        for ns in (self.gw, self.cli, self.srv):
            netns.delete(ns)


def mac(ns: str, ifname: str) -> str:
    return json.loads(netns.run(["ip", "-n", ns, "-j", "link", "show", ifname]))[0]["address"]


def measure(kind: str, pcap: Path, floor: Path, table: Path, key: bytes, work: Path) -> dict[str, float]:
    bench = Bench(kind, work)
    consumer = None
    try:
        frames = work / f"replay-{kind}.pcap"
        rewrite = [f"--enet-dmac={bench.gw_mac}", f"--enet-smac={bench.cli_mac}"]
        netns.run(["tcprewrite", *rewrite, f"--infile={pcap}", f"--outfile={frames}"])
        if kind == "floor":
            argv = [str(floor), "0", str(QUEUE_MAXLEN), str(RCVBUF)]
        else:
            argv = [sys.executable, __file__, "--serve", str(table), key.hex()]
        # `ip netns exec` becomes the consumer, so its pid is the consumer's.
        consumer = subprocess.Popen(netns.in_ns(bench.gw, argv), stdout=subprocess.PIPE, text=True)
        assert consumer.stdout is not None
        if consumer.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} consumer did not start")
        # The gateway's queue counters, as the consumer (inside the namespace) sees them.
        proc = Path(f"/proc/{consumer.pid}/net/netfilter/nfnetlink_queue")
        cpu_before = cpu_seconds(consumer.pid)
        start = time.perf_counter()
        netns.run(netns.in_ns(bench.cli, ["tcpreplay", "--topspeed", "-q", "-i", "eth0", str(frames)]))
        # The replay is over; what is still queued is the consumer's backlog.
        while queue_counters(proc)["total"]:
            time.sleep(0.001)
        elapsed = time.perf_counter() - start
        counters = queue_counters(proc)
        user, system = (
            after - before for after, before in zip(cpu_seconds(consumer.pid), cpu_before, strict=True)
        )
        consumer.send_signal(signal.SIGTERM)
        out, _ = consumer.communicate(timeout=10)
        handled = int(out.split()[-1])
        return {
            "handled": handled,
            "seconds": elapsed,
            "pps": handled / elapsed,
            "queue_dropped": counters["dropped"],
            "user_dropped": counters["user_dropped"],
            "queued": counters["seen"],
            "user_us": user / handled * 1e6,
            "system_us": system / handled * 1e6,
        }
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        bench.destroy()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """A process's user and system CPU time so far (all its threads; the kernel's verdict work, such
    as forwarding or refusing the packet, runs in the consumer's system time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def queue_counters(proc: Path) -> dict[str, int]:
    for line in proc.read_text().splitlines():
        f = line.split()
        if f and f[0] == "0":
            return {key: int(f[column]) for key, column in QUEUE_COLUMNS.items()}
    return dict.fromkeys(QUEUE_COLUMNS, 0)


# --- the fast path's consumer, run inside the gateway namespace -----------------------------------


def serve(table_path: str, key_hex: str) -> None:
    table = DomainTable.open(table_path, bytes.fromhex(key_hex))
    consumer = Consumer(
        0,
        [(1, True)],
        6,
        group_mask=marks.GROUP_MASK,
        allow_bit=marks.VERDICT_ALLOW,
        block_bit=marks.VERDICT_BLOCK,
    )
    consumer.set_policy(Policy(table, {1: GroupPolicy(blocked=1)}))
    consumer.bind(QUEUE_MAXLEN, RCVBUF)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    consumer.stop()
    thread.join()
    counts = {k: getattr(consumer, k) for k in ("passed", "dropped", "flows_allowed", "flows_blocked")}
    print(json.dumps(counts), file=sys.stderr)
    print(f"handled {consumer.packets}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--kinds", choices=("both", "tls", "quic"), default="both", help="first packets replayed"
    )
    parser.add_argument("--serve", nargs=2, metavar=("TABLE", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    for tool in ("tcpreplay", "tcprewrite", "cc"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed")
    common = load_common()
    with tempfile.TemporaryDirectory(prefix="bench-nfqueue-") as tmp:
        work = Path(tmp)
        floor = work / "nfq_floor"
        subprocess.run(["cc", "-O2", "-o", str(floor), str(FLOOR_SOURCE), "-lnetfilter_queue"], check=True)
        domains = common.synthetic_domains(BLOCKLIST + POOL)
        blocked, allowed = domains[:BLOCKLIST], domains[BLOCKLIST:]
        key = os.urandom(16)
        builder = TableBuilder(key)
        for name in blocked:
            builder.add(name, 1)
        table = work / "table.bin"
        builder.build(table)
        pcap = work / "workload.pcap"
        packets = workload(args.packets, blocked, allowed, args.kinds)
        write_pcap(pcap, [b"\0" * 12 + b"\x08\x00" + p for p in packets])
        what = {
            "both": "TCP ClientHellos and QUIC Initials",
            "tls": "TCP ClientHellos",
            "quic": "QUIC Initials",
        }
        print(f"kernel {os.uname().release}; {args.packets} packets a run: {what[args.kinds]},")
        print(f"one per flow, half for names on a {BLOCKLIST}-name block list; queue length {QUEUE_MAXLEN}")
        best: dict[str, dict[str, float]] = {}
        runs: dict[str, list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for kind in ("floor", "fastpath"):
                m = measure(kind, pcap, floor, table, key, work)
                print(
                    f"round {r + 1} {kind:8} handled {m['handled']:>7} in {m['seconds']:.2f}s = "
                    f"{m['pps'] / 1000:6.1f}k pkt/s; queue dropped {m['queue_dropped']}, "
                    f"user dropped {m['user_dropped']}; consumer CPU per packet {m['user_us']:.2f} us user, "
                    f"{m['system_us']:.2f} us system",
                    flush=True,
                )
                runs.setdefault(kind, []).append(m)
                if kind not in best or m["pps"] > best[kind]["pps"]:
                    best[kind] = m
        ratio = best["fastpath"]["pps"] / best["floor"]["pps"]
        print(
            f"best: floor {best['floor']['pps'] / 1000:.1f}k pkt/s, fast path "
            f"{best['fastpath']['pps'] / 1000:.1f}k pkt/s = {ratio:.2f}x the floor (target 0.8x)"
        )
        cpu = {k: min(r["user_us"] + r["system_us"] for r in runs[k]) for k in runs}
        print(
            f"least consumer CPU per packet: floor {cpu['floor']:.2f} us, fast path {cpu['fastpath']:.2f} us "
            f"= {cpu['fastpath'] / cpu['floor']:.2f}x"
        )


if __name__ == "__main__":
    main()
