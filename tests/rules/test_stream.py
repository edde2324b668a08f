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


@pytest.fixture(scope="module")
def gateway_flows(tmp_path_factory, stress_frames, write_pcap, policy):
    """Correlated flow records: a bundled gateway capture and thousands of synthetic DNS flows
    (many aggregates of one, two, three and more flows)."""
    from dotaudit.rules.correlate import correlate
    synthetic = write_pcap(tmp_path_factory.mktemp("deferred") / "gateway.pcap", stress_frames(seed=5, n=12000))
    flows = []
    for path in (ROOT / "pcaps" / "gateway" / "mixed.pcap", synthetic):
        infos, collector, table = run_files([str(path)], options_from_policy(policy))
        flows += assemble(infos, collector, table)["flows"].to_list()
    correlate(flows, policy)
    return flows


def _evaluated(flows, rules, policy, *, eager: bool, seed: int = 0) -> list[dict]:
    """Findings of an Evaluator fed ``flows``; deferred: ``work`` done at random moments."""
    import random

    from dotaudit.rules.engine import Evaluator

    ev = Evaluator(rules, policy)
    ev.eager = eager
    rnd = random.Random(seed)
    for flow in flows:
        ev.add(flow)
        if not eager and rnd.random() < 0.2:
            ev.work(rnd.randint(1, 5))
    return ev.result({}, ev.flow_findings()).to_list()


def test_deferred_findings_equal_eager_ones(gateway_flows, policy):
    """A judge process makes findings when it has time (Evaluator.work), or leaves them for the
    end: the findings are the same as made at once."""
    rules = load_rules()
    eager = _evaluated(gateway_flows, rules, policy, eager=True)
    assert len(eager) > 100 and any(f["count"] >= 3 for f in eager) and any(f["count"] == 2 for f in eager)
    for seed in (1, 2, 3):
        assert _evaluated(gateway_flows, rules, policy, eager=False, seed=seed) == eager


def test_work_makes_the_stale_findings_oldest_first(gateway_flows, policy):
    from dotaudit.rules.engine import REBUILD_EVERY_FLOW, Evaluator, _pair_key

    ev = Evaluator(load_rules(), policy)
    ev.eager = False
    for flow in gateway_flows[:2000]:
        ev.add(flow)
    stale = list(ev.stale)
    assert len(stale) > 10
    assert ev.work(5) is True
    assert list(ev.stale) == stale[5:]
    made = [ev.groups[k] for k in stale[:5]]
    assert all(g.built is not None and (g.draft is not None) == (g.count > 1) for g in made)
    while ev.work(100):
        pass
    assert not ev.stale
    assert all(g.built is not None for g in ev.groups.values())
    # a flow more: that pair's finding is to be made again, its draft stands (the sample is full)
    busy = next((k, g) for k, g in ev.groups.items() if 3 < g.count < REBUILD_EVERY_FLOW)
    flow = next(f for f in gateway_flows[:2000] if (busy[0][0],) + _pair_key(f) == busy[0])
    ev.add(flow)
    assert busy[0] in ev.stale and busy[1].built is None and busy[1].draft is not None
    # a large aggregate is made again only when its count reaches a power of two; the end makes
    # it with the final totals
    key, big = max(ev.groups.items(), key=lambda kv: kv[1].count)
    assert big.count > REBUILD_EVERY_FLOW
    flow = next(f for f in gateway_flows[:2000] if (key[0],) + _pair_key(f) == key)
    while ev.work(100):
        pass
    while (big.count + 1) & big.count:   # the next count is not a power of two
        ev.add(flow)
        assert key not in ev.stale and big.built is None
    ev.add(flow)
    assert key in ev.stale
    while ev.work(100):
        pass
    assert big.built is not None
    final = big.count + 1
    ev.add(flow)
    assert key not in ev.stale and big.built is None
    findings = [f for f in ev.flow_findings() if f["rule_id"] == key[0] and f["count"] == final]
    assert len(findings) == 1


def test_finish_dict_is_the_findings_dict(gateway_flows, policy):
    """engine.finish_dict (made directly, in the judge process) equals finish_draft's Finding as
    a dict, for single flows, samples, and totals beyond the id cap."""
    from dotaudit.rules.engine import _GroupTotals, draft_finding, finish_dict, finish_draft, match_flow, RuleIndex

    rules = load_rules()
    index = RuleIndex(rules)
    seen = 0
    for i, flow in enumerate(gateway_flows[:3000]):
        for rule in match_flow(flow, index):
            flows = [flow] + [f for f in gateway_flows[i + 1:i + 3] if rule.match(f)]
            draft = draft_finding(rule, flows, single=len(flows) == 1)
            totals = _GroupTotals(250, {k: 1.5 for k in draft["sums"]}, list(range(1000, 1250)), 1.0, 2e9)
            for group in (None, totals):
                assert finish_dict(rule, draft, group) == finish_draft(rule, draft, group).to_dict()
            seen += 1
    assert seen > 500


# -- the generated code of the hot path equals what it replaces ---------------------------------


