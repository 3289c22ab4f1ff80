"""The ruleset's shape for each kernel and config (test_dataplane*.py show its behaviour in namespaces).

This machine's kernel lacks nft's `queue`, so the native queue stage is only checked here for what it
asks of the kernel; the iptables-nft fallback runs in the namespace tests.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from netns import netns_lab

from appliance import config
from appliance.dataplane import marks, queue, ruleset

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "appliance.toml"


def rules(commands: list[dict[str, Any]], chain: str) -> list[list[dict[str, Any]]]:
    return [
        c["add"]["rule"]["expr"]
        for c in commands
        if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain
    ]


def chains(commands: list[dict[str, Any]]) -> list[str]:
    return [c["add"]["chain"]["name"] for c in commands if "chain" in c.get("add", {})]


def with_queues(cfg: config.Config, first: int, count: int) -> config.Config:
    return dataclasses.replace(
        cfg, fastpath=dataclasses.replace(cfg.fastpath, queue=first, queue_count=count)
    )


def test_native_queue_stage_fails_closed_or_open_by_mark() -> None:
    cfg = config.load(EXAMPLE)
    queue_rules = rules(ruleset.build(cfg, native_queue=True), "queue")
    assert queue_rules == [
        [
            {
                "match": {
                    "op": "!=",
                    "left": {"&": [{"meta": {"key": "mark"}}, marks.QUEUE_FAIL_CLOSED]},
                    "right": 0,
                }
            },
            {"queue": {"num": 0}},
        ],
        [
            {
                "match": {
                    "op": "!=",
                    "left": {"&": [{"meta": {"key": "mark"}}, marks.QUEUE_FAIL_OPEN]},
                    "right": 0,
                }
            },
            {"queue": {"num": 0, "flags": ["bypass"]}},
        ],
    ]
    assert "queue" not in chains(ruleset.build(cfg, native_queue=False))
    assert queue.fallback_rules(cfg) == [
        ["-m", "mark", "--mark", "0x100/0x100", "-j", "NFQUEUE", "--queue-num", "0"],
        ["-m", "mark", "--mark", "0x200/0x200", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"],
    ]


def test_several_queues_are_balanced_by_flow() -> None:
    cfg = with_queues(config.load(EXAMPLE), 2, 4)
    assert [r[-1] for r in rules(ruleset.build(cfg, native_queue=True), "queue")] == [
        {"queue": {"num": {"range": [2, 5]}}},
        {"queue": {"num": {"range": [2, 5]}, "flags": ["bypass"]}},
    ]
    assert all(
        r[-2:] == ["--queue-balance", "2:5"] or "--queue-bypass" in r for r in queue.fallback_rules(cfg)
    )


def test_each_group_queues_with_its_fail_mode_and_allowlists_end_in_drop() -> None:
    cfg = config.load(EXAMPLE)
    commands = ruleset.build(cfg, native_queue=False)
    for group in cfg.groups:
        group_rules = rules(commands, f"group_{group.name}")
        queue_rule = group_rules[1]
        bit = marks.QUEUE_FAIL_CLOSED if group.fail == "closed" else marks.QUEUE_FAIL_OPEN
        assert {
            "mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, bit]}}
        } in queue_rule
        assert group_rules[-1] == [{"drop": None} if group.internet == "allowlist" else {"accept": None}]


def test_chains_come_before_the_rules_that_jump_to_them() -> None:
    commands = ruleset.build(config.load(EXAMPLE), native_queue=True)
    kinds = [next(iter(c["add"])) for c in commands if "add" in c]
    assert kinds.index("rule") > max(i for i, kind in enumerate(kinds) if kind != "rule")


def test_no_masquerade_when_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(EXAMPLE.read_text().replace("masquerade = true", "masquerade = false"))
    assert "masquerade" not in chains(ruleset.build(config.load(path), native_queue=False))
    assert "masquerade" in chains(ruleset.build(config.load(EXAMPLE), native_queue=False))


@pytest.mark.netns
def test_check_prints_the_plan_and_applies_nothing() -> None:
    with netns_lab() as lab:
        ns = lab.namespace("check")
        result = ns.run(sys.executable, "-m", "appliance.cli", "run", "--config", str(EXAMPLE), "--check")
        assert "3: exams, fail closed, allowlist" in result.stdout
        assert "eth0.10 -> students 10.10.0.0/22, fd00:10::/64" in result.stdout
        commands = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert commands == ruleset.build(config.load(EXAMPLE), native_queue=True)
        assert "-A SCHOOL_GATEWAY_QUEUE -m mark --mark 0x100/0x100 -j NFQUEUE --queue-num 0" in result.stdout
        assert ns.run("nft", "list", "ruleset").stdout == ""
        # The table it printed is one the kernel takes (tried without applying it, as `nft --check` does).
        fallback = json.dumps({"nftables": ruleset.build(config.load(EXAMPLE), native_queue=False)})
        assert ns.run("nft", "--check", "-j", "-f", "-", input=fallback).returncode == 0
    drop_root = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    check = [sys.executable, "-m", "appliance.cli", "run", "--config", str(EXAMPLE), "--check"]
    unprivileged = subprocess.run([*drop_root, *check], capture_output=True, text=True)
    assert unprivileged.returncode == 0, unprivileged.stderr
