"""The per-group verdict: layer order, and the batch classifiers over names, DNS, TLS and QUIC."""

from __future__ import annotations

import importlib.util
import struct
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.names import ParseStatus
from fastpath.table import DomainTable, TableBuilder
from fastpath.verdict import (
    NO_VERDICT,
    Action,
    GroupPolicy,
    Reason,
    classify_dns,
    classify_names,
    classify_quic_initials,
    classify_tls_streams,
    decide,
)

# The benchmark's packet builders (real OpenSSL ClientHellos, aioquic Initials), shared so that the
# tests and the benchmark classify the same kind of traffic.
_spec = importlib.util.spec_from_file_location(
    "bench_common", Path(__file__).parents[1] / "bench" / "common.py"
)
packets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(packets)

KEY = bytes(range(16))
ADULT, IWF, SCHOOL_ALLOW, SCHOOL_DENY, SOCIAL, EXAM_ALLOW = (1 << i for i in range(6))

ENTRIES = [
    ("iwf-listed.example", IWF),
    ("www.iwf-listed.example", SCHOOL_ALLOW),  # a school allow can never open a padlocked entry
    ("adult.example", ADULT),
    ("ok.adult.example", SCHOOL_ALLOW),
    ("social.example", SOCIAL),
    ("denied.example", SCHOOL_DENY),
    ("both.example", SCHOOL_ALLOW),
    ("both.example", SCHOOL_DENY),  # the same name on the allow and the deny list
    ("allowed.example", SCHOOL_ALLOW),
    ("x.allowed.example", SCHOOL_DENY),
    ("blocked-area.example", SCHOOL_DENY | ADULT),
    ("good.blocked-area.example", SCHOOL_ALLOW),
    ("exam-board.example", EXAM_ALLOW),
]
STUDENTS = GroupPolicy(blocked=ADULT, padlocked=IWF, allow=SCHOOL_ALLOW, deny=SCHOOL_DENY)
STAFF = GroupPolicy(padlocked=IWF, deny=SCHOOL_DENY)
EXAMS = GroupPolicy(padlocked=IWF, allow=EXAM_ALLOW, default_action=Action.BLOCK)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> DomainTable:
    b = TableBuilder(KEY)
    for name, categories in ENTRIES:
        b.add(name, categories)
    path = tmp_path_factory.mktemp("verdict") / "domains.tbl"
    b.build(path)
    return DomainTable.open(path, KEY)


@pytest.mark.parametrize(
    ("policy", "name", "action", "reason", "bits", "matched"),
    [
        (STUDENTS, "iwf-listed.example", Action.BLOCK, Reason.PADLOCKED, IWF, "iwf-listed.example"),
        (STUDENTS, "www.iwf-listed.example", Action.BLOCK, Reason.PADLOCKED, IWF, "iwf-listed.example"),
        (STAFF, "a.www.iwf-listed.example", Action.BLOCK, Reason.PADLOCKED, IWF, "iwf-listed.example"),
        (EXAMS, "iwf-listed.example", Action.BLOCK, Reason.PADLOCKED, IWF, "iwf-listed.example"),
        (STUDENTS, "adult.example", Action.BLOCK, Reason.CATEGORY, ADULT, "adult.example"),
        (STUDENTS, "cdn.adult.example", Action.BLOCK, Reason.CATEGORY, ADULT, "adult.example"),
        (STUDENTS, "ok.adult.example", Action.ALLOW, Reason.SCHOOL_ALLOW, SCHOOL_ALLOW, "ok.adult.example"),
        (STAFF, "adult.example", Action.ALLOW, Reason.DEFAULT, 0, None),
        (STUDENTS, "social.example", Action.ALLOW, Reason.DEFAULT, 0, None),
        (STUDENTS, "denied.example", Action.BLOCK, Reason.SCHOOL_DENY, SCHOOL_DENY, "denied.example"),
        (STAFF, "m.denied.example", Action.BLOCK, Reason.SCHOOL_DENY, SCHOOL_DENY, "denied.example"),
        (STUDENTS, "both.example", Action.BLOCK, Reason.SCHOOL_DENY, SCHOOL_DENY, "both.example"),
        (STUDENTS, "allowed.example", Action.ALLOW, Reason.SCHOOL_ALLOW, SCHOOL_ALLOW, "allowed.example"),
        (STUDENTS, "z.allowed.example", Action.ALLOW, Reason.SCHOOL_ALLOW, SCHOOL_ALLOW, "allowed.example"),
        (STUDENTS, "x.allowed.example", Action.BLOCK, Reason.SCHOOL_DENY, SCHOOL_DENY, "x.allowed.example"),
        (STUDENTS, "y.x.allowed.example", Action.BLOCK, Reason.SCHOOL_DENY, SCHOOL_DENY, "x.allowed.example"),
        (
            STUDENTS,
            "blocked-area.example",
            Action.BLOCK,
            Reason.SCHOOL_DENY,
            SCHOOL_DENY,
            "blocked-area.example",
        ),
        (
            STUDENTS,
            "good.blocked-area.example",
            Action.ALLOW,
            Reason.SCHOOL_ALLOW,
            SCHOOL_ALLOW,
            "good.blocked-area.example",
        ),
        (EXAMS, "exam-board.example", Action.ALLOW, Reason.SCHOOL_ALLOW, EXAM_ALLOW, "exam-board.example"),
        (EXAMS, "allowed.example", Action.BLOCK, Reason.DEFAULT, 0, None),  # another group's allow list
        (EXAMS, "unlisted.example", Action.BLOCK, Reason.DEFAULT, 0, None),
        (STUDENTS, "unlisted.example", Action.ALLOW, Reason.DEFAULT, 0, None),
    ],
)
def test_layer_order(
    table: DomainTable,
    policy: GroupPolicy,
    name: str,
    action: Action,
    reason: Reason,
    bits: int,
    matched: str | None,
) -> None:
    v = decide(table, name, policy)
    assert (v.action, v.reason, v.bits, v.matched) == (action, reason, bits, matched)
    assert v.blocked == (action == Action.BLOCK)
    assert v.categories == table.lookup(name).categories


