"""The block page: what a pupil's browser shows instead of a blocked plain-HTTP site.

Two ways lead to it:

- DNS: the DNS filter answers a blocked name with the block addresses (`dns.block_ipv4`,
  `dns.block_ipv6`); nftables redirects LAN clients' TCP 80 to those addresses to this server
  (`server`), which reads the blocked name from the Host header. Anything else to the block
  addresses (HTTPS, QUIC) is refused at once: no valid certificate can be shown for a blocked name.
- HTTP: when the NFQUEUE consumer blocks a plain-HTTP request to a site's real address, it hands the
  request packet to `inject.Injector`, which answers the client, as the server, with a redirect to
  the block page (http://BLOCK_ADDRESS/?site=NAME) and resets the server side.

`reason` turns the policy in force's explanation into what the page says; templates/ holds the page.
docs/blockpage.md describes it all for IT staff.
"""

# The server's own TCP port on every gateway address; nftables redirects the block addresses' port 80
# here (appliance.dataplane.ruleset).
PORT = 8008
