"""The configuration schema: every bad value is reported with its key and line, and good ones load."""

from __future__ import annotations

import ipaddress
import textwrap
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import config
from appliance.config import ConfigError, KeyLines

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "appliance.toml"

MINIMAL = """\
[appliance]
name = "Test School"
state_dir = "state"

[wan]
interface = "wan0"

[[lan]]
interface = "lan10"
group = "students"
subnets = ["10.10.0.0/24", "fd00:10::/64"]

[groups.students]
fail = "closed"
"""


def problems(text: str, tmp_path: Path) -> list[tuple[str, int | None, str]]:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    return [(p.key, p.line, p.message) for p in info.value.problems]


def only_problem(text: str, tmp_path: Path) -> tuple[str, int | None, str]:
    found = problems(text, tmp_path)
    assert len(found) == 1, found
    return found[0]


def test_example_config_loads_with_group_ids_in_file_order() -> None:
    cfg = config.load(EXAMPLE)
    assert [(g.name, g.id) for g in cfg.groups] == [
        ("students", 1),
        ("staff", 2),
        ("exams", 3),
        ("specialist", 4),
    ]
    assert cfg.group("exams").internet == "allowlist"
    assert cfg.group("staff").fail == "open"
    assert [lan.interface for lan in cfg.lans] == ["eth0.10", "eth0.20", "eth0.30", "eth0.40"]
    assert cfg.dns.upstream == config.Endpoint(ipaddress.ip_address("127.0.0.1"), 5353)
    assert str(cfg.dns.upstream) == "127.0.0.1:5353"


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "root.hints").write_text(".  3600 IN NS a.root.test.\n")
    path = tmp_path / "appliance.toml"
    path.write_text(
        MINIMAL.replace(
            "[wan]",
            '[dns]\nroot_hints = "root.hints"\nforwarders = ["192.0.2.53", "[2001:db8::53]:5300"]\n\n[wan]',
        )
    )
    cfg = config.load(path)
    assert cfg.appliance.state_dir == tmp_path / "state"
    assert cfg.appliance.timezone == "Europe/London"
    assert cfg.dns.root_hints == tmp_path / "root.hints"
    assert [str(f) for f in cfg.dns.forwarders] == ["192.0.2.53:53", "[2001:db8::53]:5300"]
    assert cfg.dns.listen_port == 53
    assert cfg.wan.masquerade is True
    assert cfg.fastpath.queues == range(0, 1)
    assert cfg.fastpath.packets_per_flow == 6
    assert cfg.group("students").internet == "filtered"
    assert cfg.dns.block_answer == "page"
    students = cfg.group("students")
    assert (students.safesearch, students.strip_ech, students.block_doh_canary) == ("strict", True, True)
    assert students.block_private_relay is True


def test_per_group_dns_settings_and_block_answer(tmp_path: Path) -> None:
    path = tmp_path / "appliance.toml"
    text = MINIMAL.replace("[wan]", '[dns]\nblock_answer = "nxdomain"\n\n[wan]') + textwrap.dedent("""
        safesearch = "moderate"
        strip_ech = false

        [groups.specialist]
        fail = "open"
        safesearch = "off"
        block_doh_canary = false
        block_private_relay = false
        """)
    path.write_text(text)
    cfg = config.load(path)
    assert cfg.dns.block_answer == "nxdomain"
    students, specialist = cfg.group("students"), cfg.group("specialist")
    assert (students.safesearch, students.strip_ech) == ("moderate", False)
    assert (students.block_doh_canary, students.block_private_relay) == (True, True)
    assert specialist.safesearch == "off"
    assert (specialist.strip_ech, specialist.block_doh_canary, specialist.block_private_relay) == (
        True,
        False,
        False,
    )