def model_decide(hits: tuple[tuple[str, int], ...], p: GroupPolicy) -> tuple[Action, Reason, int, str | None]:
    """The layer order of docs/architecture.md, over a lookup's hits (most specific first)."""
    total = 0
    for _, mask in hits:
        total |= mask
    if total & p.padlocked:
        return (
            Action.BLOCK,
            Reason.PADLOCKED,
            total & p.padlocked,
            next(s for s, m in hits if m & p.padlocked),
        )
    for suffix, mask in hits:
        if mask & p.deny:
            return Action.BLOCK, Reason.SCHOOL_DENY, mask & p.deny, suffix
        if mask & p.allow:
            return Action.ALLOW, Reason.SCHOOL_ALLOW, mask & p.allow, suffix
    if total & p.blocked:
        return Action.BLOCK, Reason.CATEGORY, total & p.blocked, next(s for s, m in hits if m & p.blocked)
    return p.default_action, Reason.DEFAULT, 0, None


masks = st.integers(0, 0xFF)
policies = st.builds(
    GroupPolicy,
    blocked=masks,
    padlocked=masks,
    allow=masks,
    deny=masks,
    default_action=st.sampled_from([Action.ALLOW, Action.BLOCK]),
)
query_names = st.lists(st.sampled_from(["a", "b", "example", "com", "x"]), min_size=1, max_size=5).map(
    ".".join
)


@settings(max_examples=80, deadline=None)
@given(
    entries=st.lists(st.tuples(query_names, st.integers(1, 0xFF), st.booleans()), max_size=20),
    policy=policies,
    queries=st.lists(query_names, min_size=1, max_size=20),
)
def test_decide_matches_model(
    tmp_path_factory: pytest.TempPathFactory,
    entries: list[tuple[str, int, bool]],
    policy: GroupPolicy,
    queries: list[str],
) -> None:
    b = TableBuilder(KEY)
    for entry in entries:
        b.add(*entry)
    path = tmp_path_factory.mktemp("model") / "t.tbl"
    b.build(path)
    with DomainTable.open(path, KEY) as t:
        for q in queries:
            v = decide(t, q, policy)
            assert (v.action, v.reason, v.bits, v.matched) == model_decide(t.lookup(q).hits, policy), q


def test_policy_arguments() -> None:
    p = GroupPolicy(blocked=1, padlocked=2, allow=4, deny=8, default_action=Action.BLOCK)
    assert (p.blocked, p.padlocked, p.allow, p.deny, p.default_action) == (1, 2, 4, 8, Action.BLOCK)
    assert GroupPolicy().default_action == Action.ALLOW
    with pytest.raises(ValueError, match="64-bit"):
        GroupPolicy(blocked=1 << 64)
    with pytest.raises(ValueError, match="default_action"):
        GroupPolicy(default_action=7)


def run_batch(fn, table: DomainTable, policy: GroupPolicy, items: list[bytes]) -> list[tuple[int, int]]:
    data, offsets = packets.pack(items)
    statuses, actions = bytearray(len(items)), bytearray(len(items))
    ok = fn(table, policy, data, offsets, statuses, actions)
    assert ok == sum(s == ParseStatus.OK for s in statuses)
    return list(zip(statuses, actions, strict=True))


def expected(table: DomainTable, policy: GroupPolicy, name: str) -> tuple[int, int]:
    return ParseStatus.OK, decide(table, name, policy).action


