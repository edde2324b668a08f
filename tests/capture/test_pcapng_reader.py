"""pcapng: SHB/IDB/EPB/SPB/OPB/ISB, several interfaces, tsresol/tsoffset, sections, unknown blocks."""

from __future__ import annotations

import pytest
from scapy.layers.l2 import CookedLinux, Ether


MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_two_interfaces_linktypes_and_tsresol(tmp_path, Pcapng, run_audit, dns_pair, big_endian, read_capture):
    """if0: Ethernet, default microseconds; if1: SLL, nanoseconds; if2: raw IP, 2^-20 s with an offset."""
    q, r = dns_pair("192.0.2.10", "192.0.2.53", sport=41000)
    q2, r2 = dns_pair("192.0.2.11", "192.0.2.53", sport=41001, qname="two.example")
    q3, r3 = dns_pair("192.0.2.12", "192.0.2.53", sport=41002, qname="three.example")
    ng = (Pcapng(big_endian)
          .idb(1)
          .idb(113, tsresol=9)
          .idb(101, tsresol=0x80 | 20, tsoffset=1_000_000_000)
          .epb(1_600_000_000_123_456, bytes(Ether(**MAC) / q), if_id=0)
          .epb(1_600_000_000_223_456_789, bytes(CookedLinux() / q2), if_id=1)
          .epb(1_600_000_000_323_456_789, bytes(CookedLinux() / r2), if_id=1)
          .epb(1_600_000_000_423_456, bytes(Ether(**MAC) / r), if_id=0)
          .epb((600_000_000 << 20) | (1 << 19), bytes(q3), if_id=2)        # 1.6e9 + 0.5 s
          .epb((600_000_000 << 20) | (3 << 18), bytes(r3), if_id=2))       # 1.6e9 + 0.75 s
    path = ng.write(tmp_path / "multi.pcapng")
    info, recs = read_capture(path)
    assert info.format == "pcapng"
    assert [r[1] for r in recs] == [1, 113, 113, 1, 101, 101]
    ts = [r[0] for r in recs]
    assert ts[0] == pytest.approx(1_600_000_000.123456, abs=1e-7)
    assert ts[1] == pytest.approx(1_600_000_000.223456789, abs=1e-7)
    assert ts[2] == pytest.approx(1_600_000_000.323456789, abs=1e-7)
    assert ts[3] == pytest.approx(1_600_000_000.423456, abs=1e-7)
    assert ts[4] == 1_600_000_000.5
    assert ts[5] == 1_600_000_000.75

    report = run_audit([path])
    inp = report["inputs"][0]
    assert inp["packets"] == 6 and inp["errors"] == []
    assert inp["linktype_numbers"] == [1, 101, 113]
    assert sorted(inp["linktypes"]) == ["ethernet", "linux-sll", "raw"]
    flows = {f["client"]["port"]: f for f in report["flows"]}
    assert set(flows) == {41000, 41001, 41002}
    for f in flows.values():
        assert f["class"] == "do53" and f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1
    assert (flows[41000]["first_frame"], flows[41000]["last_frame"]) == (1, 4)
    assert flows[41001]["first_ts"] == pytest.approx(1_600_000_000.223456789, abs=1e-6)
    assert flows[41002]["last_ts"] == 1_600_000_000.75


def test_decimal_tsresol_values(tmp_path, Pcapng, read_capture):
    ng = Pcapng().idb(101, tsresol=0).idb(101, tsresol=3).idb(101, tsresol=6).idb(101, tsresol=0x80)
    ng.epb(1_600_000_000, b"\x45" + b"\0" * 19, if_id=0)
    ng.epb(1_600_000_000_250, b"\x45" + b"\0" * 19, if_id=1)
    ng.epb(1_600_000_000_000_001, b"\x45" + b"\0" * 19, if_id=2)
    ng.epb(1_600_000_001, b"\x45" + b"\0" * 19, if_id=3)                 # 2^-0 = seconds
    _, recs = read_capture(ng.write(tmp_path / "r.pcapng"))
    assert [r[0] for r in recs] == pytest.approx([1_600_000_000.0, 1_600_000_000.25, 1_600_000_000.000001,
                                                  1_600_000_001.0], abs=1e-7)


def test_negative_tsoffset(tmp_path, Pcapng, read_capture):
    ng = Pcapng().idb(101, tsoffset=-100).epb(1_600_000_100_000_000, b"\x45" + b"\0" * 19)
    _, recs = read_capture(ng.write(tmp_path / "o.pcapng"))
    assert recs[0][0] == 1_600_000_000.0


