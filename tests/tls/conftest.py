"""Test helpers for the TLS analyzer: TCP payloads out of public captures (scapy, tests only)
and hello/record builders with struct."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PUBLIC = REPO / "pcaps" / "public"


def public_pcap(rel: str) -> Path:
    p = PUBLIC / rel
    if not p.exists():
        pytest.skip(f"public capture missing: pcaps/public/{rel}")
    return p


@dataclass
class Segment:
    from_client: bool
    data: bytes
    frame: int
    ts: float


@dataclass
class Flow:
    client: tuple
    server: tuple
    segments: list[Segment] = field(default_factory=list)
    flags: list[tuple[bool, str, int]] = field(default_factory=list)  # (from_client, flags, frame)

    def tcp(self) -> dict:
        rst = next((("client" if c else "server") for c, f, _ in self.flags if "R" in f), None)
        fins = []
        for c, f, _ in self.flags:
            side = "client" if c else "server"
            if "F" in f and side not in fins:
                fins.append(side)
        return {"rst_from": rst, "fin_from": fins, "syn_ack": any("S" in f and "A" in f for _, f, _ in self.flags)}

    def stream(self, from_client: bool) -> bytes:
        return b"".join(s.data for s in self.segments if s.from_client == from_client)


def tcp_flows(path: Path) -> list[Flow]:
    """Flows of a capture with retransmitted bytes removed, in order of first packet."""
    from scapy.all import IP, TCP, IPv6, rdpcap

    flows: dict[tuple, Flow] = {}
    next_seq: dict[tuple, int] = {}
    for i, pkt in enumerate(rdpcap(str(path)), start=1):
        if TCP not in pkt:
            continue
        ip = pkt[IP] if IP in pkt else (pkt[IPv6] if IPv6 in pkt else None)
        if ip is None:
            continue
        t = pkt[TCP]
        a = (ip.src, t.sport)
        b = (ip.dst, t.dport)
        key = tuple(sorted([a, b]))
        flags = str(t.flags)
        if key not in flows:
            # the client opened the flow; without a SYN, the side with the higher port
            if "S" in flags and "A" not in flags:
                client, server = a, b
            elif "S" in flags:
                client, server = b, a
            elif t.sport > t.dport:
                client, server = a, b
            else:
                client, server = b, a
            flows[key] = Flow(client, server)
        fl = flows[key]
        from_client = a == fl.client
        fl.flags.append((from_client, flags, i))
        payload = bytes(t.payload)
        # drop link-layer padding: the IP length says where the TCP payload ends
        if IP in pkt:
            real = ip.len - ip.ihl * 4 - t.dataofs * 4
        else:
            real = ip.plen - t.dataofs * 4
        payload = payload[:max(0, real)]
        if "S" in flags:
            next_seq[(key, from_client)] = (t.seq + 1) & 0xFFFFFFFF
        if not payload:
            continue
        k2 = (key, from_client)
        seq = t.seq + (1 if "S" in flags else 0)  # data in a SYN (TFO) follows the ISN
        if k2 in next_seq:
            exp = next_seq[k2]
            delta = (exp - seq) & 0xFFFFFFFF
            if delta < 0x80000000:  # seq <= expected: drop the already-seen part
                if delta >= len(payload):
                    continue
                payload = payload[delta:]
                seq = exp
        next_seq[k2] = (seq + len(payload)) & 0xFFFFFFFF
        fl.segments.append(Segment(from_client, payload, i, float(pkt.time)))
    return list(flows.values())


def run_flow(flow: Flow, chunker=None, **summary_kw):
    from dotaudit.tls import TlsSession

    sess = TlsSession()
    for seg in flow.segments:
        if chunker is None:
            sess.feed(seg.from_client, seg.data, seg.frame, seg.ts)
        else:
            for part in chunker(seg.data):
                sess.feed(seg.from_client, part, seg.frame, seg.ts)
    end = flow.segments[-1].ts if flow.segments else 0.0
    kw = {"tcp": flow.tcp(), "reference_time": None, "trust": None, "capture_end_ts": end}
    kw.update(summary_kw)
    return sess, sess.summary(**kw)


# ----------------------------------------------------------------------------- builders


def u8(v):
    return struct.pack("!B", v)


def u16(v):
    return struct.pack("!H", v)


def u24(v):
    return struct.pack("!I", v)[1:]


def vec8(b):
    return u8(len(b)) + b


def vec16(b):
    return u16(len(b)) + b


def ext(t, data=b""):
    return u16(t) + vec16(data)


def sni_ext(name):
    n = name.encode()
    return ext(0, vec16(b"\x00" + vec16(n)))


def alpn_ext(*protos):
    return ext(16, vec16(b"".join(vec8(p.encode() if isinstance(p, str) else p) for p in protos)))


def u16list_ext(t, values, prefix=2):
    body = b"".join(u16(v) for v in values)
    return ext(t, (u8(len(body)) if prefix == 1 else u16(len(body))) + body)


def client_hello_body(version=0x0303, ciphers=(0x1301, 0xC02F), exts=b"", session_id=b"",
                      compression=b"\x00", random=b"\x11" * 32, with_exts=True):
    body = u16(version) + random + vec8(session_id) + vec16(b"".join(u16(c) for c in ciphers))
    body += vec8(compression)
    if with_exts:
        body += vec16(exts)
    return body


def server_hello_body(version=0x0303, cipher=0xC02F, exts=b"", session_id=b"",
                      random=b"\x22" * 32, compression=0):
    return u16(version) + random + vec8(session_id) + u16(cipher) + u8(compression) + vec16(exts)


def hs(msg_type, body):
    return u8(msg_type) + u24(len(body)) + body


def record(ctype, payload, version=0x0303):
    return u8(ctype) + u16(version) + u16(len(payload)) + payload


def tls13_client_hello(sni="dns.example", alpn=("dot",), early=False, psk=False):
    exts = sni_ext(sni) if sni else b""
    exts += u16list_ext(10, [0x0A0A, 29, 23])
    exts += ext(11, b"\x01\x00")
    exts += u16list_ext(13, [0x0403, 0x0804, 0x0401])
    if alpn:
        exts += alpn_ext(*alpn)
    exts += u16list_ext(43, [0x2A2A, 0x0304, 0x0303], prefix=1)
    exts += ext(51, vec16(u16(29) + vec16(b"\x01" * 32)))
    exts += ext(45, b"\x01\x01")
    if early:
        exts += ext(42)
    if psk:
        exts += ext(41, vec16(vec16(b"\x05" * 16) + b"\x00\x00\x00\x00") + vec16(vec8(b"\x06" * 32)))
    body = client_hello_body(ciphers=(0x1A1A, 0x1301, 0x1302, 0x1303, 0xC02F), exts=exts,
                             session_id=b"\x33" * 32)
    return record(22, hs(1, body), version=0x0301)


def tls13_server_hello(psk=False, group=29):
    exts = u16list_ext(43, [0x0304], prefix=1)[0:4] + u16(0x0304)
    exts = ext(43, u16(0x0304)) + ext(51, u16(group) + vec16(b"\x02" * 32))
    if psk:
        exts += ext(41, u16(0))
    body = server_hello_body(cipher=0x1301, exts=exts, session_id=b"\x33" * 32)
    return record(22, hs(2, body))


def tls13_full_flow(app_c=2, app_s=2):
    """(from_client, bytes) events of a TLS 1.3 full handshake plus application data."""
    ev = [(True, tls13_client_hello())]
    ev.append((False, tls13_server_hello() + record(20, b"\x01") + record(23, b"\x00" * 40)
               + record(23, b"\x00" * 900) + record(23, b"\x00" * 80) + record(23, b"\x00" * 50)))
    ev.append((True, record(20, b"\x01") + record(23, b"\x00" * 50)))
    for i in range(max(app_c, app_s)):
        if i < app_c:
            ev.append((True, record(23, b"\x00" * (60 + i))))
        if i < app_s:
            ev.append((False, record(23, b"\x00" * (120 + i))))
    return ev


def feed_events(events, chunker=None, t0=1000.0):
    from dotaudit.tls import TlsSession

    s = TlsSession()
    for i, (fc, data) in enumerate(events, start=1):
        parts = [data] if chunker is None else chunker(data)
        for p in parts:
            s.feed(fc, p, i, t0 + i * 0.01)
    return s
