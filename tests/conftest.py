"""Shared test helpers: repository paths, report validation and a small pcap / pcapng writer.

The writers take raw frame bytes, so byte order, timestamp resolution and every pcapng block
are under the test's control (scapy's writers hide exactly the things the readers must handle).

Test modules get them through the fixtures of the same name at the bottom of this file
(``def test_x(write_pcap, validate_report): ...``): ``import conftest`` is ambiguous in this
tree (tests/rules/conftest.py is also a top-level ``conftest`` module).
"""

from __future__ import annotations

import gzip
import struct
import sys
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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
    @pytest.fixture(name=name)
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


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the example reports in reports/ instead of comparing with them")
