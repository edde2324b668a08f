"""Formatters on real reports: OCSF required attributes, JSONL, JUnit, Markdown, text, redaction."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from dotaudit.report import OutputFormat, render
from dotaudit.report.common import latency_rows
from dotaudit.report.ocsf import events, missing_required, required_spec
from dotaudit.report.redact import redact
from dotaudit.rules.loader import load_rules


@pytest.fixture(scope="module")
def gateway(repo) -> dict:
    return json.loads((repo / "reports" / "gateway.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("cls,uid", [("detection", 2004), ("compliance", 2003)])
def test_ocsf_events_have_every_required_attribute(gateway, cls, uid):
    evs = json.loads(render(gateway, "ocsf", ocsf_class=cls))
    assert len(evs) == len(gateway["findings"]) > 0
    for ev in evs:
        assert ev["class_uid"] == uid and ev["category_uid"] == 2
        assert ev["type_uid"] == uid * 100 + ev["activity_id"]
        assert missing_required(ev) == []
        assert 1 <= ev["severity_id"] <= 5
    spec = required_spec()
    assert spec["source"]["repository"].endswith("ocsf/ocsf-schema")
    assert "compliance" in spec["classes"]["compliance_finding"]["required"]


def test_ocsf_check_catches_a_missing_attribute(gateway):
    ev = events(gateway, "compliance")[0]
    del ev["compliance"]["standards"]
    del ev["finding_info"]
    assert "compliance.standards" in missing_required(ev)
    assert "finding_info" in missing_required(ev)


def test_jsonl_flows_then_findings(gateway):
    lines = render(gateway, "jsonl").splitlines()
    recs = [json.loads(ln) for ln in lines]
    kinds = [r["record_type"] for r in recs]
    assert kinds == ["flow"] * len(gateway["flows"]) + ["finding"] * len(gateway["findings"])
    assert recs[0]["id"] == gateway["flows"][0]["id"] and recs[0]["class"] == gateway["flows"][0]["class"]


def test_junit_has_a_testcase_per_rule(gateway):
    rules = load_rules()
    root = ET.fromstring(render(gateway, "junit", rules=rules, fail_on="high"))
    cases = root.findall(".//testcase")
    assert sorted(c.get("name") for c in cases) == sorted(r.name for r in rules)
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    expect = {f["rule_id"] for f in gateway["findings"] if f["severity"] in ("high", "critical")}
    assert failed == expect
    assert root.get("failures") == str(len(expect))
    low = ET.fromstring(render(gateway, "junit", rules=rules, fail_on="info"))
    assert {c.get("name") for c in low.findall(".//testcase") if c.find("failure") is not None} == \
        {f["rule_id"] for f in gateway["findings"]}


def test_markdown_is_ticket_sized(gateway):
    md = render(gateway, "md")
    assert md.startswith("## DNS encryption audit: **FAIL**")
    assert "| critical | high | medium | low | info |" in md
    assert "dns-plaintext-fallback" in md and "frames 49, 50" in md
    assert len(md.splitlines()) < 120


def test_markdown_neutralises_hostile_text():
    rep = {"summary": {"verdict": "fail", "findings_by_severity": {"high": 1}, "flows_by_class": {"do53": 1}},
           "inputs": [], "tool": {"version": "x"}, "generated_at": "t",
           "findings": [{"id": "1", "rule_id": "r", "severity": "high", "title": "t",
                         "message": "asked for <img src=x onerror=alert(1)>` [x](javascript:1)",
                         "evidence": {"dns.qnames": ["a`b<script>"]}, "frames": [1], "flow_ids": [1],
                         "client": None, "server": None, "references": ["javascript:alert(1)"],
                         "remediation": None}]}
    md = render(rep, "md")
    import re
    assert not re.search(r"(?<!\\)<img", md)                       # escaped, renders as text
    assert "<script>" not in md.replace("`a'b<script>`", "")        # only inside a code span
    assert not re.search(r"(?<!\\)\]\(javascript", md) and "<javascript" not in md


def test_text_summary(gateway):
    text = render(gateway, "text")
    assert "verdict: FAIL" in text and "dns-plaintext-fallback" in text


def test_every_format_renders_a_report_without_findings_or_latency(repo):
    rep = json.loads((repo / "reports" / "dot-tls13-clean.json").read_text(encoding="utf-8"))
    rep = dict(rep, findings=[], stats={})
    for fmt in OutputFormat:
        assert render(rep, fmt)
    assert "latency" not in render(rep, "html").split("<section id=\"findings\">")[0].lower().replace(
        "latency (", "")


def test_latency_charts_when_stats_latency_is_present(repo):
    rep = json.loads((repo / "reports" / "gateway.json").read_text(encoding="utf-8"))
    p = {"count": 3, "min": 1.0, "p50": 2.0, "p95": 4.0, "p99": 4.5, "max": 5.0}
    rep["stats"]["latency"] = {"by_class": {"dot": {"query_rtt_ms": p}, "do53": {"query_rtt_ms": dict(p, p50=0.5)}},
                               "by_tls_version": {"TLS 1.2": {"tls_handshake_ms": p},
                                                  "TLS 1.3": {"tls_handshake_ms": dict(p, p50=1.0)}}}
    assert len(latency_rows(rep)) == 4
    page = render(rep, "html")
    assert "DoT against Do53" in page and "TLS handshake by version" in page
    assert 'id="latency-table"' in page


def test_redaction_in_every_format(repo):
    rep = json.loads((repo / "reports" / "gateway.json").read_text(encoding="utf-8"))
    red = redact(rep, "k1")
    assert rep["flows"][0]["tls"]["sni"] == "dns.lab.test"    # the input is untouched
    for fmt in OutputFormat:
        out = render(red, fmt)
        assert "lab.test" not in out, fmt
    sni = {f["tls"]["sni"] for f in red["flows"] if f["tls"] and f["tls"]["sni"]}
    assert len(sni) == 1 and next(iter(sni)).startswith("redacted-")   # same name, same token
    assert redact(rep, "k1")["flows"] == red["flows"]
    assert redact(rep, "k2")["flows"] != red["flows"]
    assert redact(rep)["flows"] != redact(rep)["flows"]          # random per-run key
    assert red["summary"]["redacted"] is True


def test_prerendered_values_give_the_same_json_text():
    """report/json.prerender: a value rendered ahead is written as json.dumps would write it,
    nested in a dict beside ordinary values; a deep copy of it is a plain dict."""
    import copy

    from dotaudit.report.json import Rendered, _pretty, prerender

    latency = {"by_resolver": {"9.9.9.9": {"dot": {"p50": 12.5, "n": 3}}, "fd00::53": {}},
               "empty": {}, "list": [1, 2.5, None, {"ß": "ü"}], "nan": float("nan"), "set": {3, 1}}
    stats = {"packets": {"total": 10, "decode_errors": 0}, "latency": prerender(latency), "z": []}
    plain = {"packets": stats["packets"], "latency": dict(latency), "z": []}
    for indent in ("", "  "):
        assert _pretty(stats, indent) == _pretty(plain, indent)
    assert _pretty(prerender({}), "") == "{}"
    assert json.loads(_pretty(stats, ""))["latency"]["set"] == [1, 3]
    copied = copy.deepcopy(stats)
    assert type(copied["latency"]) is dict and copied == stats
    assert isinstance(stats["latency"], Rendered)


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [1, 2.5, -0.0, 1e16, 123456789.123, None, True], "c": {"ß": "ü\u2028", "d": {}, "e": []}},
    {"set": {3, 1}, "bytes": b"\x01\xff", "nan": float("nan"), "inf": float("-inf"), 7: "int key"},
    {"big": 2 ** 70, "tuple": (1, "x"), "nested": [{"z": 1, "y": [{}]}]},
    [], {}, "text", 3, None,
])
def test_pretty_json_is_what_json_dumps_writes(value):
    """The pretty parts of the JSON report are made by orjson; the text is json.dumps's (sorted
    keys, two-space indent, UTF-8), sets, bytes, NaN and keys that are no string included."""
    from dotaudit.report.json import _clean, _dump_pretty

    assert _dump_pretty(value) == json.dumps(_clean(value), indent=2, sort_keys=True, ensure_ascii=False)


def test_pretty_json_small_floats_are_written_like_the_flow_lines():
    import orjson

    from dotaudit.report.json import _dump_pretty

    text = _dump_pretty({"rtt": 1e-05, "ms": 2.5e-05})
    assert json.loads(text) == {"rtt": 1e-05, "ms": 2.5e-05}
    assert "0.00001" in text and orjson.dumps(1e-05) == b"0.00001"
