"""Readers for the classic pcap and the pcapng capture formats.

Both yield (link type, timestamp, frame bytes). Written here rather than pulled in as a dependency
because `appliance inspect` must read whatever an IT technician hands it, and the two formats are small."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_IDB = 0x00000001
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
MIN_BODY = {PCAPNG_SHB: 16, PCAPNG_IDB: 8, PCAPNG_EPB: 20, PCAPNG_SPB: 4}
# A frame larger than this is not a real capture record: stop rather than allocate gigabytes.
MAX_RECORD = 256 * 1024


class CaptureError(ValueError):
    """The file is not a capture this reader understands, or it is damaged."""


@dataclass(frozen=True, slots=True)
class Frame:
    linktype: int
    timestamp: float
    data: bytes


def read_frames(path: str | Path) -> Iterator[Frame]:
    """Every frame of a pcap or pcapng file, in file order.

    A truncated last record (a capture cut off while being written) ends the iteration quietly;
    anything else malformed raises CaptureError naming the byte offset."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head in PCAP_MAGICS:
            yield from _read_pcap(f, *PCAP_MAGICS[head])
        elif len(head) == 4 and struct.unpack("<I", head)[0] == PCAPNG_SHB:
            f.seek(0)
            yield from _read_pcapng(f)
        else:
            raise CaptureError(f"{path}: not a pcap or pcapng file")


def _read_pcap(f: BinaryIO, endian: str, tick: float) -> Iterator[Frame]:
    header = f.read(20)
    if len(header) < 20:
        raise CaptureError("pcap: truncated file header")
    _major, _minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack(endian + "HHiIII", header)
    linktype &= 0xFFFF  # the upper bits carry FCS flags
    record = struct.Struct(endian + "IIII")
    while True:
        rh = f.read(16)
        if len(rh) < 16:
            return
        sec, frac, incl, _orig = record.unpack(rh)
        if incl > MAX_RECORD:
            raise CaptureError(f"pcap: record at offset {f.tell() - 16} claims {incl} bytes")
        data = f.read(incl)
        if len(data) < incl:
            return
        yield Frame(linktype, sec + frac * tick, data)


def _read_pcapng(f: BinaryIO) -> Iterator[Frame]:
    endian = "<"
    interfaces: list[tuple[int, float]] = []  # (linktype, seconds per timestamp unit)
    while True:
        offset = f.tell()
        head = f.read(8)
        if len(head) < 8:
            return
        if struct.unpack("<I", head[:4])[0] == PCAPNG_SHB:  # the same in both byte orders
            # A section header sets the byte order of everything up to the next one.
            magic = f.read(4)
            if len(magic) < 4:
                return
            endian = "<" if struct.unpack("<I", magic)[0] == PCAPNG_BYTE_ORDER_MAGIC else ">"
            if struct.unpack(endian + "I", magic)[0] != PCAPNG_BYTE_ORDER_MAGIC:
                raise CaptureError(f"pcapng: bad byte-order magic at offset {offset}")
            interfaces = []  # each section has its own interface list
            btype, length = PCAPNG_SHB, struct.unpack(endian + "I", head[4:])[0]
            _check_block_length(length, offset)
            body = magic + f.read(length - 16)
        else:
            btype, length = struct.unpack(endian + "II", head)
            _check_block_length(length, offset)
            body = f.read(length - 12)
        if len(body) < length - 12:
            return
        trailer = f.read(4)
        if len(trailer) < 4:
            return
        if len(body) < MIN_BODY.get(btype, 0):
            raise CaptureError(f"pcapng: block of type {btype} at offset {offset} is too short")
        if btype == PCAPNG_IDB:
            interfaces.append((struct.unpack(endian + "H", body[:2])[0], _idb_tick(body[8:], endian)))
        elif btype == PCAPNG_EPB:
            iface, ts_hi, ts_lo, caplen, _orig = struct.unpack(endian + "IIIII", body[:20])
            if iface >= len(interfaces) or 20 + caplen > len(body):
                raise CaptureError(f"pcapng: bad packet block at offset {offset}")
            linktype, tick = interfaces[iface]
            yield Frame(linktype, ((ts_hi << 32) | ts_lo) * tick, body[20 : 20 + caplen])
        elif btype == PCAPNG_SPB:
            if not interfaces:
                raise CaptureError(f"pcapng: packet block before any interface at offset {offset}")
            orig = struct.unpack(endian + "I", body[:4])[0]
            yield Frame(interfaces[0][0], 0.0, body[4 : 4 + min(orig, len(body) - 4)])


def _check_block_length(length: int, offset: int) -> None:
    if length < 12 or length % 4 or length > MAX_RECORD:
        raise CaptureError(f"pcapng: bad block length {length} at offset {offset}")


def _idb_tick(options: bytes, endian: str) -> float:
    """Seconds per timestamp unit from an interface block's if_tsresol option (default microseconds)."""
    i = 0
    while i + 4 <= len(options):
        code, length = struct.unpack(endian + "HH", options[i : i + 4])
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = options[i + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
        i += 4 + ((length + 3) & ~3)
    return 1e-6
