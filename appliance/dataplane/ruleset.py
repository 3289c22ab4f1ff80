"""The `inet school_gateway` nftables table, as one python-nftables JSON batch built from the config.

Per packet, in hook order:
  prerouting, mangle  mark_group: the client's group id into the packet mark, from its input
                      interface and only for sources in that LAN's subnets (anti-spoofing)
  prerouting, dstnat  redirect_dns: DNS (UDP and TCP 53) from any group to the appliance's DNS filter,
                      whatever resolver the client asked for
  prerouting, dstnat  redirect_block_page: TCP 80 to the block addresses (dns.block_ipv4/ipv6) from any
                      group to the block-page server (appliance.blockpage)
  forward, -10        forward: decided flows by conntrack mark; LAN to WAN only; DoT/DoQ (853) and
                      known DoH endpoints (@doh_ipv4, @doh_ipv6, filled by the DNS filter) refused;
                      anything else to the block addresses refused at once (HTTPS to a blocked name
                      cannot succeed: no certificate for it can be shown);
                      then the group's chain, which marks the first packets of web flows for the
                      queue and, for allowlist groups, drops everything else
  forward, 0          queue stage: queues marked packets to the fast path, natively (chain `queue`)
                      or through the iptables-nft fallback (appliance.dataplane.queue)
  forward, 10         decide: the fast path's verdict (packet mark) becomes the flow's conntrack mark
  postrouting, srcnat masquerade out of the WAN
"""

from __future__ import annotations

from typing import Any

from appliance.blockpage import PORT as BLOCK_PAGE_PORT
from appliance.config import Config, Group
from appliance.dataplane import marks

TABLE = "school_gateway"
FAMILY = "inet"
# Before iptables' filter FORWARD chain (priority 0), where the fallback queue rules live.
FORWARD_PRIORITY = -10
QUEUE_PRIORITY = 0
DECIDE_PRIORITY = 10  # after the queue stage: a packet accepted from the queue goes on to later chains
DOT_PORT = 853
DOH_TIMEOUT = 3600  # seconds an endpoint address stays blocked unless the DNS filter says otherwise
WEB = (("tcp", 80), ("tcp", 443), ("udp", 443))

Json = dict[str, Any]


def _obj(kind: str, **fields: Any) -> Json:
    return {kind: {"family": FAMILY, "table": TABLE, **fields}}


