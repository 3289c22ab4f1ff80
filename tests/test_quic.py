"""QUIC Initial parsing (fastpath.quic): RFC 9001/9369 vectors, Initials from real clients (aioquic and
Chromium), CRYPTO reassembly, and robustness against damaged and arbitrary datagrams."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.tls import SessionTicket
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath import names, quic

V1 = int(QuicProtocolVersion.VERSION_1)
V2 = int(QuicProtocolVersion.VERSION_2)
RFC_DCID = bytes.fromhex("8394c8f03e515708")

# RFC 9001 A.2 / RFC 9369 A.2: the same ClientHello (server_name example.com, ALPN "alpn") in a CRYPTO
# frame, padded to a 1162-byte payload, sent with packet number 2.
RFC_PAYLOAD = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868"
    "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578"
    "616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba"
    "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400"
    "0d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000"
    "75300901100f088394c8f03e51570806048000ffff"
) + bytes(917)
RFC_HELLO = RFC_PAYLOAD[4:245]  # the handshake message inside that CRYPTO frame

RFC_VECTORS = {
    V1: {
        "keys": (
            "1f369613dd76d5467730efcbe3b1a22d",
            "fa044b2f42a3fd3b46fb255c",
            "9f50449e04a0e810283a1e9933adedd2",
        ),
        "header": "c300000001088394c8f03e5157080000449e00000002",
        "packet": (
            "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
            "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
            "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
            "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212"
            "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5"
            "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
            "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec"
            "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3"
            "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
            "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c"
            "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8"
            "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
            "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74"
            "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a"
            "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
            "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632"
            "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964"
            "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
            "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff"
            "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198"
            "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
            "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73"
            "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f"
            "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
            "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade"
            "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047"
            "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
            "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4"
            "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0"
            "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
            "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0"
            "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400"
            "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
            "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9"
            "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4"
            "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
            "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241"
            "e221af44860018ab0856972e194cd934"
        ),
    },
    V2: {
        "keys": (
            "8b1a0bc121284290a29e0971b5cd045d",
            "91f73e2351d8fa91660e909f",
            "45b95e15235d6f45a6b19cbcb0294ba9",
        ),
        "header": "d36b3343cf088394c8f03e5157080000449e00000002",
        "packet": (
            "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485"
            "dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04"
            "9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d"
            "250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a"
            "12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500"
            "cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68"
            "18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33"
            "12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3"
            "d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd"
            "6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520"
            "bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045"
            "636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f"
            "ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12"
            "16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5"
            "4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4"
            "fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b"
            "8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7"
            "14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9"
            "9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91"
            "abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd"
            "80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db"
            "848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18"
            "d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15"
            "c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc"
            "7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61"
            "f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710"
            "10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b"
            "3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e"
            "06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce"
            "8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1"
            "34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1"
            "e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd"
            "5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3"
            "8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89"
            "d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53"
            "6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19"
            "9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b"
            "a18b2faa745b6fe189cf772a9f84cbfc"
        ),
    },
}
RFC_PACKETS = {version: bytes.fromhex(v["packet"]) for version, v in RFC_VECTORS.items()}

# RFC 9001 A.3: the server's Initial for the same connection (protected with the server's keys).
RFC_SERVER_INITIAL = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a"
    "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3"
    "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
    "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4"
    "2158407dd074ee"
)

ParseStatus = names.ParseStatus
OK, NO_NAME, NEED_MORE = ParseStatus.OK, ParseStatus.NO_NAME, ParseStatus.NEED_MORE
MALFORMED, NOT_HANDLED = ParseStatus.MALFORMED, ParseStatus.NOT_HANDLED
FUZZ_HARNESS = Path(__file__).parent / "fuzz" / "fuzz_quic.py"


# --- building and reading packets with aioquic's own packet protection (independent of fastpath) ---


def varint(value: int) -> bytes:
    buf = Buffer(capacity=8)
    buf.push_uint_var(value)
    return buf.data


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def protect_initial(
    version: int, dcid: bytes, pn: int, payload: bytes, pn_len: int = 2, reserved: int = 0
) -> bytes:
    """A client Initial around payload, protected by aioquic with the keys for (version, dcid)."""
    payload = payload.ljust(4 - pn_len, b"\x00")  # the header-protection sample must exist
    packet_type = 1 if version == V2 else 0  # RFC 9369 3.2 rotates the long-header type bits
    first = 0xC0 | packet_type << 4 | reserved << 2 | (pn_len - 1)
    header = (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + b"\x00"  # SCID length
        + b"\x00"  # token length
        + (0x4000 | (pn_len + len(payload) + 16)).to_bytes(2, "big")
        + (pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")
    )
    pair = CryptoPair()
    pair.setup_initial(cid=dcid, is_client=True, version=version)
    return pair.encrypt_packet(header, payload, pn)


def split_datagram(datagram: bytes) -> list[tuple[QuicPacketType | None, bytes]]:
    """The coalesced packets of a datagram as aioquic reads them. A short-header packet ends the datagram;
    so do zero bytes of padding after the packets (type None)."""
    packets: list[tuple[QuicPacketType | None, bytes]] = []
    pos = 0
    while pos < len(datagram):
        if not datagram[pos] & 0xC0:
            packets.append((None, datagram[pos:]))
            break
        header = pull_quic_header(Buffer(data=datagram[pos:]), host_cid_length=8)
        if header.packet_type == QuicPacketType.ONE_RTT:
            packets.append((header.packet_type, datagram[pos:]))
            break
        packets.append((header.packet_type, datagram[pos : pos + header.packet_length]))
        pos += header.packet_length
    return packets


def crypto_ranges(datagram: bytes, version: int, dcid: bytes) -> list[tuple[int, bytes]]:
    """(offset, data) of every CRYPTO frame in the datagram's client Initials, decrypted by aioquic."""
    pair = CryptoPair()
    pair.setup_initial(cid=dcid, is_client=False, version=version)
    out = []
    for packet_type, packet in split_datagram(datagram):
        if packet_type != QuicPacketType.INITIAL:
            continue
        buf = Buffer(data=packet)
        pull_quic_header(buf, host_cid_length=8)
        _, payload, _ = pair.decrypt_packet(packet, buf.tell(), 0)
        frames = Buffer(data=payload)
        while not frames.eof():
            frame_type = frames.pull_uint_var()
            if frame_type == 0x06:
                offset = frames.pull_uint_var()
                out.append((offset, frames.pull_bytes(frames.pull_uint_var())))
            elif frame_type == 0x1C:  # CONNECTION_CLOSE: error code, frame type, reason
                frames.pull_uint_var()
                frames.pull_uint_var()
                frames.pull_bytes(frames.pull_uint_var())
            else:
                assert frame_type in (0x00, 0x01), f"unexpected frame {frame_type:#x} in a first flight"
    return out


