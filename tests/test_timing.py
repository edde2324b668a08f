"""flows[].timing (dotaudit/timing.py) against the lab truth files and tshark's dns.time."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dotaudit.flows.record import AnalysisOptions
from dotaudit.pipeline import audit
from dotaudit.timing import INFER_DNS, INFER_TLS, _tls_exchanges

REPO = Path(__file__).resolve().parents[1]
PCAPS = REPO / "pcaps"
TRUTHS = sorted(PCAPS.rglob("*.truth.json"))
DO53 = [PCAPS / "public/DNS-OARC_dnscap/src/test/dns.pcap",
        PCAPS / "public/seladb_PcapPlusPlus/Tests/Pcap++Test/PcapExamples/DnsPackets.pcap",
        *sorted((PCAPS / "leak").glob("*.pcap"))]


def _session_marks_finished() -> bool:
    from dotaudit.tls.session import TlsSession
    return hasattr(TlsSession(), "client_finished_ts")


@pytest.fixture
def client_finished(monkeypatch):
    """Until dotaudit/tls/session.py records the TLS 1.3 client Finished (client_finished_ts),
    record it here exactly as the proposed session change does (docs/latency.md)."""
    if _session_marks_finished():
        return
    from dotaudit.tls.session import TlsSession
    orig = TlsSession._app

    def _app(self, d, from_client, ln):
        before = self._c.finished
        orig(self, d, from_client, ln)
        if from_client and self.tls13 and not before and self._c.finished:
            self.client_finished_ts = self._ts
            self.client_finished_frame = self._frame

    monkeypatch.setattr(TlsSession, "_app", _app)


def _close(ours, truth) -> bool:
    if truth is None or ours is None:
        return truth is None and ours is None
    return abs(ours - truth) <= 0.1 or abs(ours - truth) <= 0.05 * abs(truth)


def _flows(report):
    return {(f["transport"], f["client"]["ip"], f["client"]["port"], f["server"]["ip"], f["server"]["port"]): f
            for f in report["flows"]}


@pytest.mark.parametrize("truth_path", TRUTHS, ids=[str(p.relative_to(PCAPS)) for p in TRUTHS])
def test_tcp_rtt_and_tls_handshake_match_truth(truth_path: Path, client_finished):
    truth = json.loads(truth_path.read_text())
    pcap = truth_path.with_name(truth_path.name.replace(".truth.json", ".pcap"))
    report = audit([str(pcap)], evaluate_rules=False, options=AnalysisOptions(all_flows=True))
    flows = _flows(report)
    for tf in truth["flows"]:
        key = (tf["transport"], tf["client"]["ip"], tf["client"]["port"], tf["server"]["ip"], tf["server"]["port"])
        f = flows[key]
        tt = tf.get("timing") or {}
        t = f["timing"]
        rtt = (t["tcp_rtt_ms"] or {}).get("server")
        assert _close(rtt, tt.get("tcp_rtt_ms")), (tf["first_frame"], rtt, tt)
        assert _close(t["tls_handshake_ms"], tt.get("tls_handshake_ms")), (tf["first_frame"], t, tt)
        if tt.get("tls_handshake_ms") is not None:
            v = (f["tls"] or {}).get("version")
            assert t["tls_handshake_end"] == ("client_finished" if v == "TLS 1.3" else "first_app_data")


@pytest.mark.parametrize("truth_path", TRUTHS, ids=[str(p.relative_to(PCAPS)) for p in TRUTHS])
def test_dot_inferred_exchanges_match_decrypted_truth(truth_path: Path, client_finished):
    """The record-pairing inference finds as many answers as the key-log pass decrypted."""
    truth = json.loads(truth_path.read_text())
    pcap = truth_path.with_name(truth_path.name.replace(".truth.json", ".pcap"))
    flows = _flows(audit([str(pcap)], evaluate_rules=False, options=AnalysisOptions(all_flows=True)))
    for tf in truth["flows"]:
        dns = tf.get("dns") or {}
        if not tf.get("tls") or dns.get("source") != "decrypted":
            continue
        f = flows[(tf["transport"], tf["client"]["ip"], tf["client"]["port"], tf["server"]["ip"], tf["server"]["port"])]
        t = f["timing"]
        assert (t["queries_per_connection"] or 0) == dns["responses"], (tf["first_frame"], t)
        if dns["responses"]:
            assert t["rtt_inference"] == INFER_TLS
            assert len(t["query_rtt_ms"]) == t["query_rtt_count"] == dns["responses"]
            assert all(v >= 0 for v in t["query_rtt_ms"])


def test_tls_session_records_client_finished():
    if not _session_marks_finished():
        pytest.xfail("dotaudit/tls/session.py does not set client_finished_ts yet: TLS 1.3 handshake "
                     "times fall back to the first application data (see docs/latency.md, lead wiring)")


@pytest.mark.parametrize("pcap", DO53, ids=[str(p.relative_to(PCAPS)) for p in DO53])
def test_do53_query_times_equal_tshark_dns_time(pcap: Path):
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    if not pcap.exists():
        pytest.skip(f"{pcap.relative_to(REPO)} not present")
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "dns.flags.response==1", "-T", "fields",
                          "-e", "dns.time", "-e", "dns.id", "-e", "dns.count.queries"],
                         capture_output=True, text=True, check=True).stdout
    expected = []
    for line in out.splitlines():
        parts = line.split("\t")
        # tshark pairs by id alone; a response without a question (mDNS announcements, id 0)
        # answers no query by id and question, which is how dotaudit matches (docs/latency.md)
        if parts[0] and parts[2] not in ("", "0"):
            expected.append(float(parts[0]) * 1000.0)
    report = audit([str(pcap)], evaluate_rules=False, options=AnalysisOptions(all_flows=True))
    ours = [v for f in report["flows"] if f["timing"] and f["timing"]["rtt_inference"] == INFER_DNS
            for v in f["timing"]["query_rtt_ms"]]
    assert expected, "no answered query in the capture"
    assert len(ours) == len(expected)
    for a, b in zip(sorted(ours), sorted(expected)):
        assert abs(a - b) < 0.001


def test_do53_flow_fields():
    report = audit([str(PCAPS / "leak/do53-tcp.pcap")], evaluate_rules=False)
    t = report["flows"][0]["timing"]
    assert t["rtt_inference"] == INFER_DNS
    assert t["queries_per_connection"] == 3 == t["query_rtt_count"]
    assert t["bytes_per_query"] > 0 and t["idle_ms"] >= 0 and t["lifetime_ms"] > 0
    assert t["retransmissions"] == {"c2s": 0, "s2c": 0, "syn": 0}
    assert t["tcp_rtt_ms"]["total"] == pytest.approx(t["tcp_rtt_ms"]["server"] + t["tcp_rtt_ms"]["client"], abs=0.002)


# ---------------------------------------------------------------------------- the pairing inference

def test_pairing_pipelined_queries_and_tls13_tickets():
    # kdig, three queries; unbound's two NewSessionTickets (250 bytes) come first
    recs = [(1.000, 12, True, 147), (1.001, 13, False, 250), (1.040, 15, False, 250), (1.040, 15, False, 487),
            (1.050, 17, True, 147), (1.051, 18, False, 487), (1.060, 19, True, 147), (1.061, 20, False, 487),
            (1.062, 21, True, 19), (1.063, 23, False, 19)]
    pairs, _ = _tls_exchanges(recs, True)
    assert [(q, r) for q, r in pairs] == [(1.000, 1.040), (1.050, 1.051), (1.060, 1.061)]


def test_pairing_split_records_and_several_answers():
    # TLS 1.0 1/n-1 record splitting; two queries in one segment, answered in two segments
    recs = [(2.0, 12, True, 36), (2.0, 12, True, 292), (2.002, 13, False, 36), (2.002, 13, False, 500),
            (2.040, 15, False, 36), (2.040, 15, False, 500), (3.0, 17, True, 26)]
    pairs, last = _tls_exchanges(recs, False)
    assert pairs == [(2.0, 2.002), (2.0, 2.040)]
    assert last == 2.040


def test_pairing_nothing_answered():
    assert _tls_exchanges([(1.0, 5, True, 100)], True)[0] == []
    assert _tls_exchanges([], False)[0] == []
