"""The mark layout that the ruleset, the DNS filter and the NFQUEUE consumer share.

Packet mark (meta mark):
  bits 0-7    the client's group id (config order, 1-based), set by the ruleset from the input
              interface and source subnet; the NFQUEUE consumer reads it from each packet (NFQA_MARK)
  bit 8       set by the ruleset: queue this packet, dropping it if nobody listens (fail closed)
  bit 9       set by the ruleset: queue this packet, accepting it if nobody listens (fail open)
  bits 10-11  set by the NFQUEUE consumer in its verdict (NF_ACCEPT with NFQA_MARK = the packet's mark
              | VERDICT_ALLOW or VERDICT_BLOCK) once it has decided the flow; packets it cannot decide
              yet it accepts with the mark unchanged

Conntrack mark (ct mark), set by the ruleset from the consumer's verdict, so that no later packet of
a decided flow reaches userspace:
  bits 0-1    FLOW_ALLOWED: accepted in both directions; FLOW_BLOCKED: dropped, TCP answered by a reset
              (the deciding packet too)

A packet mark in the verdict works on every kernel; setting the ct mark directly in the verdict
(NFQA_CT) needs CONFIG_NETFILTER_NETLINK_GLUE_CT, which some kernels lack.
"""

GROUP_MASK = 0xFF
QUEUE_FAIL_CLOSED = 0x100
QUEUE_FAIL_OPEN = 0x200
VERDICT_MASK = 0xC00
VERDICT_ALLOW = 0x400
VERDICT_BLOCK = 0x800

FLOW_MASK = 0x3
FLOW_ALLOWED = 0x1
FLOW_BLOCKED = 0x2