@pytest.mark.parametrize(
    ("old", "new", "key", "line", "message"),
    [
        ('name = "Test School"', 'name = "Test School"\nnmae = "x"', "appliance.nmae", 3, "unknown key"),
        (
            'interface = "wan0"',
            'interface = "wan0"\nmasquerade = "yes"',
            "wan.masquerade",
            7,
            "true or false",
        ),
        ('interface = "wan0"', 'interface = "wan 0"', "wan.interface", 6, "not a network interface name"),
        ('interface = "wan0"', 'interface = "wan0-is-far-too-long"', "wan.interface", 6, "at most 15"),
        ("[wan]", "[dns]\nlisten_port = 70000\n\n[wan]", "dns.listen_port", 6, "between 1 and 65535"),
        ("[wan]", "[dns]\nlisten_port = true\n\n[wan]", "dns.listen_port", 6, "must be an integer"),
        ("[wan]", '[dns]\nupstream = "192.0.2.9:53"\n\n[wan]', "dns.upstream", 6, "must be a loopback"),
        ("[wan]", '[dns]\nupstream = "127.0.0.1"\n\n[wan]', "dns.upstream", 6, "needs a port"),
        ("[wan]", '[dns]\nblock_ipv4 = "2001:db8::1"\n\n[wan]', "dns.block_ipv4", 6, "not an IPv4 address"),
        ("[wan]", '[dns]\nroot_hints = "missing.hints"\n\n[wan]', "dns.root_hints", 6, "no such file"),
        (
            "[wan]",
            '[dns]\nforwarders = [\n  "192.0.2.53",\n  "dns.example",\n]\n\n[wan]',
            "dns.forwarders[1]",
            8,
            "not an address",
        ),
        ("[wan]", '[dns]\nforwarders = ["192.0.2.53:0"]\n\n[wan]', "dns.forwarders[0]", 6, "no port between"),
        ("[wan]", "[fastpath]\npackets_per_flow = 0\n\n[wan]", "fastpath.packets_per_flow", 6, "between 1"),
        (
            'state_dir = "state"',
            'state_dir = "state"\ntimezone = "Mars/Olympus"',
            "appliance.timezone",
            4,
            "time zone",
        ),
        ('group = "students"', 'group = "teachers"', "lan[0].group", 10, "no such group 'teachers'"),
        ('"10.10.0.0/24"', '"10.10.0.1/24"', "lan[0].subnets[0]", 11, "has host bits set"),
        ('subnets = ["10.10.0.0/24", "fd00:10::/64"]', "subnets = []", "lan[0].subnets", 11, "at least one"),
        ('interface = "lan10"', 'interface = "wan0"', "lan[0].interface", 9, "also the WAN interface"),
        ('fail = "closed"', 'fail = "maybe"', "groups.students.fail", 14, "'closed', 'open'"),
        (
            'fail = "closed"',
            'fail = "open"\ninternet = "allowlist"',
            "groups.students.fail",
            14,
            "cannot fail open",
        ),
        ("[groups.students]", "[groups.Students]", "groups.Students", 13, "lower-case"),
        (
            'fail = "closed"',
            'fail = "closed"\nsafesearch = "safe"',
            "groups.students.safesearch",
            15,
            "must be one of 'strict', 'moderate', 'off', not 'safe'",
        ),
        (
            'fail = "closed"',
            'fail = "closed"\nstrip_ech = "yes"',
            "groups.students.strip_ech",
            15,
            "must be true or false",
        ),
        (
            'fail = "closed"',
            'fail = "closed"\nblock_doh_canary = 1',
            "groups.students.block_doh_canary",
            15,
            "must be true or false",
        ),
        (
            'fail = "closed"',
            'fail = "closed"\nblock_private_relay = "no"',
            "groups.students.block_private_relay",
            15,
            "must be true or false",
        ),
        (
            "[wan]",
            '[dns]\nblock_answer = "refused"\n\n[wan]',
            "dns.block_answer",
            6,
            "must be one of 'page', 'nxdomain', not 'refused'",
        ),
        ("[wan]", "[firewall]\nx = 1\n\n[wan]", "firewall", 5, "unknown section"),
    ],
)
def test_bad_value_names_key_and_line(
    tmp_path: Path, old: str, new: str, key: str, line: int, message: str
) -> None:
    assert old in MINIMAL
    found_key, found_line, found_message = only_problem(MINIMAL.replace(old, new, 1), tmp_path)
    assert (found_key, found_line) == (key, line)
    assert message in found_message


def test_missing_required_keys_point_at_their_table(tmp_path: Path) -> None:
    text = MINIMAL.replace('interface = "wan0"\n', "masquerade = false\n")
    assert only_problem(text, tmp_path) == ("wan.interface", 5, "is required")
    text = MINIMAL.replace('[groups.students]\nfail = "closed"\n', "")
    found = problems(text, tmp_path)
    assert ("groups", None, "at least one group is required, e.g. [groups.students]") in found


