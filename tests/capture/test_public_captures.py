"""Real captures from pcaps/public/ against the tshark facts in pcaps/public/truth.json."""

from __future__ import annotations

import json
import pytest

from dotaudit.capture.pcap import iter_capture

CASES = {
    # relpath: (format, linktype numbers, packets cut by the snap length per tshark frame.cap_len)
    "cisco_mercury/unit_tests/pcaps/sll_tls.pcap": ("pcap", [113], 0),
    "seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/sll2.pcap": ("pcap", [276], 0),
    "seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/raw_ip.pcap": ("pcap", [101], 0),
    "DNS-OARC_dnscap/src/test/vlan11.pcap": ("pcap", [1], 0),
    "seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/many_interfaces-1.pcapng": ("pcapng", None, 0),
    "hadrielk_pcapng-test-generator/output_le/basic/test006.pcapng": ("pcapng", [0, 1], 4),  # null + ethernet
    "seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/nanosecs.pcap": ("pcap-ns", [1], 0),
    "zeek_zeek/testing/btest/Traces/empty.pcap": ("pcap", [1], 0),
}


@pytest.fixture(scope="module")
def truth_db(request):
    path = request.config.rootpath / "pcaps" / "public" / "truth.json"
    if not path.exists():
        pytest.skip("pcaps/public/truth.json not present")
    return json.loads(path.read_text())


@pytest.mark.parametrize("rel", sorted(CASES))
def test_public_capture_matches_truth(rel, truth_db, public_pcap, run_audit):
    path = public_pcap(rel)
    t = truth_db[rel]
    fmt, linktypes, snapped = CASES[rel]
    report = run_audit([path])
    inp = report["inputs"][0]
    assert inp["format"] == fmt
    assert inp["packets"] == t["packets"]
    assert inp["truncated"] is False
    assert [e["kind"] for e in inp["errors"]] == (["snapped"] if snapped else [])
    assert inp["snapped_packets"] == snapped
    assert inp["size"] == t["size_bytes"]
    if t["first_ts"] == "n/a":
        assert inp["first_ts"] is None
    else:
        # truth first_ts is the earliest time (nanosecs.pcap: first record 1.000002, earliest 1.000001234)
        assert inp["first_ts"] == pytest.approx(float(t["first_ts"]), abs=1e-6)
    if linktypes is not None:
        assert inp["linktype_numbers"] == linktypes
    # every IP packet tshark saw was decoded (nothing reported as non-IP or malformed)
    st = report["stats"]["packets"]
    assert st["decode_errors"] == 0
    ip_layers = t["layers"].get("ip", 0) + t["layers"].get("ipv6", 0)
    assert st["packets"] - st["non_ip"] >= min(ip_layers, t["packets"]) or not ip_layers
    # DNS counts agree with tshark where it saw DNS on port 53
    if t["dns"].get("queries"):
        flows = [f for f in report["flows"] if f["class"] == "do53"]
        assert sum(f["dns"]["queries"] for f in flows) == t["dns"]["queries"]
        assert sum(f["dns"]["responses"] for f in flows) == t["dns"]["responses"]


def test_vlan11_flows_carry_vlan_ids(public_pcap, run_audit):
    report = run_audit([public_pcap("DNS-OARC_dnscap/src/test/vlan11.pcap")])
    do53 = [f for f in report["flows"] if f["class"] == "do53"]
    assert do53 and all(f["vlan"] == [11] for f in do53)


def test_test006_two_link_types(public_pcap, run_audit):
    inp = run_audit([public_pcap("hadrielk_pcapng-test-generator/output_le/basic/test006.pcapng")])["inputs"][0]
    assert len(inp["linktype_numbers"]) == 2


def test_many_interfaces_dns(public_pcap, run_audit):
    report = run_audit([public_pcap("seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/many_interfaces-1.pcapng")])
    qnames = set()
    for f in report["flows"]:
        if f["dns"]:
            qnames.update(f["dns"]["qnames"])
    assert "253.12.253.17.in-addr.arpa" in qnames


def test_nanosecs_report_keeps_nanoseconds(public_pcap, run_audit):
    inp = run_audit([public_pcap("seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/nanosecs.pcap")])["inputs"][0]
    assert inp["first_ts"] == pytest.approx(1.000001234, abs=1e-9)
    assert inp["last_ts"] == pytest.approx(1.000002, abs=1e-9)


def test_nanosecs_timestamps_keep_precision(public_pcap):
    info, packets, hasher = iter_capture(str(public_pcap("seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/"
                                                         "nanosecs.pcap")))
    recs = list(packets)
    hasher.hexdigest()
    assert info.format == "pcap-ns"
    # file order: 1.000002000 then 1.000001234 (tshark frame.time_epoch)
    assert [r[0] for r in recs] == [pytest.approx(1.000002, abs=1e-12), pytest.approx(1.000001234, abs=1e-12)]
    assert min(r[0] for r in recs) == pytest.approx(1.000001234, abs=1e-9)


def test_empty_pcap_cli_exit_0(public_pcap, run_cli, validate_report, tmp_path):
    out = tmp_path / "o.json"
    proc = run_cli("audit", public_pcap("zeek_zeek/testing/btest/Traces/empty.pcap"), "-o", out, "--no-rules")
    assert proc.returncode == 0, proc.stderr
    report = validate_report(json.loads(out.read_text()))
    assert report["inputs"][0]["packets"] == 0 and report["flows"] == []
    assert report["inputs"][0]["first_ts"] is None
