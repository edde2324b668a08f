"""TLS record layer: split one direction's reassembled byte stream into records.

Pure stdlib. Application-data bodies are never copied: only their 5-byte headers are read and
the body bytes are skipped as they arrive. Handshake, alert and ChangeCipherSpec bodies are
returned whole (at most ``MAX_RECORD_LEN`` bytes each).
"""

from __future__ import annotations

from .ciphers import CT_APPLICATION_DATA, CT_CHANGE_CIPHER_SPEC, CT_HEARTBEAT

# TLSCiphertext.length may be 2^14 + 2048 (RFC 5246 6.2.3); TLS 1.3 allows 2^14 + 256.
MAX_RECORD_LEN = 16384 + 2048

# Pseudo content type reported in ``feed`` output where a header was not sane.
BAD_HEADER = -1

# How far a resync scan may look for a plausible record header before giving up.
RESYNC_SCAN_LIMIT = 65536


def header_ok(ctype: int, major: int, minor: int, length: int) -> bool:
    """A record header that a real TLS/SSL 3.0 stack could send."""
    return (
        CT_CHANGE_CIPHER_SPEC <= ctype <= CT_HEARTBEAT
        and major == 3
        and minor <= 4
        and length <= MAX_RECORD_LEN
        and (length > 0 or ctype == CT_APPLICATION_DATA)
    )


class RecordReader:
    """Incremental record splitter for one direction.

    ``feed(data)`` returns a list of ``(content_type, version, length, body)`` for every record
    completed by ``data``; ``body`` is ``None`` for application data; a ``BAD_HEADER``
    entry marks where a header that is not sane was met. On a header that is not
    sane, or after ``lost()``, the reader scans forward for the next plausible header (a resync)
    and counts the event in ``bad_headers`` / ``resyncs``; after ``RESYNC_SCAN_LIMIT`` bytes
    without one it stops (``dead``).
    """

    __slots__ = (
        "buf", "skip", "pending", "resync", "scanned", "dead", "bad_headers", "resyncs",
        "records", "bytes_seen",
    )

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skip = 0  # application-data body bytes still to skip
        self.pending: tuple[int, int, int] | None = None  # app-data record being skipped
        self.resync = False
        self.scanned = 0
        self.dead = False
        self.bad_headers = 0
        self.resyncs = 0
        self.records = 0
        self.bytes_seen = 0

    def lost(self) -> None:
        """Bytes were lost before the next ``feed``: drop partial state and resync."""
        self.buf.clear()
        self.skip = 0
        self.pending = None
        if not self.dead:
            self.resync = True
            self.scanned = 0

    def _scan(self, data: bytes) -> int | None:
        """Offset in ``data`` of a plausible record header whose successor header is also
        plausible, or None. Undecidable candidates (successor not yet in view) and a short tail
        stay buffered, so the outcome does not depend on how the stream was chunked."""
        n = len(data)
        limit = n - 5
        i = 0
        while i <= limit:
            ct = data[i]
            if 20 <= ct <= 23 and data[i + 1] == 3 and data[i + 2] <= 4:
                ln = (data[i + 3] << 8) | data[i + 4]
                if 0 < ln <= MAX_RECORD_LEN:
                    nxt = i + 5 + ln
                    if nxt + 3 > n:
                        self._discard(i)
                        self.buf += data[i:]
                        return None
                    if 20 <= data[nxt] <= 23 and data[nxt + 1] == 3 and data[nxt + 2] <= 4:
                        return i
            i += 1
        keep = max(0, limit + 1)
        self._discard(keep)
        if not self.dead:
            self.buf += data[keep:]
        return None

    def _discard(self, n: int) -> None:
        self.scanned += n
        if self.scanned > RESYNC_SCAN_LIMIT:
            self.dead = True
            self.buf.clear()

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes | None]]:
        out: list[tuple[int, int, int, bytes | None]] = []
        if self.dead or not data:
            return out
        self.bytes_seen += len(data)
        skip = self.skip
        if skip:
            n = len(data)
            if n < skip:
                self.skip = skip - n
                return out
            self.skip = 0
            if self.pending is not None:
                out.append((self.pending[0], self.pending[1], self.pending[2], None))
                self.records += 1
                self.pending = None
            if n == skip:
                return out
            data = data[skip:]
        if self.buf:
            self.buf += data
            data = bytes(self.buf)
            self.buf.clear()
        if self.resync:
            off = self._scan(data)
            if off is None:
                return out
            self.resync = False
            self.resyncs += 1
            data = data[off:]
        pos = 0
        n = len(data)
        while True:
            if n - pos < 5:
                if n > pos:
                    self.buf += data[pos:]
                return out
            ct = data[pos]
            major = data[pos + 1]
            minor = data[pos + 2]
            ln = (data[pos + 3] << 8) | data[pos + 4]
            if not header_ok(ct, major, minor, ln):
                self.bad_headers += 1
                out.append((BAD_HEADER, 0, 0, None))  # in stream order, for the caller
                self.resync = True
                self.scanned = 0
                rest = data[pos + 1:]
                off = self._scan(rest)
                if off is None:
                    return out
                self.resync = False
                self.resyncs += 1
                data = rest[off:]
                pos = 0
                n = len(data)
                continue
            end = pos + 5 + ln
            version = (major << 8) | minor
            if ct == CT_APPLICATION_DATA:
                if end > n:
                    self.skip = end - n
                    self.pending = (ct, version, ln)
                    return out
                out.append((ct, version, ln, None))
                self.records += 1
                pos = end
                continue
            if end > n:
                self.buf += data[pos:]
                return out
            out.append((ct, version, ln, data[pos + 5:end]))
            self.records += 1
            pos = end
