"""The domain table: keyed hashing, suffix lookup, the on-disk format and its validation."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from array import array
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpath.siphash import keyed_hash, keyed_hash_depth
from fastpath.table import DomainTable, TableBuilder, TableError, file_checksum

KEY = bytes(range(16))
OTHER_KEY = bytes(range(1, 17))
HEADER = 128
MASK64 = (1 << 64) - 1


# ---- A reference SipHash-2-4, checked against the published vectors, to check the Cython one.


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & MASK64


def _sipround(v: list[int]) -> None:
    v[0] = (v[0] + v[1]) & MASK64
    v[1] = _rotl(v[1], 13) ^ v[0]
    v[0] = _rotl(v[0], 32)
    v[2] = (v[2] + v[3]) & MASK64
    v[3] = _rotl(v[3], 16) ^ v[2]
    v[0] = (v[0] + v[3]) & MASK64
    v[3] = _rotl(v[3], 21) ^ v[0]
    v[2] = (v[2] + v[1]) & MASK64
    v[1] = _rotl(v[1], 17) ^ v[2]
    v[2] = _rotl(v[2], 32)


def siphash24(key: bytes, msg: bytes) -> int:
    k0, k1 = struct.unpack("<QQ", key)
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]
    tail = len(msg) % 8
    blocks = [*struct.unpack(f"<{len(msg) // 8}Q", msg[: len(msg) - tail])]
    blocks.append(int.from_bytes(msg[len(msg) - tail :], "little") | ((len(msg) & 0xFF) << 56))
    for m in blocks:
        v[3] ^= m
        _sipround(v)
        _sipround(v)
        v[0] ^= m
    v[2] ^= 0xFF
    for _ in range(4):
        _sipround(v)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


# SipHash-2-4 reference vectors (key 00..0f, message 00..n-1), from the authors' vectors.h.
SIPHASH24_VECTORS = [
    0x726FDB47DD0E0E31, 0x74F839C593DC67FD, 0x0D6C8009D9A94F5A, 0x85676696D7FB7E2D,
    0xCF2794E0277187B7, 0x18765564CD99A68D, 0xCBC9466E58FEE3CE, 0xAB0200F58B01D137,
    0x93F5F5799A932462, 0x9E0082DF0BA9E4B0, 0x7A5DBBC594DDB9F3, 0xF4B32F46226BADA7,
    0x751E8FBC860EE5FB, 0x14EA5627C0843D90, 0xF723CA908E7AF2EE, 0xA129CA6149BE45E5,
    0x3F2ACC7F57C29BDB,
]  # fmt: skip


def test_reference_siphash_matches_published_vectors() -> None:
    for n, want in enumerate(SIPHASH24_VECTORS):
        assert siphash24(KEY, bytes(range(n))) == want


label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=63)
names = st.lists(label, min_size=1, max_size=8).map(".".join).filter(lambda n: len(n) <= 253)


@given(name=names, key=st.binary(min_size=16, max_size=16))
def test_keyed_hash_is_siphash24_of_the_reversed_name(name: str, key: bytes) -> None:
    assert keyed_hash(key, name) == siphash24(key, name[::-1].encode())
    assert keyed_hash(key, name.upper() + ".") == keyed_hash(key, name)


def test_keyed_hash_rejects_bad_keys_and_names() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        keyed_hash(b"short", "example.com")
    with pytest.raises(ValueError, match=r"a\.\.b"):
        keyed_hash(KEY, "a..b")


# ---- Building and looking up


def build(
    tmp_path: Path,
    entries: Iterable[tuple[str, int] | tuple[str, int, bool]],
    metadata: dict | None = None,
    key: bytes = KEY,
) -> DomainTable:
    b = TableBuilder(key)
    for entry in entries:
        b.add(*entry)
    path = tmp_path / "domains.tbl"
    b.build(path, metadata)
    return DomainTable.open(path, key)


def test_suffix_boundaries(tmp_path: Path) -> None:
    t = build(tmp_path, [("example.com", 1)])
    assert t.lookup("example.com").categories == 1
    assert t.lookup("www.example.com").categories == 1
    assert t.lookup("a.b.c.example.com").matched == "example.com"
    for name in (
        "notexample.com",
        "example.co",
        "com",
        "example.com.evil.net",
        "xexample.com",
        "example.org",
    ):
        m = t.lookup(name)
        assert not m and m.categories == 0 and m.matched is None and m.matched_len == -1, name


def test_most_specific_entry_first_and_masks_ored(tmp_path: Path) -> None:
    t = build(tmp_path, [("example.com", 1), ("ads.example.com", 2), ("x.ads.example.com", 4)])
    m = t.lookup("y.x.ads.example.com")
    assert m.categories == 7
    assert m.hits == (("x.ads.example.com", 4), ("ads.example.com", 2), ("example.com", 1))
    assert m.matched == "x.ads.example.com" and m.matched_len == len("x.ads.example.com")
    assert t.lookup("cdn.example.com").hits == (("example.com", 1),)


def test_exact_only_entries(tmp_path: Path) -> None:
    t = build(tmp_path, [("ads.example.com", 2, True), ("example.org", 1), ("example.org", 8, True)])
    assert t.lookup("ads.example.com").categories == 2
    assert not t.lookup("x.ads.example.com")
    assert not t.lookup("example.com")
    # The same name both ways: the exact part applies to the name itself only.
    assert t.lookup("example.org").categories == 9
    assert t.lookup("www.example.org").categories == 1


def test_case_and_trailing_dot(tmp_path: Path) -> None:
    t = build(tmp_path, [("Example.COM.", 1), (b"Bytes.Example.NET", 2)])
    assert t.lookup("WWW.example.com").categories == 1
    assert t.lookup("www.example.com.").categories == 1
    assert t.lookup(b"bytes.example.net.").categories == 2


def test_idn_names(tmp_path: Path) -> None:
    t = build(
        tmp_path, [("bücher.de", 1), ("xn--r8jz45g.xn--zckzah", 2), ("faß.de", 4), ("ＥＸＡＭＰＬＥ。org", 8)]
    )
    assert t.lookup("xn--bcher-kva.de").categories == 1
    assert t.lookup("www.Bücher.de").matched == "xn--bcher-kva.de"
    assert t.lookup("例え.テスト").categories == 2
    # UTS46 non-transitional, as browsers send it: ß is kept (xn--fa-hia), not mapped to ss.
    assert t.lookup("xn--fa-hia.de").categories == 4
    assert not t.lookup("fass.de")
    assert t.lookup("example.org").categories == 8
    # ASCII labels idna would refuse (underscores) still work beside Unicode ones.
    t2 = build(tmp_path, [("_dmarc.bücher.de", 16)])
    assert t2.lookup("_dmarc.xn--bcher-kva.de").categories == 16


def test_longest_names_and_labels(tmp_path: Path) -> None:
    label63 = "a" * 63
    name253 = ".".join([label63, "b" * 63, "c" * 63, "d" * 61])
    assert len(name253) == 253
    one_letter = ".".join("abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(127))  # 127 labels, 253 bytes
    t = build(tmp_path, [(name253, 1), (label63 + ".com", 2), (one_letter, 4)])
    assert t.lookup(name253).categories == 1
    assert t.lookup(name253 + ".").categories == 1
    assert t.lookup("x." + label63 + ".com").categories == 2
    assert t.lookup(one_letter).categories == 4
    assert t.lookup(one_letter[2:]).categories == 0
    b = TableBuilder(KEY)
    for bad in (name253 + "e", "a" * 64 + ".com", "a..com", ".com", "", ".", "exa mple.com", "ex\x00.com"):
        with pytest.raises(ValueError, match="invalid domain name"):
            b.add(bad, 1)
        with pytest.raises(ValueError, match="invalid domain name"):
            t.lookup(bad)


def test_duplicates_merge_by_or(tmp_path: Path) -> None:
    b = TableBuilder(KEY)
    b.add("example.com", 1)
    b.add("EXAMPLE.com", 2)
    b.add_hash(keyed_hash(KEY, "example.com"), 4)
    b.add("example.com", 8, exact=True)
    b.build(tmp_path / "t")
    t = DomainTable.open(tmp_path / "t", KEY)
    assert len(t) == 1
    assert t.lookup("example.com").categories == 15
    assert t.lookup("a.example.com").categories == 7


def test_many_categories_and_masksets(tmp_path: Path) -> None:
    # Every bit, and thousands of distinct combinations (each its own maskset).
    entries = [(f"bit{i}.example", 1 << i) for i in range(64)]
    entries += [(f"combo{i}.example", (i * 0x9E3779B97F4A7C15) & MASK64 | 1) for i in range(5000)]
    t = build(tmp_path, entries)
    for name, mask in entries:
        assert t.lookup("www." + name).categories == mask
    assert t.lookup("x.bit63.example").categories == 1 << 63


def test_too_many_category_combinations(tmp_path: Path) -> None:
    b = TableBuilder(KEY)
    for i in range(1, 65536):
        b.add(f"n{i}.example", i)
    with pytest.raises(TableError, match="distinct category combinations"):
        b.add("one-more.example", 65536)
    # Merging duplicates can need a new combination too: 1 | 1 << 40 when every id is taken.
    b2 = TableBuilder(KEY)
    for i in range(1, 65535):
        b2.add(f"n{i}.example", i)
    b2.add("n1.example", 1 << 40)
    with pytest.raises(TableError, match="distinct category combinations"):
        b2.build(tmp_path / "t")


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TableBuilder(b"x" * 15)
    b = TableBuilder(KEY)
    for bad in (0, -1, 1 << 64):
        with pytest.raises(ValueError, match="categories"):
            b.add("example.com", bad)
    for bad in (-1, 1 << 64):
        with pytest.raises(ValueError, match="64-bit"):
            b.add_hash(bad, 1)
    with pytest.raises(ValueError, match="labels"):
        b.add_hash(5, 1, labels=0)
    with pytest.raises(TypeError):
        b.add(42, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metadata"):
        b.build("/nonexistent/t", ["not", "a", "dict"])  # type: ignore[arg-type]


def test_empty_table(tmp_path: Path) -> None:
    t = build(tmp_path, [])
    assert len(t) == 0
    assert not t.lookup("example.com")


# A model of the lookup: suffixes at label boundaries, exact entries for the whole name only.
def model_lookup(entries: list[tuple[str, int, bool]], name: str) -> list[tuple[str, int]]:
    labels = name.split(".")
    hits = []
    for i in range(len(labels)):
        suffix = ".".join(labels[i:])
        mask = 0
        for entry, cats, exact in entries:
            if entry == suffix and (not exact or i == 0):
                mask |= cats
        if mask:
            hits.append((suffix, mask))
    return hits


small_label = st.sampled_from(["a", "b", "ab", "com", "x-1", "_s", "example"])
small_names = st.lists(small_label, min_size=1, max_size=5).map(".".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(st.tuples(small_names, st.integers(1, MASK64), st.booleans()), max_size=30),
    queries=st.lists(small_names, max_size=30),
)
def test_lookup_matches_model(
    tmp_path: Path, entries: list[tuple[str, int, bool]], queries: list[str]
) -> None:
    with build(tmp_path, entries) as t:
        for q in queries + [e[0] for e in entries]:
            assert list(t.lookup(q).hits) == model_lookup(entries, q)


@pytest.fixture(scope="module")
def small_table(tmp_path_factory: pytest.TempPathFactory) -> DomainTable:
    return build(tmp_path_factory.mktemp("small"), [("example.com", 1), ("a", 2)])


@settings(max_examples=500, deadline=None)
@given(name=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_names_never_crash(small_table: DomainTable, name: str | bytes) -> None:
    try:
        m = small_table.lookup(name)
    except ValueError:
        return
    assert m.categories in (0, 1, 2, 3)


# ---- The file: format, atomic replacement, metadata, confidentiality


def test_metadata_and_header_fields(tmp_path: Path) -> None:
    t = build(tmp_path, [("example.com", 1)], metadata={"policy_version": 7, "lists": {"adult": 1}})
    assert t.metadata == {"policy_version": 7, "lists": {"adult": 1}}
    assert t.created > 1_600_000_000
    assert t.file_size == (tmp_path / "domains.tbl").stat().st_size
    assert build(tmp_path, [("example.com", 1)]).metadata == {}


def test_size_per_entry(tmp_path: Path) -> None:
    t = build(tmp_path, [(f"host{i}.example.net", 1 << (i % 64)) for i in range(20000)])
    assert len(t) == 20000
    assert t.file_size / len(t) < 12 / 0.75 + 0.1  # 12-byte slots at 75% load, a little overhead


def test_rebuild_replaces_atomically_and_open_table_keeps_its_mapping(tmp_path: Path) -> None:
    old = build(tmp_path, [("old.example", 1)])
    new = build(tmp_path, [("new.example", 2)])
    assert old.lookup("old.example").categories == 1  # still the old file's mapping
    assert not old.lookup("new.example")
    assert new.lookup("new.example").categories == 2 and not new.lookup("old.example")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["domains.tbl"]  # no temporary left over
    old.close()
    with pytest.raises(ValueError, match="closed"):
        old.lookup("old.example")
    new.close()


def test_failed_build_leaves_the_old_file(tmp_path: Path) -> None:
    build(tmp_path, [("keep.example", 1)]).close()
    b = TableBuilder(KEY)
    b.add("other.example", 1)
    with pytest.raises(TypeError):
        b.build(tmp_path / "domains.tbl", {"not json": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["domains.tbl"]
    assert DomainTable.open(tmp_path / "domains.tbl", KEY).lookup("keep.example").categories == 1


def test_confidential_entries_never_in_clear(tmp_path: Path) -> None:
    secret = "hidden-abuse-host.example-secret.org"
    public = [f"site{i}.public-list.net" for i in range(200)]
    b = TableBuilder(KEY)
    b.add_hash(keyed_hash(KEY, secret), 1 << 5, labels=3)
    for name in public:
        b.add(name, 1)
    b.build(tmp_path / "t", {"lists": {"iwf": 1, "public": len(public)}})
    t = DomainTable.open(tmp_path / "t", KEY)
    assert t.lookup("www." + secret).categories == 1 << 5
    raw = (tmp_path / "t").read_bytes()
    for name in [secret, *public]:
        for part in [name, *name.split(".")]:
            if len(part) >= 5:
                assert part.encode() not in raw, part
                assert part.encode("utf-16-le") not in raw, part
    assert KEY not in raw


def test_add_hash_without_labels_is_found_at_every_depth(tmp_path: Path) -> None:
    b = TableBuilder(KEY)
    b.add("a.b.c.d", 1)  # only depth 4 otherwise
    b.add_hash(keyed_hash(KEY, "tld"), 2)
    b.build(tmp_path / "t")
    assert DomainTable.open(tmp_path / "t", KEY).lookup("x.tld").categories == 2


def test_add_hashes_with_a_lists_depth_mask(tmp_path: Path) -> None:
    """A list's entries come as an array of hashes with one depth mask: only those depths are probed."""
    names = ["casino.example", "www.poker.example", "a.b.c.d.e"]
    depths = 0
    for name in names:
        depths |= keyed_hash_depth(KEY, name)[1]
    assert depths == 0b10110 and keyed_hash_depth(KEY, ".".join("a" * 70))[1] == 1 << 63
    b = TableBuilder(KEY)
    b.add_hashes(array("Q", [keyed_hash(KEY, n) for n in names]), 1, depths=depths)
    b.add_hashes(array("Q", [keyed_hash(KEY, "only.example")]), 2, exact=True, depths=0b10)
    b.add_hashes(array("Q"), 4, depths=1)  # nothing to add: no depth either
    b.build(tmp_path / "t")
    t = DomainTable.open(tmp_path / "t", KEY)
    assert t.depths == depths and len(t) == 4
    assert t.lookup("x.www.poker.example").hits == (("www.poker.example", 1),)
    assert t.lookup("z.a.b.c.d.e").matched == "a.b.c.d.e"
    assert t.lookup("only.example").categories == 2 and not t.lookup("x.only.example")
    b.add_hashes(array("Q", [keyed_hash(KEY, "tld")]), 8)  # no mask: every depth
    b.build(tmp_path / "t")
    assert DomainTable.open(tmp_path / "t", KEY).lookup("x.tld").categories == 8
    with pytest.raises(ValueError, match="depths"):
        b.add_hashes(array("Q", [1]), 1, depths=0)
    with pytest.raises(ValueError, match="categories"):
        b.add_hashes(array("Q", [1]), 0)
    with pytest.raises(ValueError, match="dtype"):
        b.add_hashes(array("I", [1]), 1)