def handshake_message(datagrams: list[bytes], version: int, dcid: bytes) -> bytes:
    """The first handshake message of a client's CRYPTO stream, reassembled from these datagrams."""
    stream = bytearray()
    for offset, data in sorted(r for d in datagrams for r in crypto_ranges(d, version, dcid)):
        assert offset <= len(stream), "the datagrams do not cover the CRYPTO stream"
        stream[offset : offset + len(data)] = data
    return bytes(stream[: 4 + int.from_bytes(stream[1:4], "big")])


# --- real clients ---


def aioquic_config(version: int, server_name: str, alpn: list[str], **kwargs) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=True, server_name=server_name, alpn_protocols=alpn, supported_versions=[version], **kwargs
    )


def aioquic_first_flight(version: int, server_name: str, alpn: list[str]) -> tuple[bytes, list[bytes]]:
    """The (DCID, datagrams) an aioquic client sends first, with the DCID read by aioquic's own parser."""
    client = QuicConnection(configuration=aioquic_config(version, server_name, alpn))
    client.connect(("127.0.0.1", 443), now=time.time())
    datagrams = [d for d, _ in client.datagrams_to_send(now=time.time())]
    return pull_quic_header(Buffer(data=datagrams[0]), host_cid_length=8).destination_cid, datagrams


Credentials = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@pytest.fixture(scope="module")
def server_credentials() -> Credentials:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def aioquic_handshake(
    version: int, credentials: Credentials, ticket: SessionTicket | None = None, early_data: bytes = b""
) -> dict[str, list]:
    """An aioquic client and server talking in memory: the client's first and second flights, and the
    session ticket it was given (for a resumed, 0-RTT connection next time)."""
    addr = ("127.0.0.1", 443)
    tickets = []
    client = QuicConnection(
        configuration=aioquic_config(
            version, "media.example.org", ["h3"], verify_mode=ssl.CERT_NONE, session_ticket=ticket
        ),
        session_ticket_handler=tickets.append,
    )
    client.connect(addr, now=time.time())
    if early_data:
        client.send_stream_data(0, early_data)
    first = [d for d, _ in client.datagrams_to_send(now=time.time())]
    server_tickets = {} if ticket is None else {ticket.ticket: ticket}
    server = QuicConnection(
        configuration=QuicConfiguration(
            is_client=False,
            alpn_protocols=["h3"],
            supported_versions=[version],
            certificate=credentials[0],
            private_key=credentials[1],
        ),
        original_destination_connection_id=pull_quic_header(Buffer(data=first[0]), 8).destination_cid,
        session_ticket_handler=lambda t: server_tickets.__setitem__(t.ticket, t),
        session_ticket_fetcher=server_tickets.pop,
    )
    for d in first:
        server.receive_datagram(d, addr, now=time.time())
    for d, _ in server.datagrams_to_send(now=time.time()):
        client.receive_datagram(d, addr, now=time.time())
    second = [d for d, _ in client.datagrams_to_send(now=time.time())]
    for d in second:
        server.receive_datagram(d, addr, now=time.time())
    for d, _ in server.datagrams_to_send(now=time.time()):
        client.receive_datagram(d, addr, now=time.time())
    return {"first": first, "second": second, "tickets": tickets}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_NAMES = ("www.bbc.co.uk", "classroom.google.com")
CLONE_NEWNET = 0x40000000


