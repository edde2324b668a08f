"""Streaming readers for classic pcap and pcapng, plain or gzip-compressed, from a file or stdin.

The readers work on raw bytes with ``struct`` and yield one tuple per packet record::

    (ts: float, linktype: int, data: bytes, wirelen: int)

Frame numbers are the 1-based position of the record among the file's packet records, as in
Wireshark; the consumer counts them.  Memory is bounded by the read chunk plus one record.

Damage is never fatal once the file has been recognised: a corrupt record, a truncated last
record, a packet cut by the snap length or an unknown link type is counted in ``CaptureInfo``
and the rest of the file is still read.  A file that is not a capture, or that cannot be opened
or read, raises ``CaptureError`` with one clear line.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import queue
import struct
import sys
import threading
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from .linktypes import KNOWN_LINKTYPES, LINKTYPE_NAMES

CHUNK = 1 << 20
MAX_RECORD = 1 << 18          # a record larger than 256 KiB is taken as corruption
MAX_ERRORS_LISTED = 20        # per kind; the rest are counted

PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
LINKTYPE_UNDECLARED = -1      # a pcapng packet record whose interface is unknown: counted, not decoded


class CaptureError(Exception):
    """The input cannot be read as a capture at all (exit code 3)."""


@dataclass
class CaptureInfo:
    """What is known about one input after (or while) reading it: becomes ``inputs[]``."""

    path: str
    format: str = "unknown"
    compressed: bool = False
    linktypes: set[int] = field(default_factory=set)
    packets: int = 0
    bytes: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    truncated: bool = False
    snapped: int = 0
    interface_drops: int = 0
    records: int = 0              # packet records read so far (kept up to date at each refill)
    errors: dict[str, dict] = field(default_factory=dict)
    sha256: str = ""
    size: int = 0

    def error(self, kind: str, message: str, *, frame: int | None = None, offset: int | None = None) -> None:
        entry = self.errors.get(kind)
        if entry is None:
            self.errors[kind] = {"kind": kind, "count": 1, "message": message, "first_frame": frame,
                                 "first_offset": offset}
        else:
            entry["count"] += 1

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "format": self.format,
            "compressed": self.compressed,
            "linktypes": [LINKTYPE_NAMES.get(lt, f"linktype-{lt}") for lt in sorted(self.linktypes)],
            "linktype_numbers": sorted(self.linktypes),
            "packets": self.packets,
            "bytes": self.bytes,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "truncated": self.truncated,
            "snapped_packets": self.snapped,
            "interface_drops": self.interface_drops,
            "errors": sorted(self.errors.values(), key=lambda e: e["kind"]),
        }


class _HashingReader:
    """File-like wrapper that counts the raw (maybe compressed) bytes and hashes them.

    SHA-256 runs in a second thread (hashlib releases the GIL on large buffers), so hashing an
    850 MB capture costs the packet loop nothing on a machine with two cores.
    """

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0
        self._queue: queue.Queue = queue.Queue(maxsize=4)  # bounded: a slow hash slows reading
        self._thread = threading.Thread(target=self._hash, name="dotaudit-sha256", daemon=True)
        self._thread.start()

    def _hash(self) -> None:
        get = self._queue.get
        update = self.sha.update
        while True:
            b = get()
            if b is None:
                return
            update(b)

    def read(self, n: int = -1) -> bytes:
        b = self.raw.read(n)
        if b:
            self._queue.put(b)
            self.size += len(b)
        return b

    def drain(self) -> None:
        """Hash whatever the capture parser did not need (padding after the last block)."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self.sha.hexdigest()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Stop the hashing thread (an input that turned out not to be a capture never gets to
        ``hexdigest``) and close the file (not stdin)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.raw is not sys.stdin.buffer:
            self.raw.close()


