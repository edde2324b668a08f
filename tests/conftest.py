"""Shared test helpers: repository paths, report validation and a small pcap / pcapng writer.

The writers take raw frame bytes, so byte order, timestamp resolution and every pcapng block
are under the test's control (scapy's writers hide exactly the things the readers must handle).

Test modules get them through the fixtures of the same name at the bottom of this file
(``def test_x(write_pcap, validate_report): ...``): ``import conftest`` is ambiguous in this
tree (tests/rules/conftest.py is also a top-level ``conftest`` module).
"""

from __future__ import annotations

import atexit
import gzip
import os
import random
import shutil
import struct
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The parsed-rule cache of this test session (and of the dotaudit processes it starts) lives in
# a directory of its own, not in the user's ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="dotaudit-test-cache-")
os.environ["DOTAUDIT_CACHE_DIR"] = _CACHE
os.environ.pop("DOTAUDIT_NO_CACHE", None)
atexit.register(shutil.rmtree, _CACHE, True)


def repo_root() -> Path:
    return ROOT


def public_pcap(relpath: str) -> Path:
    """``pcaps/public/<relpath>``; skips the test when the file is not in the checkout."""
    p = ROOT / "pcaps" / "public" / relpath
    if not p.exists():
        pytest.skip(f"public capture {relpath} not present")
    return p


def validate_report(report: dict) -> dict:
    """Validate a report dict against dotaudit.report.schema.SCHEMA; return it."""
    import jsonschema

    from dotaudit.report.schema import SCHEMA

    jsonschema.validate(report, SCHEMA)
    return report


# ------------------------------------------------------------------------------ classic pcap

def _frame(item, index: int, step: float):
    """Normalise a frame given as bytes, (ts, bytes) or (ts, bytes, wirelen).

    ``ts`` is a float or an exact ``(seconds, fraction)`` pair in the file's resolution.
    """
    if isinstance(item, (bytes, bytearray)):
        return 1_700_000_000.0 + index * step, bytes(item), len(item)
    if len(item) == 2:
        ts, data = item
        return ts, bytes(data), len(data)
    ts, data, wirelen = item
    return ts, bytes(data), wirelen


def pcap_bytes(frames: Iterable, linktype: int = 1, nanos: bool = False, big_endian: bool = False,
               snaplen: int = 65535) -> bytes:
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    scale = 10**9 if nanos else 10**6
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, item in enumerate(frames):
        ts, data, wirelen = _frame(item, i, 0.001)
        if isinstance(ts, tuple):
            sec, frac = ts
        else:
            sec = int(ts)
            frac = round((Fraction(ts) - sec) * scale)
        out.append(struct.pack(e + "IIII", sec, frac, len(data), wirelen) + data)
    return b"".join(out)


def write_pcap(path, frames: Iterable, linktype: int = 1, nanos: bool = False, big_endian: bool = False,
               snaplen: int = 65535, compress: bool = False) -> Path:
    """Write a classic pcap (optionally gzip-compressed) from raw frames; return the path."""
    data = pcap_bytes(frames, linktype, nanos, big_endian, snaplen)
    if compress:
        data = gzip.compress(data)
    path = Path(path)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------ pcapng

def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