def test_wrong_key(tmp_path: Path) -> None:
    build(tmp_path, [("example.com", 1)]).close()
    with pytest.raises(TableError, match="different key"):
        DomainTable.open(tmp_path / "domains.tbl", OTHER_KEY)
    with pytest.raises(ValueError, match="16 bytes"):
        DomainTable.open(tmp_path / "domains.tbl", b"")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small valid table file's bytes."""
    directory = tmp_path_factory.mktemp("image")
    build(directory, [(f"n{i}.example", 1 << (i % 5)) for i in range(50)], metadata={"v": 1}).close()
    return (directory / "domains.tbl").read_bytes()


def _open_image(tmp_path: Path, data: bytes, fix_checksum: bool = False) -> DomainTable:
    if fix_checksum:
        data = data[:8] + struct.pack("<Q", file_checksum(data)) + data[16:]
    path = tmp_path / "bad.tbl"
    path.write_bytes(data)
    return DomainTable.open(path, KEY)


def test_truncated_files(tmp_path: Path, image: bytes) -> None:
    data = image
    for size in (0, 1, 15, 16, HEADER - 1, HEADER, HEADER + 3, len(data) // 2, len(data) - 12, len(data) - 1):
        with pytest.raises(TableError, match="truncated"):
            _open_image(tmp_path, data[:size])
    with pytest.raises(TableError, match="truncated or padded"):
        _open_image(tmp_path, data + b"\0")


def test_any_flipped_byte_is_detected(tmp_path: Path, image: bytes) -> None:
    data = image
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises(TableError):
            _open_image(tmp_path, bytes(bad))


def test_header_faults(tmp_path: Path, image: bytes) -> None:
    data = image
    with pytest.raises(TableError, match="not a domain table"):
        _open_image(tmp_path, b"XXXXXXXX" + data[8:])
    with pytest.raises(TableError, match="unsupported format version 2"):
        _open_image(tmp_path, data[:16] + struct.pack("<I", 2) + data[20:], fix_checksum=True)
    with pytest.raises(TableError, match="checksum"):
        _open_image(tmp_path, data[:8] + bytes(8) + data[16:])
    for offset, fmt, value in (
        (24, "<Q", 10**9),  # entry count above capacity
        (32, "<Q", 0),  # capacity
        (32, "<Q", 2**64 - 2),  # capacity that would wrap
        (40, "<Q", 1),  # slot count
        (48, "<I", 0),  # maskset count
        (52, "<I", 1 << 30),  # metadata length
    ):
        bad = data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt) :]
        with pytest.raises(TableError, match=r"inconsistent counts|truncated"):
            _open_image(tmp_path, bad, fix_checksum=True)


