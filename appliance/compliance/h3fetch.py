"""HTTP/3 fetches for the compliance probes (Debian's curl has no HTTP/3), optionally to a given
address instead of the name's own, which is how a client with a hard-coded IP gets past DNS
filtering. The fetching is the lab's HTTP/3 client's (appliance.lab.h3client: aioquic from a
connected UDP socket, so that a refusal ends an attempt at once). Prints one JSON line per fetch:

    {"name": "www.bbc.co.uk", "family": 4, "address": "203.0.113.20", "status": 200, "error": null}

python -m appliance.compliance.h3fetch [--cacert CA] [--concurrency N] NAME/FAMILY[/ADDRESS]...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys

from appliance.lab import h3client

# Seconds per fetch: a handshake takes well under one; a dropped flow is only seen by its silence.
TIMEOUT = 6.0


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m appliance.compliance.h3fetch")
    parser.add_argument("--cacert", help="CA certificates to trust (default: the system's)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=h3client.CONCURRENCY,
        help=f"fetches at once (default {h3client.CONCURRENCY})",
    )
    parser.add_argument("specs", nargs="+", help="NAME/FAMILY or NAME/FAMILY/ADDRESS")
    args = parser.parse_args(argv)
    cacert = args.cacert or ssl.get_default_verify_paths().openssl_cafile
    slots = asyncio.Semaphore(args.concurrency)
    jobs = []
    for spec in args.specs:
        name, family, *given = spec.split("/")
        jobs.append(h3client.fetch(name, int(family), cacert, slots, TIMEOUT, given[0] if given else None))
    for r in await asyncio.gather(*jobs):
        # The error's kind only ("no address", "refused", "timeout", "SSLCertVerificationError" ...).
        error = r["error"].split(":")[0] if r["error"] else None
        print(json.dumps({**{k: r[k] for k in ("name", "family", "address", "status")}, "error": error}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
