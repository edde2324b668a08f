"""Per-flow DNS facts: message counts, names, types, rcodes, EDNS, query/response matching.

``DnsCollector.message()`` takes one DNS message (a UDP payload, or one length-delimited TCP
message); ``DnsTcpFramer`` splits a reassembled TCP stream into messages (RFC 7766 section 8:
several messages per segment, one message across segments, a stream picked up mid-message).
"""

from __future__ import annotations

from .wire import DnsFormatError, opcode_name, parse, qtype_name, rcode_name

MAX_QNAMES = 100          # distinct names listed on a flow record
MAX_QNAMES_COUNTED = 10000
MAX_PENDING = 4096        # unanswered queries remembered per flow
MAX_RTTS = 4096
MAX_FRAMES_SAMPLE = 10


class DnsCollector:
    __slots__ = ("messages", "queries", "responses", "malformed", "qnames", "qtypes", "rcodes", "opcodes",
                 "pending", "answered", "unmatched", "edns_q", "edns_r", "pad_q", "pad_r", "keepalive",
                 "udp_max", "do_bit", "cookie", "ecs", "first_query_frame", "first_query_ts", "first_response_ts",
                 "first_response_frame", "frames", "rtts", "tcp_length_errors", "events", "nonlocal_names")

    def __init__(self) -> None:
        self.messages = self.queries = self.responses = self.malformed = 0
        self.qnames: set[str] = set()
        self.qtypes: dict[str, int] = {}
        self.rcodes: dict[str, int] = {}
        self.opcodes: dict[str, int] = {}
        self.pending: dict[tuple, tuple[float, int]] = {}
        self.answered = self.unmatched = 0
        self.edns_q = self.edns_r = self.pad_q = self.pad_r = 0
        self.keepalive = self.do_bit = self.cookie = self.ecs = False
        self.udp_max = None
        self.first_query_frame = None
        self.first_query_ts = None
        self.first_response_ts = None
        self.first_response_frame = None
        self.frames: list[int] = []
        self.rtts: list[tuple[float, float, int, int]] = []   # (query ts, rtt ms, query frame, response frame)
        self.tcp_length_errors = 0

    def message(self, wire: bytes, ts: float, frame: int, from_client: bool) -> bool:
        """Account one message; return False when it did not parse (it is counted as malformed)."""
        try:
            m = parse(wire)
        except DnsFormatError:
            self.malformed += 1
            return False
        self.messages += 1
        if len(self.frames) < MAX_FRAMES_SAMPLE:
            self.frames.append(frame)
        op = opcode_name(m.opcode)
        self.opcodes[op] = self.opcodes.get(op, 0) + 1
        key = (m.id, m.qname, m.qtype, m.qclass)
        if not m.qr:
            self.queries += 1
            if self.first_query_frame is None:
                self.first_query_frame = frame
                self.first_query_ts = ts
            if m.qname is not None:
                if len(self.qnames) < MAX_QNAMES_COUNTED:
                    self.qnames.add(m.qname)
                    if m.more_qnames:
                        self.qnames.update(m.more_qnames)
                t = qtype_name(m.qtype)
                self.qtypes[t] = self.qtypes.get(t, 0) + 1
            if m.edns:
                self.edns_q += 1
                if m.padding is not None:
                    self.pad_q += 1
            if len(self.pending) < MAX_PENDING:
                self.pending.setdefault(key, (ts, frame))
        else:
            self.responses += 1
            if self.first_response_ts is None:
                self.first_response_ts = ts
                self.first_response_frame = frame
            r = rcode_name(m.rcode)
            self.rcodes[r] = self.rcodes.get(r, 0) + 1
            if m.qname is not None and len(self.qnames) < MAX_QNAMES_COUNTED:
                self.qnames.add(m.qname)  # the name travelled in clear even if the query was not seen
            if m.edns:
                self.edns_r += 1
                if m.padding is not None:
                    self.pad_r += 1
            q = self.pending.pop(key, None)
            if q is None:
                self.unmatched += 1
            else:
                self.answered += 1
                if len(self.rtts) < MAX_RTTS:
                    self.rtts.append((q[0], round((ts - q[0]) * 1000.0, 6), q[1], frame))
        if m.edns:
            if m.keepalive:
                self.keepalive = True
            if m.do_bit:
                self.do_bit = True
            if m.cookie:
                self.cookie = True
            if m.ecs:
                self.ecs = True
            if m.udp_size is not None and (self.udp_max is None or m.udp_size > self.udp_max):
                self.udp_max = m.udp_size
        return True

    def to_json(self) -> dict | None:
        if not (self.messages or self.malformed or self.tcp_length_errors):
            return None
        names = sorted(self.qnames)
        return {
            "messages": self.messages,
            "queries": self.queries,
            "responses": self.responses,
            "malformed": self.malformed,
            "qnames": names[:MAX_QNAMES],
            "qnames_truncated": len(names) > MAX_QNAMES,
            "qnames_total": len(names),
            "qtypes": dict(sorted(self.qtypes.items())),
            "rcodes": dict(sorted(self.rcodes.items())),
            "opcodes": dict(sorted(self.opcodes.items())),
            "answered": self.answered,
            "unanswered": self.queries - self.answered,
            "unmatched_responses": self.unmatched,
            "edns": {
                "queries": self.edns_q,
                "responses": self.edns_r,
                "padding_queries": self.pad_q,
                "padding_responses": self.pad_r,
                "keepalive": self.keepalive,
                "udp_size_max": self.udp_max,
                "do_bit": self.do_bit,
                "cookie": self.cookie,
                "ecs": self.ecs,
            },
            "padding": (self.pad_q == self.queries) if self.queries else None,
            "tcp_length_errors": self.tcp_length_errors,
            "first_query_frame": self.first_query_frame,
            "first_response_frame": self.first_response_frame,
            "frames_sample": self.frames,
        }