class Pcapng:
    """Block-by-block pcapng builder.  Every block method appends one block and returns self."""

    def __init__(self, big_endian: bool = False):
        self.e = ">" if big_endian else "<"
        self.parts: list[bytes] = []
        self.shb(big_endian)

    def block(self, btype: int, body: bytes) -> "Pcapng":
        body = _pad4(body)
        n = 12 + len(body)
        self.parts.append(struct.pack(self.e + "II", btype, n) + body + struct.pack(self.e + "I", n))
        return self

    def options(self, opts: Sequence[tuple[int, bytes]]) -> bytes:
        if not opts:
            return b""
        out = b"".join(struct.pack(self.e + "HH", c, len(v)) + _pad4(v) for c, v in opts)
        return out + struct.pack(self.e + "HH", 0, 0)

    def shb(self, big_endian: bool | None = None) -> "Pcapng":
        """Start a (new) section, possibly with another byte order."""
        if big_endian is not None:
            self.e = ">" if big_endian else "<"
        body = struct.pack(self.e + "IHHq", 0x1A2B3C4D, 1, 0, -1)
        return self.block(0x0A0D0D0A, body)

    def idb(self, linktype: int = 1, snaplen: int = 65535, tsresol: int | None = None,
            tsoffset: int | None = None) -> "Pcapng":
        opts = []
        if tsresol is not None:
            opts.append((9, bytes([tsresol])))
        if tsoffset is not None:
            opts.append((14, struct.pack(self.e + "q", tsoffset)))
        body = struct.pack(self.e + "HHI", linktype, 0, snaplen) + self.options(opts)
        return self.block(1, body)

    def epb(self, ticks: int, data: bytes, if_id: int = 0, wirelen: int | None = None) -> "Pcapng":
        wirelen = len(data) if wirelen is None else wirelen
        body = struct.pack(self.e + "IIIII", if_id, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wirelen) + _pad4(data)
        return self.block(6, body)

    def opb(self, ticks: int, data: bytes, if_id: int = 0, wirelen: int | None = None) -> "Pcapng":
        """Obsolete Packet Block (type 2)."""
        wirelen = len(data) if wirelen is None else wirelen
        body = struct.pack(self.e + "HHIIII", if_id, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wirelen) \
            + _pad4(data)
        return self.block(2, body)

    def spb(self, data: bytes, wirelen: int | None = None) -> "Pcapng":
        wirelen = len(data) if wirelen is None else wirelen
        return self.block(3, struct.pack(self.e + "I", wirelen) + _pad4(data))

    def isb(self, if_id: int = 0, ifdrop: int | None = None, ticks: int = 0) -> "Pcapng":
        opts = [] if ifdrop is None else [(5, struct.pack(self.e + "Q", ifdrop))]
        body = struct.pack(self.e + "III", if_id, ticks >> 32, ticks & 0xFFFFFFFF) + self.options(opts)
        return self.block(5, body)

    def unknown(self, btype: int = 0x0BAD, body: bytes = b"\x01\x02\x03\x04\x05") -> "Pcapng":
        return self.block(btype, body)

    def bytes(self) -> bytes:
        return b"".join(self.parts)

    def write(self, path, compress: bool = False) -> Path:
        data = self.bytes()
        if compress:
            data = gzip.compress(data)
        path = Path(path)
        path.write_bytes(data)
        return path


def write_pcapng(path, frames: Iterable, linktype: int = 1, big_endian: bool = False,
                 tsresol: int | None = None, tsoffset: int | None = None, compress: bool = False) -> Path:
    """One section, one interface, one EPB per frame (frames as for write_pcap, float ts or ticks int)."""
    ng = Pcapng(big_endian).idb(linktype, tsresol=tsresol, tsoffset=tsoffset)
    if tsresol is None:
        div = 10**6
    elif tsresol & 0x80:
        div = 2 ** (tsresol & 0x7F)
    else:
        div = 10**tsresol
    for i, item in enumerate(frames):
        ts, data, wirelen = _frame(item, i, 0.001)
        ticks = ts if isinstance(ts, int) else round((Fraction(ts) - (tsoffset or 0)) * div)
        ng.epb(ticks, data, wirelen=wirelen)
    return ng.write(path, compress)


# ------------------------------------------------------------------------------ packets