def udp_socket_in_netns(netns: str) -> socket.socket:
    """A UDP socket on 127.0.0.1 inside netns. setns moves only the calling thread, so a short-lived
    thread joins the namespace to create it; the socket stays in that namespace whoever reads it."""
    libc = ctypes.CDLL(None, use_errno=True)
    made: dict[str, object] = {}

    def make() -> None:
        with open(f"/run/netns/{netns}") as ns:
            if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                made["error"] = OSError(ctypes.get_errno(), "setns")
                return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        made["sock"] = sock

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]
    return made["sock"]


@pytest.fixture(scope="module")
def chromium_flows() -> list[list[bytes]]:
    """The Initial datagrams real Chromium sends for each of CHROMIUM_NAMES (one headless browser per name).

    Everything runs in a network namespace of our own holding only loopback, so nothing leaves the
    machine. The listener never answers: Chromium sends its first flight (its post-quantum ClientHello
    fills two Initials), then retransmits it on each probe timeout with the CRYPTO frames re-cut."""
    assert CHROMIUM is not None, "Debian's chromium is needed (bash scripts/install.sh --dev)"
    netns = f"quictest{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    browsers: list[subprocess.Popen] = []
    flows: dict[int, list[bytes]] = {}
    with tempfile.TemporaryDirectory() as profiles:
        try:
            subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
            with udp_socket_in_netns(netns) as sock:
                port = sock.getsockname()[1]
                for i, name in enumerate(CHROMIUM_NAMES):
                    command = [
                        *("ip", "netns", "exec", netns, CHROMIUM, "--headless", "--no-sandbox"),
                        *("--disable-gpu", "--no-first-run", "--disable-background-networking"),
                        *("--disable-component-update", "--disable-sync", "--enable-quic"),
                        f"--user-data-dir={profiles}/{i}",
                        f"--origin-to-force-quic-on={name}:443",
                        f"--host-resolver-rules=MAP {name}:443 127.0.0.1:{port}",
                        f"https://{name}/",
                    ]
                    browsers.append(
                        subprocess.Popen(
                            command,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": profiles},  # its scratch files go with the profiles
                            start_new_session=True,  # a process group of its own, to end all its processes
                        )
                    )
                deadline = time.monotonic() + 30
                # The first flight and at least one retransmission from every browser.
                while len(flows) < len(CHROMIUM_NAMES) or min(map(len, flows.values())) < 3:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    try:
                        datagram, (_, source_port) = sock.recvfrom(65535)
                    except TimeoutError:
                        break
                    flows.setdefault(source_port, []).append(datagram)
        finally:
            for browser in browsers:
                with contextlib.suppress(ProcessLookupError):  # the whole group may have exited already
                    os.killpg(browser.pid, signal.SIGKILL)
                browser.wait()
            subprocess.run(["ip", "netns", "del", netns], check=True)
    assert len(flows) == len(CHROMIUM_NAMES), "every Chromium must send QUIC Initials"
    assert min(map(len, flows.values())) >= 3
    return list(flows.values())


def check_complete(asm: quic.QuicInitialAssembler, status: ParseStatus, sni: str | None) -> None:
    assert status == asm.status == (OK if sni else NO_NAME)
    assert asm.sni == sni


# --- RFC vectors ---


@pytest.mark.parametrize("version", [V1, V2])
def test_initial_keys_match_rfc_vectors(version: int) -> None:
    assert [k.hex() for k in quic.initial_keys(version, RFC_DCID)] == list(RFC_VECTORS[version]["keys"])


@pytest.mark.parametrize("version", [V1, V2])
def test_rfc_client_initial_decrypts_to_the_given_payload(version: int) -> None:
    packet = RFC_PACKETS[version]
    assert quic.flow_key(packet) == (version, RFC_DCID)
    asm = quic.QuicInitialAssembler.from_datagram(packet)
    pn, header, payload = asm.open_packet(packet)
    assert pn == 2
    assert header.hex() == RFC_VECTORS[version]["header"]  # header protection removed
    assert payload == RFC_PAYLOAD  # and the tag verified
    check_complete(asm, asm.feed(packet), "example.com")
    assert asm.alpn == ("alpn",)
    assert asm.max_version == 0x0304
    assert not asm.has_ech


@pytest.mark.parametrize("version", [V1, V2])
def test_one_wrong_bit_in_the_tag_is_rejected(version: int) -> None:
    damaged = bytearray(RFC_PACKETS[version])
    damaged[-1] ^= 1
    asm = quic.QuicInitialAssembler(version, RFC_DCID)
    assert asm.open_packet(bytes(damaged)) is None
    assert asm.feed(bytes(damaged)) == MALFORMED
    assert asm.status == NEED_MORE  # unauthenticated bytes leave the connection as it was
    check_complete(asm, asm.feed(RFC_PACKETS[version]), "example.com")


def test_server_initial_does_not_authenticate_as_the_client() -> None:
    asm = quic.QuicInitialAssembler(V1, RFC_DCID)
    assert asm.feed(RFC_SERVER_INITIAL) == MALFORMED
    check_complete(asm, asm.feed(RFC_PACKETS[V1]), "example.com")


