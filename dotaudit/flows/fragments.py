"""IP fragment reassembly (IPv4 and IPv6), bounded in entries, bytes and time.

DNS answers over UDP get fragmented (large DNSSEC or ANY answers, EDNS buffers above the path
MTU), so Do53 facts would be lost without it.
"""

from __future__ import annotations

MAX_DATAGRAMS = 1024
MAX_DATAGRAM_BYTES = 65535
TIMEOUT = 30.0


class _Pending:
    __slots__ = ("first_ts", "parts", "total", "size")

    def __init__(self, ts: float):
        self.first_ts = ts
        self.parts: dict[int, bytes] = {}
        self.total: int | None = None
        self.size = 0


class Defragmenter:
    def __init__(self) -> None:
        self.pending: dict[tuple, _Pending] = {}
        self.dropped = 0
        self.overlaps = 0

    def add4(self, ts, src, dst, ident, proto, frag_field, payload):
        more = bool(frag_field & 0x2000)
        offset = (frag_field & 0x1FFF) << 3
        return self._add(ts, (4, src, dst, ident, proto), offset, more, payload)

    def add6(self, ts, src, dst, ident, proto, fo_field, payload):
        more = bool(fo_field & 1)
        offset = fo_field & 0xFFF8
        return self._add(ts, (6, src, dst, ident, proto), offset, more, payload)

    def _add(self, ts, key, offset, more, payload):
        p = self.pending.get(key)
        if p is None:
            if len(self.pending) >= MAX_DATAGRAMS:
                self.expire(ts, force=True)
            p = self.pending[key] = _Pending(ts)
        if offset in p.parts:
            self.overlaps += 1
            return None
        p.parts[offset] = payload
        p.size += len(payload)
        if not more:
            p.total = offset + len(payload)
        if p.size > MAX_DATAGRAM_BYTES:
            del self.pending[key]
            self.dropped += 1
            return None
        if p.total is None or p.size < p.total:
            return None
        out = bytearray()
        for off in sorted(p.parts):
            if off != len(out):
                if off < len(out):  # overlapping fragments: keep the first copy of each byte
                    self.overlaps += 1
                    part = p.parts[off][len(out) - off:]
                    out += part
                    continue
                return None  # hole
            out += p.parts[off]
        del self.pending[key]
        if len(out) != p.total:
            self.dropped += 1
            return None
        return bytes(out)

    def expire(self, now: float, force: bool = False) -> None:
        cut = now - TIMEOUT
        for key in [k for k, p in self.pending.items() if p.first_ts < cut]:
            del self.pending[key]
            self.dropped += 1
        if force and len(self.pending) >= MAX_DATAGRAMS:
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            self.dropped += 1
