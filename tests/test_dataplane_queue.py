"""The hand-off to the fast path, with a real NFQUEUE consumer in the gateway namespace.

The consumer here is a minimal one written against the nfnetlink_queue protocol (run this file as a
script to start it). It keeps to the contract the real one must keep (appliance/dataplane/marks.py):
it reads the group from the packet mark and decides a flow by adding VERDICT_ALLOW or VERDICT_BLOCK
to the packet mark in its verdict. Its policy is by destination address: flows to ALLOWED are
allowed and flows to BLOCKED blocked, on their first data packet; the rest are accepted undecided.

    students (lan_st, filtered) --\\
                                   gateway (appliance run + this consumer) -- wan0 -- web servers
    exams    (lan_ex, allowlist) --/
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from netns import Netns, netns_lab
from test_dataplane import WEB_SERVER

from appliance.dataplane import marks

ALLOWED, BLOCKED, UNDECIDED = "203.0.113.80", "203.0.113.81", "203.0.113.82"
PACKETS_PER_FLOW = 4

# --- the consumer ----------------------------------------------------------------------------------

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_MARK, NFQA_PAYLOAD = 1, 2, 3, 10
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND, NFQNL_COPY_PACKET = 1, 2
NLMSG_ERROR, NLM_F_REQUEST, NLM_F_ACK = 2, 1, 4
NF_ACCEPT = 1


def _attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    found = {}
    while len(data) >= 4:
        length, kind = struct.unpack_from("=HH", data)
        found[kind] = data[4:length]
        data = data[(length + 3) & ~3 :]
    return found


def _message(kind: int, queue: int, *attrs: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, 0, 0) + body


def _flow(packet: bytes) -> tuple[str, str, int, str, int, int]:
    """(protocol, source, source port, destination, destination port, payload length) of an IP packet."""
    if packet[0] >> 4 == 4:
        header, proto = (packet[0] & 0xF) * 4, packet[9]
        src, dst = ipaddress.ip_address(packet[12:16]), ipaddress.ip_address(packet[16:20])
    else:
        header, proto = 40, packet[6]
        src, dst = ipaddress.ip_address(packet[8:24]), ipaddress.ip_address(packet[24:40])
    sport, dport = struct.unpack_from("!HH", packet, header)
    l4_header = (packet[header + 12] >> 4) * 4 if proto == socket.IPPROTO_TCP else 8
    name = "tcp" if proto == socket.IPPROTO_TCP else "udp"
    return name, str(src), sport, str(dst), dport, len(packet) - header - l4_header


def consume(queue: int, allowed: set[str], blocked: set[str]) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    for attrs in (
        [_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0))],
        [_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET))],
    ):
        sock.send(_message(NFQNL_MSG_CONFIG, queue, *attrs, flags=NLM_F_REQUEST | NLM_F_ACK))
        reply = sock.recv(65536)
        error = struct.unpack_from("=i", reply, 16)[0]
        if struct.unpack_from("=H", reply, 4)[0] != NLMSG_ERROR or error != 0:
            raise OSError(-error, f"binding queue {queue} failed")
    print("bound", flush=True)
    while True:
        data = sock.recv(65536)
        while len(data) >= 16:
            length, kind = struct.unpack_from("=IH", data)
            if kind & 0xFF == NFQNL_MSG_PACKET:
                attrs = _attrs(data[20:length])
                packet_id = struct.unpack_from("!I", attrs[NFQA_PACKET_HDR])[0]
                mark = struct.unpack("!I", attrs[NFQA_MARK])[0] if NFQA_MARK in attrs else 0
                proto, src, sport, dst, dport, size = _flow(attrs[NFQA_PAYLOAD])
                print(f"{mark:#x} {proto} {src} {sport} {dst} {dport} {size}", flush=True)
                if size and dst in allowed:
                    mark |= marks.VERDICT_ALLOW
                elif size and dst in blocked:
                    mark |= marks.VERDICT_BLOCK
                reply_attrs = [
                    _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)),
                    _attr(NFQA_MARK, struct.pack("!I", mark)),
                ]
                sock.send(_message(NFQNL_MSG_VERDICT, queue, *reply_attrs))
            data = data[(length + 3) & ~3 :]


# --- the tests -------------------------------------------------------------------------------------

pytestmark = pytest.mark.netns

CONFIG = f"""
[appliance]
name = "Queue Test"
state_dir = "{{state}}"

[wan]
interface = "wan0"

[dns]
dnssec = false

[fastpath]
packets_per_flow = {PACKETS_PER_FLOW}

[[lan]]
interface = "lan_st"
group = "students"
subnets = ["10.10.0.0/24"]

[[lan]]
interface = "lan_ex"
group = "exams"
subnets = ["10.30.0.0/24"]

[groups.students]
[groups.exams]
internet = "allowlist"
"""


@dataclass
class Setup:
    gw: Netns
    students: Netns
    exams: Netns
    consumer: subprocess.Popen[str]
    seen: list[str]

    def packets(self, sport: int) -> list[list[str]]:
        """What the consumer was given of the client's flow from this source port."""
        time.sleep(0.2)  # for the thread that reads the consumer's output
        return [line.split() for line in self.seen if line.split()[3] == str(sport)]


