"""Every public capture (pcaps/public/, facts in truth.json read off them with tshark) audits
cleanly: a schema-valid report whose packet, flow-class and DNS counts agree with tshark."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from dotaudit.pipeline import audit
from dotaudit.report.schema import SCHEMA

PUBLIC = Path(__file__).resolve().parents[1] / "pcaps" / "public"
TRUTH = json.loads((PUBLIC / "truth.json").read_text())

# flows by class we expect (non-zero classes only); "other" is not asserted
EXPECTED_CLASSES = {
    "DNS-OARC_dnscap/src/test/dns.pcap": {"do53": 41},
    "DNS-OARC_dnscap/src/test/dns6.pcap": {"do53": 1},
    "DNS-OARC_dnscap/src/test/dnsotcp-many1pkt.pcap": {"do53": 1},
    "DNS-OARC_dnscap/src/test/dnsotcp-manyopkts.pcap": {"do53": 1},
    "DNS-OARC_dnscap/src/test/vlan11.pcap": {"do53": 41},
    "OISF_suricata-verify/tests/dns/dns-tcp-multirequest-buffer/dns-tcp-multirequest-buffer.pcap": {"do53": 1},
    "OISF_suricata-verify/tests/llmnr/llmnr-udp/input.pcap": {"llmnr": 2},
    "dmachard_DNS-collector/tests/testsdata/pcap/dnsdump_tcp.pcap": {"do53": 5},
    "dmachard_DNS-collector/tests/testsdata/pcap/dnsdump_udp+tcp.pcap": {"do53": 2},
    "dmachard_DNS-collector/tests/testsdata/pcap/dnsdump_udp.pcap": {"do53": 15},
    "ntop_nDPI/tests/cfgs/default/pcap/dns_dot.pcap": {"dot": 1},
    "ntop_nDPI/tests/cfgs/default/pcap/doq.pcapng": {"doq": 1},
    # RFC 8484 DoH over cleartext HTTP/2 on port 80: DNS in clear on a non-DNS port
    "OISF_suricata-verify/tests/dns-over-http2/dns_over_https.pcap": {"dns-nonstandard-port": 1},
    "seladb_PcapPlusPlus/Tests/Packet++Test/PacketExamples/dns_over_tcp.pcapng": {"do53": 2},
    "seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/DnsPackets.pcap": {"do53": 210, "llmnr": 6, "mdns": 3},
    "seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/many_interfaces-1.pcapng": {"do53": 7},
    "seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/raw_ip.pcap": {"do53": 3},
    "zeek_zeek/testing/btest/Traces/dns/mdns.pcap": {"mdns": 2},
}
# DNS counted differently from tshark, by design:
#  - DoH over cleartext HTTP/2 on port 80: tshark counts the 4 response bodies, we also count the
#    4 queries sent as GET ?dns= parameters (asserted in test_cleartext_doh_over_h2c);
#  - DoQ: tshark decrypts the QUIC session with keys embedded in the pcapng (DSB); we never
#    decrypt beyond the Initial packets, whose keys are public.
DNS_NOT_COUNTED = {"OISF_suricata-verify/tests/dns-over-http2/dns_over_https.pcap",
                   "ntop_nDPI/tests/cfgs/default/pcap/doq.pcapng"}

CASES = sorted(TRUTH)


@pytest.fixture(scope="module")
def reports():
    return {}


def _report(rel, cache):
    if rel not in cache:
        cache[rel] = audit([str(PUBLIC / rel)])
    return cache[rel]


@pytest.mark.parametrize("rel", CASES)
def test_public_capture(rel, reports):
    truth = TRUTH[rel]
    report = _report(rel, reports)
    jsonschema.validate(report, SCHEMA)
    inp = report["inputs"][0]
    assert inp["packets"] == truth["packets"]
    if truth.get("first_ts") not in (None, "", "n/a"):
        assert inp["first_ts"] == pytest.approx(float(truth["first_ts"]), abs=1e-6)
    classes = {k: v for k, v in report["summary"]["flows_by_class"].items() if v and k != "other"}
    assert classes == EXPECTED_CLASSES.get(rel, {})
    dns_truth = truth.get("dns") or {}
    if rel not in DNS_NOT_COUNTED:
        queries = sum((f["dns"] or {}).get("queries", 0) for f in report["flows"])
        responses = sum((f["dns"] or {}).get("responses", 0) for f in report["flows"])
        assert queries == dns_truth.get("queries", 0)
        assert responses == dns_truth.get("responses", 0)
    # every flow record carries checkable evidence
    for f in report["flows"]:
        assert 1 <= f["first_frame"] <= f["last_frame"] <= truth["packets"]
        assert f["first_ts"] <= f["last_ts"]


def test_qnames_agree_with_tshark():
    for rel, truth in TRUTH.items():
        want = set(truth.get("dns_qnames") or {})
        if not want or rel in DNS_NOT_COUNTED:
            continue
        report = audit([str(PUBLIC / rel)], evaluate_rules=False)
        got = set()
        for f in report["flows"]:
            got.update((f["dns"] or {}).get("qnames", []))
        want = {n.lower().rstrip(".") for n in want}
        assert want <= got | {"<root>"}, (rel, sorted(want - got)[:5])


def test_dot_flow_facts_match_tshark():
    rel = "ntop_nDPI/tests/cfgs/default/pcap/dns_dot.pcap"
    report = audit([str(PUBLIC / rel)], evaluate_rules=False)
    (flow,) = report["flows"]
    assert flow["client"] == {"ip": "192.168.1.185", "port": 58290}
    assert flow["server"] == {"ip": "8.8.8.8", "port": 853}
    hello = TRUTH[rel]["tls_server_hellos"][0]
    assert flow["tls"]["cipher"]["id"] == int(hello["cipher"], 16)
    assert flow["tls"]["version"] == "TLS 1.2"
    assert flow["tls"]["frames"]["server_hello"] == hello["frame"]


def test_doq_by_quic_initial_alpn():
    report = audit([str(PUBLIC / "ntop_nDPI/tests/cfgs/default/pcap/doq.pcapng")], evaluate_rules=False)
    (flow,) = report["flows"]
    assert flow["class"] == "doq"
    assert flow["server"]["port"] == 784  # the draft DoQ port: classified by ALPN, not port
    assert any(a.startswith("doq") for a in flow["quic"]["alpn"])
    assert "0xff000020" in flow["quic"]["versions"]


def test_cleartext_doh_over_h2c():
    report = audit([str(PUBLIC / "OISF_suricata-verify/tests/dns-over-http2/dns_over_https.pcap")])
    (flow,) = report["flows"]
    assert flow["class"] == "dns-nonstandard-port" and flow["server"]["port"] == 80
    assert flow["dns"]["carrier"] == "http/2 cleartext"
    assert flow["dns"]["responses"] == TRUTH["OISF_suricata-verify/tests/dns-over-http2/dns_over_https.pcap"]["dns"]["responses"]
    assert flow["dns"]["queries"] == 4
    assert set(flow["dns"]["qnames"]) == {"www.gstatic.com", "nav-edge.smartscreen.microsoft.com"}
    assert "dns-nonstandard-port" in {f["rule_id"] for f in report["findings"]}
