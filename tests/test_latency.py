"""stats.latency (dotaudit/latency.py) and report merging (dotaudit/merge.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dotaudit.latency import RELATIVE_ACCURACY, LatencyStats, _new_sketch, sketch_from_json, sketch_to_json, \
    summarize
from dotaudit.merge import merge_command, merge_reports
from dotaudit.pipeline import audit

REPO = Path(__file__).resolve().parents[1]
PCAPS = REPO / "pcaps"
SET_A = [PCAPS / "gateway/mixed.pcap", PCAPS / "dot/tls13-multi-query.pcap", PCAPS / "dot/tls10.pcap",
         PCAPS / "public/DNS-OARC_dnscap/src/test/dns.pcap"]
SET_B = [PCAPS / "leak/do53-tcp.pcap", PCAPS / "dot/tls12-resumption-ticket.pcap",
         PCAPS / "dot/tls13-resumption-psk.pcap", PCAPS / "leak/fallback-after-dot-failure.pcap"]


def _with_latency(paths) -> dict:
    """An audit report with stats.latency, whether or not the pipeline wiring has landed."""
    report = audit([str(p) for p in paths if p.exists()])
    if not (report["stats"].get("latency") or {}).get("by_class"):
        lat = LatencyStats()
        for rec in report["flows"]:
            lat.add(rec)
        report["stats"]["latency"] = lat.to_json()
    return json.loads(json.dumps(report))   # as read back from a JSON file


def _exact_quantile(values, q):
    v = sorted(values)
    return v[int(math.floor(q * (len(v) - 1)))]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.001, max_value=1e5), min_size=1, max_size=300),
       st.lists(st.floats(min_value=0.001, max_value=1e5), min_size=1, max_size=300))
def test_sketch_quantiles_and_merge(a, b):
    sa, sb, sab = _new_sketch(), _new_sketch(), _new_sketch()
    for v in a:
        sa.add(v)
        sab.add(v)
    for v in b:
        sb.add(v)
        sab.add(v)
    ra = sketch_from_json(json.loads(json.dumps(sketch_to_json(sa))))
    ra.merge(sketch_from_json(json.loads(json.dumps(sketch_to_json(sb)))))
    merged, single = summarize(ra), summarize(sab)
    # the mean divides a sum, and two sums of the same floats in another order may differ in
    # their last bit: rounded to 3 decimals, a half can go either way (a=[1.0, 1.95], b=[0.95,
    # 0.95]: 1.212 against 1.213); everything else is the same
    assert abs(merged.pop("mean") - single.pop("mean")) <= 0.001 + 1e-9
    assert merged == single
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = _exact_quantile(a + b, q)
        assert abs(merged[name] - exact) <= RELATIVE_ACCURACY * exact + 0.0005
    assert merged["min"] == round(min(a + b), 3) and merged["max"] == round(max(a + b), 3)


def test_json_round_trip():
    lat = LatencyStats.from_json(_with_latency(SET_A)["stats"]["latency"])
    j = lat.to_json()
    assert LatencyStats.from_json(json.loads(json.dumps(j))).to_json() == j
    assert j["relative_accuracy"] == RELATIVE_ACCURACY
    assert {"do53", "dot"} <= set(j["by_class"])
    dot = j["by_class"]["dot"]
    for m in ("tcp_rtt_server_ms", "tls_handshake_ms", "query_rtt_ms", "queries_per_connection", "lifetime_ms"):
        assert set(dot["metrics"][m]) >= {"count", "min", "p50", "p95", "p99", "max"}
    assert set(dot["tls_handshake_ms_by_version"]) >= {"TLS 1.3", "TLS 1.0"}
    assert set(dot["tls_handshake_ms_by_mode"]) == {"full"}


def test_resumed_and_overhead():
    j = _with_latency(SET_B + SET_A)["stats"]["latency"]
    dot = j["by_class"]["dot"]
    assert dot["counters"]["resumed"] >= 2 and dot["counters"]["full"] >= 2
    assert set(dot["tls_handshake_ms_by_mode"]) == {"full", "resumed"}
    (o,) = [o for o in j["overhead"] if o["resolver"] == "10.53.0.1"]
    assert o["dot"]["bytes_per_query"] > o["do53"]["bytes_per_query"]
    assert o["bytes_per_query_ratio"] > 1 and o["time_per_query_delta_ms"] > 0
    assert dot["counters"]["tfo"] == 0


def test_tfo_counted():
    j = _with_latency([PCAPS / "dot/tls13-tfo.pcap"])["stats"]["latency"]
    assert j["by_class"]["dot"]["counters"]["tfo"] >= 1


def test_merge_equals_one_run():
    a, b = _with_latency(SET_A), _with_latency(SET_B)
    both = _with_latency(SET_A + SET_B)
    merged = merge_reports([a, b])
    ml, bl = merged["stats"]["latency"], both["stats"]["latency"]
    assert set(ml["by_class"]) == set(bl["by_class"])
    for cls, g in bl["by_class"].items():
        mg = ml["by_class"][cls]
        assert mg["counters"] == g["counters"]
        for name, e in g["metrics"].items():
            m = mg["metrics"][name]
            assert m["count"] == e["count"] and m["min"] == e["min"] and m["max"] == e["max"]
            for q in ("p50", "p95", "p99"):
                assert m[q] == pytest.approx(e[q], rel=2 * RELATIVE_ACCURACY, abs=0.002), (cls, name, q)
    assert merged["summary"]["flows_by_class"] == both["summary"]["flows_by_class"]
    assert len(merged["flows"]) == len(both["flows"])
    assert merged["summary"]["verdict"] == both["summary"]["verdict"]
    assert merged["stats"]["packets"]["packets"] == both["stats"]["packets"]["packets"]


def test_merge_renumbers_flows_and_rekeys_findings(validate_report):
    a, b = _with_latency(SET_B), _with_latency(SET_B)
    merged = merge_reports([a, b])
    validate_report(merged)
    n = len(a["flows"])
    assert [f["id"] for f in merged["flows"]] == list(range(1, 2 * n + 1))
    assert len(merged["inputs"]) == 2 * len(a["inputs"])
    assert merged["flows"][n]["input"] == a["flows"][0]["input"] + len(a["inputs"])
    assert len(merged["findings"]) == 2 * len(a["findings"]) > 0
    for fa, fm in zip(a["findings"], merged["findings"][len(a["findings"]):]):
        assert fm["flow_ids"] == [x + n for x in fa["flow_ids"]]
        for k, v in fa["evidence"].items():
            if k.endswith("flow_id") and isinstance(v, int):
                assert fm["evidence"][k] == v + n
    sev = a["summary"]["findings_by_severity"]
    assert merged["summary"]["findings_by_severity"] == {k: 2 * v for k, v in sev.items()}
    for cls, g in a["stats"]["latency"]["by_class"].items():
        assert merged["stats"]["latency"]["by_class"][cls]["counters"]["flows"] == 2 * g["counters"]["flows"]


def test_merge_command(tmp_path):
    from click.testing import CliRunner
    pa, pb, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "all.json"
    pa.write_text(json.dumps(_with_latency(SET_A)))
    pb.write_text(json.dumps(_with_latency(SET_B)))
    res = CliRunner().invoke(merge_command, [str(pa), str(pb), "-o", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["stats"]["merged"]["reports"] == 2
    bad = CliRunner().invoke(merge_command, [str(pa), str(tmp_path / "missing.json")])
    assert bad.exit_code != 0


def test_table_in_text_output():
    from dotaudit.report.text import render
    report = _with_latency(SET_A + SET_B)
    t = report["stats"]["latency"]["table"]
    assert t["headers"][0].startswith("class") and len(t["rows"]) >= 2
    assert all(len(r) == len(t["headers"]) for r in t["rows"])
    text = render(report)
    assert "query p50" in text and "dot TLS 1.3 handshakes" in text


def test_add_skips_other_and_empty():
    lat = LatencyStats()
    lat.add({"class": "other", "timing": {"lifetime_ms": 1.0}, "server": {"ip": "1.2.3.4"}})
    lat.add({"class": "do53", "timing": None, "server": {"ip": "1.2.3.4"}})
    assert lat.to_json()["by_class"] == {}


def test_sketch_add_is_ddsketch_add():
    """latency.sketch_add_pairs (ddsketch's add inlined) leaves a sketch exactly as DDSketch.add does:
    bins, offsets, ranges, collapsing, zero and negative values, sums, min and max."""
    import random

    from dotaudit.latency import _new_sketch, sketch_add_pairs, sketch_to_json

    rnd = random.Random(11)
    values = [0, 0.0, 1, 2, 3.5, -1.25, 1e-300, 5e-324, -5e-324, 1e300, True]
    values += [rnd.lognormvariate(2, 1.5) for _ in range(20000)]
    values += [rnd.uniform(0, 2000) for _ in range(5000)] + [rnd.randrange(1, 300) for _ in range(2000)]
    values += [10.0 ** rnd.uniform(-250, 250) for _ in range(3000)]   # past BIN_LIMIT: collapses
    for order in (values, sorted(values), sorted(values, reverse=True)):
        theirs, mine, batched = _new_sketch(), _new_sketch(), _new_sketch()
        for v in order:
            theirs.add(v)
            sketch_add_pairs([(mine, v)])
        for i in range(0, len(order), 37):   # the same, several values at a time
            sketch_add_pairs([(batched, v) for v in order[i:i + 37]])
        for m in (mine, batched):
            assert sketch_to_json(m) == sketch_to_json(theirs)
            for a, b in ((m._store, theirs._store), (m._negative_store, theirs._negative_store)):
                assert (a.bins, a.offset, a.min_key, a.max_key, a.count, a.is_collapsed) == \
                    (b.bins, b.offset, b.min_key, b.max_key, b.count, b.is_collapsed)
            assert [m.get_quantile_value(q) for q in (0.01, 0.5, 0.99)] == \
                [theirs.get_quantile_value(q) for q in (0.01, 0.5, 0.99)]


def test_summary_quantiles_are_ddsketch_quantiles():
    """summarize finds a quantile's bin in running sums made once (not ddsketch's loop over the
    bins per quantile): the same bins, for sketches with zero, negative, tiny and huge values."""
    import random

    from dotaudit.latency import QUANTILES, _r

    rnd = random.Random(5)
    for trial in range(400):
        s = _new_sketch()
        for _ in range(rnd.randint(1, 400)):
            r = rnd.random()
            if r < 0.03 * (trial % 4):
                s.add(0.0)
            elif r < 0.05 * (trial % 3):
                s.add(-rnd.expovariate(0.1))
            else:
                s.add(rnd.lognormvariate(rnd.uniform(-3, 8), rnd.uniform(0.1, 3)))
        if trial % 50 == 0:
            s.add(10.0 ** rnd.uniform(200, 300))   # past BIN_LIMIT: the store collapses
        out = summarize(s)
        for name, q in QUANTILES:
            v = s.get_quantile_value(q)
            assert out[name] == _r(min(max(v, s._min), s._max)), (trial, name)


def test_stats_counted_apart_and_merged():
    """With rules, a sink's statistics of the flows still open at the end are counted apart
    (sink.mark_tail) and merged in: the counters, sketches and summaries are those of one
    LatencyStats.  A judge process counts none of them (its main process does, from a view of
    each record: latency.stats_view); without rules nothing is split."""
    from dotaudit.latency import stats_view
    from dotaudit.pipeline import make_judge
    from dotaudit.sink import RecordSink

    report = audit([str(p) for p in SET_A + SET_B if p.exists()], evaluate_rules=False)
    flows = json.loads(json.dumps(list(report["flows"])))
    assert len(flows) > 20
    half = len(flows) // 2

    def fed(sink, count=True):
        for i, rec in enumerate(flows):
            if i == half:
                sink.mark_tail(count=count)
            sink.add(json.loads(json.dumps(rec)))
        return sink.finish()[1]

    one, views = LatencyStats(), LatencyStats()
    for rec in flows:
        one.add(rec)
        views.add(stats_view(rec))
    assert json.dumps(views.to_json(), sort_keys=True) == json.dumps(one.to_json(), sort_keys=True)
    assert json.dumps(fed(RecordSink()).to_json(), sort_keys=True) == json.dumps(one.to_json(), sort_keys=True)
    _close(one.to_json(), fed(RecordSink(make_judge())).to_json())   # sums: the last bit may differ
    counted = fed(RecordSink(make_judge()), count=False)
    assert sum(g.counters["flows"] for g in counted.groups.values()) == \
        sum(1 for rec in flows[:half] if rec.get("class") != "other" and rec.get("timing"))


def _close(a, b) -> None:
    """Equal, floats to within rounding: a sum's last bit, or the third decimal of a mean whose
    sum fell on the other side of a half."""
    if isinstance(a, float) or isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-9, abs=0.0011)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    else:
        assert a == b