def _layout(data: bytes) -> tuple[int, int, int]:
    """(masks offset, slots offset, slot count) of a table image."""
    slot_count, maskset_count, metadata_len = struct.unpack_from("<QII", data, 40)
    masks = (HEADER + metadata_len + 7) & ~7
    return masks, (masks + 8 * maskset_count + 63) & ~63, slot_count


def test_slot_invariants_are_checked(tmp_path: Path, image: bytes) -> None:
    # Internally consistent files (checksum fixed) whose slots break what lookups rely on.
    data = image
    masks, slots, count = _layout(data)
    occupied = [i for i in range(count) if data[slots + 12 * i : slots + 12 * i + 8] != b"\xff" * 8]
    free = [i for i in range(count) if i not in occupied]

    def patched(index: int, fmt: str, field: int, value: int) -> bytes:
        at = slots + 12 * index + field
        return data[:at] + struct.pack(fmt, value) + data[at + struct.calcsize(fmt) :]

    # An entry that sits at its home after a free slot, moved into that free slot: before its home.
    at_home = next(i for i in occupied if i - 1 in free)
    moved = bytearray(data)
    left, mid, right = (slots + 12 * (at_home + k) for k in (-1, 0, 1))
    moved[left:right] = data[mid:right] + data[left:mid]
    entries = struct.unpack_from("<Q", data, 24)[0]
    cases = {
        "maskset that does not exist": patched(occupied[0], "<I", 8, 0xFFFF),
        "free slot carries data": patched(free[0], "<I", 8, 1),
        "not in increasing order": patched(occupied[1], "<Q", 0, 0),
        "not reachable": bytes(moved),
        "entry count": data[:24] + struct.pack("<Q", entries - 1) + data[32:],
    }
    for message, image in cases.items():
        with pytest.raises(TableError, match=message):
            _open_image(tmp_path, image, fix_checksum=True)
    # Maskset 0 must stay empty, and metadata must be a JSON object.
    with pytest.raises(TableError, match="maskset 0"):
        _open_image(tmp_path, data[:masks] + struct.pack("<Q", 1) + data[masks + 8 :], fix_checksum=True)
    with pytest.raises(TableError, match="metadata"):
        _open_image(tmp_path, data[:HEADER] + b"[1,2,3]" + data[HEADER + 7 :], fix_checksum=True)
    with pytest.raises(TableError, match="metadata"):
        _open_image(tmp_path, data[:HEADER] + b"\xff" * 7 + data[HEADER + 7 :], fix_checksum=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=12)), min_size=1, max_size=4
    )
)
def test_corrupt_images_with_a_valid_checksum_fail_cleanly(
    tmp_path: Path, image: bytes, edits: list[tuple[int, bytes]]
) -> None:
    # Past the checksum: a file that loads must also look up without harm.
    data = bytearray(image)
    for pos, chunk in edits:
        at = pos % len(data)
        data[at : at + len(chunk)] = chunk
    try:
        t = _open_image(tmp_path, bytes(data), fix_checksum=True)
    except TableError:
        return
    with t:
        for name in ("n1.example", "www.n7.example", "example", "x.y.z"):
            t.lookup(name)


