"""The appliance's unbound: configured from [dns], started the way its systemd unit starts it
(`appliance resolver`, which becomes unbound), and asked with dig on 127.0.0.1 and ::1."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import Netns, netns_lab

from appliance import config, resolver
from appliance.lab import unbound as lab_unbound

pytestmark = pytest.mark.netns

ROOT_ADDR, FORWARDER_ADDR = "10.53.0.1", "10.53.0.2"
ROOT_ZONE = f"""\
$TTL 3600
.                IN SOA a.root.lab. admin.lab. 1 3600 600 86400 3600
.                IN NS  a.root.lab.
a.root.lab.      IN A   {ROOT_ADDR}
www.school.lab.  IN A   192.0.2.10
www.school.lab.  IN AAAA 2001:db8::10
"""

CONFIG = """\
[appliance]
name = "Resolver Test"
state_dir = "state"

[wan]
interface = "wan0"

[dns]
upstream = "127.0.0.1:5353"
{dns}

[[lan]]
interface = "lan0"
group = "students"
subnets = ["10.10.0.0/24"]

[groups.students]
"""


def write_config(tmp_path: Path, dns: str) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(CONFIG.format(dns=dns))
    return path


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[Netns]:
    """A namespace with a lab root server (unbound, authoritative for ".") at ROOT_ADDR."""
    with netns_lab() as lab:
        ns = lab.namespace("dns")
        ns.ip("addr", "add", f"{ROOT_ADDR}/32", "dev", "lo")
        ns.ip("addr", "add", f"{FORWARDER_ADDR}/32", "dev", "lo")
        (tmp_path / "root.zone").write_text(ROOT_ZONE)
        conf = tmp_path / "root.conf"
        conf.write_text(lab_unbound.nameserver(tmp_path, [ROOT_ADDR], {".": tmp_path / "root.zone"}))
        ns.popen("unbound", "-d", "-c", str(conf))
        (tmp_path / "root.hints").write_text(
            f".  3600000 IN NS a.root.lab.\na.root.lab. 3600000 IN A {ROOT_ADDR}\n"
        )
        ns.wait_for_port(53, "udp")
        yield ns


def start_resolver(ns: Netns, config_path: Path) -> subprocess.Popen[str]:
    process = ns.popen(sys.executable, "-m", "appliance.cli", "resolver", "--config", str(config_path))
    ns.wait_for_port(5353, "udp")
    return process


def dig(ns: Netns, server: str, name: str, rtype: str = "A") -> str:
    return ns.run(
        "dig", "+short", "+time=2", "+tries=1", "-p", "5353", f"@{server}", name, rtype
    ).stdout.strip()


def test_recurses_from_custom_root_hints_and_caches(ns: Netns, tmp_path: Path) -> None:
    start_resolver(ns, write_config(tmp_path, 'root_hints = "root.hints"'))
    conf = (tmp_path / "state/resolver/unbound.conf").read_text()
    assert 'module-config: "iterator"' in conf  # no validation against a custom root
    assert dig(ns, "127.0.0.1", "www.school.lab") == "192.0.2.10"
    assert dig(ns, "::1", "www.school.lab", "AAAA") == "2001:db8::10"


def test_answers_from_cache_while_the_root_is_down(ns: Netns, tmp_path: Path) -> None:
    start_resolver(ns, write_config(tmp_path, 'root_hints = "root.hints"'))
    assert dig(ns, "127.0.0.1", "www.school.lab") == "192.0.2.10"
    ns.ip("addr", "del", f"{ROOT_ADDR}/32", "dev", "lo")  # the root is unreachable from now on
    assert dig(ns, "127.0.0.1", "www.school.lab") == "192.0.2.10"


def test_forwards_to_configured_forwarders(ns: Netns, tmp_path: Path) -> None:
    ns.popen(
        "dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
        "--pid-file=", "--user=root", f"--listen-address={FORWARDER_ADDR}", "--address=/#/198.51.100.7",
    )  # fmt: skip
    start_resolver(ns, write_config(tmp_path, f'forwarders = ["{FORWARDER_ADDR}:53"]\ndnssec = false'))
    assert dig(ns, "127.0.0.1", "www.school.lab") == "198.51.100.7"  # the root would say 192.0.2.10


def test_readiness_probe(ns: Netns, tmp_path: Path) -> None:
    probe = "from appliance.resolver import answers; print(answers('127.0.0.1', 5353), answers('::1', 5353))"
    assert ns.run(sys.executable, "-c", probe).stdout.split() == ["False", "False"]
    start_resolver(ns, write_config(tmp_path, 'root_hints = "root.hints"'))
    assert ns.run(sys.executable, "-c", probe).stdout.split() == ["True", "True"]


def test_dnssec_by_default_with_the_iana_anchor(tmp_path: Path) -> None:
    cfg = config.load(write_config(tmp_path, ""))
    assert cfg.dns.dnssec
    conf = resolver.write_conf(cfg)
    text = conf.read_text()
    anchor = tmp_path / "state/resolver/root.key"
    assert f'auto-trust-anchor-file: "{anchor}"' in text
    assert "module-config" not in text  # unbound's default: validator and iterator
    assert anchor.read_text() == resolver.ROOT_TRUST_ANCHOR.read_text()
    checked = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
