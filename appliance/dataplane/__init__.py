"""The data plane: the nftables table, the NFQUEUE hand-off to the fast path, and `appliance run`.

marks     the packet-mark and conntrack-mark layout shared with the fast path
ruleset   the `inet school_gateway` table, built as python-nftables JSON from the config
nft       applying and removing it atomically through libnftables
queue     which NFQUEUE mechanism the kernel has (native `queue`, or the iptables-nft fallback)
kernel    the sysctls the data plane needs (forwarding, conntrack accounting), restored on stop
notify    sd_notify (READY=1, WATCHDOG=1) without a systemd library
ingress   the interface a TCP client came in on (the DNS filter's TCP side, the block-page server)
supervisor   the child services (resolver, DNS filter, NFQUEUE consumer) and their restarts
run       `appliance run`: all of the above, from one config, until SIGTERM or SIGINT
"""
