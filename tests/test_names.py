"""The shared name rules every parser and the table apply."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpath import siphash
from fastpath.names import normalise

KEY = bytes(range(16))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("WWW.Example.COM.", "www.example.com"),
        (b"www.example.com", "www.example.com"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("faß.de", "xn--fa-hia.de"),  # UTS #46 non-transitional, as browsers send it
        ("", ""),
        (".", ""),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
        ("a" * 64 + ".example", None),
        ("bad..name", None),
        ("two..", None),
        ("sp ace.example", None),
        ("nul\x00.example", None),
        (b"\xff.example", None),
    ],
)
def test_normalise(raw: str | bytes, expected: str | None) -> None:
    assert normalise(raw) == expected


def test_longest_name() -> None:
    name = ".".join(["a" * 63] * 3) + "." + "b" * 61
    assert len(name) == 253 and normalise(name) == name
    assert normalise(name + "b") is None


def test_unicode_names_hash_as_their_a_label() -> None:
    """A Unicode list entry matches the punycode name a client sends."""
    assert siphash.keyed_hash(KEY, "Bücher.DE") == siphash.keyed_hash(KEY, normalise("bücher.de"))


@given(st.text(max_size=300))
def test_normalised_names_are_fixed_points(raw: str) -> None:
    out = normalise(raw)
    if out is not None:
        assert normalise(out) == out
        assert out == out.lower() and not out.endswith(".") and len(out) <= 253
