"""The web UI's HTTPS certificate: a self-signed one generated at first start (and renewed before it
runs out), unless the school gives its own with --cert and --key."""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DIRECTORY = "webui-tls"
ORGANISATION = "School internet gateway (self-signed)"
VALID = timedelta(days=825)  # the longest Apple devices accept for a TLS server certificate
RENEW_BEFORE = timedelta(days=30)


def _names(hostnames: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(hostnames):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def generate(cert: Path, key: Path, hostnames: list[str], now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0][:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALID)
        .add_extension(x509.SubjectAlternativeName(_names(hostnames)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(private, hashes.SHA256())
    )
    key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def ensure(state_dir: Path, hostnames: list[str], now: datetime | None = None) -> tuple[Path, Path]:
    """The generated certificate and key under state_dir, made now if missing or about to expire.
    A certificate that is not ours (the school copied its own over it) is left alone."""
    now = now or datetime.now(UTC)
    cert, key = state_dir / DIRECTORY / "cert.pem", state_dir / DIRECTORY / "key.pem"
    if cert.exists() and key.exists():
        current = x509.load_pem_x509_certificate(cert.read_bytes())
        ours = current.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if not ours or ours[0].value != ORGANISATION or current.not_valid_after_utc - now > RENEW_BEFORE:
            return cert, key
    generate(cert, key, hostnames, now)
    return cert, key
