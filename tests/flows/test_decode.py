"""IP/TCP/UDP decoding in FlowTable.packet: options, extension headers, TFO, malformed headers."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP, IPOption_RR, IPOption_Router_Alert
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, PadN)
from scapy.layers.l2 import Ether

MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
C4, S4 = "192.0.2.10", "192.0.2.53"
C6, S6 = "2001:db8::10", "2001:db8::53"


def eth(p):
    return bytes(Ether(**MAC) / p)


def audit_frames(tmp_path, write_pcap, run_audit, frames, linktype=1):
    return run_audit([write_pcap(tmp_path / "t.pcap", frames, linktype=linktype)])


def test_ipv4_options(tmp_path, write_pcap, run_audit, dns_pair):
    q, r = dns_pair(C4, S4, sport=41000)
    opts = [IPOption_Router_Alert(), IPOption_RR(routers=["1.1.1.1", "2.2.2.2"])]
    q = IP(src=C4, dst=S4, options=opts) / q[UDP]
    r = IP(src=S4, dst=C4, options=opts) / r[UDP]
    assert bytes(q)[0] & 0x0F > 5
    report = audit_frames(tmp_path, write_pcap, run_audit, [eth(q), eth(r)])
    (f,) = report["flows"]
    assert f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1 and f["dns"]["malformed"] == 0
    assert f["bytes"]["c2s"] == len(bytes(q))
    assert f["payload_bytes"]["c2s"] == len(bytes(q[UDP].payload))


def test_ipv6_hop_by_hop_and_destination_options(tmp_path, write_pcap, run_audit, dns_pair):
    q, r = dns_pair(C6, S6, sport=41000)
    ext = IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0" * 4)]) / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 12)])
    q = IPv6(src=C6, dst=S6) / ext / q[UDP]
    r = IPv6(src=S6, dst=C6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(addresses=[]) / r[UDP]
    report = audit_frames(tmp_path, write_pcap, run_audit, [eth(q), eth(r)])
    (f,) = report["flows"]
    assert f["client"] == {"ip": C6, "port": 41000}
    assert f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1 and f["dns"]["malformed"] == 0
    assert f["bytes"]["c2s"] == len(bytes(q))


def tcp_dns_session(client, server, sport, syn_options=None, syn_payload=b"", client_options=None):
    """A DNS-over-TCP exchange: handshake, one length-prefixed query and response, FIN/ACK."""
    L3 = IPv6 if ":" in client else IP
    qmsg = bytes(DNS(id=7, rd=1, qd=DNSQR(qname="tcp.example")))
    rmsg = bytes(DNS(id=7, qr=1, rd=1, qd=DNSQR(qname="tcp.example")))
    q = len(qmsg).to_bytes(2, "big") + qmsg
    r = len(rmsg).to_bytes(2, "big") + rmsg
    cs, ss = 1000, 5000
    opts = client_options or [("NOP", None), ("NOP", None), ("Timestamp", (1, 0))]
    c = lambda **kw: L3(src=client, dst=server) / TCP(sport=sport, dport=53, **kw)  # noqa: E731
    s = lambda **kw: L3(src=server, dst=client) / TCP(sport=53, dport=sport, **kw)  # noqa: E731
    pkts = [c(flags="S", seq=cs, options=syn_options or [("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
            / syn_payload]
    cs += 1 + len(syn_payload)
    pkts.append(s(flags="SA", seq=ss, ack=cs, options=[("MSS", 1400), ("NOP", None), ("WScale", 8)]))
    ss += 1
    pkts.append(c(flags="A", seq=cs, ack=ss, options=opts))
    if not syn_payload:
        pkts.append(c(flags="PA", seq=cs, ack=ss, options=opts) / q)
        cs += len(q)
    pkts.append(s(flags="PA", seq=ss, ack=cs, options=opts) / r)
    ss += len(r)
    pkts.append(c(flags="FA", seq=cs, ack=ss, options=opts))
    pkts.append(s(flags="FA", seq=ss, ack=cs + 1, options=opts))
    pkts.append(c(flags="A", seq=cs + 1, ack=ss + 1, options=opts))
    return pkts, q


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_tcp_with_options(tmp_path, write_pcap, run_audit, v6):
    client, server = (C6, S6) if v6 else (C4, S4)
    pkts, _ = tcp_dns_session(client, server, 42000)
    report = audit_frames(tmp_path, write_pcap, run_audit, [eth(p) for p in pkts])
    (f,) = report["flows"]
    assert f["transport"] == "tcp" and f["class"] == "do53"
    assert f["client"] == {"ip": client, "port": 42000}
    tcp = f["tcp"]
    assert tcp["syn"] and tcp["syn_ack"] and tcp["ack"] and not tcp["midstream"]
    assert tcp["mss"] == 1460 and tcp["wscale"] == 7 and tcp["sack_ok"] is True
    assert tcp["tfo"] is False and tcp["tfo_data"] is False
    assert f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1 and f["dns"]["tcp_length_errors"] == 0


def test_tcp_fast_open_syn_with_data(tmp_path, write_pcap, run_audit):
    """SYN with the TFO option (kind 34, cookie) carrying the DNS query."""
    qmsg = bytes(DNS(id=7, rd=1, qd=DNSQR(qname="tcp.example")))
    q = len(qmsg).to_bytes(2, "big") + qmsg
    pkts, _ = tcp_dns_session(C4, S4, 42001, syn_options=[("MSS", 1460), (34, b"\x01\x02\x03\x04\x05\x06\x07\x08")],
                              syn_payload=q)
    assert b"\x22\x0a" in bytes(pkts[0][TCP])[20:]
    report = audit_frames(tmp_path, write_pcap, run_audit, [eth(p) for p in pkts])
    (f,) = report["flows"]
    assert f["tcp"]["tfo"] is True and f["tcp"]["tfo_data"] is True
    assert f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1


def test_tfo_cookie_request_without_data(tmp_path, write_pcap, run_audit):
    pkts, _ = tcp_dns_session(C4, S4, 42002, syn_options=[("MSS", 1460), (34, b"")])
    (f,) = audit_frames(tmp_path, write_pcap, run_audit, [eth(p) for p in pkts])["flows"]
    assert f["tcp"]["tfo"] is True and f["tcp"]["tfo_data"] is False


def test_ipv4_total_length_shorter_than_frame_and_snapped(tmp_path, write_pcap, run_audit, dns_pair):
    """Frame trailer ignored; a packet cut before its UDP header is counted, not crashed on."""
    q, r = dns_pair(C4, S4, sport=41000)
    cut = eth(q)[:14 + 20 + 4]
    report = audit_frames(tmp_path, write_pcap, run_audit, [eth(q) + b"\0" * 6, cut, eth(r)])
    st = report["stats"]["packets"]
    assert st["truncated_l4"] == 1
    (f,) = report["flows"]
    assert f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1


@pytest.mark.parametrize("bad", ["ihl-too-small", "version-mismatch", "tot-lt-ihl", "tcp-doff-small", "ipv6-short"])
def test_malformed_headers_counted(tmp_path, write_pcap, run_audit, bad):
    ip = bytearray(bytes(IP(src=C4, dst=S4) / TCP(sport=1234, dport=53)))
    linktype = 101
    if bad == "ihl-too-small":
        ip[0] = 0x44
    elif bad == "version-mismatch":
        frame = eth(IP(src=C4, dst=S4) / UDP())
        ip = bytearray(frame)
        ip[14] = 0x65
        linktype = 1
    elif bad == "tot-lt-ihl":
        ip[2:4] = (10).to_bytes(2, "big")
    elif bad == "tcp-doff-small":
        ip[20 + 12] = 0x40
    elif bad == "ipv6-short":
        ip = bytearray(bytes(IPv6(src=C6, dst=S6))[:30])
    report = audit_frames(tmp_path, write_pcap, run_audit, [bytes(ip)], linktype=linktype)
    st = report["stats"]["packets"]
    assert st["decode_errors"] + st["non_ip"] == 1
    assert report["flows"] == []


def test_ipv6_extension_chain_cut_short(tmp_path, write_pcap, run_audit):
    p = bytes(IPv6(src=C6, dst=S6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=53))
    report = audit_frames(tmp_path, write_pcap, run_audit, [p[:40 + 8 + 4]], linktype=101)
    st = report["stats"]["packets"]
    assert st["decode_errors"] + st["truncated_l4"] == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=120), lt=st.sampled_from([1, 101, 113, 276, 0, 239]))
def test_flow_table_never_raises_on_garbage(data, lt):
    from dotaudit.flows.table import FlowTable
    table = FlowTable(lambda flow: None)
    for frame, prefix in enumerate((b"", b"\x45\x00", b"\x60\x00\x00\x00\x00\x10\x00\x40"), start=1):
        table.packet(1.0 + frame, lt, prefix + data, frame)
    table.finish_all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=60), hdr=st.binary(min_size=20, max_size=60))
def test_flow_table_never_raises_on_mutated_ipv4_udp(payload, hdr):
    from dotaudit.flows.table import FlowTable
    table = FlowTable(lambda flow: None)
    pkt = bytearray(bytes(IP(src=C4, dst=S4) / UDP(sport=5353, dport=53) / payload))
    pkt[: min(len(hdr), 28)] = hdr[:28]
    pkt[0] = 0x40 | (pkt[0] & 0x0F)
    table.packet(1.0, 101, bytes(pkt), 1)
    table.packet(2.0, 101, bytes(pkt), 2)
    table.finish_all()
