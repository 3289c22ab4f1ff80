"""Zone files for the lab's authoritative DNS: a root zone of its own that delegates every top-level
domain the lab uses to the lab nameserver, one zone per top-level domain, and root hints that point a
recursive resolver at that root."""

from __future__ import annotations

import base64
import secrets
import struct
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from appliance.lab.sites import Internet

TTL = 300
# ECHConfig as deployed (draft-ietf-tls-esni-18): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM.
ECH_VERSION = 0xFE0D
HPKE_KEM_X25519 = 0x0020
HPKE_KDF_SHA256 = 0x0001
HPKE_AEAD_AES128GCM = 0x0001


def tld(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def write_zones(internet: Internet, directory: Path) -> dict[str, Path]:
    """Writes every zone file; returns zone name ('.' for the root) -> file."""
    directory.mkdir(parents=True, exist_ok=True)
    ns = internet.nameserver
    tlds = sorted({tld(n) for n in [*internet.names(), ns.name]})
    files = {".": directory / "root.zone"}
    root = [*_apex(".", ns.name), *_addresses(ns.name, ns.ipv4, ns.ipv6)]
    root += [f"{t}. {TTL} IN NS {ns.name}." for t in tlds]
    files["."].write_text("\n".join(root) + "\n")
    for t in tlds:
        records = _apex(f"{t}.", ns.name)
        if tld(ns.name) == t:
            records += _addresses(ns.name, ns.ipv4, ns.ipv6)
        for site in internet.sites:
            for name in site.names:
                if tld(name) == t:
                    records += _addresses(name, site.ipv4, site.ipv6)
                    records += _https_record(name, site.https_alpn, site.ech_public_name)
        files[t] = directory / f"{t}.zone"
        files[t].write_text("\n".join(records) + "\n")
    return files


def root_hints(internet: Internet) -> str:
    ns = internet.nameserver
    return (
        f".  3600000 IN NS {ns.name}.\n"
        f"{ns.name}.  3600000 IN A {ns.ipv4}\n"
        f"{ns.name}.  3600000 IN AAAA {ns.ipv6}\n"
    )


def ech_config_list(public_name: str) -> bytes:
    """A well-formed ECHConfigList with a fresh X25519 key: what a filter must find and strip. The lab's
    servers do not decrypt ECH, so the private key is not kept."""
    key = x25519.X25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    name = public_name.encode("ascii")
    contents = (
        struct.pack("!BHH", secrets.randbelow(256), HPKE_KEM_X25519, len(raw))
        + raw
        + struct.pack("!HHH", 4, HPKE_KDF_SHA256, HPKE_AEAD_AES128GCM)
        + struct.pack("!BB", 0, len(name))
        + name
        + struct.pack("!H", 0)
    )
    config = struct.pack("!HH", ECH_VERSION, len(contents)) + contents
    return struct.pack("!H", len(config)) + config


def _apex(zone: str, ns_name: str) -> list[str]:
    return [
        f"{zone} {TTL} IN SOA {ns_name}. hostmaster.lab.invalid. 1 1800 900 604800 {TTL}",
        f"{zone} {TTL} IN NS {ns_name}.",
    ]


def _addresses(name: str, ipv4: str, ipv6: str) -> list[str]:
    return [f"{name}. {TTL} IN A {ipv4}", f"{name}. {TTL} IN AAAA {ipv6}"]


def _https_record(name: str, alpn: tuple[str, ...], ech_public_name: str | None) -> list[str]:
    if not alpn and ech_public_name is None:
        return []
    params = [f'alpn="{",".join(alpn)}"'] if alpn else []
    if ech_public_name is not None:
        params.append(f'ech="{base64.b64encode(ech_config_list(ech_public_name)).decode()}"')
    return [f"{name}. {TTL} IN HTTPS 1 . {' '.join(params)}"]
