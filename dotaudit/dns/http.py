"""DNS messages carried by cleartext HTTP (RFC 8484 without TLS): HTTP/1.1 and HTTP/2 (h2c).

DoH is meant to run inside TLS; when it does not, every query travels in clear, as in Do53.
``looks_like_cleartext_doh`` tells it from the client's first bytes; ``HttpDnsStream`` follows
both directions and hands each DNS message (GET ``?dns=`` parameter, request and response bodies
of type ``application/dns-message``) to the flow's ``DnsCollector``.  HPACK (with its Huffman
code) is decoded by the ``hpack`` library; everything else is bounded and never raises.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qs, urlsplit

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DNS_MESSAGE = "application/dns-message"
MAX_BUFFER = 256 * 1024
H2_DATA = 0
H2_HEADERS = 1
H2_CONTINUATION = 9
_HTTP1_REQUEST = re.compile(rb"^(GET|POST) (\S+) HTTP/1\.[01]\r\n", re.I)


def _dns_param(path: str) -> bytes | None:
    try:
        q = parse_qs(urlsplit(path).query).get("dns")
        if not q:
            return None
        v = q[0]
        return base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
    except (ValueError, TypeError):
        return None


def looks_like_cleartext_doh(buf: bytes) -> bool | None:
    """True / False, or None when more client bytes are needed to tell."""
    if buf.startswith(H2_PREFACE[:min(len(buf), len(H2_PREFACE))]):
        if len(buf) < len(H2_PREFACE) + 9:
            return None
        hs = _H2Direction(is_client=True, sink=None)
        hs.feed(buf[len(H2_PREFACE):])
        if hs.saw_dns_request:
            return True
        return None if hs.headers_seen == 0 and len(buf) < 16384 else False
    m = _HTTP1_REQUEST.match(buf)
    if m is None:
        return False if len(buf) >= 16 or not b"GET /".startswith(buf[:5]) else None
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None if len(buf) < 16384 else False
    head = buf[:head_end].decode("latin-1").lower()
    path = m.group(2).decode("latin-1")
    return DNS_MESSAGE in head or _dns_param(path) is not None


class _H2Direction:
    """HTTP/2 frames of one direction; DNS messages go to ``sink(bytes)``."""

    def __init__(self, is_client: bool, sink):
        from hpack import Decoder
        self.decoder = Decoder()
        # a passive observer does not know the SETTINGS_HEADER_TABLE_SIZE the peers agreed on:
        # accept any table size update up to 1 MiB
        self.decoder.max_allowed_table_size = 1 << 20
        self.is_client = is_client
        self.sink = sink
        self.buf = b""
        self.dns_streams: set[int] = set()
        self.bodies: dict[int, bytes] = {}
        self.header_block: dict[int, bytes] = {}
        self.headers_seen = 0
        self.saw_dns_request = False
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        buf = self.buf + data
        p = 0
        while len(buf) - p >= 9:
            ln = int.from_bytes(buf[p:p + 3], "big")
            ftype, flags = buf[p + 3], buf[p + 4]
            sid = int.from_bytes(buf[p + 5:p + 9], "big") & 0x7FFFFFFF
            if ln > 1 << 20:
                self.broken = True
                return
            if len(buf) - p - 9 < ln:
                break
            payload = buf[p + 9:p + 9 + ln]
            p += 9 + ln
            if ftype in (H2_HEADERS, H2_CONTINUATION):
                self._headers(sid, flags, payload, ftype)
            elif ftype == H2_DATA and sid in self.dns_streams:
                if flags & 0x08 and payload:  # PADDED
                    payload = payload[1:len(payload) - payload[0]]
                body = self.bodies.get(sid, b"") + payload
                if flags & 0x01:  # END_STREAM
                    self.bodies.pop(sid, None)
                    if self.sink is not None and body:
                        self.sink(body)
                elif len(body) <= 65535:
                    self.bodies[sid] = body
        self.buf = buf[p:]
        if len(self.buf) > MAX_BUFFER:
            self.broken = True

    def _headers(self, sid: int, flags: int, payload: bytes, ftype: int) -> None:
        if ftype == H2_HEADERS:
            if flags & 0x08 and payload:  # PADDED
                pad = payload[0]
                payload = payload[1:len(payload) - pad]
            if flags & 0x20:  # PRIORITY
                payload = payload[5:]
        block = self.header_block.pop(sid, b"") + payload
        if not flags & 0x04:  # END_HEADERS not yet
            self.header_block[sid] = block
            return
        self.headers_seen += 1
        try:
            headers = self.decoder.decode(block)
        except Exception:  # hpack raises its own error types on damaged blocks
            self.broken = True
            return
        fields = {}
        for k, v in headers:
            k = k.decode("latin-1") if isinstance(k, bytes) else k
            v = v.decode("latin-1") if isinstance(v, bytes) else v
            fields[k.lower()] = v
        path = fields.get(":path", "")
        if DNS_MESSAGE in fields.get("content-type", "") or DNS_MESSAGE in fields.get("accept", ""):
            self.dns_streams.add(sid)
            if self.is_client:
                self.saw_dns_request = True
        if self.is_client and path:
            wire = _dns_param(path)
            if wire is not None:
                self.saw_dns_request = True
                self.dns_streams.add(sid)
                if self.sink is not None:
                    self.sink(wire)


class _Http1Direction:
    """HTTP/1.x messages of one direction (Content-Length bodies only)."""

    def __init__(self, is_client: bool, sink):
        self.is_client = is_client
        self.sink = sink
        self.buf = b""
        self.body_left = 0
        self.body = b""
        self.body_is_dns = False
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        buf = self.buf + data
        while buf:
            if self.body_left:
                take = buf[:self.body_left]
                self.body += take
                self.body_left -= len(take)
                buf = buf[len(take):]
                if not self.body_left:
                    if self.body_is_dns and self.sink is not None:
                        self.sink(self.body)
                    self.body = b""
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].decode("latin-1")
            buf = buf[end + 4:]
            lines = head.split("\r\n")
            fields = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            if self.is_client:
                parts = lines[0].split(" ")
                wire = _dns_param(parts[1]) if len(parts) >= 2 else None
                if wire is not None and self.sink is not None:
                    self.sink(wire)
            self.body_is_dns = DNS_MESSAGE in fields.get("content-type", "")
            try:
                self.body_left = int(fields.get("content-length", "0") or 0)
            except ValueError:
                self.broken = True
                return
        self.buf = buf
        if len(self.buf) > MAX_BUFFER:
            self.broken = True


class HttpDnsStream:
    """Both directions of a cleartext DoH connection, feeding a DnsCollector."""

    def __init__(self, dns, first_client_bytes: bytes):
        self.dns = dns
        self.h2 = first_client_bytes.startswith(H2_PREFACE[:16])
        self._frame = 0
        self._ts = 0.0
        self._from_client = True
        if self.h2:
            self.dirs = (_H2Direction(True, self._msg_c), _H2Direction(False, self._msg_s))
            self._skip_preface = len(H2_PREFACE)
        else:
            self.dirs = (_Http1Direction(True, self._msg_c), _Http1Direction(False, self._msg_s))
            self._skip_preface = 0

    def _msg_c(self, wire: bytes) -> None:
        self.dns.message(wire, self._ts, self._frame, True)

    def _msg_s(self, wire: bytes) -> None:
        self.dns.message(wire, self._ts, self._frame, False)

    def feed(self, from_client: bool, data: bytes, frame: int, ts: float) -> None:
        self._frame, self._ts = frame, ts
        if from_client and self._skip_preface:
            cut = min(self._skip_preface, len(data))
            data = data[cut:]
            self._skip_preface -= cut
        self.dirs[0 if from_client else 1].feed(data)

    def gap(self, from_client: bool) -> None:
        self.dirs[0 if from_client else 1].broken = True
