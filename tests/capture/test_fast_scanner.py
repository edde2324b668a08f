"""The C record scanner (dotaudit/capture/fast.py, _scan.c) gives exactly the pure-Python result.

Every bundled capture, and synthetic ones built to stress what the scanner does (flows muted and
unmuted across sweep frames, flows that expire and come back, packets of a muted flow that the
scanner must leave to Python, timestamps going backwards, several inputs, several interfaces),
is audited both ways; the reports must be equal but for ``generated_at``.
"""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import pytest

from dotaudit.capture import fast
from dotaudit.pipeline import audit

from conftest import Pcapng, repo_root, write_pcap  # tests/ is on sys.path (rootdir conftest)

HAVE_CC = bool(shutil.which("cc") or shutil.which("gcc"))
pytestmark = pytest.mark.skipif(not fast.available() and not HAVE_CC, reason="no C compiler: pure-Python path only")


def test_scanner_is_built_where_a_compiler_is():
    assert fast.available(), "a C compiler is installed but the scanner did not build or load"


def _both(paths, monkeypatch, **kw) -> tuple[dict, dict]:
    paths = [str(p) for p in paths]
    fast_report = audit(paths, **kw)
    with monkeypatch.context() as m:
        m.setattr(fast, "available", lambda: False)
        pure_report = audit(paths, **kw)
    for r in (fast_report, pure_report):
        r.pop("generated_at")
    return fast_report, pure_report


def _assert_same(a: dict, b: dict) -> None:
    for key in sorted(set(a) | set(b)):
        assert a.get(key) == b.get(key), f"reports differ in {key!r}"


BUNDLED = sorted(p for p in (repo_root() / "pcaps").rglob("*")
                 if p.is_file() and p.suffix in (".pcap", ".pcapng", ".gz", ".cap"))


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: str(p.relative_to(repo_root() / "pcaps")))
def test_bundled_capture_same_both_ways(path, monkeypatch):
    try:
        a, b = _both([path], monkeypatch)
    except Exception as exc:  # a capture that is an error both ways must fail the same way
        with monkeypatch.context() as m:
            m.setattr(fast, "available", lambda: False)
            with pytest.raises(type(exc)):
                audit([str(path)])
        return
    _assert_same(a, b)


# ------------------------------------------------------------------------------ synthetic

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


@pytest.fixture(scope="module")
def stress(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("scan")
    frames = stress_frames()
    half = len(frames) // 2
    out = {
        "pcap": write_pcap(d / "stress.pcap", frames),
        "pcap-ns-be": write_pcap(d / "stress-ns-be.pcap", frames, nanos=True, big_endian=True),
        "gz": write_pcap(d / "stress.pcap.gz", frames, compress=True),
        "part1": write_pcap(d / "part1.pcap", frames[:half]),
        "part2": write_pcap(d / "part2.pcap", frames[half:]),
    }
    # pcapng: two interfaces, Ethernet and raw IP (101) carrying the same flows, an OPB, a
    # nanosecond interface with an offset, and a second section in the other byte order
    ng = Pcapng().idb(1).idb(101, tsresol=9, tsoffset=1)
    for i, (ts, data) in enumerate(frames):
        if i % 50 == 7:
            ng.epb(round((ts - 1) * 10**9), data[14:], if_id=1)   # the IP packet on the raw interface
        elif i % 97 == 3:
            ng.opb(round(ts * 10**6), data)
        else:
            ng.epb(round(ts * 10**6), data)
        if i == half:
            ng.shb(big_endian=True).idb(1)
    out["pcapng"] = ng.write(d / "stress.pcapng")
    return out


@pytest.mark.parametrize("kind", ["pcap", "pcap-ns-be", "gz", "pcapng"])
def test_stress_same_both_ways(stress, kind, monkeypatch):
    a, b = _both([stress[kind]], monkeypatch)
    _assert_same(a, b)
    assert a["summary"]["flows_by_class"]["other"] > 300   # flows expired and came back
    assert a["inputs"][0]["packets"] >= 30000


def test_stress_several_inputs_same_both_ways(stress, monkeypatch):
    a, b = _both([stress["part1"], stress["part2"]], monkeypatch)
    _assert_same(a, b)


def test_stress_table_full_same_both_ways(stress, monkeypatch):
    """With a tiny flow table, evictions happen while the scanner mutes flows."""
    from dotaudit.flows.table import FlowTable
    monkeypatch.setitem(FlowTable.__init__.__kwdefaults__, "max_flows", 50)
    a, b = _both([stress["pcap"]], monkeypatch)
    assert a["stats"]["packets"]["evicted"] > 0
    _assert_same(a, b)


def test_scanner_mutes_most_packets(stress):
    """The point of it: packets of uninteresting flows never reach Python."""
    from dotaudit.flows.record import AnalysisOptions
    from dotaudit.pipeline import run_files

    seen = []
    from dotaudit.flows import table as T
    orig = T.FlowTable.packet

    def counting(self, ts, lt, data, frame):
        seen.append(frame)
        return orig(self, ts, lt, data, frame)

    T.FlowTable.packet = counting
    try:
        infos, _c, _t = run_files([str(stress["pcap"])], AnalysisOptions())
    finally:
        T.FlowTable.packet = orig
    total = infos[0].packets
    assert len(seen) < total * 0.7
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert all(f in seen for f in range(8192, total + 1, 8192))   # sweep frames reach Python


def test_mute_unmute_many_keys():
    """The hash set grows, deletes with backward shift, and finds every key it holds."""
    sc = fast.Scanner(5000)
    try:
        rnd = random.Random(1)
        keys = {}
        for i in range(4000):
            ck = rnd.randbytes(12 if i % 2 else 36)
            sk = rnd.randbytes(len(ck))
            fid = sc.mute(6 if i % 3 else 17, ck, sk)
            assert fid >= 0
            keys[fid] = (6 if i % 3 else 17, ck, sk)
        assert sc.muted_count() == 8000
        for fid in list(keys)[::2]:
            proto, ck, sk = keys.pop(fid)
            sc.unmute(fid, proto, ck, sk)
        assert sc.muted_count() == 4000
        # what is left is still found: mute again returns a fresh id but the count stays
        for fid, (proto, ck, sk) in keys.items():
            assert sc.lib.sc_mute(sc.h, proto, ck, len(ck), fid) == 1
        assert sc.muted_count() == 4000
    finally:
        sc.close()