def open_capture(path: str) -> tuple[BinaryIO, _HashingReader, CaptureInfo]:
    """Open ``path`` (or ``-`` for stdin), transparently un-gzipping; return (stream, hasher, info)."""
    info = CaptureInfo(path=path)
    try:
        if path == "-":
            raw: BinaryIO = sys.stdin.buffer
        else:
            if os.path.isdir(path):
                raise CaptureError(f"{path}: is a directory, not a capture file")
            raw = open(path, "rb")
    except CaptureError:
        raise
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open: {exc.strerror or exc}") from None
    hasher = _HashingReader(raw)
    try:
        head = _peek(hasher, 4)
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read: {exc.strerror or exc}") from None
    stream: BinaryIO
    if head.startswith(b"\x1f\x8b"):
        info.compressed = True
        stream = gzip.GzipFile(fileobj=_Prefixed(head, hasher), mode="rb")  # type: ignore[arg-type]
    else:
        stream = _Prefixed(head, hasher)  # type: ignore[assignment]
    return stream, hasher, info


def _peek(r: _HashingReader, n: int) -> bytes:
    out = b""
    while len(out) < n:
        b = r.read(n - len(out))
        if not b:
            break
        out += b
    return out


class _Prefixed(io.RawIOBase):
    """A stream that first returns ``prefix`` and then reads from ``rest``."""

    def __init__(self, prefix: bytes, rest: _HashingReader):
        self.prefix = prefix
        self.rest = rest

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.prefix:
            if n < 0 or n >= len(self.prefix):
                p, self.prefix = self.prefix, b""
                more = self.rest.read(n - len(p)) if n > len(p) else (self.rest.read() if n < 0 else b"")
                return p + (more or b"")
            p, self.prefix = self.prefix[:n], self.prefix[n:]
            return p
        return self.rest.read(n)

    def readinto(self, b) -> int:  # pragma: no cover - used by GzipFile via read()
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Buffer:
    """Chunked reader over a stream with cheap ``take(n)``; counts the offset consumed."""

    __slots__ = ("stream", "read", "buf", "pos", "offset", "eof", "path")

    def __init__(self, stream: BinaryIO, path: str):
        self.stream = stream
        # GzipFile.read(n) loops until n bytes and drops everything it decompressed in that call
        # when the stream then fails (file cut mid-member, CRC error); read1 returns what one
        # step decompressed, so the records before the damage are still read.
        self.read = getattr(stream, "read1", None) or stream.read
        self.buf = b""
        self.pos = 0
        self.offset = 0  # file offset of buf[0] (decompressed)
        self.eof = False
        self.path = path

    def fill(self, need: int) -> bool:
        """Make sure ``need`` bytes are available from pos; False at end of data."""
        while len(self.buf) - self.pos < need:
            if self.eof:
                return False
            try:
                chunk = self.read(max(CHUNK, need))
            except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                self.eof = True
                raise _ReadDamage(f"read error after {self.offset + len(self.buf)} bytes: {exc}") from None
            if not chunk:
                self.eof = True
                return False
            self.offset += self.pos
            self.buf = self.buf[self.pos:] + chunk
            self.pos = 0
        return True

    def remaining(self) -> int:
        return len(self.buf) - self.pos


class _ReadDamage(Exception):
    """The underlying stream failed mid-file (gzip CRC, truncated gzip, I/O error)."""


def read_packets(stream: BinaryIO, info: CaptureInfo, scanner=None) -> Iterator[tuple[float, int, bytes, int]]:
    """Detect the format from the magic number and yield packet records.

    With a ``scanner`` (capture/fast.py), records of muted flows are accounted in C and not
    yielded; ``scanner.frame`` and ``scanner.hi`` describe each yielded record."""
    buf = _Buffer(stream, info.path)
    try:
        ok = buf.fill(4)
    except _ReadDamage as exc:
        raise CaptureError(f"{info.path}: cannot read: {exc}") from None
    if not ok:
        if buf.remaining() == 0:
            raise CaptureError(f"{info.path}: empty file, not a capture")
        raise CaptureError(f"{info.path}: too short to be a capture ({buf.remaining()} bytes)")
    magic = buf.buf[buf.pos:buf.pos + 4]
    try:
        if magic in PCAP_MAGIC:
            yield from _read_pcap(buf, info, scanner)
        elif magic == PCAPNG_SHB:
            yield from _read_pcapng(buf, info, scanner)
        else:
            raise CaptureError(f"{info.path}: not a pcap or pcapng file (magic {magic.hex()})")
    except _ReadDamage as exc:
        info.truncated = True
        info.error("read-error", str(exc), frame=info.records + 1)


