"""The mark layout that the ruleset, the DNS filter and the NFQUEUE consumer share.

Packet mark (meta mark), set by the ruleset:
  bits 0-7   the group id of the client (config order, 1-based), set from the input interface and
             source subnet; the NFQUEUE consumer reads it from each queued packet (NFQA_MARK)
  bit 8      "queue me, fail closed": the queue stage queues it without bypass
  bit 9      "queue me, fail open": the queue stage queues it with bypass

Conntrack mark (ct mark), set by the NFQUEUE consumer in its verdict (NFQA_CT with CTA_MARK, on a
queue bound with NFQA_CFG_F_CONNTRACK), so that no later packet of a decided flow reaches userspace:
  bits 0-1   FLOW_ALLOWED: accepted in both directions; FLOW_BLOCKED: dropped, TCP answered by a reset
"""

GROUP_MASK = 0xFF
QUEUE_FAIL_CLOSED = 0x100
QUEUE_FAIL_OPEN = 0x200

FLOW_MASK = 0x3
FLOW_ALLOWED = 0x1
FLOW_BLOCKED = 0x2