def test_keys_only_for_v1_and_v2_and_short_connection_ids() -> None:
    for version, dcid in [(0xFF00001D, RFC_DCID), (0x1A2A3A4A, RFC_DCID), (V1, bytes(21))]:
        with pytest.raises(ValueError):
            quic.initial_keys(version, dcid)
        with pytest.raises(ValueError):
            quic.QuicInitialAssembler(version, dcid)
    assert len(quic.initial_keys(V1, b"")[0]) == 16  # after a Retry the DCID may be any length


# --- one assembler, connection after connection (as the data plane keeps one per flow slot) ---


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([V1, V2]), st.binary(max_size=20)), min_size=2, max_size=5, unique=True
    )
)
def test_a_rekeyed_assembler_keeps_nothing_of_the_last_connection(
    connections: list[tuple[int, bytes]],
) -> None:
    halves = [(0, 120), (120, len(RFC_HELLO))]
    asm = quic.QuicInitialAssembler.__new__(quic.QuicInitialAssembler)
    last: tuple[int, bytes] | None = None
    for version, dcid in connections:
        asm.__init__(version, dcid)  # the same libcrypto contexts, keyed for this connection
        assert asm.status == NEED_MORE and asm.sni is None
        first, second = (
            protect_initial(version, dcid, pn, crypto_frame(a, RFC_HELLO[a:b]))
            for pn, (a, b) in enumerate(halves)
        )
        if last is not None:
            # The last connection's keys are gone: its Initial does not authenticate (or is of
            # another version), and leaves this connection as it was.
            last_version, last_packet = last
            assert asm.feed(last_packet) == (MALFORMED if last_version == version else NOT_HANDLED)
        # So are its CRYPTO bytes: the second half alone is not a ClientHello.
        assert asm.feed(second) == NEED_MORE
        check_complete(asm, asm.feed(first), "example.com")
        last = version, second


def test_an_assembler_without_keys_accepts_nothing() -> None:
    unkeyed = quic.QuicInitialAssembler.__new__(quic.QuicInitialAssembler)  # as the data plane makes them
    failed = quic.QuicInitialAssembler(V1, RFC_DCID)
    with pytest.raises(ValueError):
        failed.__init__(0xFF00001D, RFC_DCID)  # a failed rekey must not leave the last keys in use
    for asm in (unkeyed, failed):
        assert asm.status == MALFORMED
        assert asm.open_packet(RFC_PACKETS[V1]) is None
        assert asm.feed(RFC_PACKETS[V1]) == MALFORMED
        assert asm.sni is None


# --- aioquic clients ---


@pytest.mark.parametrize("version", [V1, V2])
@pytest.mark.parametrize(
    ("server_name", "sni"),
    [
        ("www.example.com", "www.example.com"),
        ("Classroom.Google.COM", "classroom.google.com"),
        ("_dmarc.school-name.sch.uk", "_dmarc.school-name.sch.uk"),
        ("127.0.0.1", None),  # no SNI for an IP literal (RFC 6066 3)
    ],
)
def test_aioquic_client_initial(version: int, server_name: str, sni: str | None) -> None:
    dcid, datagrams = aioquic_first_flight(version, server_name, ["h3"])
    assert len(datagrams) == 1
    assert quic.flow_key(datagrams[0]) == (version, dcid)
    asm = quic.QuicInitialAssembler.from_datagram(datagrams[0])
    check_complete(asm, asm.feed(datagrams[0]), sni)
    assert asm.alpn == ("h3",)
    assert asm.max_version == 0x0304


@pytest.mark.parametrize("version", [V1, V2])
def test_large_client_hello_in_any_order_with_duplicates(version: int) -> None:
    # Long ALPN names make aioquic's ClientHello span three Initials in three datagrams.
    alpn = ["h3", *(f"x-{i:02d}-" + "p" * 200 for i in range(12))]
    dcid, datagrams = aioquic_first_flight(version, "portal.example.ac.uk", alpn)
    assert len(datagrams) == 3
    for order in itertools.permutations(datagrams):
        asm = quic.QuicInitialAssembler(version, dcid)
        sequence = [order[0], order[0], order[1], order[0], order[2]]
        assert [asm.feed(d) for d in sequence[:-1]] == [NEED_MORE] * 4
        check_complete(asm, asm.feed(sequence[-1]), "portal.example.ac.uk")
        assert asm.alpn == ("h3",)  # the long names are beyond what the ALPN summary holds


