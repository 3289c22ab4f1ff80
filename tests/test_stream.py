"""TCP reassembly (fastpath.stream): real ClientHellos and requests cut into segments and delivered in
every order, repeated and overlapping, and the bounded flow table under floods."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_http import PATH
from test_http import capture as capture_http
from test_tls import REAL_CLIENTS, as_records, capture, handshake_of

from fastpath.http import parse_request
from fastpath.names import ParseStatus
from fastpath.stream import Assembler, FlowTable, Proto
from fastpath.tls import ClientHello, parse_stream

WRAP = 2**32
ISN = WRAP - 700  # the stream crosses sequence number 0 inside a ClientHello
NO_SYN_START = 123_456_789

Segment = tuple[int, bytes]  # (offset from the stream's first byte, payload)


# Each real client's ClientHello for the first name test_tls asks it for.
HELLO_NAMES = {client: name for client, name, *_ in reversed(REAL_CLIENTS)}


def real_hello(client: str) -> bytes:
    return capture(client, HELLO_NAMES[client])


def cut(data: bytes, bounds: list[int]) -> list[Segment]:
    edges = [0, *bounds, len(data)]
    return [(a, data[a:b]) for a, b in itertools.pairwise(edges)]


def deliveries(segs: list[Segment], data: bytes) -> dict[str, list[Segment]]:
    """The ways a network delivers the same segments: in order, reversed, with retransmits, and
    re-segmented so that segments overlap their neighbours."""
    overlapping = [(max(0, a - 3), data[max(0, a - 3) : a + len(p) + 5]) for a, p in segs]
    return {
        "in order": segs,
        "reversed": segs[::-1],
        "retransmits": [segs[0], *segs, *segs[::-1]],
        "overlapping": overlapping[1:] + overlapping[:1],
    }


def feed_all(proto: Proto, segs: list[Segment], *, syn: bool = True, size: int = 16384) -> list:
    asm = Assembler(proto, size)
    if syn:
        asm.syn(ISN)
    first = (ISN + 1) % WRAP if syn else NO_SYN_START
    return [asm.feed((first + off) % WRAP, payload) for off, payload in segs]


def check_delivery(proto: Proto, data: bytes, expected: object, segs: list[Segment]) -> None:
    for how, order in deliveries(segs, data).items():
        for syn in (True, False):
            results = feed_all(proto, order, syn=syn)
            assert results[-1] == expected, (how, syn, [(a, len(p)) for a, p in order])
            # Until the last byte is in, the answer is "more"; after that it never changes.
            done = [r == expected for r in results]
            assert all(r.status == ParseStatus.NEED_MORE for r, d in zip(results, done, strict=True) if not d)
            assert done == sorted(done)


@pytest.mark.parametrize("client", sorted(HELLO_NAMES))
def test_hello_in_two_segments_at_every_offset(client: str) -> None:
    data = real_hello(client)
    expected = parse_stream(data)
    assert expected.status == ParseStatus.OK
    for a in range(1, len(data)):
        check_delivery(Proto.TLS, data, expected, cut(data, [a]))


@pytest.mark.parametrize("client", ["chromium", "firefox"])
def test_hello_in_three_segments(client: str) -> None:
    data = real_hello(client)
    expected = parse_stream(data)
    grid = [1, 2, 5, 6, 9, *range(40, len(data) - 1, 53), len(data) - 1]
    for a, b in itertools.combinations(grid, 2):
        segs = cut(data, [a, b])
        for order in itertools.permutations(segs):
            assert feed_all(Proto.TLS, list(order))[-1] == expected, (a, b)
        check_delivery(Proto.TLS, data, expected, segs)


@pytest.mark.parametrize("client", ["chromium", "firefox", "curl"])
def test_hello_repacked_into_records_and_segments(client: str) -> None:
    data = real_hello(client)
    expected = parse_stream(data)
    msg = handshake_of(data)
    rng = random.Random(client)
    for sizes in ([1, 1, 1], [4], [700, 700], [100] * 30, [rng.randint(1, 400) for _ in range(8)]):
        records = as_records(msg, sizes)
        assert parse_stream(records) == expected
        for _ in range(30):
            bounds = sorted(rng.sample(range(1, len(records)), rng.randint(1, 6)))
            segs = cut(records, bounds)
            rng.shuffle(segs)
            # Without the SYN, a segment that begins at a later record could pass for the start.
            assert feed_all(Proto.TLS, segs, syn=True)[-1] == expected, (sizes, bounds)


def test_http_request_in_segments() -> None:
    data = capture_http("curl-post", "forms.example.net", "/submit")
    expected = parse_request(data)
    assert expected.status == ParseStatus.OK
    for a in range(1, len(data)):
        check_delivery(Proto.HTTP, data, expected, cut(data, [a]))
    data = capture_http("chromium", "www.example.org", PATH)
    expected = parse_request(data)
    for a, b in itertools.combinations(range(1, len(data), 31), 2):
        check_delivery(Proto.HTTP, data, expected, cut(data, [a, b]))


def test_conflicting_retransmit_is_malformed() -> None:
    data = real_hello("chromium")
    name_at = data.index(b"www.example.org")
    for syn in (True, False):
        asm = Assembler(Proto.TLS)
        if syn:
            asm.syn(ISN)
        first = (ISN + 1) % WRAP if syn else NO_SYN_START
        asm.feed(first, data[:name_at])
        asm.feed((first + name_at + 4) % WRAP, data[name_at + 4 :])
        forged = data[name_at : name_at + 4].replace(b"www.", b"xyz.")
        assert asm.feed((first + name_at) % WRAP, forged).sni == "xyz.example.org"  # fills the gap
        # The same bytes again but different (the first copy may have had a bad checksum or a TTL
        # too low to reach the server): the server may read either, so the flow is MALFORMED for good.
        assert asm.feed((first + name_at) % WRAP, data[name_at : name_at + 4]).status == ParseStatus.MALFORMED
        assert asm.feed((first + name_at) % WRAP, forged).status == ParseStatus.MALFORMED


def test_without_syn_segments_wait_for_the_start() -> None:
    data = real_hello("firefox")
    expected = parse_stream(data)
    asm = Assembler(Proto.TLS)
    # Bytes from before the connection's start (a previous flow's tail) are not the start.
    assert asm.feed(NO_SYN_START - 20, b"\x00" * 20).status == ParseStatus.NEED_MORE
    assert asm.feed(NO_SYN_START + 1000, data[1000:]).status == ParseStatus.NEED_MORE
    assert asm.contiguous == 0
    assert asm.feed(NO_SYN_START + 500, data[500:1000]).status == ParseStatus.NEED_MORE
    assert asm.feed(NO_SYN_START, data[:500]) == expected


def test_syn_after_payload_and_new_isn() -> None:
    data = real_hello("chromium")
    expected = parse_stream(data)
    asm = Assembler(Proto.TLS)
    assert asm.feed(5001 + 600, data[600:]).status == ParseStatus.NEED_MORE
    asm.syn(5000)
    assert asm.feed(5001, data[:600]) == expected
    asm.syn(5000)  # a retransmitted SYN changes nothing
    assert asm.feed(5001, data[:10]) == expected
    asm.syn(90_000)  # the addresses and ports reused by a new connection
    assert asm.contiguous == 0
    assert asm.feed(90_001, data[:100]).status == ParseStatus.NEED_MORE
    # Data before the new stream's first byte (e.g. a keepalive probe) is not part of it.
    assert asm.feed(89_990, b"x" * 11).status == ParseStatus.NEED_MORE
    assert asm.feed(90_101, data[100:]) == expected


def test_bound() -> None:
    data = real_hello("chromium")
    assert len(data) > 1024
    # A ClientHello larger than the buffer can never be read.
    assert feed_all(Proto.TLS, [(0, data)], size=1024)[-1].status == ParseStatus.MALFORMED
    segs = cut(data, [600, 1200])
    assert [r.status for r in feed_all(Proto.TLS, segs, size=1024)] == [
        ParseStatus.NEED_MORE,
        ParseStatus.MALFORMED,
        ParseStatus.MALFORMED,
    ]
    # Bytes beyond the buffer before the message is complete: the hole may never be fillable.
    asm = Assembler(Proto.TLS)
    asm.syn(ISN)
    assert asm.feed((ISN + 1 + 20000) % WRAP, b"late").status == ParseStatus.MALFORMED
    # An HTTP head that does not end within the buffer.
    head = b"GET / HTTP/1.1\r\nHost: a.example\r\n" + b"X-Pad: " + b"p" * 2000
    assert feed_all(Proto.HTTP, [(0, head)], size=1024)[-1].status == ParseStatus.MALFORMED
    assert feed_all(Proto.HTTP, [(0, head[:1000])], size=1024)[-1].status == ParseStatus.NEED_MORE
    with pytest.raises(ValueError):
        Assembler(Proto.TLS, 10)


def test_too_many_holes_is_malformed() -> None:
    data = real_hello("chromium")
    asm = Assembler(Proto.TLS)
    asm.syn(ISN)
    statuses = [asm.feed((ISN + 1 + off) % WRAP, data[off : off + 1]).status for off in range(100, 1000, 10)]
    assert ParseStatus.MALFORMED in statuses
    # Filling the holes does not make such a stream readable again.
    assert asm.feed((ISN + 1) % WRAP, data).status == ParseStatus.MALFORMED


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["chromium", "firefox", "curl"]), st.data())
def test_any_segmentation(client: str, draw: st.DataObject) -> None:
    data = real_hello(client)
    bounds = sorted(draw.draw(st.sets(st.integers(1, len(data) - 1), max_size=8)))
    segs = cut(data, bounds)
    extra = draw.draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 1500)), max_size=3))
    segs += [(a, data[a : a + n]) for a, n in extra]
    segs = draw.draw(st.permutations(segs))
    assert feed_all(Proto.TLS, segs)[-1] == parse_stream(data)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([Proto.TLS, Proto.HTTP]),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, WRAP - 1), st.binary(max_size=600)), max_size=8),
)
def test_any_segments(proto: Proto, syn: bool, segs: list[tuple[int, bytes]]) -> None:
    asm = Assembler(proto, 2048)
    if syn:
        asm.syn(ISN)
    for seq, payload in segs:
        result = asm.feed(seq, payload)
        assert isinstance(result.status, ParseStatus)
        assert asm.contiguous <= 2048


def v4(i: int) -> bytes:
    return bytes([10, i >> 16 & 255, i >> 8 & 255, i & 255])


def v6(i: int) -> bytes:
    return bytes.fromhex("20010db8") + bytes(8) + i.to_bytes(4, "big")


SERVER4 = bytes([192, 0, 2, 1])
SERVER6 = bytes.fromhex("20010db8ffff") + bytes(10)


def test_flow_table_keeps_flows_apart() -> None:
    table = FlowTable(max_flows=64, max_streams=16)
    hellos = {client: real_hello(client) for client in ("chromium", "firefox", "curl", "openssl")}
    keys = {
        "chromium": (v4(1), SERVER4, 40000, 443),
        "firefox": (v6(1), SERVER6, 40000, 443),
        "curl": (v4(1), SERVER4, 40001, 443),  # differs only in the source port
        "openssl": (v4(1), SERVER4, 40000, 8443),  # only in the destination port
    }
    segments = {c: cut(h, [300, 900]) for c, h in hellos.items()}
    for key in keys.values():
        table.syn(key, Proto.TLS, ISN)
    results = {}
    for step in range(3):  # every flow's segments interleaved, last segment first
        for c, key in keys.items():
            off, payload = segments[c][2 - step] if len(segments[c]) == 3 else segments[c][0]
            results[c] = table.feed(key, Proto.TLS, (ISN + 1 + off) % WRAP, payload)
    assert results == {c: parse_stream(h) for c, h in hellos.items()}
    assert len(table) == 4 and table.streams_in_use == 4
    http_key = (v6(2), SERVER6, 50000, 80)
    request = capture_http("curl", "www.example.org", PATH)
    table.feed(http_key, Proto.HTTP, 7000 + 40, request[40:])
    assert table.feed(http_key, Proto.HTTP, 7000, request[:40]) == parse_request(request)
    for key in [*keys.values(), http_key]:
        assert key in table
        assert table.remove(key)
        assert not table.remove(key)
    assert len(table) == 0 and table.streams_in_use == 0
    with pytest.raises(ValueError):
        table.syn((v4(1), SERVER6, 1, 2), Proto.TLS, 0)


def test_flow_table_under_syn_flood() -> None:
    table = FlowTable(max_flows=1000, max_streams=50)
    hello = real_hello("chromium")
    victim = (v4(999_999), SERVER4, 51000, 443)
    table.syn(victim, Proto.TLS, ISN)
    table.feed(victim, Proto.TLS, (ISN + 1) % WRAP, hello[:700])
    for i in range(20000):
        flood = (v4(i), SERVER4, 1024 + i % 60000, 443)
        table.syn(flood, Proto.TLS, i)
        # SYNs cost no buffer, however many: only the victim holds one, while it is in the table.
        assert table.streams_in_use == (victim in table)
        if i == 500:  # the victim's next segment arrives mid-flood and keeps it recent
            table.feed(victim, Proto.TLS, (ISN + 1 + 700) % WRAP, hello[700:1000])
    assert len(table) == 1000
    assert table.evictions == 20001 - 1000
    # The victim was least recently used long ago and is gone: its last segment starts a new flow
    # without a SYN, which waits (bounded) for a start that will not come.
    assert victim not in table
    assert (
        table.feed(victim, Proto.TLS, (ISN + 1 + 1000) % WRAP, hello[1000:]).status == ParseStatus.NEED_MORE
    )
    # A flow that is recent survives a flood of the same size.
    recent = (v4(1_000_001), SERVER4, 52000, 443)
    table.syn(recent, Proto.TLS, ISN)
    for i in range(998):
        table.syn((v4(i + 50000), SERVER4, 2000, 443), Proto.TLS, i)
    assert table.feed(recent, Proto.TLS, (ISN + 1) % WRAP, hello) == parse_stream(hello)


def test_flow_table_buffers_go_to_recently_fed_flows() -> None:
    table = FlowTable(max_flows=100, max_streams=4)
    hello = real_hello("firefox")
    keys = [(v6(i), SERVER6, 40000 + i, 443) for i in range(6)]
    for i, key in enumerate(keys[:4]):
        table.syn(key, Proto.TLS, i)
        assert table.feed(key, Proto.TLS, i + 1, hello[:800]).status == ParseStatus.NEED_MORE
    table.feed(keys[0], Proto.TLS, 1 + 800, hello[800:900])  # keys[1] is now the least recently fed
    table.syn(keys[4], Proto.TLS, 4)
    assert table.feed(keys[4], Proto.TLS, 5, b"").status == ParseStatus.NEED_MORE  # no payload, no buffer
    assert table.streams_in_use == 4 and keys[1] in table
    table.feed(keys[4], Proto.TLS, 5, hello[:800])
    assert table.streams_in_use == 4
    assert keys[1] not in table and all(k in table for k in (keys[0], keys[2], keys[3], keys[4]))
    assert table.feed(keys[0], Proto.TLS, 901, hello[900:]) == parse_stream(hello)
    # The flow's protocol is fixed when it is created.
    assert isinstance(table.feed(keys[2], Proto.HTTP, 801, hello[800:]), ClientHello)
    with pytest.raises(ValueError):
        FlowTable(max_flows=10, max_streams=11)