class DnsTcpFramer:
    """Split one direction of a DNS-over-TCP stream into messages (2-byte length prefix)."""

    __slots__ = ("buf", "dns", "from_client", "broken", "need_sync", "_resync_at")

    def __init__(self, dns: DnsCollector, from_client: bool):
        self.buf = b""
        self.dns = dns
        self.from_client = from_client
        self.broken = False
        self.need_sync = True   # until a first message parses, a bad one may mean we started mid-message
        self._resync_at = 0

    def feed(self, data: bytes, frame: int, ts: float) -> None:
        if self.broken:
            return
        buf = self.buf + data if self.buf else data
        p = 0
        n = len(buf)
        while n - p >= 2:
            ln = (buf[p] << 8) | buf[p + 1]
            if ln < 12:
                # not a plausible length: the stream was picked up mid-message or is not DNS
                if not self._resync(buf, p):
                    return
                p = self._resync_at
                continue
            if n - p - 2 < ln:
                break
            ok = self.dns.message(buf[p + 2:p + 2 + ln], ts, frame, self.from_client)
            if ok:
                self.need_sync = False
            elif self.need_sync:
                # not a message where one should start: we probably joined mid-message
                self.need_sync = False
                self.dns.malformed -= 1
                if self._resync(buf, p + 1):
                    p = self._resync_at
                    continue
                return
            p += 2 + ln
        self.buf = buf[p:] if p < n else b""
        if len(self.buf) > 70000:
            self._fail()

    def _resync(self, buf: bytes, start: int) -> bool:
        """Find the next offset where a length prefix is followed by a parsable message."""
        n = len(buf)
        for q in range(start, min(n - 14, start + 4096)):
            ln = (buf[q] << 8) | buf[q + 1]
            if 12 <= ln <= n - q - 2:
                try:
                    parse(buf[q + 2:q + 2 + ln])
                except DnsFormatError:
                    continue
                self._resync_at = q
                return True
        self._fail()
        return False

    def _fail(self) -> None:
        self.broken = True
        self.buf = b""
        self.dns.tcp_length_errors += 1

    def gap(self) -> None:
        """Bytes were lost: drop the partial message and look for the next frame start."""
        self.buf = b""
        self.need_sync = True