def test_two_sections_different_byte_order(tmp_path, Pcapng, run_audit, dns_pair, read_capture):
    """Second section is big endian with its own IDBs (interface ids restart per section)."""
    q, r = dns_pair("192.0.2.10", "192.0.2.53", sport=41000)
    ng = (Pcapng(big_endian=False).idb(1).epb(1_600_000_000_000_000, bytes(Ether(**MAC) / q))
          .shb(big_endian=True).idb(101, tsresol=9).epb(1_600_000_000_500_000_000, bytes(r)))
    path = ng.write(tmp_path / "sections.pcapng")
    info, recs = read_capture(path)
    assert [(r[0], r[1]) for r in recs] == [(1_600_000_000.0, 1), (1_600_000_000.5, 101)]
    report = run_audit([path])
    assert report["inputs"][0]["packets"] == 2 and report["inputs"][0]["errors"] == []
    (f,) = report["flows"]
    assert f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1
    assert f["client"]["ip"] == "192.0.2.10"


def test_spb_opb_isb_and_unknown_blocks(tmp_path, Pcapng, run_audit, dns_pair, read_capture):
    q, r = dns_pair("192.0.2.10", "192.0.2.53", sport=41000)
    q2, r2 = dns_pair("192.0.2.11", "192.0.2.53", sport=41001)
    ng = (Pcapng().unknown(0x0BAD).idb(1)
          .unknown(0x40000BAD, b"custom block content")
          .unknown(4, b"\x01\x00\x04\x00\xc0\x00\x02\x35" + b"dns\0" + b"\0" * 4)   # an NRB
          .opb(1_600_000_000_000_000, bytes(Ether(**MAC) / q))
          .epb(1_600_000_000_100_000, bytes(Ether(**MAC) / r))
          .spb(bytes(Ether(**MAC) / q2))
          .unknown(0x7FFFFFFF, b"")
          .spb(bytes(Ether(**MAC) / r2))
          .isb(0, ifdrop=17))
    path = ng.write(tmp_path / "blocks.pcapng")
    info, recs = read_capture(path)
    assert len(recs) == 4
    # an SPB has no timestamp: it takes the last one seen
    assert [r[0] for r in recs] == [1_600_000_000.0, 1_600_000_000.1, 1_600_000_000.1, 1_600_000_000.1]
    report = run_audit([path])
    inp = report["inputs"][0]
    assert inp["packets"] == 4 and inp["errors"] == [] and not inp["truncated"]
    assert inp["interface_drops"] == 17
    assert sorted(f["client"]["port"] for f in report["flows"]) == [41000, 41001]
    for f in report["flows"]:
        assert f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1
    ports = {f["client"]["port"]: f for f in report["flows"]}
    assert (ports[41001]["first_frame"], ports[41001]["last_frame"]) == (3, 4)


def test_spb_snapped_by_interface_snaplen(tmp_path, Pcapng, read_capture):
    """An SPB keeps min(original length, interface snaplen) bytes; the rest is counted as snapped."""
    frame = bytes(range(256)) * 2
    ng = Pcapng().idb(1, snaplen=128).spb(frame[:128], wirelen=len(frame))
    info, recs = read_capture(ng.write(tmp_path / "spb.pcapng"))
    assert recs[0][2] == frame[:128] and recs[0][3] == 512
    assert info.snapped == 1 and "snapped" in info.errors


def test_epb_on_undeclared_interface(tmp_path, Pcapng, run_audit, dns_pair):
    q, r = dns_pair()
    ng = (Pcapng().idb(1).epb(1_600_000_000_000_000, bytes(Ether(**MAC) / q))
          .epb(1_600_000_000_000_001, bytes(Ether(**MAC) / q), if_id=5)
          .epb(1_600_000_000_000_002, bytes(Ether(**MAC) / r)))
    report = run_audit([ng.write(tmp_path / "u.pcapng")])
    inp = report["inputs"][0]
    assert [e["kind"] for e in inp["errors"]] == ["corrupt-record"]
    assert report["flows"][0]["dns"]["responses"] == 1
    assert report["flows"][0]["last_frame"] == 3      # the bad record still has a frame number


def test_gzip_pcapng(tmp_path, write_pcapng, run_audit, dns_pair):
    q, r = dns_pair()
    path = write_pcapng(tmp_path / "c.pcapng.gz", [(1_600_000_000.0, bytes(q)), (1_600_000_000.25, bytes(r))],
                        linktype=101, tsresol=9, compress=True)
    inp = run_audit([path])["inputs"][0]
    assert inp["compressed"] and inp["format"] == "pcapng" and inp["packets"] == 2
    assert inp["first_ts"] == 1_600_000_000.0 and inp["last_ts"] == 1_600_000_000.25