def _old_project(flow: dict, paths: tuple[str, ...], limit) -> dict:
    """engine.project as it was: one getter per path, walked in order (but a path under another
    one is skipped: it wrote into the record's own value, the same value or, for a list over
    ``limit``, a cut copy into the record)."""
    from dotaudit.rules.compiler import make_getter
    out: dict = {}
    given = set(paths)
    for path in paths:
        if any(path.startswith(other + ".") for other in given):
            continue
        value = _getter(path, make_getter)(flow)
        if value is not None:
            cut = limit is not None and isinstance(value, list) and len(value) > limit
            _place(out, path.split("."), value[:limit] if cut else value)
    return out


def _place(node: dict, parts: list[str], value) -> None:
    if len(parts) == 1:
        node[parts[0]] = value
    elif isinstance(child := node.setdefault(parts[0], {}), dict):
        _place(child, parts[1:], value)


_GETTERS: dict = {}


def _getter(path, make_getter):
    if path not in _GETTERS:
        _GETTERS[path] = make_getter(path)
    return _GETTERS[path]


def _variants(flow: dict, paths, rng) -> list[dict]:
    """``flow`` and copies where one of ``paths`` holds another kind of value."""
    import copy
    kinds = [None, [], ["x", None, 7], "X", 0, 3.5, True, False, {"a": 1}, [{"version": "TLS 1.0"}],
             list(range(30))]
    out = [flow]
    for path in rng.sample(sorted(paths), min(12, len(paths))):
        f = copy.deepcopy(flow)
        node = f
        parts = path.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = rng.choice(kinds)
        out.append(f)
    return out


@pytest.fixture(scope="module")
def bundled_flows(policy):
    from dotaudit.rules.correlate import correlate
    infos, collector, table = run_files([str(p) for p in BUNDLED if "public" not in p.parts],
                                        options_from_policy(policy))
    flows = assemble(infos, collector, table)["flows"]
    flows = flows if isinstance(flows, list) else flows.to_list()
    correlate(flows, policy)
    return flows


def test_generated_matchers_equal_the_rules_closures(bundled_flows, policy):
    """Per flow class, the generated matcher returns the rules (and order) the rules' own
    closures return, on every flow of the bundled captures and on variants of them whose fields
    hold other kinds of values."""
    import random

    from dotaudit.rules.engine import RuleIndex, _closures, _generate
    from dotaudit.rules.stream import StreamJudge

    rng = random.Random(7)
    rules = load_rules()
    judge = StreamJudge(rules, policy)
    paths = {path for r in rules if r.condition is not None for path in _fields(r.condition)}
    checked = 0
    for index in (RuleIndex(rules), judge.local_index, judge.cross_index):
        pairs = {cls: (_generate(index.by_class[cls], index.any_class), _closures(index.by_class[cls], index.any_class))
                 for cls in index.by_class}
        pairs[None] = (_generate((), index.any_class), _closures((), index.any_class))
        for flow in bundled_flows:
            for f in _variants(flow, paths, rng):
                for cls, (generated, closures) in pairs.items():
                    if cls is not None and f.get("class") != cls:
                        f = dict(f, **{"class": cls})
                    assert generated(f) == closures(f)
                    checked += 1
    assert checked > 10000


def _fields(node) -> set[str]:
    found, stack = set(), [node]
    while stack:
        n = stack.pop()
        if getattr(n, "field", None):
            found.add(n.field)
        stack.extend(getattr(n, "args", ()) or ())
    return found


def test_projection_equals_one_getter_per_path(bundled_flows):
    """engine.projector (paths grouped under their first key) gives what walking each path
    gives, for every rule's paths and the cross-flow view, on the bundled flows and variants."""
    import random

    from dotaudit.rules.engine import projector, rule_paths
    from dotaudit.rules.stream import view_paths

    rng = random.Random(11)
    rules = load_rules()
    path_sets = [rule_paths(r) for r in rules]
    path_sets.append(view_paths([r for r in rules if reads_cross_facts(r)]))
    path_sets.append(("tls", "tls.version", "client.ip", "client", "tls.certificates.subject",
                      "tls.certificates.0.key_bits", "a.b.c.d", "dns.qnames"))
    every = {p for paths in path_sets for p in paths}
    flows = [f for flow in rng.sample(bundled_flows, min(30, len(bundled_flows)))
             for f in _variants(flow, every, rng)]
    for paths in path_sets:
        project = projector(paths)
        for f in flows:
            for limit in (20, None):
                assert project(f, limit) == _old_project(f, paths, limit)


