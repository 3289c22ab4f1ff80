"""What a block-page request is about (Host header or the HTTP filter's redirect), which LAN it came
from, and the connection limits: the server's decisions that need no network."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from appliance import config
from appliance.blockpage import inject, server

CONFIG = """
[appliance]
name = "Request Test School"
[wan]
interface = "wan0"
[[lan]]
interface = "lo"
group = "students"
subnets = ["127.0.0.0/8", "::1/128"]
[groups.students]
"""


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("casino.test", "casino.test"),
        ("casino.test:8080", "casino.test"),
        ("[2001:db8::1]:80", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),  # no brackets: no port to take off
        ("b\xc3\xbccher.test", "bücher.test"),  # UTF-8 as http.server hands it over (Latin-1)
        ("\xff.test", "\xff.test"),  # not UTF-8: left as it came, and no name
        (" casino.test ", "casino.test"),
    ],
)
def test_host_of_takes_off_port_and_brackets(header: str, host: str) -> None:
    assert server.host_of(header) == host


@pytest.mark.parametrize(
    ("header", "target", "expected"),
    [
        ("WWW.Casino.Test.", "/anything", server.Request("www.casino.test", None, "dns")),
        ("bücher.test", "/", server.Request("xn--bcher-kva.test", None, "dns")),
        ("<script>", "/", server.Request("", None, "dns")),
        ("192.0.2.1", "/", server.Request(None, None, "http")),
        (None, "/", server.Request(None, None, "http")),
        ("192.0.2.1", "/?site=casino.test", server.Request("casino.test", None, "http")),
        (
            "[2001:db8::1]",
            "/?site=pages.test&path=%2Fa%3Fb%3D%FF",
            server.Request("pages.test", b"/a?b=\xff", "http"),
        ),
        ("192.0.2.1", "/?site=192.0.2.1", server.Request("", None, "http")),  # an address is no site
        ("192.0.2.1", "/?site=" + "a" * 5000, server.Request("", None, "http")),
        # A name in the Host wins over a query (only the redirect to an address carries one).
        ("casino.test", "/?site=other.test", server.Request("casino.test", None, "dns")),
    ],
)
def test_parse_request(header: str | None, target: str, expected: server.Request) -> None:
    assert server.parse_request(header, target) == expected


def test_the_redirect_url_is_what_the_server_reads() -> None:
    """inject's block_page_url and the server's parse_request agree, byte for byte."""
    path = b"/bad/p\xe9ge.html?x=1&y=%2F#"
    url = inject.block_page_url(ipaddress.IPv6Address("2001:db8::1"), "pages.test", path)
    target = url.split("]", 1)[1]
    assert server.parse_request("[2001:db8::1]", target) == server.Request("pages.test", path, "http")


def test_lan_of_needs_the_interface_and_a_subnet_of_it(tmp_path: Path) -> None:
    cfg = config.parse(CONFIG, base_dir=tmp_path)
    lo = socket.if_nametoindex("lo")
    assert server.lan_of(cfg, lo, "127.0.0.5") == cfg.lans[0]
    assert server.lan_of(cfg, lo, "::ffff:127.0.0.5") == cfg.lans[0]  # IPv4 on an IPv6 socket
    assert server.lan_of(cfg, lo, "10.0.0.1") is None  # not in the LAN's subnets
    assert server.lan_of(cfg, 0, "127.0.0.5") is None  # ingress not known
    assert server.lan_of(cfg, lo, "not an address") is None


def test_slots_cap_connections_in_all_and_per_client() -> None:
    slots = server.Slots(total=3, per_client=2)
    assert slots.take("a") and slots.take("a")
    assert not slots.take("a")  # a's own limit
    assert slots.take("b")
    assert not slots.take("c")  # all taken
    slots.give_back("a")
    assert slots.take("c")
    slots.give_back("a")
    slots.give_back("b")
    slots.give_back("c")
    assert slots.held == {}
