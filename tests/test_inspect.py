"""`appliance inspect` on a real capture: real clients over a veth pair at MTU 1500, recorded by
tcpdump, must give every name that was sent, exactly the names tshark decodes, whatever the format,
segment order or damage."""

from __future__ import annotations

import contextlib
import json
import os
import random
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from capture_session import Expected, make_capture, tshark_names
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.capture.flows import classify
from appliance.capture.inspect import inspect_capture
from appliance.capture.packets import Packet, decode
from appliance.capture.pcapfile import CaptureError, Frame, read_frames

APPLIANCE = [sys.executable, "-m", "appliance.cli"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Expected]]:
    pcap = tmp_path_factory.mktemp("capture") / "real.pcap"
    expected = make_capture(pcap)
    return pcap, expected


def names(records) -> set[tuple[str, str]]:
    return {(r.protocol, r.name) for r in records if r.name}


@pytest.mark.netns
def test_every_client_name_is_found(capture: tuple[Path, list[Expected]]) -> None:
    pcap, expected = capture
    found = {(r.protocol, r.name, r.dst) for r in inspect_capture(pcap)}
    missing = [e for e in expected if (e.protocol, e.name, e.server) not in found]
    assert not missing, f"names sent by real clients that inspect did not find: {missing}"


@pytest.mark.netns
def test_names_match_tshark(capture: tuple[Path, list[Expected]]) -> None:
    pcap, _ = capture
    ours = names(inspect_capture(pcap))
    theirs = tshark_names(pcap)
    assert ours == theirs, f"only inspect: {ours - theirs}; only tshark: {theirs - ours}"


@pytest.mark.netns
def test_browser_client_hellos_really_split(capture: tuple[Path, list[Expected]]) -> None:
    """The capture exercises reassembly: chromium's and firefox's post-quantum hellos span segments."""
    pcap, expected = capture
    segments: dict[tuple[str, int], list[int]] = defaultdict(list)
    for frame in read_frames(pcap):
        pkt = decode(frame.linktype, frame.data)
        if pkt and pkt.transport == "tcp" and pkt.dport == 443 and pkt.payload:
            segments[(pkt.src, pkt.sport)].append(len(pkt.payload))
    by_name = {r.name: (r.src, r.sport) for r in inspect_capture(pcap) if r.protocol == "tls"}
    for e in expected:
        if e.client in ("chromium", "firefox-esr") and e.protocol == "tls":
            sizes = segments[by_name[e.name]]
            assert len(sizes) >= 2 and sum(sizes) > 1500, (e, sizes)


