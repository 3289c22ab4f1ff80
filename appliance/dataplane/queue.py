"""Which NFQUEUE mechanism this kernel has, and the iptables-nft fallback where nft's own is missing.

Raspberry Pi and Debian kernels have nft's `queue` expression (nft_queue); some kernels lack it but
still have xtables' NFQUEUE target, which iptables-nft reaches through nft_compat. Either way the
ruleset marks the packets to queue (marks.QUEUE_FAIL_CLOSED / QUEUE_FAIL_OPEN) and the queue stage
only turns marks into NFQUEUE verdicts: chain `queue` in our table, or these iptables rules in the
filter FORWARD chain (priority 0, after our forward chain at -10).
"""

from __future__ import annotations

import os
import subprocess

from appliance.config import Config
from appliance.dataplane import marks
from appliance.dataplane.nft import Nft, NftError

CHAIN = "SCHOOL_GATEWAY_QUEUE"
IPTABLES = ("iptables-nft", "ip6tables-nft")


def native_queue_supported(nft: Nft) -> bool:
    """Tries a queue rule in a scratch table that no hook ever reaches, then removes the table."""
    name = f"school_gateway_probe_{os.getpid()}"
    chain = {"family": "inet", "table": name, "name": "probe"}
    rule = {"family": "inet", "table": name, "chain": "probe", "expr": [{"queue": {"num": 0}}]}
    try:
        nft.run(
            [
                {"add": {"table": {"family": "inet", "name": name}}},
                {"add": {"chain": chain}},
                {"add": {"rule": rule}},
            ]
        )
    except NftError:
        return False
    finally:
        nft.delete_table("inet", name)
    return True


def fallback_rules(config: Config) -> list[list[str]]:
    """The rules of our iptables chain, as iptables arguments after `-A CHAIN`."""
    queues = config.fastpath.queues
    if len(queues) == 1:
        target = ["--queue-num", str(queues.start)]
    else:  # balanced by flow hash, like native queue ranges
        target = ["--queue-balance", f"{queues.start}:{queues[-1]}"]
    rules = []
    for bit, extra in ((marks.QUEUE_FAIL_CLOSED, []), (marks.QUEUE_FAIL_OPEN, ["--queue-bypass"])):
        rules.append(["-m", "mark", "--mark", f"{bit:#x}/{bit:#x}", "-j", "NFQUEUE", *target, *extra])
    return rules


def fallback_restore_script(config: Config) -> str:
    """iptables-restore input that creates (or empties) our chain, fills it and jumps to it."""
    lines = ["*filter", f":{CHAIN} - [0:0]"]
    lines += [" ".join(["-A", CHAIN, *rule]) for rule in fallback_rules(config)]
    lines += [f"-I FORWARD -j {CHAIN}", "COMMIT", ""]
    return "\n".join(lines)


def apply_fallback(config: Config) -> None:
    remove_fallback()  # a stale copy from a crash would otherwise leave two jumps
    script = fallback_restore_script(config)
    for binary in IPTABLES:
        subprocess.run([f"{binary}-restore", "--noflush"], input=script, text=True, check=True)


def remove_fallback(nft: Nft | None = None) -> None:
    """Removes our chain and jump; then iptables-nft's filter tables too if nothing else is in them."""
    for binary in IPTABLES:
        while _iptables(binary, "-D", "FORWARD", "-j", CHAIN):
            pass
        if _iptables(binary, "-F", CHAIN):
            _iptables(binary, "-X", CHAIN)
    nft = nft or Nft()
    for family in ("ip", "ip6"):
        if _is_empty_filter_table(nft, family):
            nft.delete_table(family, "filter")


def _iptables(binary: str, *args: str) -> bool:
    return subprocess.run([binary, "-w", *args], capture_output=True).returncode == 0


def _is_empty_filter_table(nft: Nft, family: str) -> bool:
    """True for a filter table holding only accept-policy base chains and no rules (what iptables-nft
    leaves behind once our chain is gone)."""
    if (family, "filter") not in nft.tables():
        return False
    listing = nft.run([{"list": {"table": {"family": family, "name": "filter"}}}])["nftables"]
    contents = [item for item in listing if "table" not in item and "metainfo" not in item]
    return all("chain" in item and item["chain"].get("policy") == "accept" for item in contents)
