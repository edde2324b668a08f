"""The hand-written DNS walker against dnspython, the reference parser (DESIGN.md decision 4)."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.utils import PcapReader

from dotaudit.dns.wire import DnsFormatError, _parse_py, looks_like_query, parse, parse_c

REPO = Path(__file__).resolve().parents[2]


def oracle(wire: bytes):
    """What dnspython says, reduced to the facts the auditor keeps; None if it rejects it."""
    try:
        m = dns.message.from_wire(wire, ignore_trailing=False)
    except Exception:  # dnspython raises many kinds of exceptions on bad input
        return None
    q = m.question[0] if m.question else None
    pad = None
    for opt in (m.options or []):
        if opt.otype == dns.edns.OptionType.PADDING:
            pad = len(opt.to_wire())
    return {
        "id": m.id,
        "qr": bool(m.flags & 0x8000),
        "rcode": m.rcode(),
        "qname": q.name.to_text(omit_final_dot=True).lower() if q is not None else None,
        "qtype": q.rdtype if q is not None else None,
        "edns": m.edns >= 0,
        "padding": pad,
    }


def ours(wire: bytes):
    try:
        m = parse(wire)
    except DnsFormatError:
        return None
    name = m.qname
    if name == "":
        name = "@"  # dnspython's text for the root, relative form
    return {"id": m.id, "qr": m.qr, "rcode": m.rcode, "qname": name, "qtype": m.qtype, "edns": m.edns,
            "padding": m.padding}


def _normalise(d):
    if d and d["qname"] in ("", "@", "."):
        d["qname"] = ""
    return d


def test_query_with_padding_and_cookie():
    q = dns.message.make_query("WWW.Example.COM", "AAAA", use_edns=0, pad=128,
                               options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)])
    m = parse(q.to_wire())
    assert m.qname == "www.example.com" and m.qtype == 28 and not m.qr
    assert m.edns and m.padding is not None and m.cookie
    assert (len(q.to_wire())) % 128 == 0


def test_response_with_answers_and_extended_rcode():
    q = dns.message.make_query("example.org.", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("example.org.", 60, "IN", "A", "192.0.2.1", "192.0.2.2"))
    r.set_rcode(16)  # BADVERS needs the OPT record's extended bits
    m = parse(r.to_wire())
    assert m.qr and m.ancount == 2 and m.rcode == 16


@pytest.mark.parametrize("wire", [b"", b"\x00" * 11, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www"])
def test_rejects_short_or_truncated(wire):
    with pytest.raises(DnsFormatError):
        parse(wire)


def test_rejects_pointer_loop():
    wire = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    with pytest.raises(DnsFormatError):
        parse(wire)


def _public_dns_payloads():
    out = []
    for rel in ["DNS-OARC_dnscap/src/test/dns.pcap", "seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/DnsPackets.pcap",
                "zeek_zeek/testing/btest/Traces/dns/mdns.pcap", "dmachard_DNS-collector/tests/testsdata/pcap/dnsdump_udp.pcap",
                "OISF_suricata-verify/tests/llmnr/llmnr-udp/input.pcap"]:
        with PcapReader(str(REPO / "pcaps" / "public" / rel)) as rd:
            for pkt in rd:
                if UDP in pkt and (pkt[UDP].sport in (53, 5353, 5355) or pkt[UDP].dport in (53, 5353, 5355)):
                    out.append(bytes(pkt[UDP].payload))
    return out


def test_agrees_with_dnspython_on_real_messages():
    payloads = _public_dns_payloads()
    assert len(payloads) > 500
    compared = 0
    for wire in payloads:
        theirs = oracle(wire)
        if theirs is None:
            continue  # dnspython is stricter about rdata (mDNS NSEC, ...); we only walk the framing
        compared += 1
        assert _normalise(ours(wire)) == _normalise(theirs), wire.hex()
    assert compared > 500


_labels = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20),
                   min_size=0, max_size=5)


@settings(max_examples=300, deadline=None)
@given(_labels, st.sampled_from(["A", "AAAA", "TXT", "MX", "HTTPS", "PTR"]), st.booleans(),
       st.sampled_from([0, 128, 468]))
def test_agrees_with_dnspython_on_generated_queries(labels, rdtype, edns, pad):
    name = ".".join(labels) + "." if labels else "."
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, pad=pad if edns else 0)
    wire = q.to_wire()
    assert _normalise(ours(wire)) == _normalise(oracle(wire))
    assert looks_like_query(wire) is not None


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_random_bytes_never_raise_anything_else(data):
    try:
        parse(data)
    except DnsFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.binary(min_size=1, max_size=8))
def test_mutated_messages_agree_on_acceptance(pos, junk):
    r = dns.message.make_response(dns.message.make_query("a.example.", "A", use_edns=0, pad=64))
    r.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "192.0.2.7"))
    wire = bytearray(r.to_wire())
    pos %= len(wire)
    wire[pos:pos + len(junk)] = junk
    wire = bytes(wire)
    mine = ours(wire)
    theirs = oracle(wire)
    # we never accept what dnspython rejects as malformed framing; where both accept, they agree
    if mine is not None and theirs is not None:
        assert _normalise(mine) == _normalise(theirs)


def test_looks_like_query_is_strict():
    assert looks_like_query(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n") is None
    r = dns.message.make_response(dns.message.make_query("x.example.", "A")).to_wire()
    assert looks_like_query(r) is None


# -- the C walker (dns/_wire.c) against the Python one ------------------------------------------

needs_c = pytest.mark.skipif(parse_c is None, reason="the C library is not built (no C compiler)")


def _both(wire: bytes):
    out = []
    for fn in (parse_c, _parse_py):
        try:
            out.append(fn(wire))
        except DnsFormatError:
            out.append("malformed")
    return out


@needs_c
def test_c_walker_is_python_walker_on_real_messages():
    payloads = _public_dns_payloads()
    for wire in payloads:
        c, py = _both(wire)
        assert c == py, wire.hex()
    # and on every prefix and one-byte mutation of a few of them (error paths)
    for wire in payloads[:40]:
        for cut in range(len(wire)):
            c, py = _both(wire[:cut])
            assert c == py, (wire.hex(), cut)
        for pos in range(len(wire)):
            for b in (0x00, 0x3F, 0xC0, 0xFF):
                w = bytearray(wire)
                w[pos] = b
                c, py = _both(bytes(w))
                assert c == py, (wire.hex(), pos, b)


@needs_c
@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_c_walker_is_python_walker_on_random_bytes(data):
    c, py = _both(data)
    assert c == py


@needs_c
@settings(max_examples=400, deadline=None)
@given(_labels, st.sampled_from(["A", "AAAA", "TXT", "HTTPS"]), st.booleans(), st.sampled_from([0, 128, 468]),
       st.integers(0, 300), st.binary(min_size=1, max_size=6), st.booleans())
def test_c_walker_is_python_walker_on_mutated_messages(labels, rdtype, edns, pad, pos, junk, response):
    name = ".".join(labels) + "." if labels else "."
    q = dns.message.make_query(name.upper() if pos % 2 else name, rdtype, use_edns=0 if edns else False,
                               pad=pad if edns else 0)
    m = dns.message.make_response(q) if response else q
    if response and labels:
        m.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", '"x y"'))
    wire = bytearray(m.to_wire())
    assert _both(bytes(wire))[0] == _both(bytes(wire))[1]
    pos %= len(wire)
    wire[pos:pos + len(junk)] = junk
    c, py = _both(bytes(wire))
    assert c == py


@needs_c
def test_c_walker_hands_awkward_names_to_python():
    # several questions (mDNS) and labels that need escaping go to the Python walker, same answer
    head = b"\x00\x01\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00"
    two = head + b"\x01a\x05local\x00\x00\x01\x00\x01" + b"\x01b\xc0\x0e\x00\x01\x00\x01"
    odd = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x03a.b\x02\xffx\x00\x00\x01\x00\x01"
    for wire in (two, odd):
        c, py = _both(wire)
        assert c == py and c != "malformed"
    assert parse_c(two).more_qnames == ("b.local",)
    assert parse_c(odd).qname == "a\\.b.\\255x"