def test_finding_of_one_flow_equals_the_draft_path(bundled_flows):
    """finish_single (a finding from one flow, in one step) gives what draft_finding then
    finish_dict give, for each rule on every flow it matches (and variants), with the totals of
    an aggregate of that flow or none."""
    import random

    from dotaudit.rules.engine import (
        _ALONE, _GroupSpec, _GroupTotals, build_finding, draft_finding, finish_dict, finish_single, project,
    )
    from dotaudit.spill import Spool

    rng = random.Random(3)
    rules = [r for r in load_rules() if r.category == "flow"]
    spool = Spool()
    checked = 0
    for rule in rules:
        spec = _GroupSpec(rule, spool)
        paths = {f for f in rule.extras.evidence.fields}
        for flow in bundled_flows:
            for f in _variants(flow, paths, rng)[:3]:
                if not rule.match(f):
                    continue
                assert finish_single(rule, f, _ALONE) == build_finding(rule, [f]).to_dict()
                sample = project(f, spec.paths)
                ids = [f["id"]] if isinstance(f.get("id"), int) else []
                sums = {k: rng.choice([0, 1, 2.5, -0.0]) for k in spec.sum_keys}
                totals = _GroupTotals(1, sums, ids + rng.choice([[], [10**6]]), rng.choice([None, 1.0]),
                                      rng.choice([None, 2e9]))
                assert finish_single(rule, sample, totals) == finish_dict(
                    rule, draft_finding(rule, [sample], single=True), totals)
                checked += 1
    spool.close()
    assert checked > 100


def test_idle_time_generates_the_matchers_before_the_flows_come(bundled_flows, policy):
    """A judge process generates the matchers of the rules' classes, and loads the trust
    anchors' subjects, while no record waits (RecordSink.work), from before the first flow,
    long before GENERATE_AFTER flows; the rules that fire stay the same."""
    import copy

    from dotaudit.rules.engine import GENERATE_AFTER, match_flow
    from dotaudit.rules.stream import StreamJudge
    from dotaudit.sink import RecordSink

    rules = load_rules()
    flows = bundled_flows
    classes = {f.get("class") for f in flows}
    assert len(flows) < GENERATE_AFTER and {"dot", "do53"} <= classes
    plain = StreamJudge(rules, policy)
    sink = RecordSink(StreamJudge(rules, policy), defer=True)
    judge = sink.judge
    assert sink.pending() and not judge.local_index.matchers
    made = 0
    while sink.pending():   # the idle time before the first record
        sink.work()
        made += 1
    local, cross = judge.local_index, judge.cross_index
    assert made == len(local.matchers) + len(cross.matchers) + 1   # + the trust anchors
    assert judge.correlator.prepared() and not judge.unprepared()
    assert set(local.matchers) == set(local.by_class) | {None}
    assert set(cross.matchers) == set(cross.by_class) | {None}
    for f in flows:
        sink.add(copy.deepcopy(f))
        while sink.pending():
            sink.work()
    assert not plain.local_index.matchers and not local.seen   # every flow had its generated matcher
    for f in flows:
        f = copy.deepcopy(f)
        assert match_flow(f, local) == match_flow(f, plain.local_index)
        assert match_flow(f, cross) == match_flow(f, plain.cross_index)


def test_idle_time_generates_a_seen_class_matcher_before_findings(bundled_flows, policy):
    """A flow of a class without its matcher comes while findings wait: the next idle moment
    generates that matcher first (every later flow of the class is matched faster); the
    findings come after."""
    import copy

    from dotaudit.rules.stream import StreamJudge
    from dotaudit.sink import RecordSink

    sink = RecordSink(StreamJudge(load_rules(), policy), defer=True)
    judge = sink.judge
    dot = next(f for f in bundled_flows if f.get("class") == "dot")
    sink.add(copy.deepcopy(dot))
    assert judge.unprepared(seen=True) and judge.evaluator.pending()
    sink.work()
    assert "dot" in judge.local_index.matchers and judge.evaluator.pending()
    while judge.unprepared(seen=True):
        sink.work()
    sink.work()
    assert not judge.evaluator.pending()


@pytest.mark.parametrize("aggregate", [True, False])
def test_findings_read_list_index_paths_from_the_flow(aggregate, policy):
    """A rule whose evidence and message read a path through a list index
    (tls.certificates.1.subject) gets the flow's value, whether its finding is made at once,
    later from what was kept (a judge process), or from an aggregate's sample."""
    import textwrap

    from dotaudit.rules.engine import Evaluator
    from dotaudit.rules.loader import parse_rule
    from tests.factories import make_tls12_flow

    text = textwrap.dedent(f"""\
        title: t
        name: t
        id: 11111111-2222-4333-8444-555555555555
        status: experimental
        level: low
        logsource: {{product: dotaudit, category: flow}}
        remediation: r
        observability: observed
        evidence: {{fields: [tls.certificates.1.subject, tls.version], expected: e}}
        message: "issuer {{tls.certificates.1.subject}} ({{count}})"
        {"aggregate: pair" if aggregate else ""}
        detection:
          s: {{class: dot}}
          condition: s
        """)
    r = parse_rule(text)
    flows = [make_tls12_flow("rsa-cbc", id=i, client__port=40000 + i) for i in (1, 2)]
    want = flows[0]["tls"]["certificates"][1]["subject"]
    assert want
    results = []
    for eager in (True, False):
        ev = Evaluator([r], policy)
        ev.eager = eager
        for f in flows:
            ev.add(f)
        while ev.work(3):
            pass
        results.append(ev.result({}).to_list())
    assert results[0] == results[1]
    assert len(results[0]) == (1 if aggregate else 2)
    for f in results[0]:
        assert f["evidence"]["tls.certificates.1.subject"] == ([want] if aggregate else want)
        assert f"issuer {want}" in f["message"]