def _match(left: Any, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _ct(key: str, direction: str | None = None) -> Json:
    return {"ct": {"key": key, "dir": direction} if direction else {"key": key}}


def _masked(left: Json, mask: int) -> Json:
    return {"&": [left, mask]}


def _payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def _set_mark(bits: int) -> Json:
    return {"mangle": {"key": _meta("mark"), "value": {"|": [_meta("mark"), bits]}}}


_TCP_OR_UDP = _match(_meta("l4proto"), {"set": ["tcp", "udp"]})
_FROM_LAN = _match(_masked(_meta("mark"), marks.GROUP_MASK), 0, "!=")


def _base_chain(name: str, kind: str, hook: str, prio: int, policy: str = "accept") -> Json:
    return _obj("chain", name=name, type=kind, hook=hook, prio=prio, policy=policy)


def _rule(chain: str, *expr: Json) -> Json:
    return _obj("rule", chain=chain, expr=list(expr))


def group_chain(group: Group) -> str:
    return f"group_{group.name}"


def build(config: Config, native_queue: bool) -> list[Json]:
    """Commands for python-nftables' json_cmd: the whole table, replacing any earlier copy in one
    transaction (add, delete, add: so the delete never fails and nothing is ever half-applied)."""
    table = {"table": {"family": FAMILY, "name": TABLE}}
    objects = [
        *_sets(),
        *_mark_group(config),
        *_redirect_dns(config),
        *_redirect_block_page(config),
        *_forward(config),
        *(_native_queue(config) if native_queue else []),
        *_decide(),
        *_masquerade(config),
    ]
    # Chains, sets and counters before the rules, which may jump to any chain.
    objects.sort(key=lambda o: "rule" in o)
    return [{"add": table}, {"delete": table}, {"add": table}, *({"add": o} for o in objects)]


def _sets() -> list[Json]:
    return [
        _obj("set", name="doh_ipv4", type="ipv4_addr", flags=["timeout"], timeout=DOH_TIMEOUT),
        _obj("set", name="doh_ipv6", type="ipv6_addr", flags=["timeout"], timeout=DOH_TIMEOUT),
        _obj(
            "set",
            name="web",
            type=["inet_proto", "inet_service"],
            elem=[{"concat": list(pair)} for pair in WEB],
        ),
    ]


def _mark_group(config: Config) -> list[Json]:
    objects = [_base_chain("mark_group", "filter", "prerouting", -150)]
    for lan in config.lans:
        group_id = config.group(lan.group).id
        for family, version in (("ip", 4), ("ip6", 6)):
            nets = [
                {"prefix": {"addr": str(n.network_address), "len": n.prefixlen}}
                for n in lan.subnets
                if n.version == version
            ]
            if nets:
                objects.append(
                    _rule(
                        "mark_group",
                        _match(_meta("iifname"), lan.interface),
                        _match(_payload(family, "saddr"), {"set": nets}),
                        {"mangle": {"key": _meta("mark"), "value": group_id}},
                    )
                )
    return objects


def _redirect_dns(config: Config) -> list[Json]:
    return [
        _base_chain("redirect_dns", "nat", "prerouting", -100),
        _rule(
            "redirect_dns",
            _FROM_LAN,
            _TCP_OR_UDP,
            _match(_payload("th", "dport"), 53),
            {"redirect": {"port": config.dns.listen_port}},
        ),
    ]


def _block_addresses(config: Config) -> list[Json]:
    """A match for each block address (IPv4, IPv6)."""
    return [
        _match(_payload("ip", "daddr"), str(config.dns.block_ipv4)),
        _match(_payload("ip6", "daddr"), str(config.dns.block_ipv6)),
    ]


def _redirect_block_page(config: Config) -> list[Json]:
    return [
        _base_chain("redirect_block_page", "nat", "prerouting", -100),
        *(
            _rule(
                "redirect_block_page",
                _FROM_LAN,
                to_block,
                _match(_meta("l4proto"), "tcp"),
                _match(_payload("th", "dport"), 80),
                {"redirect": {"port": BLOCK_PAGE_PORT}},
            )
            for to_block in _block_addresses(config)
        ),
    ]


def _forward(config: Config) -> list[Json]:
    wan = config.wan.interface
    flow_mark = _masked(_ct("mark"), marks.FLOW_MASK)
    objects = [
        _base_chain("forward", "filter", "forward", FORWARD_PRIORITY, policy="drop"),
        _obj("chain", name="refuse"),
        _rule("refuse", _match(_meta("l4proto"), "tcp"), {"reject": {"type": "tcp reset"}}),
        _rule("refuse", {"drop": None}),
        _rule("forward", _match(_ct("state"), "invalid", "in"), {"drop": None}),
        _rule("forward", _match(flow_mark, marks.FLOW_BLOCKED), {"goto": {"target": "refuse"}}),
        # Port 80 to the block addresses never gets here (redirect_block_page); the rest fails at once:
        # TCP with a reset, anything else (QUIC) with port unreachable.
        *(
            _rule("forward", to_block, _match(_meta("l4proto"), "tcp"), {"reject": {"type": "tcp reset"}})
            for to_block in _block_addresses(config)
        ),
        *(_rule("forward", to_block, {"reject": None}) for to_block in _block_addresses(config)),
        _rule(
            "forward",
            _match(_meta("iifname"), wan),
            _match(_ct("state"), {"set": ["established", "related"]}, "in"),
            {"accept": None},
        ),
        _rule("forward", _match(_meta("oifname"), wan, "!="), {"drop": None}),
        _rule("forward", _match(flow_mark, marks.FLOW_ALLOWED), {"accept": None}),
        # DNS over TLS and over QUIC: clients must use the appliance's DNS.
        _rule(
            "forward", _TCP_OR_UDP, _match(_payload("th", "dport"), DOT_PORT), {"goto": {"target": "refuse"}}
        ),
    ]
    for family, set_name in (("ip", "doh_ipv4"), ("ip6", "doh_ipv6")):
        objects.append(
            _rule(
                "forward",
                _match(_payload(family, "daddr"), f"@{set_name}"),
                _TCP_OR_UDP,
                _match(_payload("th", "dport"), 443),
                {"goto": {"target": "refuse"}},
            )
        )
    verdicts = [[g.id, {"goto": {"target": group_chain(g)}}] for g in config.groups]
    objects.append(
        _rule(
            "forward", {"vmap": {"key": _masked(_meta("mark"), marks.GROUP_MASK), "data": {"set": verdicts}}}
        )
    )
    for group in config.groups:
        objects.extend(_group(config, group))
    return objects


def _group(config: Config, group: Group) -> list[Json]:
    chain = group_chain(group)
    queue_bit = marks.QUEUE_FAIL_CLOSED if group.fail == "closed" else marks.QUEUE_FAIL_OPEN
    web = _match({"concat": [_meta("l4proto"), _payload("th", "dport")]}, "@web")
    rules = [
        _obj("counter", name=chain),
        _obj("chain", name=chain),
        _rule(chain, {"counter": chain}),
        # The first packets from the client of each web flow go to the fast path (conntrack counts the
        # current packet, so the first has 1).
        _rule(
            chain,
            web,
            _match(_ct("packets", "original"), config.fastpath.packets_per_flow, "<="),
            _set_mark(queue_bit),
            {"accept": None},
        ),
    ]
    if group.fail == "closed":
        # A web flow still undecided past its first packets was missed by the fast path (restarted,
        # evicted, queue overflow), or its verdict is still on the way: dropped, not reset, so that in
        # the second case TCP resends it once the flow's conntrack mark is set. Decided flows never get
        # here (`forward` accepts or refuses them by their mark); a fail-closed group never passes one
        # unfiltered.
        rules.append(_rule(chain, web, {"drop": None}))
    # A filtered group's other traffic passes; an allowlist group's passes only if the fast path
    # allowed the flow (FLOW_ALLOWED, accepted earlier in `forward`).
    rules.append(_rule(chain, {"accept": None} if group.internet == "filtered" else {"drop": None}))
    return rules


def queue_target(config: Config) -> Json:
    """The queue number, or the range the kernel balances flows over."""
    queues = config.fastpath.queues
    return queues.start if len(queues) == 1 else {"range": [queues.start, queues[-1]]}


def _native_queue(config: Config) -> list[Json]:
    """Over several queues the kernel balances by flow hash, so each flow stays with one consumer."""
    fail_closed = {"num": queue_target(config)}
    fail_open = {"num": queue_target(config), "flags": ["bypass"]}
    return [
        _base_chain("queue", "filter", "forward", QUEUE_PRIORITY),
        _rule(
            "queue", _match(_masked(_meta("mark"), marks.QUEUE_FAIL_CLOSED), 0, "!="), {"queue": fail_closed}
        ),
        _rule("queue", _match(_masked(_meta("mark"), marks.QUEUE_FAIL_OPEN), 0, "!="), {"queue": fail_open}),
    ]


def _decide() -> list[Json]:
    def flow_mark_set(flow: int) -> Json:
        kept = _masked(_ct("mark"), ~marks.FLOW_MASK & 0xFFFFFFFF)
        return {"mangle": {"key": _ct("mark"), "value": {"|": [kept, flow]}}}

    verdict = _masked(_meta("mark"), marks.VERDICT_MASK)
    return [
        _base_chain("decide", "filter", "forward", DECIDE_PRIORITY),
        # A packet queued before its flow was blocked, and accepted without a verdict of its own.
        _rule(
            "decide",
            _match(_masked(_ct("mark"), marks.FLOW_MASK), marks.FLOW_BLOCKED),
            {"goto": {"target": "refuse"}},
        ),
        _rule("decide", _match(verdict, marks.VERDICT_ALLOW), flow_mark_set(marks.FLOW_ALLOWED)),
        _rule(
            "decide",
            _match(verdict, marks.VERDICT_BLOCK),
            flow_mark_set(marks.FLOW_BLOCKED),
            {"goto": {"target": "refuse"}},
        ),
    ]


def _masquerade(config: Config) -> list[Json]:
    if not config.wan.masquerade:
        return []
    return [
        _base_chain("masquerade", "nat", "postrouting", 100),
        _rule("masquerade", _match(_meta("oifname"), config.wan.interface), {"masquerade": None}),
    ]