def _note_snap_and_linktype(info: CaptureInfo, linktype: int, caplen: int, wirelen: int, frame: int) -> None:
    if caplen < wirelen:
        info.snapped += 1
        info.error("snapped", "packet cut by the snap length (captured fewer bytes than on the wire)", frame=frame)


def _read_pcap(buf: _Buffer, info: CaptureInfo, scanner=None) -> Iterator[tuple[float, int, bytes, int]]:
    if not buf.fill(24):
        raise CaptureError(f"{info.path}: truncated pcap header ({buf.remaining()} of 24 bytes)")
    b = buf.buf
    endian, scale = PCAP_MAGIC[b[buf.pos:buf.pos + 4]]
    _vmaj, _vmin, _zone, _sig, snaplen, network = struct.unpack_from(endian + "HHiIII", b, buf.pos + 4)
    buf.pos += 24
    info.format = "pcap-ns" if scale == 1e-9 else "pcap"
    linktype = network & 0x03FFFFFF
    info.linktypes.add(linktype)
    if linktype not in KNOWN_LINKTYPES:
        info.error("unknown-linktype", f"unknown link type {linktype}: packets counted, not decoded")
    hdr = struct.Struct(endian + "IIII")
    unpack_from = hdr.unpack_from
    limit = max(snaplen, 65535) if snaplen else MAX_RECORD
    limit = min(max(limit, 65535), MAX_RECORD)
    last_ts = None
    frame = 0
    swap = endian != "<"
    nsec = scale == 1e-9
    if scanner is not None and linktype != 1:
        scanner.mute_enabled = 0   # it only mutes Ethernet frames; it still walks the records
    while True:
        if scanner is not None:
            # the C scanner walks the whole buffer; yields what it hands back
            b = buf.buf
            pos = buf.pos
            out, his, scan = scanner.out, scanner.his, scanner.scan_pcap
            while True:
                pos, k = scan(b, pos, swap, nsec, limit)
                for i in range(k):
                    off = out[2 * i]
                    sec, frac, incl, orig = unpack_from(b, off)
                    fr = out[2 * i + 1]
                    if incl < orig:
                        _note_snap_and_linktype(info, linktype, incl, orig, fr)
                    scanner.frame = fr
                    scanner.hi = his[i]
                    yield sec + frac * scale, linktype, b[off + 16:off + 16 + incl], orig
                if k == 0 or pos + 16 > len(b):
                    break
                # stopped because k records were handed over (or at a sweep frame): go on, unless
                # the next record is incomplete or damaged (the slow path below decides)
                sec, frac, incl, orig = unpack_from(b, pos)
                if incl > limit or pos + 16 + incl > len(b):
                    break
            buf.pos = pos
            frame = info.records = scanner.frames()
            if frame:
                last_ts = scanner.last()
        else:
            # fast path: every whole record already in the buffer
            b = buf.buf
            pos = buf.pos
            blen = len(b)
        while scanner is None and pos + 16 <= blen:
            sec, frac, incl, orig = unpack_from(b, pos)
            end = pos + 16 + incl
            if incl > limit or end > blen:
                break
            frame += 1
            ts = sec + frac * scale
            if incl < orig:
                _note_snap_and_linktype(info, linktype, incl, orig, frame)
            yield ts, linktype, b[pos + 16:end], orig
            pos = end
        if scanner is None:
            buf.pos = pos
            info.records = frame
            if frame:
                last_ts = ts
        # slow path: refill, or damage
        if buf.remaining() < 16 and not buf.fill(16):
            if buf.remaining():
                info.truncated = True
                info.error("truncated-record", f"truncated record header at end of file ({buf.remaining()} of 16 bytes)",
                           frame=frame + 1, offset=buf.offset + buf.pos)
            return
        sec, frac, incl, orig = unpack_from(buf.buf, buf.pos)
        if incl > limit:
            info.error("corrupt-record", f"corrupt record header (captured length {incl})",
                       frame=frame + 1, offset=buf.offset + buf.pos)
            if not _resync_pcap(buf, unpack_from, limit, last_ts):
                info.truncated = True
                return
            continue
        if not buf.fill(16 + incl):
            have = buf.remaining() - 16
            info.truncated = True
            info.error("truncated-record", f"truncated last record ({max(have, 0)} of {incl} bytes)",
                       frame=frame + 1, offset=buf.offset + buf.pos)
            return


