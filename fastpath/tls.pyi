"""TLS ClientHello parsing (SNI, ALPN, ECH presence, versions). C-level API: tls.pxd."""

from dataclasses import dataclass

from fastpath.names import ParseStatus

@dataclass(frozen=True)
class ClientHello:
    """The parse result. Fields other than status are empty unless status is OK or NO_NAME."""

    status: ParseStatus
    sni: str | None  # normalised server name; None without a host_name (NO_NAME) or on error
    alpn: tuple[str, ...]  # offered protocols in order, GREASE and non-text names left out
    has_ech: bool  # an encrypted_client_hello extension (0xfe0d), real or GREASE
    legacy_version: int  # ClientHello.legacy_version, e.g. 0x0303
    max_version: int  # highest non-GREASE supported_versions entry, else legacy_version

def parse_stream(record_stream: bytes) -> ClientHello:
    """Parses the first bytes a client sent on a TLS connection: TLS records, in order, from the start.

    The ClientHello may be split over several handshake records. NOT_HANDLED when the bytes are not
    a TLS handshake (plain HTTP, SSLv2); NEED_MORE for a prefix of a ClientHello."""

def parse_handshake(message: bytes) -> ClientHello:
    """Parses one handshake message (type, uint24 length, body), as QUIC carries in CRYPTO frames.

    NOT_HANDLED for a handshake message other than ClientHello."""