@pytest.mark.parametrize("version", [V1, V2])
def test_coalesced_handshake_and_short_header_packets_are_skipped(
    version: int, server_credentials: Credentials
) -> None:
    flights = aioquic_handshake(version, server_credentials)
    first, (second,) = flights["first"], flights["second"]
    packets = split_datagram(second)
    assert [t for t, _ in packets] == [
        QuicPacketType.INITIAL,
        QuicPacketType.HANDSHAKE,
        QuicPacketType.ONE_RTT,
    ]
    (_, initial), (_, handshake), (_, short) = packets
    dcid = pull_quic_header(Buffer(data=first[0]), 8).destination_cid

    asm = quic.QuicInitialAssembler(version, dcid)
    # The client now uses the server's connection id, but its Initials keep the first DCID's keys: the
    # ACK-only Initial decrypts (NEED_MORE, not NOT_HANDLED) and the Handshake and 1-RTT packets are skipped.
    assert asm.feed(second) == NEED_MORE
    assert asm.feed(handshake + initial) == NEED_MORE
    assert asm.feed(handshake) == NOT_HANDLED
    assert asm.feed(short) == NOT_HANDLED
    check_complete(asm, asm.feed(first[0]), "media.example.org")
    assert quic.flow_key(handshake) is None
    assert quic.flow_key(short) is None


@pytest.mark.parametrize("version", [V1, V2])
def test_zero_rtt_coalesced_with_the_initial(version: int, server_credentials: Credentials) -> None:
    (ticket,) = aioquic_handshake(version, server_credentials)["tickets"]
    (datagram,) = aioquic_handshake(version, server_credentials, ticket, b"GET /\r\n")["first"]
    # aioquic pads after its packets with zeros, which read as a short header and end the datagram.
    packets = split_datagram(datagram)
    assert [t for t, _ in packets] == [QuicPacketType.INITIAL, QuicPacketType.ZERO_RTT, None]
    (_, initial), (_, zero_rtt), _ = packets
    dcid = pull_quic_header(Buffer(data=datagram), 8).destination_cid

    asm = quic.QuicInitialAssembler(version, dcid)
    assert asm.feed(zero_rtt) == NOT_HANDLED
    check_complete(asm, asm.feed(zero_rtt + initial), "media.example.org")
    asm = quic.QuicInitialAssembler(version, dcid)
    check_complete(asm, asm.feed(datagram), "media.example.org")  # a resumed ClientHello (with a PSK)


@pytest.mark.parametrize("version", [V1, V2])
def test_version_negotiation_retry_and_unknown_versions_are_not_handled(version: int) -> None:
    dcid, (datagram,) = aioquic_first_flight(version, "www.example.com", ["h3"])
    cases = [
        encode_quic_version_negotiation(
            source_cid=dcid, destination_cid=b"\x01" * 8, supported_versions=[V1, V2]
        ),
        encode_quic_retry(version, b"\x02" * 8, dcid, dcid, b"retry-token"),
        datagram[:1] + (0x1A2A3A4A).to_bytes(4, "big") + datagram[5:],  # a reserved (greasing) version
        datagram[:1] + (0xFF00001D).to_bytes(4, "big") + datagram[5:],  # draft-29
        datagram[:1] + (V1 if version == V2 else V2).to_bytes(4, "big") + datagram[5:],  # the other version
    ]
    asm = quic.QuicInitialAssembler(version, dcid)
    for case in cases:
        assert asm.feed(case) == NOT_HANDLED
    for case in cases[:4]:
        assert quic.flow_key(case) is None
        assert quic.QuicInitialAssembler.from_datagram(case) is None
    check_complete(asm, asm.feed(datagram), "www.example.com")


# --- CRYPTO reassembly and frames, in Initials protected by aioquic ---


@pytest.fixture(scope="module")
def big_hello() -> bytes:
    """A real 2.8 KB ClientHello (aioquic, long ALPN names), reassembled with aioquic's decryption."""
    alpn = ["h3", *(f"x-{i:02d}-" + "p" * 200 for i in range(12))]
    dcid, datagrams = aioquic_first_flight(V1, "portal.example.ac.uk", alpn)
    return handshake_message(datagrams, V1, dcid)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_crypto_reassembly_any_split_overlap_and_order(big_hello: bytes, data: st.DataObject) -> None:
    version = data.draw(st.sampled_from([V1, V2]))
    hello, sni = data.draw(st.sampled_from([(RFC_HELLO, "example.com"), (big_hello, "portal.example.ac.uk")]))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(hello) - 1), max_size=10))))
    bounds = [0, *cuts, len(hello)]
    chunks = []
    for a, b in itertools.pairwise(bounds):
        a = max(0, a - data.draw(st.integers(0, 64)))  # overlap the neighbours
        b = min(len(hello), b + data.draw(st.integers(0, 64)))
        chunks.append((a, b))
    chunks += data.draw(st.lists(st.sampled_from(chunks), max_size=3))  # retransmissions
    chunks = data.draw(st.permutations(chunks))
    filler = st.sampled_from(
        [b"\x01", b"\x00" * 7, b"\x02\x05\x00\x00\x05", b"\x03\x02\x01\x01\x00\x00\x00\x01\x02\x03"]
    )
    # CRYPTO frames among PING, PADDING and ACK (with ECN counts) frames, 1-3 per packet.
    packets: list[tuple[list[tuple[int, int]], bytes]] = []
    i = 0
    while i < len(chunks):
        take = chunks[i : i + data.draw(st.integers(1, 3))]
        i += len(take)
        payload = b"".join(data.draw(filler) + crypto_frame(a, hello[a:b]) for a, b in take)
        packets.append((take, payload))
    dcid = data.draw(st.binary(min_size=8, max_size=20))
    protected = [
        (take, protect_initial(version, dcid, pn, payload)) for pn, (take, payload) in enumerate(packets)
    ]
    protected = data.draw(st.permutations(protected))
    # Coalesce runs of packets into datagrams.
    datagrams = []
    while protected:
        n = data.draw(st.integers(1, min(3, len(protected))))
        datagrams.append(
            ([r for take, _ in protected[:n] for r in take], b"".join(p for _, p in protected[:n]))
        )
        protected = protected[n:]

    asm = quic.QuicInitialAssembler(version, dcid)
    have = bytearray(len(hello))
    for ranges, datagram in datagrams:
        for a, b in ranges:
            have[a:b] = b"\x01" * (b - a)
        status = asm.feed(datagram)
        if all(have):
            check_complete(asm, status, sni)
            break
        assert status == NEED_MORE
    else:
        pytest.fail("the chunks did not cover the ClientHello")