def post(client: Netns, url: str, sport: int, timeout: float = 3) -> subprocess.CompletedProcess[str]:
    """An upload of 40 KB: many client packets, so a flow cut after the first few cannot finish."""
    return client.run(
        "sh", "-c",
        f"head -c 40000 /dev/zero | curl -sS --max-time {timeout} --local-port {sport} --data-binary @- "
        f"{url}",
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("queue")
    with netns_lab() as lab:
        gw, wan = lab.namespace("gw"), lab.namespace("wan")
        students, exams = lab.namespace("stud"), lab.namespace("exam")
        lab.link(gw, "wan0", wan, "eth0")
        gw.addr("wan0", "203.0.113.1/24")
        wan.addr("eth0", "203.0.113.2/24", f"{ALLOWED}/24", f"{BLOCKED}/24", f"{UNDECIDED}/24")
        for client, link, net in ((students, "lan_st", 10), (exams, "lan_ex", 30)):
            lab.link(gw, link, client, "eth0")
            gw.addr(link, f"10.{net}.0.1/24")
            client.addr("eth0", f"10.{net}.0.2/24")
            client.route_default(f"10.{net}.0.1")
            # One packet per segment, as on a real link: conntrack counts the packets a veth carries,
            # which with segmentation offload may each hold many segments.
            client.run("ethtool", "-K", "eth0", "tso", "off", "gso", "off")
        wan.popen(sys.executable, "-c", WEB_SERVER, "80", "443")
        wan.wait_for_port(443)

        consumer = gw.popen(sys.executable, __file__, "--allow", ALLOWED, "--block", BLOCKED)
        assert consumer.stdout is not None
        assert consumer.stdout.readline().strip() == "bound"
        seen: list[str] = []
        threading.Thread(target=lambda: seen.extend(iter(consumer.stdout.readline, "")), daemon=True).start()

        config = tmp / "appliance.toml"
        config.write_text(CONFIG.format(state=tmp / "state"))
        # Only the resolver of the child services: this consumer stands in for the real one.
        run = gw.popen(
            sys.executable, "-m", "appliance.cli", "run", "--config", str(config),
            "--skip", "dnsfilter", "--skip", "webfilter",
        )  # fmt: skip
        gw.wait_for_port(5353, "udp")
        yield Setup(gw, students, exams, consumer, seen)
        run.terminate()
        assert run.wait(timeout=20) == 0


def test_consumer_sees_first_packets_of_each_flow_with_group_mark(setup: Setup) -> None:
    result = post(setup.students, f"http://{UNDECIDED}:443/", 41001)
    # Undecided after its first packets: a fail-closed group drops the rest, so the upload times out.
    assert result.returncode == 28 and not result.stdout, result.stderr
    packets = setup.packets(41001)
    assert len(packets) == PACKETS_PER_FLOW  # the upload had many more
    students_id = 1
    assert {p[0] for p in packets} == {hex(students_id | marks.QUEUE_FAIL_CLOSED)}


def test_udp_443_is_queued_too(setup: Setup) -> None:
    setup.students.run(
        "dig",
        "+time=1",
        "+tries=1",
        "-b",
        "10.10.0.2#41002",
        "-p",
        "443",
        f"@{UNDECIDED}",
        "x.example",
        check=False,
    )
    packets = setup.packets(41002)
    assert packets and packets[0][1] == "udp"


def test_allowed_flow_leaves_the_queue(setup: Setup) -> None:
    result = post(setup.exams, f"http://{ALLOWED}:443/", 41003)
    assert result.stdout == "203.0.113.1", result.stderr
    # The upload finished, so its packets after the first few passed: by the flow's conntrack mark,
    # since an allowlist group drops undecided flows there (next test). The first data packet decided
    # the flow; a packet already on its way to the queue meanwhile may follow it there.
    packets = setup.packets(41003)
    assert [int(p[6]) > 0 for p in packets[:3]] == [False, False, True]
    assert len(packets) <= PACKETS_PER_FLOW


def test_undecided_flow_of_allowlist_group_is_cut_after_the_first_packets(setup: Setup) -> None:
    result = post(setup.exams, f"http://{UNDECIDED}:443/", 41004)
    assert result.returncode == 28  # timed out: packets after the first few are dropped
    assert len(setup.packets(41004)) == PACKETS_PER_FLOW


def test_blocked_flow_is_reset(setup: Setup) -> None:
    started = time.monotonic()
    result = post(setup.students, f"http://{BLOCKED}:80/", 41005, timeout=8)
    assert result.returncode == 56, result.stderr  # connection reset, well before the timeout
    assert "reset" in result.stderr.lower()
    assert time.monotonic() - started < 5
    assert len(setup.packets(41005)) <= PACKETS_PER_FLOW


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a minimal NFQUEUE consumer for the data plane tests")
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--allow", action="append", default=[])
    parser.add_argument("--block", action="append", default=[])
    args = parser.parse_args()
    consume(args.queue, set(args.allow), set(args.block))