def dns_pair(client: str = "10.0.0.1", server: str = "10.0.0.53", sport: int = 40000, qname: str = "example.com",
             qid: int = 0x1234, tcp: bool = False):
    """A DNS query and its response as scapy IP/IPv6 packets (client -> server, server -> client)."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    L3 = IPv6 if ":" in client else IP
    q = DNS(id=qid, rd=1, qd=DNSQR(qname=qname))
    r = DNS(id=qid, qr=1, rd=1, ra=1, qd=DNSQR(qname=qname), an=DNSRR(rrname=qname, rdata="93.184.216.34"))
    return (L3(src=client, dst=server) / UDP(sport=sport, dport=53) / q,
            L3(src=server, dst=client) / UDP(sport=53, dport=sport) / r)


# ------------------------------------------------------------------------------ synthetic gateway traffic

def _csum_free_ipv4(src: bytes, dst: bytes, proto: int, l4: bytes, options: bytes = b"", frag: int = 0,
                    ident: int = 1) -> bytes:
    ihl = 5 + len(options) // 4
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(l4), ident, frag, 64, proto, 0, src, dst) \
        + options + l4


def _ipv6(src: bytes, dst: bytes, proto: int, l4: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, src, dst) + l4


def _tcp(sport: int, dport: int, flags: int, payload: bytes = b"", seq: int = 1) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, flags, 65535, 0, 0) + payload


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _eth(ip: bytes, v6: bool = False, vlan: int | None = None, qinq: bool = False) -> bytes:
    et = b"\x86\xdd" if v6 else b"\x08\x00"
    head = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb"
    if qinq:
        return head + b"\x88\xa8\x00\x07\x81\x00\x00\x08" + et + ip
    if vlan is not None:
        return head + b"\x81\x00" + struct.pack("!H", vlan) + et + ip
    return head + et + ip


def _dns_query(qid: int, name: str = "example.com") -> bytes:
    q = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00\x00\x01\x00\x01"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q


def _dns_answer(qid: int, name: str = "example.com") -> bytes:
    q = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00\x00\x01\x00\x01"
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 0, 0, 0) + q


def stress_frames(seed: int = 7, n: int = 30000) -> list[tuple[float, bytes]]:
    """Gateway-like traffic: mostly uninteresting flows (muted), some DNS, and the awkward cases."""
    rnd = random.Random(seed)
    frames: list[tuple[float, bytes]] = []
    ts = 1_700_000_000.0
    clients4 = [bytes([10, 0, rnd.randrange(4), rnd.randrange(1, 250)]) for _ in range(60)]
    servers4 = [bytes([93, 184, rnd.randrange(256), rnd.randrange(1, 250)]) for _ in range(40)]
    clients6 = [b"\xfd\x00" + bytes(13) + bytes([i + 1]) for i in range(20)]
    servers6 = [b"\x2a\x00" + bytes(13) + bytes([i + 1]) for i in range(20)]
    resolver = bytes([10, 9, 9, 9])
    flows = []  # long-lived uninteresting flows, reused so they expire and come back
    for i in range(300):
        v6 = i % 5 == 0
        c = rnd.choice(clients6 if v6 else clients4)
        s = rnd.choice(servers6 if v6 else servers4)
        proto = 6 if i % 3 else 17
        flows.append((v6, c, s, proto, 30000 + i, 443 if proto == 6 else 5000 + i % 7, i % 4 == 1))
    started = set()
    while len(frames) < n:
        # time moves on, sometimes with a long pause (idle timeouts fire), sometimes backwards
        r = rnd.random()
        ts += 0.0005 if r < 0.97 else (12.0 if r < 0.985 else -0.003)
        k = rnd.randrange(100)
        if k < 80:
            v6, c, s, proto, sport, dport, vlan = rnd.choice(flows)
            from_client = rnd.random() < 0.5
            a, b, pa, pb = (c, s, sport, dport) if from_client else (s, c, dport, sport)
            if proto == 6:
                key = (c, s, sport)
                flags = 0x02 if key not in started else (0x11 if rnd.random() < 0.01 else
                                                         0x04 if rnd.random() < 0.005 else 0x18)
                started.add(key)
                l4 = _tcp(pa, pb, flags, b"\x17\x03\x03" + bytes(rnd.randrange(5, 60)))
            else:
                l4 = _udp(pa, pb, bytes([0x40 | rnd.randrange(16)]) + bytes(rnd.randrange(20, 80)))
            if v6:
                ip = _ipv6(a, b, proto, l4)
            elif rnd.random() < 0.02:   # IPv4 options: the scanner leaves it to Python
                ip = _csum_free_ipv4(a, b, proto, l4, options=b"\x01\x01\x01\x00")
            else:
                ip = _csum_free_ipv4(a, b, proto, l4)
            frames.append((ts, _eth(ip, v6, vlan=7 if vlan else None, qinq=vlan and rnd.random() < 0.05)))
            if rnd.random() < 0.003:      # a cut frame of the same flow (key bytes missing)
                frames.append((ts, _eth(ip, v6)[:30]))
        elif k < 95:
            c = rnd.choice(clients4)
            sport = rnd.randrange(1024, 65535)
            qid = rnd.randrange(65536)
            frames.append((ts, _eth(_csum_free_ipv4(c, resolver, 17, _udp(sport, 53, _dns_query(qid))))))
            if rnd.random() < 0.9:
                frames.append((ts + 0.002, _eth(_csum_free_ipv4(resolver, c, 17, _udp(53, sport, _dns_answer(qid))))))
        else:
            # DNS on an odd port (found by content), and a fragmented UDP datagram of a muted flow
            c = rnd.choice(clients4)
            frames.append((ts, _eth(_csum_free_ipv4(c, resolver, 17, _udp(40000 + k, 5353 + k, _dns_query(k))))))
            v6, c2, s2, proto, sport, dport, _ = rnd.choice([f for f in flows if not f[0] and f[3] == 17])
            l4 = _udp(sport, dport, b"\x41" + bytes(63))
            frames.append((ts, _eth(_csum_free_ipv4(c2, s2, 17, l4[:40], frag=0x2000, ident=k))))
            frames.append((ts, _eth(_csum_free_ipv4(c2, s2, 17, l4[40:], frag=5, ident=k))))
    return frames


def run_audit(paths, validate: bool = True) -> dict:
    """dotaudit.pipeline.audit without rules, schema-validated."""
    from dotaudit.pipeline import audit

    report = audit([str(p) for p in paths], evaluate_rules=False)
    if validate:
        validate_report(report)
    return report


def read_capture(path):
    """(CaptureInfo, every (ts, linktype, data, wirelen) record) of a capture, hash finished."""
    from dotaudit.capture.pcap import iter_capture

    info, packets, hasher = iter_capture(str(path))
    out = list(packets)
    hasher.drain()
    hasher.hexdigest()
    return info, out


def run_cli(*args: str, stdin=None, timeout: float = 60):
    """Run ``dotaudit ARGS`` in a subprocess (same interpreter); return CompletedProcess (text)."""
    import subprocess

    return subprocess.run([sys.executable, "-c", "from dotaudit.cli import main; main()", *map(str, args)],
                          stdin=stdin if stdin is not None else subprocess.DEVNULL, capture_output=True,
                          timeout=timeout, cwd=ROOT)


# ------------------------------------------------------------------------------ fixtures

def _fixture_of(fn, name):
    @pytest.fixture(name=name, scope="session")   # a plain helper function: no state
    def _fixture():
        return fn
    return _fixture


_f_repo_root = _fixture_of(repo_root, "repo_root")
_f_public_pcap = _fixture_of(public_pcap, "public_pcap")
_f_validate_report = _fixture_of(validate_report, "validate_report")
_f_write_pcap = _fixture_of(write_pcap, "write_pcap")
_f_write_pcapng = _fixture_of(write_pcapng, "write_pcapng")
_f_pcapng = _fixture_of(Pcapng, "Pcapng")
_f_pcap_bytes = _fixture_of(pcap_bytes, "pcap_bytes")
_f_dns_pair = _fixture_of(dns_pair, "dns_pair")
_f_run_audit = _fixture_of(run_audit, "run_audit")
_f_run_cli = _fixture_of(run_cli, "run_cli")
_f_read_capture = _fixture_of(read_capture, "read_capture")
_f_stress_frames = _fixture_of(stress_frames, "stress_frames")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the example reports in reports/ instead of comparing with them")