@pytest.mark.parametrize("version", [V1, V2])
@pytest.mark.parametrize(
    ("pn_len", "pns"),
    [(1, [0, 1, 100]), (2, [7, 300, 20000]), (3, [1, 70000, 4000000]), (4, [1 << 30, 5, (1 << 30) + 7])],
)
def test_packet_number_lengths(version: int, pn_len: int, pns: list[int]) -> None:
    thirds = [0, 80, 160, len(RFC_HELLO)]
    packets = [
        protect_initial(version, RFC_DCID, pn, crypto_frame(a, RFC_HELLO[a:b]), pn_len)
        for pn, (a, b) in zip(pns, itertools.pairwise(thirds), strict=True)
    ]
    asm = quic.QuicInitialAssembler(version, RFC_DCID)
    assert [asm.open_packet(p)[0] for p in packets[:1]] == pns[:1]
    assert [asm.feed(p) for p in packets[:-1]] == [NEED_MORE, NEED_MORE]
    check_complete(asm, asm.feed(packets[-1]), "example.com")


def test_ack_and_connection_close_frames_are_accepted() -> None:
    payload = (
        b"\x03\x0a\x00\x01\x02\x01\x03\x04\x05\x06"  # ACK with one extra range and ECN counts
        + b"\x02\x40\x10\x00\x00\x00"  # ACK
        + crypto_frame(0, RFC_HELLO)
        + b"\x1c\x0a\x06\x03bye"  # transport CONNECTION_CLOSE with a reason
    )
    asm = quic.QuicInitialAssembler(V1, RFC_DCID)
    check_complete(asm, asm.feed(protect_initial(V1, RFC_DCID, 0, payload)), "example.com")


@pytest.mark.parametrize(
    "frames",
    [
        b"\x08\x00\x01A",  # STREAM
        b"\x07\x01t",  # NEW_TOKEN
        b"\x1d\x00\x00",  # application CONNECTION_CLOSE: not allowed in an Initial
        b"\x1e",  # HANDSHAKE_DONE
        b"\x30\x01",  # DATAGRAM
        b"\x40\x06\x00\x01\x01",  # CRYPTO with a two-byte frame type: not the shortest encoding
        b"\x06\x00\x44\x00abc",  # CRYPTO longer than the packet
        b"\x06\x00",  # truncated CRYPTO
        b"\x02\x05\x00\x02\x00\x01",  # ACK whose ranges run out
        b"\x06\xff\xff\xff\xff\xff\xff\xff\xff\x01x",  # CRYPTO ending past 2^62 - 1
        b"\x1c\x00\x00\x09bye",  # CONNECTION_CLOSE reason longer than the packet
    ],
)
def test_frames_an_initial_cannot_carry_are_malformed(frames: bytes) -> None:
    asm = quic.QuicInitialAssembler(V2, RFC_DCID)
    assert asm.feed(protect_initial(V2, RFC_DCID, 0, b"\x01" + frames)) == MALFORMED
    # Authenticated but broken: the client itself sent it, so the connection stays rejected.
    assert asm.status == MALFORMED
    assert asm.feed(RFC_PACKETS[V2]) == MALFORMED
    assert asm.sni is None


def test_empty_payload_and_reserved_bits_are_malformed() -> None:
    for packet in [
        protect_initial(V1, RFC_DCID, 0, b"", pn_len=4),
        protect_initial(V1, RFC_DCID, 0, crypto_frame(0, RFC_HELLO), reserved=2),
    ]:
        asm = quic.QuicInitialAssembler(V1, RFC_DCID)
        assert asm.open_packet(packet) is not None  # it authenticates
        assert asm.feed(packet) == MALFORMED
        assert asm.status == MALFORMED


