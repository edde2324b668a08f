"""IPv4 / IPv6 fragment reassembly: through the pipeline and on the Defragmenter itself."""

from __future__ import annotations

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, fragment6
from scapy.layers.l2 import Ether

from dotaudit.flows import fragments as fragmod
from dotaudit.flows.fragments import Defragmenter

MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
C4, S4 = "192.0.2.10", "192.0.2.53"
C6, S6 = "2001:db8::10", "2001:db8::53"


def big_response(qname="big.example", n=40):
    return DNS(id=0x4242, qr=1, rd=1, ra=1, qd=DNSQR(qname=qname, qtype="TXT"),
               an=[DNSRR(rrname=qname, type="TXT", rdata=[f"record {i:03d} " + "x" * 60]) for i in range(n)])


def query(qname="big.example"):
    return DNS(id=0x4242, rd=1, qd=DNSQR(qname=qname, qtype="TXT"))


def eth(p):
    return bytes(Ether(**MAC) / p)


def run(tmp_path, write_pcap, run_audit, frames):
    return run_audit([write_pcap(tmp_path / "f.pcap", frames)])


@pytest.mark.parametrize("order", ["in-order", "reversed", "shuffled", "duplicated"])
def test_ipv4_fragmented_dns_response(tmp_path, write_pcap, run_audit, order):
    q = IP(src=C4, dst=S4) / UDP(sport=41000, dport=53) / query()
    r = IP(src=S4, dst=C4, id=777) / UDP(sport=53, dport=41000) / big_response()
    frags = fragment(r, fragsize=600)
    assert len(frags) >= 4
    if order == "reversed":
        frags = frags[::-1]
    elif order == "shuffled":
        frags = [frags[i] for i in (2, 0, 3, 1, *range(4, len(frags)))]
    elif order == "duplicated":
        frags = [frags[0], frags[1], frags[1], *frags[2:]]
    report = run(tmp_path, write_pcap, run_audit, [eth(q)] + [eth(f) for f in frags])
    (f,) = report["flows"]
    assert f["class"] == "do53" and f["client"] == {"ip": C4, "port": 41000}
    assert f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1 and f["dns"]["malformed"] == 0
    assert f["dns"]["answered"] == 1
    assert f["packets"]["s2c"] == 1                      # one datagram
    assert f["bytes"]["s2c"] == len(bytes(r))            # IP-layer bytes of the whole datagram
    st = report["stats"]["packets"]
    assert st["reassembled"] == 1 and st["fragments_dropped"] == 0


def test_ipv4_fragments_interleaved_with_other_datagram(tmp_path, write_pcap, run_audit):
    q1 = IP(src=C4, dst=S4) / UDP(sport=41000, dport=53) / query("a.example")
    q2 = IP(src=C4, dst=S4) / UDP(sport=41001, dport=53) / query("b.example")
    r1 = fragment(IP(src=S4, dst=C4, id=1) / UDP(sport=53, dport=41000) / big_response("a.example"), 800)
    r2 = fragment(IP(src=S4, dst=C4, id=2) / UDP(sport=53, dport=41001) / big_response("b.example"), 800)
    frames = [eth(q1), eth(q2)]
    for a, b in zip(r1, r2):
        frames += [eth(b), eth(a)]
    report = run(tmp_path, write_pcap, run_audit, frames)
    assert len(report["flows"]) == 2
    for f in report["flows"]:
        assert f["dns"]["responses"] == 1 and f["dns"]["malformed"] == 0


def test_ipv4_missing_fragment_counted(tmp_path, write_pcap, run_audit):
    q = IP(src=C4, dst=S4) / UDP(sport=41000, dport=53) / query()
    frags = fragment(IP(src=S4, dst=C4, id=9) / UDP(sport=53, dport=41000) / big_response(), 600)
    report = run(tmp_path, write_pcap, run_audit, [eth(q)] + [eth(f) for f in frags[:1] + frags[2:]])
    (f,) = report["flows"]
    assert f["dns"]["responses"] == 0 and f["dns"]["unanswered"] == 1
    assert report["stats"]["packets"]["fragments_dropped"] == 1
    assert any(s["reason"] == "incomplete-ip-fragments" for s in report["skipped"])


@pytest.mark.parametrize("order", ["in-order", "reversed"])
def test_ipv6_fragmented_dns_response(tmp_path, write_pcap, run_audit, order):
    q = IPv6(src=C6, dst=S6) / UDP(sport=41000, dport=53) / query()
    whole = IPv6(src=S6, dst=C6) / UDP(sport=53, dport=41000) / big_response()
    r = IPv6(src=S6, dst=C6) / IPv6ExtHdrFragment(id=0xABCDEF) / UDP(sport=53, dport=41000) / big_response()
    frags = fragment6(r, 700)
    assert len(frags) >= 3
    if order == "reversed":
        frags = frags[::-1]
    report = run(tmp_path, write_pcap, run_audit, [eth(q)] + [eth(f) for f in frags])
    (f,) = report["flows"]
    assert f["client"] == {"ip": C6, "port": 41000}
    assert f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1 and f["dns"]["malformed"] == 0
    assert f["packets"]["s2c"] == 1
    # IP-layer bytes of the reassembled datagram (as for IPv4): header + whole UDP datagram
    assert f["bytes"]["s2c"] == len(bytes(whole))
    assert report["stats"]["packets"]["reassembled"] == 1