def _resync_pcap(buf: _Buffer, unpack_from, limit: int, last_ts: float | None) -> bool:
    """Scan forward (at most 1 MiB) for two consecutive plausible record headers."""
    scanned = 0
    buf.pos += 1
    while scanned < (1 << 20):
        if not buf.fill(32):
            return False
        b = buf.buf
        pos = buf.pos
        sec, frac, incl, orig = unpack_from(b, pos)
        if incl <= limit and orig >= incl and incl >= 14 and frac < 1_000_000_000 and (
                last_ts is None or abs(sec - last_ts) < 86400):
            if buf.fill(16 + incl + 16):
                b = buf.buf
                pos = buf.pos
                s2, f2, i2, o2 = unpack_from(b, pos + 16 + incl)
                if i2 <= limit and o2 >= i2 and abs(s2 - sec) < 86400:
                    return True
            else:
                return True
        buf.pos += 1
        scanned += 1
    return False


# ---------------------------------------------------------------------------------- pcapng

_EPB_LE = struct.Struct("<IIIIIII")
_EPB_BE = struct.Struct(">IIIIIII")
_U32_LE = struct.Struct("<I")
_U32_BE = struct.Struct(">I")


class _Iface:
    __slots__ = ("linktype", "snaplen", "divisor", "offset", "known")

    def __init__(self, linktype: int, snaplen: int, divisor: int, offset: int):
        self.linktype = linktype
        self.snaplen = snaplen
        self.divisor = divisor
        self.offset = offset
        self.known = linktype in KNOWN_LINKTYPES


def _pcapng_options(body: bytes, start: int, endian: str) -> Iterator[tuple[int, bytes]]:
    p = start
    n = len(body)
    while p + 4 <= n:
        code, length = struct.unpack_from(endian + "HH", body, p)
        if code == 0:
            return
        value = body[p + 4:p + 4 + length]
        yield code, value
        p += 4 + ((length + 3) & ~3)