def test_retransmission_with_different_bytes_is_malformed() -> None:
    changed = bytearray(RFC_HELLO)
    changed[120] ^= 0x20
    asm = quic.QuicInitialAssembler(V1, RFC_DCID)
    assert asm.feed(protect_initial(V1, RFC_DCID, 0, crypto_frame(100, RFC_HELLO[100:200]))) == NEED_MORE
    # Partly overlapping, and wholly inside the bytes already held: both must agree with them.
    assert asm.feed(protect_initial(V1, RFC_DCID, 1, crypto_frame(150, RFC_HELLO[150:241]))) == NEED_MORE
    assert asm.feed(protect_initial(V1, RFC_DCID, 2, crypto_frame(110, RFC_HELLO[110:130]))) == NEED_MORE
    for a, b in [(110, 130), (50, 150)]:
        bad = quic.QuicInitialAssembler(V1, RFC_DCID)
        bad.feed(protect_initial(V1, RFC_DCID, 0, crypto_frame(100, RFC_HELLO[100:200])))
        assert bad.feed(protect_initial(V1, RFC_DCID, 1, crypto_frame(a, bytes(changed[a:b])))) == MALFORMED
        assert bad.feed(protect_initial(V1, RFC_DCID, 2, crypto_frame(0, RFC_HELLO))) == MALFORMED
    check_complete(
        asm, asm.feed(protect_initial(V1, RFC_DCID, 3, crypto_frame(0, RFC_HELLO[:100]))), "example.com"
    )


def test_first_message_too_long_or_not_a_client_hello() -> None:
    asm = quic.QuicInitialAssembler(V1, RFC_DCID)
    too_long = b"\x01" + (20000).to_bytes(3, "big") + RFC_HELLO[4:]
    assert asm.feed(protect_initial(V1, RFC_DCID, 0, crypto_frame(0, too_long))) == NOT_HANDLED
    assert asm.status == NOT_HANDLED
    server_hello = b"\x02" + RFC_HELLO[1:]
    asm = quic.QuicInitialAssembler(V1, RFC_DCID)
    assert asm.feed(protect_initial(V1, RFC_DCID, 0, crypto_frame(0, server_hello))) == NOT_HANDLED


def test_crypto_data_past_the_bound_is_ignored() -> None:
    asm = quic.QuicInitialAssembler(V1, RFC_DCID)
    payload = crypto_frame(16000, b"z" * 1000) + crypto_frame(1 << 40, b"z") + crypto_frame(0, RFC_HELLO)
    check_complete(asm, asm.feed(protect_initial(V1, RFC_DCID, 0, payload)), "example.com")


def test_coalesced_packets_with_another_dcid_are_ignored() -> None:
    first = protect_initial(V1, RFC_DCID, 0, crypto_frame(0, RFC_HELLO[:100]))
    other_dcid = bytes(8)
    rest = protect_initial(V1, other_dcid, 1, crypto_frame(100, RFC_HELLO[100:]))
    asm = quic.QuicInitialAssembler(V1, RFC_DCID)
    assert asm.feed(first + rest) == NEED_MORE  # the second packet was not even tried (it would fail)
    assert asm.feed(rest) == MALFORMED
    rest = protect_initial(V1, RFC_DCID, 1, crypto_frame(100, RFC_HELLO[100:]))
    check_complete(asm, asm.feed(rest), "example.com")


def test_final_status_is_kept() -> None:
    asm = quic.QuicInitialAssembler(V1, RFC_DCID)
    check_complete(asm, asm.feed(RFC_PACKETS[V1]), "example.com")
    for later in [b"", b"\x00" * 1200, RFC_SERVER_INITIAL, protect_initial(V1, RFC_DCID, 5, b"\x08\x00")]:
        assert asm.feed(later) == OK
    assert asm.sni == "example.com"


# --- robustness ---


def real_datagrams() -> list[tuple[int, bytes, bytes, str]]:
    """(version, dcid, datagram, sni) for Initials that each hold a whole ClientHello."""
    out = [(v, RFC_DCID, RFC_PACKETS[v], "example.com") for v in (V1, V2)]
    for version in (V1, V2):
        dcid, (datagram,) = aioquic_first_flight(version, "www.example.com", ["h3"])
        out.append((version, dcid, datagram, "www.example.com"))
    return out


REAL = real_datagrams()


def packets_end(datagram: bytes) -> int:
    """Where the datagram's long-header packets end; aioquic pads its datagrams with zeros after them."""
    return sum(len(packet) for packet_type, packet in split_datagram(datagram) if packet_type is not None)


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(REAL), bit=st.integers(0, 1 << 20))
def test_any_bit_flip_never_yields_a_wrong_name(case: tuple[int, bytes, bytes, str], bit: int) -> None:
    version, dcid, datagram, sni = case
    damaged = bytearray(datagram)
    bit %= len(datagram) * 8
    damaged[bit // 8] ^= 1 << (bit % 8)
    asm = quic.QuicInitialAssembler(version, dcid)
    status = asm.feed(bytes(damaged))
    if bit // 8 >= packets_end(datagram):
        check_complete(asm, status, sni)  # only the padding after the packet changed
        return
    assert status in (MALFORMED, NOT_HANDLED)
    assert asm.status == NEED_MORE and asm.sni is None
    check_complete(asm, asm.feed(datagram), sni)


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(REAL), cut=st.integers(0, 1 << 20))
def test_any_truncation_is_malformed_or_complete(case: tuple[int, bytes, bytes, str], cut: int) -> None:
    version, dcid, datagram, sni = case
    cut %= len(datagram)
    asm = quic.QuicInitialAssembler(version, dcid)
    if cut >= packets_end(datagram):
        check_complete(asm, asm.feed(datagram[:cut]), sni)
        return
    assert quic.flow_key(datagram[:cut]) is None
    assert asm.feed(datagram[:cut]) == MALFORMED
    check_complete(asm, asm.feed(datagram), sni)


