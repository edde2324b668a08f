"""Rules judged as flows finish (rules/stream.py) give what the two-pass apply_rules gives.

Every bundled capture is audited both ways, with the flow store in memory and spilled to disk
(where records are read back and rewritten by position), under a policy that makes the
cross-flow rules fire (fallback window, trust anchor of the lab CA).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dotaudit.flows.store import FlowStore
from dotaudit.pipeline import apply_rules, assemble, audit, finalize_summary, options_from_policy, run_files
from dotaudit.rules.loader import load_rules
from dotaudit.rules.policy import load_policy
from dotaudit.rules.stream import reads_cross_facts

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted(p for p in (ROOT / "pcaps").rglob("*")
                 if p.is_file() and p.suffix in (".pcap", ".pcapng", ".gz", ".cap"))


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "policy.yml"
    path.write_text(f"trust_anchors: [{ROOT / 'pcaps' / 'lab' / 'ca.pem'}]\nfallback_window_s: 30\n")
    return load_policy(str(path))


def _two_pass(paths, policy, rules) -> dict:
    infos, collector, table = run_files(paths, options_from_policy(policy))
    report = assemble(infos, collector, table)
    apply_rules(report, policy=policy, rules=rules)
    finalize_summary(report)
    for key in ("flows", "findings"):
        if not isinstance(report[key], list):
            report[key] = report[key].to_list()
    return report


@pytest.mark.parametrize("spill_at", [1000, 2], ids=["memory", "spilled"])
@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: str(p.relative_to(ROOT / "pcaps")))
def test_streaming_judge_equals_two_pass(path, spill_at, policy, monkeypatch):
    monkeypatch.setattr(FlowStore.__init__, "__defaults__", (spill_at,))
    rules = load_rules()
    try:
        streamed = audit([str(path)], policy=policy, rules=rules)
    except Exception as exc:
        with pytest.raises(type(exc)):
            _two_pass([str(path)], policy, rules)
        return
    two = _two_pass([str(path)], policy, rules)
    for r in (streamed, two):
        r.pop("generated_at")
    assert streamed["flows"] == two["flows"]
    assert streamed["findings"] == two["findings"]
    assert streamed == two


def test_cross_fact_rules_are_the_correlated_ones():
    cross = {r.name for r in load_rules() if r.category != "capture" and reads_cross_facts(r)}
    assert {"dns-plaintext-fallback", "dot-no-session-resumption", "dot-no-connection-reuse"} <= cross
    assert "dns-plaintext-query" not in cross and "dot-tls-version-prohibited" not in cross


def test_view_paths_cover_what_cross_rules_read_or_none():
    from tests.rules.test_compiler import rule as make_rule
    from dotaudit.rules.stream import view_paths

    cross = [r for r in load_rules() if r.category != "capture" and reads_cross_facts(r)]
    paths = view_paths(cross)
    assert paths is not None
    for needed in ("class", "id", "client", "server", "tls.established", "tls.resumed",
                   "correlations.full_handshakes_to_server", "correlations.single_query_connections_to_server"):
        assert needed in paths
    indexed = make_rule("""\
        sel: {tls.certificates.0.key_bits|lt: 2048}
        condition: sel
    """)
    assert view_paths(cross + [indexed]) is None            # project() does not index lists