def test_spill_past_capacity_and_free_tail(tmp_path: Path) -> None:
    # Hashes at the very top all have the last home slot, so they spill past the capacity.
    b = TableBuilder(KEY)
    for i in range(10):
        b.add_hash(2**64 - 1 - i, 1 << i)
    b.build(tmp_path / "t")
    t = DomainTable.open(tmp_path / "t", KEY)
    assert len(t) == 9  # 2**64 - 1 is reserved for free slots, so it merged with 2**64 - 2
    t.close()
    data = (tmp_path / "t").read_bytes()
    _, _, count = _layout(data)
    # Without the free tail a probe window could run off the end: such a file is refused.
    short = data[:40] + struct.pack("<Q", count - 4) + data[48 : len(data) - 48]
    with pytest.raises(TableError, match="end with free slots"):
        _open_image(tmp_path, short, fix_checksum=True)


def test_file_checksum_is_xxh64_of_the_body() -> None:
    # Published XXH64 (seed 0) vectors, behind the 16 bytes the checksum skips.
    for text, want in (
        (b"", 0xEF46DB3751D8E999),
        (b"a", 0xD24EC4F1A98C6E5B),
        (b"abc", 0x44BC2CF5AD770999),
        (b"Nobody inspects the spammish repetition", 0xFBCEA83C8A378BF1),
        (b"Some years ago--never mind how long precisely-", 0x8F26F2B986AFDC52),
    ):
        assert file_checksum(bytes(16) + text) == want
    with pytest.raises(ValueError):
        file_checksum(b"short")


def test_fuzz_harness_runs_clean(tmp_path: Path) -> None:
    harness = Path(__file__).parent / "fuzz" / "fuzz_table.py"
    result = subprocess.run(
        [sys.executable, str(harness), "-atheris_runs=3000"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "Done 3000 in" in result.stderr