def long_header(first: int, version: int, length: int) -> bytes:
    return bytes([first]) + version.to_bytes(4, "big") + b"\x08" + RFC_DCID + b"\x00\x00" + varint(length)


long_headers = st.builds(
    long_header, st.integers(0xC0, 0xFF), st.sampled_from([V1, V2]), st.integers(0, 1300)
)


@settings(max_examples=500, deadline=None)
@given(prefix=st.one_of(st.just(b""), long_headers), body=st.binary(max_size=1400))
def test_arbitrary_bytes_never_yield_a_name(prefix: bytes, body: bytes) -> None:
    datagram = prefix + body
    quic.flow_key(datagram)
    for version in (V1, V2):
        asm = quic.QuicInitialAssembler(version, RFC_DCID)
        assert asm.feed(datagram) in (MALFORMED, NOT_HANDLED)
        assert asm.open_packet(datagram) is None
        assert asm.status == NEED_MORE


def test_packet_longer_than_any_udp_payload_is_malformed() -> None:
    asm = quic.QuicInitialAssembler(V1, RFC_DCID)
    assert asm.feed(long_header(0xC0, V1, 70000) + bytes(70000)) == MALFORMED
    assert asm.status == NEED_MORE


def test_fuzz_harness_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(FUZZ_HARNESS), "-atheris_runs=5000", "-len_control=0"],
        capture_output=True,
        timeout=300,
        cwd=tmp_path,  # where libFuzzer would write a crash artifact
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]


# --- Chromium ---


def chromium_key(flow: list[bytes]) -> tuple[int, bytes]:
    header = pull_quic_header(Buffer(data=flow[0]), host_cid_length=8)
    return header.version, header.destination_cid


@pytest.mark.netns
@pytest.mark.slow
def test_chromium_post_quantum_client_hello_spans_two_initials(chromium_flows: list[list[bytes]]) -> None:
    names = set()
    for flow in chromium_flows:
        version, dcid = chromium_key(flow)
        assert quic.flow_key(flow[0]) == (version, dcid) and version == V1
        # An X25519MLKEM768 key share (group 0x11ec, 1216 bytes) makes the ClientHello too big for one
        # 1250-byte datagram.
        hello = handshake_message(flow[:2], version, dcid)
        assert b"\x11\xec\x04\xc0" in hello and len(hello) > 1500
        for first, second in [(flow[0], flow[1]), (flow[1], flow[0])]:
            asm = quic.QuicInitialAssembler.from_datagram(flow[0])
            assert asm.feed(first) == NEED_MORE
            status = asm.feed(second)
            assert status == OK
            assert asm.alpn == ("h3",)
            assert asm.has_ech  # Chromium sends GREASE ECH without keys
            assert asm.max_version == 0x0304
            names.add(asm.sni)
        asm = quic.QuicInitialAssembler.from_datagram(flow[0])
        assert asm.feed(flow[0] + flow[1]) == OK  # both Initials coalesced into one datagram
    assert names == set(CHROMIUM_NAMES)


@pytest.mark.netns
@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_chromium_datagrams_in_any_order_with_duplicates(
    chromium_flows: list[list[bytes]], data: st.DataObject
) -> None:
    flow = data.draw(st.sampled_from(chromium_flows))
    version, dcid = chromium_key(flow)
    hello = handshake_message(flow, version, dcid)
    sequence = data.draw(st.permutations(flow + data.draw(st.lists(st.sampled_from(flow), max_size=4))))
    asm = quic.QuicInitialAssembler(version, dcid)
    have = bytearray(len(hello))
    statuses = []
    for datagram in sequence:
        for offset, chunk in crypto_ranges(datagram, version, dcid):
            end = min(offset + len(chunk), len(hello))
            have[offset:end] = b"\x01" * max(0, end - offset)
        statuses.append(asm.feed(datagram))
        assert statuses[-1] == (OK if all(have) else NEED_MORE)
    assert asm.sni in CHROMIUM_NAMES


@pytest.mark.netns
@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_chromium_damaged_datagrams_never_yield_a_name(
    chromium_flows: list[list[bytes]], data: st.DataObject
) -> None:
    flow = data.draw(st.sampled_from(chromium_flows))
    version, dcid = chromium_key(flow)
    datagram = data.draw(st.sampled_from(flow))
    damaged = bytearray(datagram[: data.draw(st.integers(1, len(datagram)))])
    bit = data.draw(st.integers(0, len(damaged) * 8 - 1))
    damaged[bit // 8] ^= 1 << (bit % 8)
    asm = quic.QuicInitialAssembler(version, dcid)
    assert asm.feed(bytes(damaged)) in (MALFORMED, NOT_HANDLED)
    assert asm.status == NEED_MORE
