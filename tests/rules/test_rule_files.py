"""One case per `tests:` entry of every shipped rule: run the capture through the pipeline.

Skips (with the reason) only when dotaudit.pipeline is not importable yet, or the capture, its
policy or the lab CA is missing. Counts compare the number of findings for the rule.
When a `<case>.truth.json` sits next to the capture, the rule's presence is cross-checked.
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


@pytest.mark.parametrize("truth", TRUTHS, ids=[str(p.relative_to(ROOT)) for p in TRUTHS])
def test_truth_rule_ids(truth):
    """The rules a capture's truth file lists fire; pack rules it does not list do not."""
    data = json.loads(truth.read_text())
    if "findings" not in data:
        pytest.skip("truth file has no findings list")
    pcap = next((p for p in truth.parent.glob(truth.name.replace(".truth.json", ".*"))
                 if p.suffix in (".pcap", ".pcapng")), None)
    if pcap is None:
        pytest.skip("capture missing")
    report = _audit(str(pcap.relative_to(ROOT)), DEFAULT_TEST_POLICY)
    expected = {f["rule_id"] for f in data["findings"]}
    got = {f["rule_id"] for f in report["findings"]}
    pack = {r.name for r in RULES}
    assert expected & pack <= got, f"missing: {sorted((expected & pack) - got)}"
    assert got <= expected | {"dot-cert-not-observable", "capture-incomplete"}, f"extra: {sorted(got - expected)}"
