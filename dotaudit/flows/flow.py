"""One bidirectional flow: TCP state, reassembly, the analyzers that describe it.

A flow is in one of three modes:

- ``SNIFF``: a TCP flow on a port that is not DNS's; its client's first bytes are buffered
  (bounded) until they tell whether it is DNS, a DoT ClientHello (ALPN ``dot``) or a TLS
  session with a known DoH resolver;
- ``DEEP``: reassembled and analysed (DNS messages, TLS handshake, QUIC on 853);
- ``OTHER``: only counted (as a flow of class ``other``; its packets are not);
- ``COUNT``: a reported flow whose packets are counted but not analysed (DoH over QUIC).
"""

from __future__ import annotations

import socket

from ..dns.collector import DnsCollector, DnsTcpFramer
from ..dns.wire import looks_like_query
from . import known
from .reassembly import TcpDirection

SNIFF = "sniff"
DEEP = "deep"
OTHER = "other"
COUNT = "count"   # a reported flow (DoH over QUIC to a known resolver) that is only counted

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

PORT_DNS = 53
PORT_DOT = 853
PORT_MDNS = 5353
PORT_LLMNR = 5355
PORT_NBNS = 137
PORT_HTTPS = 443

UDP_SERVICE_PORTS = frozenset((PORT_DNS, PORT_DOT, PORT_MDNS, PORT_LLMNR, PORT_NBNS, PORT_HTTPS))
TCP_DEEP_PORTS = frozenset((PORT_DNS, PORT_DOT, PORT_LLMNR))

SNIFF_MAX_BYTES = 16384 + 5 + 64
SNIFF_MAX_SEGMENTS = 12
TCP_OPT_TFO = 34
TCP_OPT_EXP = 254
TFO_EXP_MAGIC = b"\xf9\x89"


def classify_hint_tcp(sport: int, cport: int, sip: bytes) -> str | None:
    """What the server port says a TCP flow may be (content still has to confirm it)."""
    if sport == PORT_DNS:
        return "do53"
    if sport == PORT_DOT:
        return "dot"
    if sport == PORT_LLMNR:
        return "llmnr"
    if sport == PORT_HTTPS and sip in known.DOH_ADDRESSES:
        return "doh"
    return None


def classify_hint_udp(sport: int, cport: int, sip: bytes) -> str | None:
    if sport == PORT_DNS:
        return "do53"
    if sport == PORT_DOT:
        return "doq"
    if sport == PORT_MDNS or cport == PORT_MDNS:
        return "mdns"
    if sport == PORT_LLMNR:
        return "llmnr"
    if sport == PORT_NBNS:
        return "nbns"
    if sport == PORT_HTTPS and sip in known.DOH_ADDRESSES:
        return "doh"
    return None


def ip_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


