"""Judge flows as they finish, instead of in two passes over the stored records afterwards.

Most of what the rules read depends on the flow and the policy alone: those facts are computed,
and every rule that reads nothing else is evaluated, while the flow's record is still in
memory.  A few correlations depend on flows not seen yet (CROSS_FACTS: a plaintext query after
the same client's DoT attempt failed; handshakes per client-server pair).  Rules reading them
run at the end, on the only records they can change:

- DoT attempts (their per-pair counts are final only at the end);
- plaintext-DNS flows of clients that had a failed DoT attempt (fallback candidates);
- any record on which such a rule already matches with the facts it has so far.

Every other record already holds its final facts, so it is neither read back nor rewritten.
The result equals ``pipeline.apply_rules`` over the stored flows (tests/rules/test_stream.py):
rules see the records in the same (storage) order, so aggregated findings keep the same sample.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from typing import Iterable, Optional

from dotaudit.flows.store import FlowStore
from dotaudit.rules.correlate import CROSS_FACTS, Correlator, _ip, is_dot_attempt
from dotaudit.rules.engine import Evaluator, RuleIndex, match_flow, rule_paths
from dotaudit.rules.model import Rule
from dotaudit.rules.policy import Policy

CROSS_PATHS = frozenset("correlations." + f for f in CROSS_FACTS)
SHARE = 0.7
"""Of the aggregates that are final when the last flow arrives, the share a judge process hands
to the parent process (which would only be waiting) to build."""


def detection_fields(rule: Rule) -> Optional[set[str]]:
    """Field paths the rule's detection reads; None when it reads values of any field (keywords)."""
    sigma = rule.sigma
    if sigma is None:
        return None
    fields: set[str] = set()
    stack = list(sigma.detection.detections.values())
    while stack:
        node = stack.pop()
        for item in getattr(node, "detection_items", ()):
            if hasattr(item, "detection_items"):
                stack.append(item)
            elif getattr(item, "field", None) is None:
                return None
            else:
                fields.add(item.field)
    return fields


def _touches_cross(path: str) -> bool:
    return path in CROSS_PATHS or any(c.startswith(path + ".") for c in CROSS_PATHS) or any(
        path.startswith(c + ".") for c in CROSS_PATHS)


def reads_cross_facts(rule: Rule) -> bool:
    """Does the rule (detection, evidence, message or related flows) read a cross-flow fact?"""
    fields = detection_fields(rule)
    if fields is None:
        return True
    return any(_touches_cross(p) for p in (*fields, *rule_paths(rule)))


class StreamJudge:
    """Receives each finished flow record (``add``), stores it, and judges it; ``finish``
    returns the findings.  ``store`` is where the records live (the report's ``flows``)."""

    def __init__(self, rules: Iterable[Rule], policy: Policy, store: Optional[FlowStore] = None):
        rules = list(rules)
        self.policy = policy
        self.store = store if store is not None else FlowStore()
        self.correlator = Correlator(policy)
        self.evaluator = Evaluator(rules, policy)
        flow_rules = [r for r in rules if r.category != "capture"]
        cross = [r for r in flow_rules if reads_cross_facts(r)]
        self.local_index = RuleIndex(r for r in flow_rules if r not in cross)
        self.cross_index = RuleIndex(cross)
        self.cross_names = frozenset(r.name for r in cross)
        self.has_cross = bool(cross)
        self.dot = array("q")                                     # positions of DoT attempts
        self.candidates: dict = defaultdict(lambda: array("q"))   # client -> fallback candidates
        self.early = array("q")   # positions where a cross-fact rule matches already

    def add(self, rec: dict) -> None:
        correlator = self.correlator
        correlator.annotate_local(rec)
        correlator.observe(rec)
        self.evaluator.add(rec, self.local_index)
        pos = self.store.add(rec)
        if not self.has_cross:
            return
        if is_dot_attempt(rec):
            self.dot.append(pos)
            return
        if correlator.fallback_candidate(rec):
            self.candidates[_ip(rec.get("client"))].append(pos)
        if match_flow(rec, self.cross_index):
            self.early.append(pos)

    def finish(self, report: dict, flow_findings=None):
        """Every finding, sorted (a store): ``flow_findings`` when a judge process made them."""
        if flow_findings is None:
            flow_findings = self.finish_flows()
        return self.evaluator.result(report, flow_findings)

    def finish_flows(self, share=None):
        """Cross-flow facts and the rules that read them; the findings on flows.  ``share``:
        hand most aggregates of the other rules (final already) to another process first
        (Evaluator.hand_out)."""
        if share is not None:
            cross = self.cross_names
            self.evaluator.hand_out(share, SHARE, lambda name: name not in cross)
        store = self.store
        if self.has_cross:
            todo = set(self.dot)
            todo.update(self.early)
            for client in self.correlator.failed_clients():
                todo.update(self.candidates.get(client, ()))
            correlator, evaluator, index = self.correlator, self.evaluator, self.cross_index
            for pos in sorted(todo):
                rec = store.get(pos)
                before = dict(rec["correlations"])
                correlator.annotate_cross(rec)
                evaluator.add(rec, index)
                if rec["correlations"] != before or not store.spilled:
                    store.replace(pos, rec)
        self.dot = self.early = None
        self.candidates = {}
        return self.evaluator.flow_findings()
