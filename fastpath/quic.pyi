"""QUIC v1/v2 client Initial decryption, CRYPTO reassembly and ClientHello extraction (RFC 9000/9001/9369).

Sans-IO: UDP payloads in, a ParseStatus and the ClientHello's SNI, ALPN and ECH flag out."""

from fastpath.names import ParseStatus

VERSION_1: int
VERSION_2: int

def initial_keys(version: int, dcid: bytes) -> tuple[bytes, bytes, bytes]:
    """The client's Initial (key, iv, hp) for this version and first-Initial DCID.

    Raises ValueError for a version other than v1/v2 or a DCID over 20 bytes (RuntimeError if libcrypto
    fails)."""

def flow_key(datagram: bytes) -> tuple[int, bytes] | None:
    """(version, DCID) if the datagram begins with a client Initial of v1 or v2, else None."""

class QuicInitialAssembler:
    """One client connection's Initials: keys from the first Initial's version and DCID, CRYPTO data
    reassembled by offset (out of order, overlapping, across packets and datagrams, up to 16 KiB)."""

    def __init__(self, version: int, dcid: bytes) -> None:
        """Raises ValueError as initial_keys does.

        Called again, it makes the assembler a new connection's, with nothing kept of the last one but
        its libcrypto contexts (the data plane reuses assemblers so); if that raises, the assembler
        holds no keys and its status is finally MALFORMED, as is one made by __new__ alone."""

    @staticmethod
    def from_datagram(datagram: bytes) -> QuicInitialAssembler | None:
        """An assembler keyed by the datagram's first Initial, or None if it does not begin with one."""

    def feed(self, datagram: bytes) -> ParseStatus:
        """Processes one UDP payload (possibly several coalesced packets).

        OK / NO_NAME: the ClientHello is complete (with / without server_name); its fields are set.
        NEED_MORE: Initials were accepted, but the ClientHello is not yet contiguous.
        MALFORMED: a packet failed authentication or was unparseable (the connection state is unchanged,
        so a later genuine datagram still counts), or authenticated content broke the rules (bad frames,
        CRYPTO data contradicting earlier data): then the connection is finally MALFORMED.
        NOT_HANDLED: no Initial of this connection's version in the datagram (short header, version
        negotiation, Retry, 0-RTT or Handshake only, another version), or a ClientHello over 16 KiB or
        another first handshake message.
        Once the status is final (anything but NEED_MORE), every later call returns it unchanged."""

    def open_packet(self, packet: bytes) -> tuple[int, bytes, bytes] | None:
        """Header protection removed and the first packet decrypted: (packet number, unprotected header,
        plaintext payload), or None if it is not an Initial of this version or does not authenticate.
        Does not change the assembler's state."""

    @property
    def status(self) -> ParseStatus:
        """NEED_MORE until final; then what feed returns."""

    @property
    def sni(self) -> str | None:
        """The normalised server name when status is OK."""

    @property
    def alpn(self) -> tuple[str, ...]:
        """Offered ALPN protocols (GREASE and unprintable names left out) when status is OK or NO_NAME."""

    @property
    def has_ech(self) -> bool:
        """An encrypted_client_hello extension (real or GREASE) is present."""

    @property
    def legacy_version(self) -> int:
        """The ClientHello's legacy_version when status is OK or NO_NAME, else 0."""

    @property
    def max_version(self) -> int:
        """The highest non-GREASE supported_versions entry when status is OK or NO_NAME, else 0."""