def test_ipv6_fragmented_with_hop_by_hop_before_fragment_header(tmp_path, write_pcap, run_audit):
    q = IPv6(src=C6, dst=S6) / UDP(sport=41000, dport=53) / query()
    r = (IPv6(src=S6, dst=C6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(id=5)
         / UDP(sport=53, dport=41000) / big_response())
    frags = fragment6(r, 700)
    report = run(tmp_path, write_pcap, run_audit, [eth(q)] + [eth(f) for f in frags])
    (f,) = report["flows"]
    assert f["dns"]["responses"] == 1 and f["dns"]["malformed"] == 0


def test_ipv6_destination_options_after_fragment_header(tmp_path, write_pcap, run_audit):
    """RFC 8200: extension headers after the Fragment header are part of the fragmentable part."""
    q = IPv6(src=C6, dst=S6) / UDP(sport=41000, dport=53) / query()
    payload = bytes(IPv6ExtHdrDestOpt(nh=17) / UDP(sport=53, dport=41000) / big_response())
    # fragment by hand: 2 fragments, the second at a multiple of 8
    cut = 600
    parts = [(0, 1, payload[:cut]), (cut // 8, 0, payload[cut:])]
    frames = [eth(q)]
    for off, m, chunk in parts:
        frames.append(eth(IPv6(src=S6, dst=C6, nh=44) / IPv6ExtHdrFragment(nh=60, offset=off, m=m, id=77) / chunk))
    report = run(tmp_path, write_pcap, run_audit, frames)
    (f,) = report["flows"]
    assert f["dns"]["responses"] == 1 and f["dns"]["malformed"] == 0


# ------------------------------------------------------------------------------ Defragmenter unit tests

def test_defrag_in_and_out_of_order():
    d = Defragmenter()
    data = bytes(range(256)) * 4
    parts = [(0, data[:400]), (400, data[400:800]), (800, data[800:])]
    assert d.add4(1.0, b"s", b"d", 1, 17, 0x2000 | (800 >> 3) & 0, parts[0][1]) is None
    assert d.add4(1.0, b"s", b"d", 1, 17, (800 >> 3), parts[2][1]) is None
    assert d.add4(1.0, b"s", b"d", 1, 17, 0x2000 | (400 >> 3), parts[1][1]) == data
    assert d.pending == {}


def test_defrag_overlap_keeps_first_copy():
    d = Defragmenter()
    data = bytes(range(200))
    assert d.add4(1.0, b"s", b"d", 2, 17, 0x2000, data[:104]) is None
    # overlapping second fragment starting at 96 (8-byte units) with different bytes in the overlap
    second = b"\xee" * 8 + data[104:]
    out = d.add4(1.0, b"s", b"d", 2, 17, 96 >> 3, second)
    assert out == data
    assert d.overlaps >= 1


def test_defrag_same_ident_different_proto_or_address_kept_apart():
    d = Defragmenter()
    assert d.add4(1.0, b"a", b"d", 3, 17, 0x2000, b"A" * 8) is None
    assert d.add4(1.0, b"b", b"d", 3, 17, 0x2000, b"B" * 8) is None
    assert d.add4(1.0, b"a", b"d", 3, 6, 1, b"T" * 8) is None
    assert d.add4(1.0, b"a", b"d", 3, 17, 1, b"a" * 8) == b"A" * 8 + b"a" * 8
    assert d.add4(1.0, b"b", b"d", 3, 17, 1, b"b" * 8) == b"B" * 8 + b"b" * 8


def test_defrag_ipv6_field_layout():
    d = Defragmenter()
    # IPv6 fragment field: offset in 8-byte units << 3, M flag in bit 0
    assert d.add6(1.0, b"s", b"d", b"\0\0\0\1", 17, (0 << 3) | 1, b"x" * 16) is None
    assert d.add6(1.0, b"s", b"d", b"\0\0\0\1", 17, (2 << 3) | 0, b"y" * 5) == b"x" * 16 + b"y" * 5


def test_defrag_expiry_and_limits(monkeypatch):
    d = Defragmenter()
    d.add4(1.0, b"s", b"d", 4, 17, 0x2000, b"z" * 8)
    d.expire(1.0 + fragmod.TIMEOUT - 1)
    assert len(d.pending) == 1
    d.expire(1.0 + fragmod.TIMEOUT + 1)
    assert d.pending == {} and d.dropped == 1

    monkeypatch.setattr(fragmod, "MAX_DATAGRAMS", 3)
    d = Defragmenter()
    for ident in range(5):
        d.add4(2.0, b"s", b"d", ident, 17, 0x2000, b"z" * 8)
    assert len(d.pending) <= 3 and d.dropped == 2

    d = Defragmenter()
    for i in range(0, 70000, 1480):
        assert d.add4(3.0, b"s", b"d", 99, 17, 0x2000 | (i >> 3), b"q" * 1480) is None
    # bigger than any IP datagram: dropped, never reassembled, memory bounded
    assert d.dropped >= 1
    assert all(p.size <= fragmod.MAX_DATAGRAM_BYTES for p in d.pending.values())
