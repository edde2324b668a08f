"""Link layers: every supported link type carries a DNS query + response to one do53 flow.

Frames are built with scapy (or by hand where scapy has no layer) and written by the raw-bytes
writer in tests/conftest.py, so the link-type number in the file is exactly the one under test.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE

from dotaudit.capture.linktypes import KNOWN_LINKTYPES, locate_ip

MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def eth(ip):
    return bytes(Ether(**MAC) / ip)


def nflog(ip, family: int) -> bytes:
    """NFLOG: family, version, res_id (big endian) + TLVs (host = little-endian length/type)."""
    payload = bytes(ip)
    hdr = bytes([family, 0]) + struct.pack(">H", 7)
    prefix = b"dotaudit\0"
    tlvs = b""
    # NFULA_PACKET_HDR (1): hw_protocol, hook, pad
    v = struct.pack(">HBB", 0x0800 if family == 2 else 0x86DD, 3, 0)
    tlvs += struct.pack("<HH", 4 + len(v), 1) + v
    # NFULA_PREFIX (10), length 4+9, padded to 16
    tlvs += struct.pack("<HH", 4 + len(prefix), 10) + prefix + b"\0" * (-(4 + len(prefix)) % 4)
    # NFULA_PAYLOAD (9)
    tlvs += struct.pack("<HH", 4 + len(payload), 9) + payload + b"\0" * (-len(payload) % 4)
    return hdr + tlvs


def null_hdr(af: int, big: bool) -> bytes:
    return struct.pack(">I" if big else "<I", af)


# name -> (linktype, frame builder from a scapy IP packet, expected vlan list, IPv6?)
CASES = {
    "ethernet": (1, eth, [], False),
    "ethernet-ipv6": (1, eth, [], True),
    "dot1q": (1, lambda ip: bytes(Ether(**MAC) / Dot1Q(vlan=10) / ip), [10], False),
    "qinq": (1, lambda ip: bytes(Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / ip), [100, 200], False),
    "qinq-ipv6": (1, lambda ip: bytes(Ether(**MAC) / Dot1AD(vlan=4094) / Dot1Q(vlan=1) / ip), [4094, 1], True),
    "pppoe": (1, lambda ip: bytes(Ether(**MAC) / PPPoE(sessionid=7) / PPP(proto=0x0021) / ip), [], False),
    "pppoe-ipv6": (1, lambda ip: bytes(Ether(**MAC) / PPPoE(sessionid=7) / PPP(proto=0x0057) / ip), [], True),
    "vlan-pppoe": (1, lambda ip: bytes(Ether(**MAC) / Dot1Q(vlan=35) / PPPoE(sessionid=7) / PPP(proto=0x0021) / ip),
                   [35], False),
    "sll": (113, lambda ip: bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6) / ip), [], False),
    "sll-ipv6": (113, lambda ip: bytes(CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6) / ip), [], True),
    "sll-vlan": (113, lambda ip: bytes(CookedLinux(proto=0x8100) / Dot1Q(vlan=42) / ip), [42], False),
    "sll2": (276, lambda ip: bytes(CookedLinuxV2(ifindex=2) / ip), [], False),
    "sll2-ipv6": (276, lambda ip: bytes(CookedLinuxV2(ifindex=2) / ip), [], True),
    "raw101": (101, bytes, [], False),
    "raw101-ipv6": (101, bytes, [], True),
    "raw12": (12, bytes, [], False),
    "raw14": (14, bytes, [], False),
    "ipv4-228": (228, bytes, [], False),
    "ipv6-229": (229, bytes, [], True),
    "null-le": (0, lambda ip: null_hdr(2, False) + bytes(ip), [], False),
    "null-be": (0, lambda ip: null_hdr(2, True) + bytes(ip), [], False),
    "null-le-ipv6-24": (0, lambda ip: null_hdr(24, False) + bytes(ip), [], True),
    "null-be-ipv6-30": (0, lambda ip: null_hdr(30, True) + bytes(ip), [], True),
    "null-le-ipv6-28": (0, lambda ip: null_hdr(28, False) + bytes(ip), [], True),
    "loop": (108, lambda ip: null_hdr(2, True) + bytes(ip), [], False),
    "loop-ipv6": (108, lambda ip: null_hdr(24, True) + bytes(ip), [], True),
    "nflog": (239, lambda ip: nflog(ip, 2), [], False),
    "nflog-ipv6": (239, lambda ip: nflog(ip, 10), [], True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_linktype_dns_pair(name, tmp_path, write_pcap, run_audit, dns_pair):
    linktype, build, vlans, v6 = CASES[name]
    client, server = ("2001:db8::1", "2001:db8::53") if v6 else ("192.0.2.10", "192.0.2.53")
    q, r = dns_pair(client, server, sport=41000)
    path = write_pcap(tmp_path / f"{name}.pcap", [build(q), build(r)], linktype=linktype)
    report = run_audit([path])
    inp = report["inputs"][0]
    assert inp["packets"] == 2
    assert inp["linktype_numbers"] == [linktype]
    assert inp["errors"] == [] and inp["truncated"] is False
    assert report["stats"]["packets"]["non_ip"] == 0
    flows = report["flows"]
    assert len(flows) == 1, flows
    f = flows[0]
    assert f["class"] == "do53"
    assert f["transport"] == "udp"
    assert f["client"] == {"ip": client, "port": 41000}
    assert f["server"] == {"ip": server, "port": 53}
    assert f["vlan"] == vlans
    assert f["ip_version"] == (6 if v6 else 4)
    assert f["packets"] == {"c2s": 1, "s2c": 1}
    # IP-layer bytes: link headers and trailers excluded
    assert f["bytes"] == {"c2s": len(bytes(q)), "s2c": len(bytes(r))}
    assert f["dns"]["queries"] == 1 and f["dns"]["responses"] == 1
    assert f["dns"]["qnames"] == ["example.com"]


def test_response_first_still_gives_right_client(tmp_path, write_pcap, run_audit, dns_pair):
    """The capture starts with the response: the client is still the side on the ephemeral port."""
    q, r = dns_pair("192.0.2.10", "192.0.2.53", sport=41000)
    path = write_pcap(tmp_path / "rev.pcap", [eth(r), eth(q)])
    f = run_audit([path])["flows"][0]
    assert f["client"] == {"ip": "192.0.2.10", "port": 41000}
    assert f["server"]["port"] == 53


def test_ethernet_padding_is_not_payload(tmp_path, write_pcap, run_audit, dns_pair):
    """Bytes after the IP total length (padding, FCS) are not IP/UDP payload."""
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import IP, UDP
    q = IP(src="192.0.2.10", dst="192.0.2.53") / UDP(sport=41000, dport=53) / DNS(id=1, qd=DNSQR(qname="a"))
    frame = eth(q)
    frame += b"\xee" * 8
    f = run_audit([write_pcap(tmp_path / "pad.pcap", [frame])])["flows"][0]
    assert f["bytes"]["c2s"] == len(bytes(q))
    assert f["dns"]["malformed"] == 0 and f["dns"]["queries"] == 1


# ------------------------------------------------------------------------------ locate_ip unit tests

def test_locate_ip_non_ip_frames():
    assert locate_ip(1, bytes(Ether(**MAC) / ARP())) is None
    assert locate_ip(1, b"\x00" * 13) is None
    assert locate_ip(1, bytes(Ether(**MAC, type=0x8100)) + b"\x00\x0a") is None  # tag cut short
    assert locate_ip(113, b"\x00" * 15) is None
    assert locate_ip(276, b"\x00" * 19) is None
    assert locate_ip(101, b"") is None
    assert locate_ip(101, b"\x50" + b"\x00" * 30) is None  # version 5
    assert locate_ip(0, b"\x02\x00") is None
    assert locate_ip(239, b"\x02\x00\x00") is None
    assert locate_ip(147, b"\x45" + b"\x00" * 40) is None   # unknown link type: no guess


def test_locate_ip_offsets_and_vlans():
    from scapy.layers.inet import IP
    ip = IP(src="1.2.3.4", dst="5.6.7.8")
    assert locate_ip(1, eth(ip)) == (4, 14, ())
    assert locate_ip(1, bytes(Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / ip)) == (4, 22, (100, 200))
    assert locate_ip(1, bytes(Ether(**MAC) / Dot1Q(vlan=5, prio=7, dei=1) / ip)) == (4, 18, (5,))
    assert locate_ip(113, bytes(CookedLinux() / ip)) == (4, 16, ())
    assert locate_ip(276, bytes(CookedLinuxV2() / ip)) == (4, 20, ())
    assert locate_ip(1, bytes(Ether(**MAC) / PPPoE() / PPP(proto=0x0021) / ip)) == (4, 22, ())
    assert locate_ip(0, null_hdr(2, False) + bytes(ip)) == (4, 4, ())
    assert locate_ip(0, null_hdr(2, True) + bytes(ip)) == (4, 4, ())
    assert locate_ip(108, null_hdr(2, True) + bytes(ip)) == (4, 4, ())
    assert locate_ip(239, nflog(ip, 2))[:2] == (4, 4 + 8 + 16 + 4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lt=st.sampled_from(sorted(KNOWN_LINKTYPES) + [147]), data=st.binary(max_size=80))
def test_locate_ip_never_raises(lt, data):
    loc = locate_ip(lt, data)
    if loc is not None:
        ver, off, vlans = loc
        assert ver in (4, 6) and 0 <= off and isinstance(vlans, tuple)
