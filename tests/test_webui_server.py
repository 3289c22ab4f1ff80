"""The web UI's certificate: generated at first start, renewed before it runs out, and never
replacing a certificate the school put in its place."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webui import tls


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_certificate_is_generated_for_the_names_given_with_a_private_key(tmp_path: Path) -> None:
    cert, key = tls.ensure(tmp_path, ["gateway.school.example", "10.20.0.1"])
    c = _load(cert)
    names = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["gateway.school.example"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.20.0.1")]
    assert c.not_valid_after_utc - c.not_valid_before_utc <= tls.VALID + timedelta(minutes=5)
    assert key.stat().st_mode & 0o077 == 0
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert private.public_key().public_numbers() == c.public_key().public_numbers()  # type: ignore[union-attr]


def test_it_is_kept_then_renewed_before_it_runs_out(tmp_path: Path) -> None:
    cert, _ = tls.ensure(tmp_path, ["gateway"])
    first = _load(cert).serial_number
    tls.ensure(tmp_path, ["gateway"])
    assert _load(cert).serial_number == first
    later = datetime.now(UTC) + tls.VALID - tls.RENEW_BEFORE + timedelta(days=1)
    tls.ensure(tmp_path, ["gateway"], later)
    assert _load(cert).serial_number != first


def test_the_schools_own_certificate_is_never_replaced(tmp_path: Path) -> None:
    cert, _ = tls.ensure(tmp_path, ["gateway"])
    private = ec.generate_private_key(ec.SECP256R1())
    trust = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Example Academy Trust")])
    theirs = (
        x509.CertificateBuilder()
        .subject_name(trust)
        .issuer_name(trust)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=2))  # ours would be renewed by now
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(theirs.public_bytes(serialization.Encoding.PEM))
    tls.ensure(tmp_path, ["gateway"])
    assert _load(cert).serial_number == theirs.serial_number
