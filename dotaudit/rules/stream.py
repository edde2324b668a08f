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
from heapq import merge
from typing import Iterable, Optional

from dotaudit.flows.store import FlowStore
from dotaudit.rules.correlate import CROSS_FACTS, Correlator, _ip, is_dot_attempt
from dotaudit.rules.engine import _SUM_KEY, BASE_PATHS, Evaluator, RuleIndex, match_flow, project, projector, rule_paths
from dotaudit.spill import Spool
from dotaudit.rules.model import Rule
from dotaudit.rules.policy import Policy

CROSS_PATHS = frozenset("correlations." + f for f in CROSS_FACTS)


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


def view_paths(rules: Iterable[Rule]) -> Optional[tuple[str, ...]]:
    """Every path the ``rules`` read to match a flow and build its finding, or None when a
    DoT attempt cannot be judged from such a view (a keyword search, a numeric path index)."""
    paths: dict[str, None] = dict.fromkeys(BASE_PATHS)
    for rule in rules:
        fields = detection_fields(rule)
        if fields is None:
            return None
        paths.update(dict.fromkeys(sorted(fields)))
        paths.update(dict.fromkeys(rule_paths(rule)))
        paths.update(dict.fromkeys(k[4:] for k in _SUM_KEY.findall(getattr(rule.extras, "message", "") or "")))
    if any(part.isdigit() for p in paths for part in p.split(".")):
        return None
    return tuple(paths)


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
        self.has_cross = bool(cross)
        self.dot = array("q")                                     # positions of DoT attempts
        # DoT attempts of a spilled store are judged at the end from a view (the paths the
        # cross-flow rules read) kept in a spool, with their pair's counts when they arrived:
        # a record is read back and rewritten only if later attempts of its pair changed them.
        paths = view_paths(cross) if cross else None
        self.view = projector(paths) if paths is not None else None
        self.views: Optional[Spool] = None
        self.view_at = array("q")                                 # positions, spool offsets, lengths
        self.view_off = array("q")
        self.view_len = array("q")
        self.candidates: dict = defaultdict(lambda: array("q"))   # client -> fallback candidates
        self.early = array("q")   # positions where a cross-fact rule matches already

    def add(self, rec: dict) -> None:
        correlator = self.correlator
        correlator.annotate_local(rec)
        correlator.observe(rec)
        self.evaluator.add(rec, self.local_index)
        dot = self.has_cross and is_dot_attempt(rec)
        counts = None
        if dot and self.view is not None:
            counts = correlator.pair_counts(rec)   # final unless a later attempt of the pair comes
            correlator.annotate_pair(rec, counts)
        pos = self.store.add(rec)
        if not self.has_cross:
            return
        if dot:
            if counts is not None and self.store.spilled:
                if self.views is None:
                    self.views = Spool()
                off, ln = self.views.put((counts, project(rec, self.view, None)))
                self.view_at.append(pos)
                self.view_off.append(off)
                self.view_len.append(ln)
            else:
                self.dot.append(pos)
            return
        if correlator.fallback_candidate(rec):
            self.candidates[_ip(rec.get("client"))].append(pos)
        if match_flow(rec, self.cross_index):
            self.early.append(pos)

    def unprepared(self, seen: bool = False) -> bool:
        """Is there a generated matcher to make (RuleIndex.prepare), or (unless ``seen``) are the
        trust anchors to load (Correlator.prepare)?"""
        if self.local_index.unprepared(seen) or self.cross_index.unprepared(seen):
            return True
        return not seen and not self.correlator.prepared()

    def defer(self) -> None:
        """From now on ``add`` only matches and counts; the findings are made by ``work`` (when
        no record waits) or at the end."""
        self.evaluator.eager = False

    def pending(self) -> bool:
        """Is there work for ``work``: findings ``add`` left (``defer``), matchers to generate?"""
        return self.evaluator.pending() or self.unprepared()

    def work(self, limit: int) -> None:
        """A judge process's work while no record waits: one generated matcher of a class a
        flow had (1-5 ms, once per class: every later flow of the class is matched faster),
        else up to ``limit`` of the findings ``add`` left, else one matcher of another class,
        else the trust anchors (5-10 ms, once)."""
        indexes = (self.local_index, self.cross_index)
        index = next((i for i in indexes if i.unprepared(seen=True)), None)
        if index is None:
            if self.evaluator.pending():
                self.evaluator.work(limit)
                return
            index = next((i for i in indexes if i.unprepared()), None)
        if index is not None:
            index.prepare()
        elif not self.correlator.prepared():
            self.correlator.prepare()

    def finish(self, report: dict, flow_findings=None):
        """Every finding, sorted (a store): ``flow_findings`` when a judge process made them."""
        if flow_findings is None:
            flow_findings = self.finish_flows()
        return self.evaluator.result(report, flow_findings)

    def judge_capture(self, report: dict, findings) -> None:
        """Add the capture rules' findings on ``report`` (its inputs and statistics) to
        ``findings`` (what ``finish_flows`` returned): a judge process makes them too, so the
        main process needs no rules of its own."""
        for finding in self.evaluator.capture_findings(report):
            findings.add(finding)

    def finish_flows(self):
        """Cross-flow facts and the rules that read them; the findings on flows."""
        store = self.store
        if self.has_cross:
            todo = set(self.dot)
            todo.update(self.early)
            for client in self.correlator.failed_clients():
                todo.update(self.candidates.get(client, ()))
            correlator, evaluator, index = self.correlator, self.evaluator, self.cross_index
            viewed = zip(self.view_at, self.view_off, self.view_len)
            for pos, off, ln in merge(((p, -1, 0) for p in sorted(todo)), viewed):
                if off < 0:   # the record itself
                    rec = store.get(pos)
                    before = dict(rec["correlations"])
                    correlator.annotate_cross(rec)
                    evaluator.add(rec, index)
                    if rec["correlations"] != before or not store.spilled:
                        store.replace(pos, rec)
                    continue
                counts, view = self.views.get((off, ln))
                final = correlator.pair_counts(view)
                if tuple(counts) != final:
                    rec = store.get(pos)
                    correlator.annotate_pair(rec, final)
                    store.replace(pos, rec)
                correlator.annotate_pair(view, final)
                evaluator.add(view, index)
        if self.views is not None:
            self.views.close()
            self.views = None
        self.dot = self.early = self.view_at = self.view_off = self.view_len = None
        self.candidates = {}
        return self.evaluator.flow_findings()