def test_classify_names_agrees_with_decide(table: DomainTable) -> None:
    # More names than a batch group, so prefetch groups and their boundaries are exercised.
    names = [n for name, _ in ENTRIES for n in (name, "w." + name, "not" + name)] + ["Social.Example."]
    got = run_batch(classify_names, table, STUDENTS, [n.encode() for n in names])
    assert got == [expected(table, STUDENTS, n) for n in names]
    bad = run_batch(classify_names, table, STUDENTS, [b"", b"a..b", b"x" * 254, b"sp ace.com"])
    assert bad == [(ParseStatus.MALFORMED, NO_VERDICT)] * 4


def test_classify_dns(table: DomainTable) -> None:
    names = [name for name, _ in ENTRIES] + ["unlisted.example", "WWW.Adult.Example"]
    queries = [packets.dns_query(n, i, qtype=28 if i % 2 else 1) for i, n in enumerate(names)]
    assert run_batch(classify_dns, table, STUDENTS, queries) == [expected(table, STUDENTS, n) for n in names]
    query = packets.dns_query("adult.example", 7)
    response = query[:2] + struct.pack("!H", 0x8180) + query[4:]
    got = run_batch(classify_dns, table, STUDENTS, [response, query[:15], b"", query])
    assert got == [
        (ParseStatus.NOT_HANDLED, NO_VERDICT),
        (ParseStatus.MALFORMED, NO_VERDICT),
        (ParseStatus.MALFORMED, NO_VERDICT),
        (ParseStatus.OK, Action.BLOCK),
    ]


def as_records(stream: bytes, size: int) -> bytes:
    """The same handshake bytes, re-framed in records of at most size bytes."""
    body = b""
    pos = 0
    while pos < len(stream):
        length = struct.unpack_from("!H", stream, pos + 3)[0]
        body += stream[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return b"".join(
        b"\x16\x03\x01" + struct.pack("!H", len(body[i : i + size])) + body[i : i + size]
        for i in range(0, len(body), size)
    )


def test_classify_tls_streams(table: DomainTable) -> None:
    names = ["adult.example", "ok.adult.example", "www.iwf-listed.example", "unlisted.example"]
    hellos = [packets.client_hello(n) for n in names]
    assert run_batch(classify_tls_streams, table, STUDENTS, hellos) == [
        expected(table, STUDENTS, n) for n in names
    ]
    split = as_records(hellos[0], 100)  # a ClientHello over several records
    assert len(split) > len(hellos[0])
    no_sni = packets.client_hello(None)
    got = run_batch(
        classify_tls_streams, table, STUDENTS, [split, no_sni, hellos[0][:50], b"GET / HTTP/1.1\r\n"]
    )
    assert got == [
        (ParseStatus.OK, Action.BLOCK),
        (ParseStatus.NO_NAME, NO_VERDICT),
        (ParseStatus.NEED_MORE, NO_VERDICT),
        (ParseStatus.NOT_HANDLED, NO_VERDICT),
    ]


def test_classify_quic_initials(table: DomainTable) -> None:
    names = ["adult.example", "ok.adult.example", "unlisted.example"]
    initials = [packets.quic_initial(n) for n in names]
    assert run_batch(classify_quic_initials, table, STUDENTS, initials) == [
        expected(table, STUDENTS, n) for n in names
    ]
    corrupt = bytearray(initials[0])
    corrupt[100] ^= 1  # inside the protected payload: fails authentication
    got = run_batch(classify_quic_initials, table, STUDENTS, [bytes(corrupt), b"\x40" + bytes(30), b""])
    assert got == [
        (ParseStatus.MALFORMED, NO_VERDICT),
        (ParseStatus.NOT_HANDLED, NO_VERDICT),
        (ParseStatus.MALFORMED, NO_VERDICT),
    ]


def test_batch_argument_checks(table: DomainTable) -> None:
    out = bytearray(2)
    with pytest.raises(ValueError, match="decrease"):
        classify_names(table, STUDENTS, b"abcd", array("I", [0, 3, 2]), out, bytearray(2))
    with pytest.raises(ValueError, match="past the end"):
        classify_names(table, STUDENTS, b"abcd", array("I", [0, 2, 5]), out, bytearray(2))
    with pytest.raises(ValueError, match="n \\+ 1"):
        classify_names(table, STUDENTS, b"abcd", array("I", [0, 2, 4]), out, bytearray(1))
    with pytest.raises(ValueError, match="n \\+ 1"):
        classify_names(table, STUDENTS, b"", array("I"), out, out)
    assert classify_names(table, STUDENTS, b"", array("I", [0]), out, out) == 0


def test_closed_table(tmp_path: Path) -> None:
    b = TableBuilder(KEY)
    b.add("example.com", 1)
    b.build(tmp_path / "t")
    t = DomainTable.open(tmp_path / "t", KEY)
    t.close()
    with pytest.raises(ValueError, match="closed"):
        decide(t, "example.com", STUDENTS)
    with pytest.raises(ValueError, match="closed"):
        classify_names(t, STUDENTS, b"example.com", array("I", [0, 11]), bytearray(1), bytearray(1))