@pytest.mark.netns
def test_json_output_has_the_documented_keys(capture: tuple[Path, list[Expected]]) -> None:
    pcap, expected = capture
    out = subprocess.run(
        [*APPLIANCE, "inspect", str(pcap), "--json"], capture_output=True, text=True, check=True
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows
    for row in rows:
        assert {"transport", "src", "sport", "dst", "dport", "protocol", "name"} <= row.keys()
    quic = {row["name"] for row in rows if row["protocol"] == "quic"}
    assert {e.name for e in expected if e.protocol == "quic"} <= quic


@pytest.mark.netns
def test_pcapng_gives_the_same_records(capture: tuple[Path, list[Expected]], tmp_path: Path) -> None:
    pcap, _ = capture
    ng = tmp_path / "real.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(pcap), str(ng)], check=True)
    assert ng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert list(inspect_capture(ng)) == list(inspect_capture(pcap))


@pytest.mark.netns
def test_segments_out_of_order_give_the_same_names(capture: tuple[Path, list[Expected]]) -> None:
    """Reverse the payload segments within every TCP flow (as a reordering network might deliver them)."""
    pcap, _ = capture
    packets = [p for f in read_frames(pcap) if (p := decode(f.linktype, f.data))]
    flows: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(packets):
        if p.transport == "tcp" and p.payload:
            flows[(p.src, p.sport, p.dst, p.dport)].append(i)
    shuffled = list(packets)
    for idx in flows.values():
        for i, j in zip(idx, reversed(idx), strict=True):
            shuffled[i] = packets[j]
    assert names(classify(shuffled)) == names(classify(packets))


@pytest.mark.netns
def test_truncated_capture_ends_quietly(capture: tuple[Path, list[Expected]], tmp_path: Path) -> None:
    pcap, _ = capture
    data = pcap.read_bytes()
    cut = tmp_path / "cut.pcap"
    for size in sorted(random.Random(1).sample(range(24, len(data)), 40)):
        cut.write_bytes(data[:size])
        records = list(inspect_capture(cut))
        assert all(r.name is None or "." in r.name for r in records)


def test_not_a_capture_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a capture\n")
    with pytest.raises(CaptureError, match="not a pcap or pcapng"):
        list(read_frames(bogus))
    out = subprocess.run([*APPLIANCE, "inspect", str(bogus)], capture_output=True, text=True)
    assert out.returncode == 1 and "not a pcap or pcapng" in out.stderr


def _pcap(frames: list[bytes], linktype: int = 1) -> bytes:
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    return head + b"".join(struct.pack("<IIII", 0, 0, len(f), len(f)) + f for f in frames)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_a_capture(data: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.pcap"
    for blob in (data, _pcap([data]), b"\x0a\x0d\x0d\x0a" + data):
        path.write_bytes(blob)
        with contextlib.suppress(CaptureError):
            list(inspect_capture(path))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([0, 1, 101, 113, 228, 229, 276]), st.binary(max_size=200))
def test_any_frame_decodes_or_is_skipped(linktype: int, frame: bytes) -> None:
    pkt = decode(linktype, frame)
    assert pkt is None or isinstance(pkt, Packet)
    list(classify([pkt] if pkt else []))


def test_frame_type_is_what_the_reader_yields(tmp_path: Path) -> None:
    path = tmp_path / "one.pcap"
    path.write_bytes(_pcap([b"\x00" * 60], linktype=1))
    assert list(read_frames(path)) == [Frame(1, 0.0, b"\x00" * 60)]


@pytest.mark.netns
def test_policy_adds_group_and_verdict(capture: tuple[Path, list[Expected]], tmp_path: Path) -> None:
    """With an applied policy, each record carries the client's group and the fast path's verdict."""
    pcap, _ = capture
    state = tmp_path / "state"
    games = tmp_path / "games.txt"
    games.write_text("# a school's own list\nchromium.example.org\n")
    env = {"APPLIANCE_STATE_DIR": str(state)}
    steps = [
        ["lists", "add", "games-local", "--format", "plain", "--category", "games", "--source", str(games)],
        ["lists", "update", "games-local"],
        ["policy", "deny", "gnutls.example.org", "--group", "students"],
        ["policy", "apply"],
    ]
    for step in steps:
        subprocess.run([*APPLIANCE, *step, "--reason", "inspect test"], env={**os.environ, **env}, check=True)
    config = tmp_path / "appliance.toml"
    config.write_text(
        '[appliance]\nname = "Test"\n[wan]\ninterface = "wan0"\n'
        '[[lan]]\ninterface = "lan0"\ngroup = "students"\nsubnets = ["198.18.0.0/24"]\n'
        '[[lan]]\ninterface = "lan1"\ngroup = "staff"\nsubnets = ["fd00:cafe::/64"]\n'
        "[groups.students]\n[groups.staff]\n"
    )
    out = subprocess.run(
        [*APPLIANCE, "inspect", str(pcap), "--json", "--policy", str(state), "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {(r["name"], r["src"]): r for r in map(json.loads, out.stdout.splitlines())}
    chromium = rows[("chromium.example.org", "198.18.0.1")]
    assert (chromium["group"], chromium["verdict"]) == ("students", "block")
    assert "games" in chromium["reason"].lower()
    gnutls = rows[("gnutls.example.org", "198.18.0.1")]
    assert (gnutls["verdict"], gnutls["reason"].split(":")[0]) == ("block", "school deny")
    assert rows[("curl-h1.example.org", "198.18.0.1")]["verdict"] == "allow"
    assert rows[("curl-h2-v6.example.org", "fd00:cafe::1")]["group"] == "staff"