def test_second_lan_problems_name_that_lan(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent("""
        [[lan]]
        interface = "lan10"
        group = "students"
        subnets = ["10.11.0.0/24"]
        """)
    assert only_problem(text, tmp_path) == ("lan[1].interface", 17, "'lan10' is already another [[lan]]")


def test_every_problem_is_reported_in_one_message(tmp_path: Path) -> None:
    text = MINIMAL.replace('interface = "wan0"', "interface = 7").replace('fail = "closed"', 'fail = "shut"')
    path = tmp_path / "school.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).splitlines() == [
        f"{path}:6: wan.interface: must be a string, not 7",
        f"{path}:14: groups.students.fail: must be one of 'closed', 'open', not 'shut'",
    ]


def test_toml_syntax_error_gives_its_line(tmp_path: Path) -> None:
    key, line, message = only_problem(MINIMAL.replace('group = "students"', "group = students"), tmp_path)
    assert (key, line) == ("(syntax)", 10)
    assert "not valid TOML" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        config.load(tmp_path / "absent.toml")


TRICKY = '''\
# [not.a.table] = 1
title = """
[fake]
name = "inside a string"
"""   # ends here
'quoted.key' = 'x'
a.b.c = 1
  [ server . "main" ]  # spaces are allowed in headers
port = 8080
hosts = [
  "alpha",   # a comment with ] and ,
  'be]ta',
]
inline = { x = 1, y = { z = [1, 2] } }
[[item]]
name = """two ""quotes"" here"""
[[item]]
name = 'second'
points = [{ p = 1 },
          { p = 2 }]
[[item.part]]
size = 3
[item.meta]
date = 1979-05-27 07:32:00Z
'''


def test_key_lines_follow_toml_structure() -> None:
    tomllib.loads(TRICKY)  # the locator only ever sees valid TOML
    lines = KeyLines(TRICKY)
    expected: dict[tuple[str | int, ...], int] = {
        ("title",): 2,
        ("quoted.key",): 6,
        ("a", "b", "c"): 7,
        ("a",): 7,
        ("server", "main"): 8,
        ("server", "main", "port"): 9,
        ("server", "main", "hosts"): 10,
        ("server", "main", "hosts", 1): 12,
        ("server", "main", "inline", "y", "z", 1): 14,
        ("item", 0): 15,
        ("item", 0, "name"): 16,
        ("item", 1): 17,
        ("item", 1, "name"): 18,
        ("item", 1, "points", 1, "p"): 20,
        ("item", 1, "part", 0, "size"): 22,
        ("item", 1, "meta", "date"): 24,
        ("fake",): None,  # only inside a string
        ("item", 1, "nothing", "here"): 17,  # falls back to the enclosing table
    }
    assert {path: lines.line(path) for path in expected} == expected


_key = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
_value = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(alphabet="ab[]=#,'\" \n{}", max_size=12).map(lambda t: '"""' + t.replace('"', "'") + 'x"""'),
    st.text(alphabet='ab[]=#," ', max_size=8).map(lambda t: "'" + t + "'"),
    st.lists(st.integers(0, 9).map(str), max_size=3).map(lambda xs: "[\n  " + ",\n  ".join(xs) + "\n]"),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), _key, st.dictionaries(_key, _value, max_size=4)),
        min_size=1,
        max_size=5,
    )
)
def test_key_lines_match_generated_documents(sections: list[tuple[bool, str, dict[str, str]]]) -> None:
    """Random documents (tables, arrays of tables, multi-line values): each key is found on its line."""
    text_lines: list[str] = []
    expected: dict[tuple[str | int, ...], int] = {}
    array_counts: dict[str, int] = {}
    kinds: dict[str, bool] = {}
    for is_array, name, body in sections:
        if kinds.setdefault(name, is_array) != is_array or (not is_array and name in array_counts):
            continue  # TOML forbids redefining a table or mixing the two kinds
        array_counts[name] = array_counts.get(name, -1) + 1
        path: tuple[str | int, ...] = (name, array_counts[name]) if is_array else (name,)
        text_lines.append(f"[[{name}]]" if is_array else f"[{name}]")
        expected[path] = len(text_lines)
        for key, value in body.items():
            expected[(*path, key)] = len(text_lines) + 1
            text_lines.extend(f"{key} = {value}  # [x]".splitlines())
    text = "\n".join(text_lines) + "\n"
    tomllib.loads(text)
    lines = KeyLines(text)
    assert {path: lines.line(path) for path in expected} == expected