class Flow:
    __slots__ = (
        "proto", "ipver", "cip", "cport", "sip", "sport", "vlans", "input", "first_ts", "last_ts",
        "first_frame", "last_frame", "pk_c", "pk_s", "by_c", "by_s", "pl_c", "pl_s", "mode", "hint", "cls",
        "id", "ckey", "skey", "ended", "closed",
        # tcp
        "syn", "syn_ack", "ack_seen", "syn_frame", "syn_ts", "syn_ack_frame", "syn_ack_ts", "ack_frame", "ack_ts",
        "syn_retries", "midstream", "rst_from", "rst_frame", "rst_ts", "fin_from", "tfo", "tfo_data", "mss",
        "wscale", "sack_ok", "c_isn", "s_isn", "cdir", "sdir", "first_payload",
        # analyzers
        "dns", "framers", "tls", "sniff_chunks", "sniff_bytes", "quic_long", "quic_short", "quic_versions",
        "udp_nondns", "c_tls", "quic_sniffer", "quic_alpn", "quic_sni", "quic_version", "http",
        "slot",   # id in the C scanner's muted-flow set (capture/fast.py), -1 when not muted
    )

    def __init__(self, proto, ipver, cip, cport, sip, sport, vlans, input_index, ts, frame):
        self.proto = proto
        self.ipver = ipver
        self.cip = cip
        self.cport = cport
        self.sip = sip
        self.sport = sport
        self.vlans = vlans
        self.input = input_index
        self.first_ts = self.last_ts = ts
        self.first_frame = self.last_frame = frame
        self.pk_c = self.pk_s = self.by_c = self.by_s = self.pl_c = self.pl_s = 0
        self.mode = OTHER
        self.hint = None
        self.cls = None
        self.id = 0
        self.slot = -1
        self.ended = None
        self.closed = False
        self.syn = self.syn_ack = self.ack_seen = False
        self.syn_frame = self.syn_ts = self.syn_ack_frame = self.syn_ack_ts = self.ack_frame = self.ack_ts = None
        self.syn_retries = 0
        self.midstream = False
        self.rst_from = self.rst_frame = self.rst_ts = None
        self.fin_from = []
        self.tfo = self.tfo_data = False
        self.mss = self.wscale = None
        self.sack_ok = None
        self.c_isn = self.s_isn = None
        self.cdir = self.sdir = None
        self.first_payload = [None, None]  # (frame, ts) of the first payload c2s, s2c
        self.dns = None
        self.framers = None
        self.tls = None
        self.sniff_chunks = None
        self.sniff_bytes = 0
        self.quic_long = self.quic_short = 0
        self.quic_versions = None
        self.udp_nondns = 0
        self.c_tls = None   # did the client's first bytes look like TLS (flows with a TLS analyzer)
        self.quic_sniffer = None
        self.http = None    # HttpDnsStream of a cleartext DoH flow
        self.quic_alpn = None
        self.quic_sni = None
        self.quic_version = None

    # ------------------------------------------------------------------ analyzers
    def make_deep(self) -> None:
        self.mode = DEEP
        hint = self.hint
        if self.proto == 17:
            if hint != "doq":
                self.dns = DnsCollector()
            return
        self.cdir = TcpDirection(self._sink_c, self._gap_c)
        self.sdir = TcpDirection(self._sink_s, self._gap_s)
        if self.c_isn is not None:
            self.cdir.start(self.c_isn + 1)
        if self.s_isn is not None:
            self.sdir.start(self.s_isn + 1)
        if hint in ("do53", "llmnr", "dns-nonstandard-port"):
            self._add_dns_framers()
        elif hint == "dns-over-http":
            self.dns = DnsCollector()   # the HTTP stream starts with the client's first bytes
        elif hint in ("dot", "dot-nonstandard-port", "doh"):
            self._add_tls()

    def _add_dns_framers(self) -> None:
        if self.dns is None:
            self.dns = DnsCollector()
        self.framers = (DnsTcpFramer(self.dns, True), DnsTcpFramer(self.dns, False))

    def _add_tls(self) -> None:
        from ..tls.session import TlsSession
        self.tls = TlsSession()

    def _sink_c(self, data: bytes, frame: int, ts: float) -> None:
        self.pl_c += len(data)
        if self.hint == "dns-over-http":
            if self.http is None:
                from ..dns.http import HttpDnsStream
                self.http = HttpDnsStream(self.dns, data)
            self.http.feed(True, data, frame, ts)
            return
        if self.c_tls is None and self.tls is not None:
            # the client's first bytes: TLS, or (on 853) plaintext DNS on the DoT port?
            from ..tls.handshake import looks_like_tls, peek_client_hello
            self.c_tls = looks_like_tls(data) or peek_client_hello(data) is not None
            if not self.c_tls and self.hint == "dot" and len(data) >= 14 and looks_like_query(
                    data[2:2 + ((data[0] << 8) | data[1])]) is not None:
                self._add_dns_framers()
        if self.tls is not None:
            self.tls.feed(True, data, frame, ts)
        if self.framers is not None:
            self.framers[0].feed(data, frame, ts)

    def _sink_s(self, data: bytes, frame: int, ts: float) -> None:
        self.pl_s += len(data)
        if self.http is not None:
            self.http.feed(False, data, frame, ts)
            return
        if self.tls is not None:
            self.tls.feed(False, data, frame, ts)
        if self.framers is not None:
            self.framers[1].feed(data, frame, ts)

    def _gap_c(self) -> None:
        if self.http is not None:
            self.http.gap(True)
        if self.tls is not None:
            self.tls.gap(True)
        if self.framers is not None:
            self.framers[0].gap()

    def _gap_s(self) -> None:
        if self.http is not None:
            self.http.gap(False)
        if self.tls is not None:
            self.tls.gap(False)
        if self.framers is not None:
            self.framers[1].gap()

    # ------------------------------------------------------------------ TCP
    def tcp_packet(self, from_client, seq, ack, flags, payload, data, l4, hl, frame, ts) -> None:
        if flags & TCP_SYN:
            if not flags & TCP_ACK:
                if not self.syn:
                    self.syn = True
                    self.syn_frame = frame
                    self.syn_ts = ts
                    self.c_isn = seq
                    if hl > 20:
                        self._syn_options(data[l4 + 20:l4 + hl])
                    if self.cdir is not None:
                        self.cdir.start(seq + 1)
                elif seq == self.c_isn:
                    self.syn_retries += 1
                if payload:
                    self.tfo_data = True
                    seq = seq + 1
                else:
                    return
            else:
                if not self.syn_ack:
                    self.syn_ack = True
                    self.syn_ack_frame = frame
                    self.syn_ack_ts = ts
                    self.s_isn = seq
                    if self.sdir is not None:
                        self.sdir.start(seq + 1)
                if payload:
                    seq = seq + 1
                else:
                    return
        elif from_client and self.syn_ack and not self.ack_seen and flags & TCP_ACK:
            self.ack_seen = True
            self.ack_frame = frame
            self.ack_ts = ts
        if flags & TCP_RST:
            if self.rst_from is None:
                self.rst_from = "client" if from_client else "server"
                self.rst_frame = frame
                self.rst_ts = ts
            self.closed = True
        if flags & TCP_FIN:
            side = "client" if from_client else "server"
            if side not in self.fin_from:
                self.fin_from.append(side)
                if len(self.fin_from) == 2:
                    self.closed = True
        mode = self.mode
        if payload:
            d = 0 if from_client else 1
            if self.first_payload[d] is None:
                self.first_payload[d] = (frame, ts)
            if mode is DEEP:
                (self.cdir if from_client else self.sdir).segment(seq, payload, frame, ts)
            elif mode is SNIFF:
                self._sniff(from_client, seq, payload, frame, ts)
        if mode is DEEP and flags & TCP_ACK:
            other = self.sdir if from_client else self.cdir
            if other.pending:
                other.acked(ack)

    def _syn_options(self, opts: bytes) -> None:
        i = 0
        n = len(opts)
        while i < n:
            kind = opts[i]
            if kind == 0:
                break
            if kind == 1:
                i += 1
                continue
            if i + 1 >= n:
                break
            ln = opts[i + 1]
            if ln < 2 or i + ln > n:
                break
            if kind == 2 and ln == 4:
                self.mss = (opts[i + 2] << 8) | opts[i + 3]
            elif kind == 3 and ln == 3:
                self.wscale = opts[i + 2]
            elif kind == 4:
                self.sack_ok = True
            elif kind == TCP_OPT_TFO or (kind == TCP_OPT_EXP and opts[i + 2:i + 4] == TFO_EXP_MAGIC):
                self.tfo = True
            i += ln

    # ------------------------------------------------------------------ sniffing unknown TCP ports
    def _sniff(self, from_client, seq, payload, frame, ts) -> None:
        if not from_client:
            if self.sniff_chunks is None:
                self._decide(None)  # the server spoke first: not a DNS or DoT client
            return
        if self.cdir is None:
            self.sniff_chunks = []
            self.cdir = TcpDirection(self._sniff_sink, _no_gap)
            if self.c_isn is not None:
                self.cdir.start(self.c_isn + 1)
        self.cdir.segment(seq, payload, frame, ts)
        if self.mode is SNIFF and (len(self.sniff_chunks) > SNIFF_MAX_SEGMENTS or self.cdir.ooo > SNIFF_MAX_SEGMENTS):
            self._decide(None)

    def _sniff_sink(self, data: bytes, frame: int, ts: float) -> None:
        if self.mode is not SNIFF:
            return
        self.sniff_chunks.append((data, frame, ts))
        self.sniff_bytes += len(data)
        buf = b"".join(c[0] for c in self.sniff_chunks) if len(self.sniff_chunks) > 1 else data
        from ..tls.handshake import peek_client_hello
        peek = peek_client_hello(buf)
        if peek is not None:
            if not peek.complete and self.sniff_bytes < min(peek.needed, SNIFF_MAX_BYTES):
                return
            if "dot" in peek.alpn:
                self._decide("dot-nonstandard-port")
            elif peek.sni and known.is_doh_name(peek.sni):
                self._decide("doh")
            else:
                self._decide(None)
            return
        from ..dns.http import looks_like_cleartext_doh
        doh = looks_like_cleartext_doh(buf)
        if doh:
            self._decide("dns-over-http")
            return
        if doh is None and self.sniff_bytes < SNIFF_MAX_BYTES:
            return
        if len(buf) >= 2:
            ln = (buf[0] << 8) | buf[1]
            if 12 <= ln <= 4096:
                if len(buf) < ln + 2:
                    if self.sniff_bytes < SNIFF_MAX_BYTES:
                        return
                elif looks_like_query(buf[2:2 + ln]) is not None:
                    self._decide("dns-nonstandard-port")
                    return
        self._decide(None)

    def _decide(self, hint: str | None) -> None:
        chunks = self.sniff_chunks or ()
        sniffer = self.cdir
        self.sniff_chunks = None
        self.cdir = None
        if hint is None:
            self.mode = OTHER
            self.cls = "other"
            return
        self.hint = hint
        self.make_deep()
        # replay the client bytes buffered while sniffing, then go on where the sniffer stopped
        for data, frame, ts in chunks:
            self._sink_c(data, frame, ts)
        if sniffer is not None:
            self.cdir.next = sniffer.next
            self.cdir.pending = sniffer.pending
            self.cdir.pending_bytes = sniffer.pending_bytes

    # ------------------------------------------------------------------ UDP
    def start_quic_sniff(self) -> None:
        """Read the client's QUIC Initial (keys derive from its DCID: RFC 9001 5.2) for ALPN and SNI."""
        from ..quic import QuicSniffer
        self.quic_sniffer = QuicSniffer()

    def _quic_sniffed(self, sn) -> None:
        self.quic_sniffer = None
        self.quic_alpn = sn.alpn
        self.quic_sni = sn.sni
        self.quic_version = sn.version
        if self.mode is not SNIFF:
            return
        if sn.version is not None and any(a.startswith("doq") for a in sn.alpn):
            self.hint = "doq"
            self.mode = DEEP
        elif sn.version is not None and sn.sni and known.is_doh_name(sn.sni):
            self.hint = None
            self.cls = "doh"
            self.mode = COUNT
        else:
            self.hint = None
            self.cls = "other"
            self.mode = OTHER

    def udp_packet(self, from_client: bool, payload: bytes, frame: int, ts: float) -> None:
        d = 0 if from_client else 1
        if self.first_payload[d] is None:
            self.first_payload[d] = (frame, ts)
        if from_client:
            self.pl_c += len(payload)
        else:
            self.pl_s += len(payload)
        sn = self.quic_sniffer
        if sn is not None and from_client:
            sn.feed(payload)
            if sn.done or sn.version is None:
                self._quic_sniffed(sn)
                if self.mode is OTHER or self.mode is COUNT:
                    return
        if self.hint == "doq" or self.mode is SNIFF:
            if payload and payload[0] & 0x80:
                if len(payload) >= 5:
                    self.quic_long += 1
                    v = int.from_bytes(payload[1:5], "big")
                    if self.quic_versions is None:
                        self.quic_versions = set()
                    if len(self.quic_versions) < 8:
                        self.quic_versions.add(v)
            elif payload and payload[0] & 0x40:
                self.quic_short += 1
            elif self.hint == "doq":
                if self.dns is None:
                    self.dns = DnsCollector()
                if not self.dns.message(payload, ts, frame, from_client):
                    self.udp_nondns += 1
            return
        if self.dns is not None and not self.dns.message(payload, ts, frame, from_client):
            self.udp_nondns += 1

    # ------------------------------------------------------------------ end
    def end_reason(self, default: str) -> str:
        if self.rst_from is not None:
            return "rst"
        if len(self.fin_from) == 2:
            return "fin"
        return default

    def release(self) -> None:
        """Drop the analyzers once the record is built: they hold bound methods of this flow
        (a reference cycle), so without this a finished flow waits for the cyclic GC."""
        self.cdir = self.sdir = self.framers = self.tls = self.http = self.dns = None
        self.quic_sniffer = self.sniff_chunks = None

    def flush(self) -> None:
        if self.cdir is not None and self.mode is DEEP:
            self.cdir.flush()
        if self.sdir is not None and self.mode is DEEP:
            self.sdir.flush()
        if self.mode is SNIFF:
            if self.quic_sniffer is not None:
                sn = self.quic_sniffer
                sn.finish()
                self._quic_sniffed(sn)
            else:
                self._decide(None)


def _no_gap() -> None:
    return None
