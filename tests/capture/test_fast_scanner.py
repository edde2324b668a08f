"""The C record scanner (dotaudit/capture/fast.py, _scan.c) gives exactly the pure-Python result.

Every bundled capture, and synthetic ones built to stress what the scanner does (flows muted and
unmuted across sweep frames, flows that expire and come back, packets of a muted flow that the
scanner must leave to Python, timestamps going backwards, several inputs, several interfaces),
is audited both ways; the reports must be equal but for ``generated_at``.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from dotaudit.capture import fast
from dotaudit.pipeline import audit


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


ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted(p for p in (ROOT / "pcaps").rglob("*")
                 if p.is_file() and p.suffix in (".pcap", ".pcapng", ".gz", ".cap"))


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: str(p.relative_to(ROOT / "pcaps")))
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


@pytest.fixture(scope="module")
def stress(tmp_path_factory, stress_frames, write_pcap, Pcapng) -> dict[str, Path]:
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
