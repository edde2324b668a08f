"""One case per `tests:` entry of every shipped rule: run the capture through the pipeline.

Skips (with the reason) only when dotaudit.pipeline is not importable yet, or the capture, its
policy or the lab CA is missing. Counts compare the number of findings for the rule.
Every lab capture with a `<case>.truth.json` is also compared exactly: the (rule_id, flow)
pairs dotaudit reports equal the truth file's findings.
"""

import json
from functools import lru_cache
from pathlib import Path

import pytest

from dotaudit.rules.cli import DEFAULT_TEST_POLICY
from dotaudit.rules.loader import load_rules, repo_root
from dotaudit.rules.policy import PolicyError, load_policy

ROOT = repo_root()
RULES = load_rules()
CASES = [(r, t) for r in RULES for t in r.tests]


@lru_cache(maxsize=None)
def _audit(pcap: str, policy_file: str):
    try:
        from dotaudit.pipeline import audit
    except ImportError as exc:
        pytest.skip(f"dotaudit.pipeline not wired yet ({exc})")
    try:
        policy = load_policy(str(ROOT / policy_file))
    except PolicyError as exc:
        pytest.skip(f"policy not usable yet: {exc}")
    return audit([str(ROOT / pcap)], policy=policy, rules=RULES)


@pytest.mark.parametrize("rule,case", CASES, ids=[f"{r.name}:{Path(t.pcap).stem}:{t.expect}" for r, t in CASES])
def test_rule_capture(rule, case):
    pcap = ROOT / case.pcap
    if not pcap.is_file():
        pytest.skip(f"capture missing: {case.pcap}")
    policy_file = case.policy or DEFAULT_TEST_POLICY
    report = _audit(case.pcap, policy_file)
    got = [f for f in report["findings"] if f["rule_id"] == rule.name]
    assert len(got) == case.expect, (
        f"{rule.name} on {case.pcap}: expected {case.expect} finding(s), got {len(got)}: "
        + "; ".join(f["message"] for f in got))


TRUTHS = sorted(p for p in (ROOT / "pcaps").rglob("*.truth.json")) if (ROOT / "pcaps").is_dir() else []


def _endpoint_key(flow: dict) -> tuple:
    c, s = flow["client"], flow["server"]
    return (flow["transport"], c["ip"], c["port"], s["ip"], s["port"])


def finding_pairs(report: dict, truth_flows: list[dict]) -> set[tuple]:
    """(rule_id, truth flow index) for every flow id of every finding; None for capture-level ones.

    A report flow maps to the truth flow with the same transport and client/server ip+port; a
    report flow the truth does not describe maps to ("unknown", report flow id), which never
    equals a truth entry."""
    truth_index = {_endpoint_key(f): i for i, f in enumerate(truth_flows)}
    assert len(truth_index) == len(truth_flows), "truth flows with the same endpoints"
    by_id = {f["id"]: truth_index.get(_endpoint_key(f), ("unknown", f["id"])) for f in report["flows"]}
    pairs = set()
    for finding in report["findings"]:
        ids = finding.get("flow_ids") or []
        assert not finding.get("flow_ids_total") or finding["flow_ids_total"] <= len(ids), "flow ids capped"
        if not ids:
            pairs.add((finding["rule_id"], None))
        for fid in ids:
            pairs.add((finding["rule_id"], by_id.get(fid, ("unknown", fid))))
    return pairs


@pytest.mark.parametrize("truth", TRUTHS, ids=[str(p.relative_to(ROOT)) for p in TRUTHS])
def test_truth_rule_ids(truth):
    """Per capture, the set of (rule_id, truth flow) pairs dotaudit finds equals the truth's.

    Capture-level findings (flow_ids empty) are (rule_id, None) and must be listed in the truth
    as {"rule_id": ..., "flow": null}. No tolerated extras, no tolerated misses."""
    data = json.loads(truth.read_text())
    assert "findings" in data, "truth file has no findings list"
    pcap = next((p for p in truth.parent.glob(truth.name.replace(".truth.json", ".*"))
                 if p.suffix in (".pcap", ".pcapng")), None)
    if pcap is None:
        pytest.skip("capture missing")
    report = _audit(str(pcap.relative_to(ROOT)), DEFAULT_TEST_POLICY)
    expected = {(f["rule_id"], f["flow"]) for f in data["findings"]}
    got = finding_pairs(report, data["flows"])
    missing, extra = sorted(expected - got, key=str), sorted(got - expected, key=str)
    assert not missing and not extra, f"missing: {missing}; extra: {extra}"
