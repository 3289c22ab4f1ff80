"""HTTP/3 fetches for the compliance probes (aioquic; Debian's curl has no HTTP/3), optionally to a
given address instead of the name's own, which is how a client with a hard-coded IP gets past DNS
filtering. Prints one JSON line per fetch:

    {"name": "www.bbc.co.uk", "family": 4, "address": "203.0.113.20", "status": 200, "error": null}

python -m appliance.compliance.h3fetch [--cacert CA] NAME/FAMILY[/ADDRESS]...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import sys
from typing import Any, cast

from aioquic.asyncio import connect
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

from appliance.lab.h3client import CONCURRENCY, FAMILIES, PORT, H3Client

TIMEOUT = 6.0


async def fetch(spec: str, cacert: str | None, slots: asyncio.Semaphore) -> dict[str, Any]:
    name, family_text, *given = spec.split("/")
    family = int(family_text)
    result: dict[str, Any] = {"name": name, "family": family, "address": None, "status": None, "error": None}
    async with slots:
        try:
            if given:
                address = given[0]
            else:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    name, PORT, family=FAMILIES[family], type=socket.SOCK_DGRAM
                )
                address = infos[0][4][0]
        except socket.gaierror:
            result["error"] = "no address"
            return result
        result["address"] = address
        config = QuicConfiguration(
            is_client=True, alpn_protocols=H3_ALPN, server_name=name, idle_timeout=TIMEOUT
        )
        config.load_verify_locations(cafile=cacert or ssl.get_default_verify_paths().openssl_cafile)
        try:
            async with (
                asyncio.timeout(TIMEOUT),
                connect(address, PORT, configuration=config, create_protocol=H3Client) as proto,
            ):
                status, _ = await cast(H3Client, proto).get(name)
            result["status"] = status
        except TimeoutError:
            result["error"] = "timeout"
        except ssl.SSLError:
            result["error"] = "bad certificate"
        except (ConnectionError, OSError) as e:
            result["error"] = type(e).__name__
    return result


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m appliance.compliance.h3fetch")
    parser.add_argument("--cacert")
    parser.add_argument("specs", nargs="+", help="NAME/FAMILY or NAME/FAMILY/ADDRESS")
    args = parser.parse_args(argv)
    slots = asyncio.Semaphore(CONCURRENCY)
    for result in await asyncio.gather(*(fetch(s, args.cacert, slots) for s in args.specs)):
        print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