def _read_pcapng(buf: _Buffer, info: CaptureInfo, scanner=None) -> Iterator[tuple[float, int, bytes, int]]:
    info.format = "pcapng"
    endian = "<"
    ifaces: list[_Iface] = []
    frame = 0
    last_ts = 0.0
    seen_shb = False
    warned_unknown: set[int] = set()
    scan_ifaces = None   # the interface tables the C scanner reads, rebuilt when ifaces change
    scan_nif = -1
    while True:
        if ifaces and scanner is not None:
            if scan_nif != len(ifaces):
                scan_ifaces = _scanner_ifaces(ifaces)
                scan_nif = len(ifaces)
            b = buf.buf
            pos = buf.pos
            out, his, scan = scanner.out, scanner.his, scanner.scan_pcapng
            swap = endian != "<"
            epb = (_EPB_LE if endian == "<" else _EPB_BE).unpack_from
            while True:
                pos, k = scan(b, pos, swap, scan_ifaces)
                for i in range(k):
                    off = out[2 * i]
                    _bt, _bl, if_id, ts_hi, ts_lo, caplen, origlen = epb(b, off)
                    fr = out[2 * i + 1]
                    iface = ifaces[if_id]
                    ticks = (ts_hi << 32) | ts_lo
                    d = iface.divisor
                    ts = ticks // d + (ticks % d) / d + iface.offset
                    if caplen < origlen:
                        _note_snap_and_linktype(info, iface.linktype, caplen, origlen, fr)
                    scanner.frame = fr
                    scanner.hi = his[i]
                    yield ts, iface.linktype, b[off + 28:off + 28 + caplen], origlen
                if k == 0 or pos + 32 > len(b):
                    break
            buf.pos = pos
            frame = scanner.frames()
            if frame:
                last_ts = scanner.last()
        elif ifaces:
            # fast path: consecutive well-formed EPBs already in the buffer, on known interfaces
            b = buf.buf
            pos = buf.pos
            n = len(b)
            epb = (_EPB_LE if endian == "<" else _EPB_BE).unpack_from
            u32 = (_U32_LE if endian == "<" else _U32_BE).unpack_from
            nif = len(ifaces)
            start = frame
            while pos + 32 <= n:
                btype, blen, if_id, ts_hi, ts_lo, caplen, origlen = epb(b, pos)
                if (btype != 6 or blen > n - pos or blen < 32 or blen & 3 or if_id >= nif
                        or caplen > blen - 32 or u32(b, pos + blen - 4)[0] != blen):
                    break
                frame += 1
                iface = ifaces[if_id]
                ticks = (ts_hi << 32) | ts_lo
                d = iface.divisor
                ts = ticks // d + (ticks % d) / d + iface.offset
                if caplen < origlen:
                    _note_snap_and_linktype(info, iface.linktype, caplen, origlen, frame)
                yield ts, iface.linktype, b[pos + 28:pos + 28 + caplen], origlen
                pos += blen
            buf.pos = pos
            if frame != start:
                last_ts = ts
        info.records = frame
        if not buf.fill(12):
            if buf.remaining():
                info.truncated = True
                info.error("truncated-record", f"truncated block at end of file ({buf.remaining()} bytes)",
                           frame=frame + 1, offset=buf.offset + buf.pos)
            return
        b = buf.buf
        pos = buf.pos
        btype_raw = b[pos:pos + 4]
        if btype_raw == PCAPNG_SHB:
            bom = b[pos + 8:pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                if not seen_shb:
                    raise CaptureError(f"{info.path}: pcapng section header with a bad byte-order magic")
                info.error("corrupt-record", "section header block with a bad byte-order magic",
                           frame=frame + 1, offset=buf.offset + pos)
                info.truncated = True
                return
            seen_shb = True
            ifaces = []  # interface ids are per section
        btype, blen = struct.unpack_from(endian + "II", b, pos)
        if blen < 12 or blen % 4 or blen > MAX_RECORD + 64:
            info.error("corrupt-record", f"corrupt block (type {btype:#x}, length {blen}); rest of file skipped",
                       frame=frame + 1, offset=buf.offset + pos)
            info.truncated = True
            return
        if not buf.fill(blen):
            info.truncated = True
            info.error("truncated-record", f"truncated last block ({buf.remaining()} of {blen} bytes)",
                       frame=frame + 1, offset=buf.offset + buf.pos)
            return
        b = buf.buf
        pos = buf.pos
        block = b[pos + 8:pos + blen - 4]
        (trailer,) = struct.unpack_from(endian + "I", b, pos + blen - 4)
        buf.pos = pos + blen
        if trailer != blen:
            info.error("corrupt-record", f"block length mismatch (type {btype:#x}: {blen} vs {trailer})",
                       frame=frame + 1, offset=buf.offset + pos)
            # still try to use the block content; the next header check guards the rest
        try:
            if btype == 6 or btype == 2:  # EPB / obsolete OPB
                if btype == 6:
                    if_id, ts_hi, ts_lo, caplen, origlen = struct.unpack_from(endian + "IIIII", block, 0)
                else:
                    if_id, _drops, ts_hi, ts_lo, caplen, origlen = struct.unpack_from(endian + "HHIIII", block, 0)
                frame += 1
                if caplen > len(block) - 20:
                    info.error("corrupt-record", "packet block shorter than its captured length",
                               frame=frame, offset=buf.offset + pos)
                    caplen = max(len(block) - 20, 0)
                if if_id >= len(ifaces):
                    info.error("corrupt-record", f"packet on undeclared interface {if_id}", frame=frame)
                    # still a packet record: yield it undecodable so later frame numbers stay right
                    if scanner is not None:
                        scanner.account(last_ts, origlen)
                    yield last_ts, LINKTYPE_UNDECLARED, b"", origlen
                    continue
                iface = ifaces[if_id]
                # integer seconds + fraction: ticks / divisor as one float division loses up to
                # ~0.2 us once ticks exceed 2**53 (nanosecond timestamps)
                ticks = (ts_hi << 32) | ts_lo
                d = iface.divisor
                ts = ticks // d + (ticks % d) / d + iface.offset
                last_ts = ts
                if caplen < origlen:
                    _note_snap_and_linktype(info, iface.linktype, caplen, origlen, frame)
                if scanner is not None:
                    scanner.account(ts, origlen)
                yield ts, iface.linktype, block[20:20 + caplen], origlen
            elif btype == 3:  # SPB: no timestamp, interface 0
                (origlen,) = struct.unpack_from(endian + "I", block, 0)
                frame += 1
                if not ifaces:
                    info.error("corrupt-record", "simple packet block before any interface", frame=frame)
                    if scanner is not None:
                        scanner.account(last_ts, origlen)
                    yield last_ts, LINKTYPE_UNDECLARED, b"", origlen
                    continue
                iface = ifaces[0]
                caplen = min(origlen, len(block) - 4, iface.snaplen or MAX_RECORD)
                if caplen < origlen:
                    _note_snap_and_linktype(info, iface.linktype, caplen, origlen, frame)
                if scanner is not None:
                    scanner.account(last_ts, origlen)
                yield last_ts, iface.linktype, block[4:4 + caplen], origlen
            elif btype == 1:  # IDB
                linktype, _res, snaplen = struct.unpack_from(endian + "HHI", block, 0)
                divisor = 1_000_000
                offset = 0
                for code, value in _pcapng_options(block, 8, endian):
                    if code == 9 and value:
                        v = value[0]
                        divisor = 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
                    elif code == 14 and len(value) >= 8:
                        (offset,) = struct.unpack_from(endian + "q", value, 0)
                iface = _Iface(linktype, snaplen, divisor, offset)
                ifaces.append(iface)
                info.linktypes.add(linktype)
                if not iface.known and linktype not in warned_unknown:
                    warned_unknown.add(linktype)
                    info.error("unknown-linktype", f"unknown link type {linktype}: packets counted, not decoded")
            elif btype == 5:  # ISB: interface statistics (drops)
                for code, value in _pcapng_options(block, 12, endian):
                    if code == 5 and len(value) >= 8:  # isb_ifdrop
                        (drops,) = struct.unpack_from(endian + "Q", value, 0)
                        info.interface_drops = max(info.interface_drops, drops)
            # other blocks (NRB, DSB, custom) carry nothing we need
        except struct.error:
            info.error("corrupt-record", f"malformed block (type {btype:#x})", frame=frame, offset=buf.offset + pos)


def _scanner_ifaces(ifaces: list[_Iface]):
    """Per-interface arrays for the C scanner: divisor, offset, may-mute (Ethernet), may-scan."""
    from array import array
    div = array("Q", (i.divisor if 0 < i.divisor <= 1 << 53 else 1 for i in ifaces))
    off = array("q", (i.offset for i in ifaces))
    mute = array("B", (1 if i.linktype == 1 else 0 for i in ifaces))
    ok = array("B", (1 if 0 < i.divisor <= 1 << 53 and -(1 << 53) < i.offset < 1 << 53 else 0 for i in ifaces))
    return div, off, mute, ok


def iter_capture(path: str, scanner=None) -> tuple[CaptureInfo, Iterator[tuple[float, int, bytes, int]], _HashingReader]:
    """Open ``path`` and return (info, packets, hasher). Raises CaptureError if it is no capture."""
    stream, hasher, info = open_capture(path)
    gen = read_packets(stream, info, scanner)
    return info, gen, hasher
