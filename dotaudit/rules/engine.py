"""Evaluate compiled rules over a report's flows (and its capture record); build findings.

``evaluate(report, rules, policy)`` runs the correlators first if the flows do not carry
``correlations`` yet, evaluates every ``flow`` rule on every flow (indexed by flow class),
every ``capture`` rule on one record built from ``inputs[]`` and ``stats``, and returns the
findings as JSON-ready dicts, deduplicated and sorted (severity desc, rule_id, flow id).
"""

from __future__ import annotations

import re
from sys import intern as _intern
from collections import defaultdict, deque
from functools import lru_cache
from itertools import islice
from typing import Any, Callable, Iterable, Optional

from dotaudit.findings import MAX_FLOW_IDS, MAX_FRAMES, Finding, Severity, finding_id, sort_key
from dotaudit.rules.compiler import _PLACEHOLDER, CompileError, MatcherSource, _walk, format_value, make_getter
from dotaudit.rules.correlate import correlate
from dotaudit.rules.model import Rule
from dotaudit.rules.policy import Policy
from dotaudit.spill import RecordStore, Spool, dumps

MAX_EVIDENCE_VALUES = 20


class RuleIndex:
    """Rules grouped once by the flow classes they can match; per class, one generated
    function that evaluates them all (made when a flow of the class first comes)."""

    __slots__ = ("by_class", "any_class", "capture", "matchers", "seen", "closures")

    def __init__(self, rules: Iterable[Rule]):
        self.by_class: dict[str, list[Rule]] = defaultdict(list)
        self.any_class: list[Rule] = []
        self.capture: list[Rule] = []
        self.matchers: dict[Any, Callable[[dict], list[Rule]]] = {}   # generated, per class
        self.seen: dict[Any, int] = {}                                  # flows per class until then
        self.closures: dict[Any, Callable[[dict], list[Rule]]] = {}
        flow_rules = []
        for rule in rules:
            if rule.category == "capture":
                self.capture.append(rule)
            elif rule.classes is None:
                self.any_class.append(rule)
            else:
                flow_rules.append(rule)
        for rule in flow_rules:
            for cls in rule.classes:
                if rule not in self.by_class[cls]:
                    self.by_class[cls].append(rule)

    def matcher(self, cls: Any) -> Callable[[dict], list[Rule]]:
        """The function returning the rules that fire on a flow of class ``cls``: those of the
        class (without their class test), then those of any class, in index order.  The rules'
        closures for the first GENERATE_AFTER flows of a class, then one generated function."""
        key = cls if cls.__class__ is str and cls in self.by_class else None
        found = self.matchers.get(key)
        if found is not None:
            return found
        seen = self.seen[key] = self.seen.get(key, 0) + 1
        if seen >= GENERATE_AFTER:
            return self._generated(key)
        found = self.closures.get(key)
        if found is None:
            found = self.closures[key] = _closures(self._class_rules(key), self.any_class)
        return found

    def _class_rules(self, key: Any) -> Iterable[Rule]:
        return self.by_class.get(key, ()) if key is not None else ()

    def _generated(self, key: Any) -> Callable[[dict], list[Rule]]:
        found = self.matchers[key] = _generate(self._class_rules(key), self.any_class)
        return found

    def unprepared(self, seen: bool = False) -> bool:
        """Is there a class whose function is not generated yet: one of the rules' classes (or
        the rest, None), or with ``seen`` one that a flow had (``matcher``)?"""
        if seen:
            return any(key not in self.matchers for key in self.seen)
        return len(self.matchers) < len(self.by_class) + 1

    def prepare(self) -> None:
        """Generate one class's function ahead of GENERATE_AFTER flows, those of the classes
        seen first: a judge process does it while no record waits (from the start, while the
        first packets are read), so the flows get it from the first (a class whose flows come
        only in the last burst of a capture would never reach GENERATE_AFTER)."""
        for key in (*self.seen, *self.by_class, None):
            if key not in self.matchers:
                self._generated(key)
                return


GENERATE_AFTER = 1000
"""Flows of a class matched with the rules' closures before its matcher is generated: making
it (Python's compile) costs about as much as it saves on a thousand flows."""


def _closures(class_rules: Iterable[Rule], any_rules: Iterable[Rule]) -> Callable[[dict], list[Rule]]:
    class_rules, any_rules = tuple(class_rules), tuple(any_rules)

    def match(flow: dict) -> list[Rule]:
        hits = [r for r in class_rules if r.match_indexed(flow)]
        for r in any_rules:
            if r.match(flow):
                hits.append(r)
        return hits

    return match


def _generate(class_rules: Iterable[Rule], any_rules: Iterable[Rule]) -> Callable[[dict], list[Rule]]:
    src = MatcherSource()
    body = ["hits = []"]
    for rules, indexed in ((class_rules, True), (any_rules, False)):
        for rule in rules:
            expr = None
            if rule.condition is not None:
                try:
                    expr = src.indexed(rule.condition, rule.classes) if indexed else src.condition(rule.condition)
                except CompileError:
                    expr = None
            if expr is None:   # a rule made without its tree: its closure
                expr = f"{src.const(rule.match_indexed if indexed else rule.match)}(d)"
            body += [f"if {expr}:", f"    hits.append({src.const(rule)})"]
    body.append("return hits")
    return src.function("match", body)


def match_flow(flow: dict, index: RuleIndex) -> list[Rule]:
    """The rules that fire on one flow (the hot path: one generated function per class)."""
    cls = flow.get("class")
    found = index.matchers.get(cls) if cls.__class__ is str else None
    if found is None:
        found = index.matcher(cls)
    return found(flow)


# -- capture record ---------------------------------------------------------------------------


def _first_number(d: Any, *keys: str) -> int:
    if not isinstance(d, dict):
        return 0
    for key in keys:
        v = d.get(key)
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, (int, float)):
            return int(v)
    return 0


def _count_errors(errors: Any) -> int:
    """Read errors of one input: entries ``{kind, count, ...}`` (capture.pcap) count ``count``
    times, any other entry once."""
    if not isinstance(errors, list):
        return 0
    return sum(_first_number(e, "count") or 1 if isinstance(e, dict) else 1 for e in errors)


def capture_record(report: dict) -> dict:
    """The one record ``category: capture`` rules see: {errors, truncated, evictions, kernel_drops}.

    - ``errors``: read errors of the inputs plus packets whose IP or transport header did not
      decode (``stats.packets.decode_errors``);
    - ``truncated``: an input ends inside a record, or packets were cut before the end of their
      transport header (``stats.packets.truncated_l4``);
    - ``evictions``: flows finished early because the flow table was full;
    - ``kernel_drops``: packets the capture dropped: the kernel's and the interface's counts of a
      live capture (``stats.capture``), the interface statistics of a pcapng input.

    Counters a report carries at the top of ``stats`` (hand-made reports) are read too."""
    inputs = [i for i in report.get("inputs") or [] if isinstance(i, dict)]
    stats = report.get("stats") if isinstance(report.get("stats"), dict) else {}
    packets = stats.get("packets") if isinstance(stats.get("packets"), dict) else {}
    flows_stats = stats.get("flows") if isinstance(stats.get("flows"), dict) else {}
    capture_stats = stats.get("capture") if isinstance(stats.get("capture"), dict) else {}
    errors = sum(_count_errors(i.get("errors")) for i in inputs)
    errors += _first_number(stats, "errors", "decode_errors") + _first_number(packets, "decode_errors")
    truncated = (any(bool(i.get("truncated")) for i in inputs) or bool(stats.get("truncated"))
                 or _first_number(packets, "truncated_l4") > 0)
    evictions = (_first_number(stats, "evictions", "flows_evicted", "evicted")
                 or _first_number(packets, "evicted")
                 or _first_number(flows_stats, "evictions", "evicted"))
    kernel_drops = (_first_number(stats, "kernel_drops", "dropped", "ps_drop")
                    or _first_number(capture_stats, "kernel_drops", "dropped", "ps_drop")
                    + _first_number(capture_stats, "if_drops")
                    or sum(_first_number(i, "interface_drops") for i in inputs))
    return {
        "class": "capture",
        "errors": errors,
        "truncated": truncated,
        "evictions": evictions,
        "kernel_drops": kernel_drops,
        "inputs": [i.get("path") for i in inputs],
        "first_ts": min((i["first_ts"] for i in inputs if i.get("first_ts") is not None), default=None),
        "last_ts": max((i["last_ts"] for i in inputs if i.get("last_ts") is not None), default=None),
    }


# -- findings ---------------------------------------------------------------------------------


def _frames(flow: dict) -> list[int]:
    out = []
    f = flow.get("first_frame")
    if isinstance(f, int):
        out.append(f)
    tcp = flow.get("tcp")
    if isinstance(tcp, dict):
        for key in ("syn_frame", "rst_frame"):
            if isinstance(tcp.get(key), int):
                out.append(tcp[key])
    tls = flow.get("tls")
    if isinstance(tls, dict):
        frames = tls.get("frames")
        if isinstance(frames, dict):
            out.extend(v for v in frames.values() if isinstance(v, int))
    dns = flow.get("dns")
    if isinstance(dns, dict) and isinstance(dns.get("frames_sample"), list):
        out.extend(v for v in dns["frames_sample"] if isinstance(v, int))
    return out


_SCALARS = (str, int, bool)   # equal values of these types have equal reprs (not so for floats: -0.0)


def _distinct(values: Iterable[Any]) -> list:
    """Values (list values flattened) without None and repeats, first seen first.  Two values
    are the same when their types and reprs are (1, 1.0 and True stay three values)."""
    out: list = []
    seen: set = set()
    for v in values:
        for item in (v if v.__class__ is list else (v,)):
            if item is None:
                continue
            cls = item.__class__
            key = (cls, item) if cls in _SCALARS else repr(item)
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out


def _endpoint(flows: list[dict], side: str) -> Optional[dict]:
    first = flows[0].get(side)
    if not isinstance(first, dict):
        return None
    ip, port = first.get("ip"), first.get("port")
    for f in flows[1:]:
        other = f.get(side) or {}
        if other.get("port") != port:
            port = None
        if other.get("ip") != ip:
            ip = None
    return {"ip": ip, "port": port}


_PLANS: dict = {}


def _plan(rule: Rule) -> tuple:
    """What ``draft_finding`` walks for ``rule``, built once: the message's first literal, then
    (kind, key, getter, literal) per placeholder (kind 0: count, 1: sum, 2: a flow value)."""
    plan = _PLANS.get(rule)
    if plan is None:
        render = rule.render_message
        steps = []
        for key, literal in zip(render.keys, render.literals[1:]):
            if key == "count":
                steps.append((0, key, None, literal))
            elif key.startswith("sum:"):
                steps.append((1, key, make_getter(key[4:]), literal))
            else:
                steps.append((2, key, make_getter(key), literal))
        plan = _PLANS[rule] = (render.literals[0], tuple(steps))
    return plan


def draft_finding(rule: Rule, flows: list[dict], record_is_capture: bool = False,
                  single: Optional[bool] = None) -> dict:
    """What a finding takes from its (sample) flows: evidence, endpoints, frames, time span, flow
    ids and the message with its totals (``{count}``, ``{sum:...}``) left open.  A JSON value:
    an aggregate keeps the draft of its sample in a spool, and ``finish_draft`` adds the totals
    at the end.  ``single``: the finding is about one flow (the default when ``flows`` has one)."""
    if single is None:
        single = len(flows) == 1
    first_literal, steps = _plan(rule)
    evidence: dict[str, Any] = {}
    distinct: dict[str, list] = {}   # path -> its distinct values over the flows
    if single:
        flow = flows[0]
        for field, get in rule.evidence_getters:
            evidence[field] = distinct[field] = get(flow)   # here: the value itself
    else:
        for field, get in rule.evidence_getters:
            values = distinct[field] = _distinct(get(f) for f in flows)
            evidence[field] = values[:MAX_EVIDENCE_VALUES]
    evidence["expected"] = rule.extras.evidence.expected

    msg: list = [first_literal]
    sums: dict[str, Any] = {}
    for kind, key, get, literal in steps:
        if kind == 2:
            if single:
                value = distinct[key] if key in distinct else get(flow)
            else:
                values = distinct.get(key)
                if values is None:
                    values = distinct[key] = _distinct(get(f) for f in flows)
                value = values[0] if len(values) == 1 else values
            if msg[-1].__class__ is str:
                msg[-1] = msg[-1] + format_value(value) + literal
            else:
                msg.append(format_value(value) + literal)
            continue
        if kind == 1 and key not in sums:
            sums[key] = sum(v for f in flows if isinstance(v := get(f), (int, float)) and not isinstance(v, bool))
        msg.append([key])
        msg.append(literal)

    flow_ids: list[int] = []
    if not record_is_capture:
        flow_ids = [f["id"] for f in flows if isinstance(f.get("id"), int)]
        if rule.related_getter is not None:
            for f in flows:
                rel = rule.related_getter(f)
                for r in rel if isinstance(rel, list) else [rel]:
                    if isinstance(r, int) and r not in flow_ids:
                        flow_ids.append(r)
        flow_ids.sort()
    firsts = [f["first_ts"] for f in flows if isinstance(f.get("first_ts"), (int, float))]
    lasts = [f["last_ts"] for f in flows if isinstance(f.get("last_ts"), (int, float))]
    return {
        "msg": msg,
        "sums": sums,
        "n": len(flows),
        "single": single,
        "evidence": evidence,
        "ids": flow_ids,
        "frames": sorted({fr for f in flows for fr in _frames(f)}) if not record_is_capture else [],
        "client": None if record_is_capture else _endpoint(flows, "client"),
        "server": None if record_is_capture else _endpoint(flows, "server"),
        "first_ts": min(firsts) if firsts else None,
        "last_ts": max(lasts) if lasts else None,
    }


def _totals(draft: dict, group: "Optional[_GroupTotals]") -> tuple[str, list, int, Any, Any]:
    """What the totals give a draft: (message, flow ids, count, first_ts, last_ts)."""
    count = group.count if group is not None else draft["n"]
    sums = draft["sums"]
    parts = []
    for piece in draft["msg"]:
        if piece.__class__ is str:
            parts.append(piece)
            continue
        key = piece[0]
        if key == "count":
            parts.append(format_value(count))
        elif group is not None and key in group.sums:
            parts.append(format_value(group.sums[key]))
        else:
            parts.append(format_value(sums[key]))
    flow_ids = draft["ids"]
    first_ts, last_ts = draft["first_ts"], draft["last_ts"]
    if group is not None:
        flow_ids = sorted(set(flow_ids) | set(group.ids))
        first_ts, last_ts = _span(first_ts, last_ts, group)
    else:
        flow_ids = list(flow_ids)
    return "".join(parts), flow_ids, count, first_ts, last_ts


def _span(first_ts: Any, last_ts: Any, group: "_GroupTotals") -> tuple[Any, Any]:
    """(first_ts, last_ts) widened to the aggregate's time span."""
    if group.first_ts is not None and (first_ts is None or group.first_ts < first_ts):
        first_ts = group.first_ts
    if group.last_ts is not None and (last_ts is None or group.last_ts > last_ts):
        last_ts = group.last_ts
    return first_ts, last_ts


def finish_draft(rule: Rule, draft: dict, group: "Optional[_GroupTotals]" = None) -> Finding:
    """The finding of ``draft_finding``'s draft; ``group`` holds the totals of an aggregate
    (count, sums, time span and flow ids over all its flows, the sample's included)."""
    message, flow_ids, count, first_ts, last_ts = _totals(draft, group)
    return Finding(
        rule_id=rule.name,
        title=rule.title,
        severity=Severity(rule.severity),
        observability=rule.observability,
        message=message,
        flow_ids=tuple(flow_ids),
        count=count,
        client=draft["client"],
        server=draft["server"],
        first_ts=first_ts,
        last_ts=last_ts,
        frames=tuple(draft["frames"]),
        evidence=draft["evidence"],
        references=rule.references,
        remediation=rule.remediation,
    )


def finish_dict(rule: Rule, draft: dict, group: "Optional[_GroupTotals]" = None) -> dict:
    """``finish_draft(rule, draft, group).to_dict()``, made directly (the judge process makes
    one per aggregate, sometimes more)."""
    message, flow_ids, count, first_ts, last_ts = _totals(draft, group)
    return _finding_dict(rule, message, flow_ids, count, draft["client"], draft["server"], first_ts, last_ts,
                         draft["frames"], draft["evidence"])


@lru_cache(maxsize=None)
def _severity(level: str) -> str:
    """``Severity(level).value``, once per level (a finding is made per aggregate, or more)."""
    return Severity(level).value


def _finding_dict(rule: Rule, message: str, flow_ids: list, count: int, client: Any, server: Any, first_ts: Any,
                  last_ts: Any, frames: Iterable[int], evidence: dict) -> dict:
    """A finding as ``Finding.to_dict`` gives it; ``flow_ids`` sorted."""
    out = {
        "id": finding_id(rule.name, flow_ids),
        "rule_id": rule.name,
        "title": rule.title,
        "severity": _severity(rule.severity),
        "observability": rule.observability,
        "flow_ids": flow_ids[:MAX_FLOW_IDS],
        "client": client,
        "server": server,
        "first_ts": first_ts,
        "last_ts": last_ts,
        "frames": list(frames)[:MAX_FRAMES],
        "message": message,
        "evidence": evidence,
        "references": list(rule.references),
        "remediation": rule.remediation,
        "count": count,
    }
    if len(flow_ids) > MAX_FLOW_IDS:
        out["flow_ids_total"] = len(flow_ids)
    return out


def _ids_of(flow: dict, related: Optional[Callable[[dict], Any]]) -> list[int]:
    """The flow's id and the ids of the flows ``related`` (a rule's ``related_flows``) names."""
    out = []
    fid = flow.get("id")
    if isinstance(fid, int):
        out.append(fid)
    if related is not None:
        rel = related(flow)
        out += [r for r in (rel if isinstance(rel, list) else [rel]) if isinstance(r, int)]
    return out


def finish_single(rule: Rule, flow: dict, group: "_GroupTotals") -> dict:
    """``finish_dict(rule, draft_finding(rule, [flow], single=True), group)`` for an aggregate
    of one flow (most are), made in one step: the common case of building a finding."""
    first_literal, steps = _plan(rule)
    evidence = {field: get(flow) for field, get in rule.evidence_getters}
    evidence["expected"] = rule.extras.evidence.expected
    parts = [first_literal]
    for kind, key, get, literal in steps:
        if kind == 2:
            parts.append(format_value(get(flow)))
        elif kind == 0:
            parts.append(format_value(group.count))
        elif key in group.sums:
            parts.append(format_value(group.sums[key]))
        else:
            v = get(flow)
            parts.append(format_value(0 + v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0))
        parts.append(literal)
    ids = set(group.ids)
    ids.update(_ids_of(flow, rule.related_getter))
    first_ts, last_ts = flow.get("first_ts"), flow.get("last_ts")
    first_ts, last_ts = _span(first_ts if isinstance(first_ts, (int, float)) else None,
                              last_ts if isinstance(last_ts, (int, float)) else None, group)
    one = [flow]
    return _finding_dict(rule, "".join(parts), sorted(ids), group.count, _endpoint(one, "client"),
                         _endpoint(one, "server"), first_ts, last_ts, sorted(set(_frames(flow))), evidence)


def build_finding(rule: Rule, flows: list[dict], record_is_capture: bool = False,
                  group: "Optional[_GroupTotals]" = None) -> Finding:
    """One finding for ``rule`` over one or more flows (several when aggregated per pair).

    ``group``, when given, holds the totals of an aggregated finding whose ``flows`` are only
    a sample (the first GROUP_SAMPLE flows): counts, sums, time span and flow ids.
    """
    single = len(flows) == 1 and (group is None or group.count == 1)
    return finish_draft(rule, draft_finding(rule, flows, record_is_capture, single), group)


def _pair_key(flow: dict) -> tuple:
    c, s = flow.get("client") or {}, flow.get("server") or {}
    cip, sip, tr = c.get("ip"), s.get("ip"), flow.get("transport")
    return (_intern(cip) if isinstance(cip, str) else cip, _intern(sip) if isinstance(sip, str) else sip,
            s.get("port"), _intern(tr) if isinstance(tr, str) else tr)


_SUM_KEY = re.compile(r"\{(sum:[^}]+)\}")


GROUP_SAMPLE = 3
"""An aggregated finding keeps this many (projected) flows for its evidence and message."""
REBUILD_EVERY_FLOW = 16
"""A judge process makes an aggregated finding again (while no record waits) after each new
flow of its pair up to this count, then when the count reaches a power of two: a gateway's
client may send thousands of queries to one resolver, and only the finding made at the end
stands (about 20 us each)."""
BASE_PATHS = ("id", "class", "transport", "first_ts", "last_ts", "client", "server", "first_frame",
              "tcp.syn_frame", "tcp.rst_frame", "tls.frames", "dns.frames_sample")
MAX_PROJECTED_LIST = 20


def rule_paths(rule: Rule) -> tuple[str, ...]:
    """Every flow field a finding of ``rule`` reads: evidence, message placeholders, ids, frames."""
    paths = list(BASE_PATHS)
    paths += list(rule.extras.evidence.fields) if rule.extras.evidence else []
    for key in _PLACEHOLDER.findall(getattr(rule.extras, "message", "") or ""):
        if key != "count" and not key.startswith("sum:"):
            paths.append(key)
    if rule.extras.related_flows:
        paths.append(rule.extras.related_flows)
    return tuple(dict.fromkeys(paths))


def projector(paths: tuple[str, ...]) -> Callable[[dict, Optional[int]], dict]:
    """``project`` for ``paths``, prepared once per rule: a path under another one is dropped
    (it is in that one's value), and the paths under one first-level key share its lookup."""
    given = set(paths)
    kept = [parts for parts in (tuple(p.split(".")) for p in paths)
            if not any(".".join(parts[:n]) in given for n in range(1, len(parts)))]
    singles = tuple(parts[0] for parts in kept if len(parts) == 1)
    nested: dict[str, list] = {}
    other = []
    for parts in kept:
        if len(parts) == 1:
            continue
        if len(parts) <= 3 and not any(p.isdigit() for p in parts):
            nested.setdefault(parts[0], []).append((parts[1], parts[2] if len(parts) == 3 else None, parts))
        else:
            other.append((parts, make_getter(".".join(parts))))
    nested_t = tuple((first, tuple(subs)) for first, subs in nested.items())
    other_t = tuple(other)

    def project(flow: dict, limit: Optional[int]) -> dict:
        out: dict = {}
        for key in singles:
            v = flow.get(key)
            if v is not None:
                if limit is not None and isinstance(v, list) and len(v) > limit:
                    v = v[:limit]
                out[key] = v
        for first, subs in nested_t:
            f = flow.get(first)
            cls = f.__class__
            if cls is not dict and cls is not list:
                continue
            node = None
            for b, c, parts in subs:
                if cls is dict:
                    v = f.get(b)
                    if c is not None:
                        vc = v.__class__
                        v = v.get(c) if vc is dict else (_walk(v, parts, 2) if vc is list else None)
                else:
                    v = _walk(f, parts, 1)
                if v is None:
                    continue
                if limit is not None and isinstance(v, list) and len(v) > limit:
                    v = v[:limit]
                if node is None:
                    node = out.setdefault(first, {})
                if c is None:
                    node[b] = v
                else:
                    inner = node.setdefault(b, {})
                    if isinstance(inner, dict):
                        inner[c] = v
        for parts, get in other_t:
            v = get(flow)
            if v is None:
                continue
            if limit is not None and isinstance(v, list) and len(v) > limit:
                v = v[:limit]
            node = out
            for p in parts[:-1]:
                node = node.setdefault(p, {})
                if not isinstance(node, dict):
                    break
            else:
                node[parts[-1]] = v
        return out

    return project


def project(flow: dict, paths, limit: Optional[int] = MAX_PROJECTED_LIST) -> dict:
    """A small copy of ``flow`` with only the ``projector``'s paths (lists cut at ``limit``
    items): what a finding needs."""
    return paths(flow, limit)


class _Group:
    """An aggregated (per client-server pair) finding in the making: a few counters and ids in
    memory, its sample flows (projected) in the evaluator's spool file."""

    __slots__ = ("sample", "count", "sums", "ids", "first_ts", "last_ts", "built", "draft", "fresh")

    def __init__(self, nsums: int):
        self.sample: list = []   # (offset, length) of projected flows in the spool
        self.fresh: Optional[dict] = None   # the first flow's projection, until it is written there
        self.count = 0
        self.built: Optional[tuple] = None   # sort key + spool reference of the finding, while count is 1
        self.draft: Optional[tuple] = None   # spool reference of the sample's draft_finding, from count 2
        self.sums = [0] * nsums if nsums else None
        self.ids: list[int] = []
        self.first_ts: Optional[float] = None
        self.last_ts: Optional[float] = None

    def add(self, flow: dict, spec: "_GroupSpec", keep: bool = False) -> bool:
        """Count ``flow`` in; True when it joins the sample.  ``keep``: a first flow's projection
        stays in memory (``fresh``) until the finding is made (``settle``): ``flow`` is a JSON
        value already, so the projection equals what the spool would give back."""
        self.count += 1
        if self.fresh is not None:
            self.settle(spec.spool)
        joined = len(self.sample) < GROUP_SAMPLE
        if joined:
            kept = spec.keep(flow, MAX_PROJECTED_LIST)
            if keep and self.count == 1:
                self.fresh = kept
            else:
                self.sample.append(spec.spool.put_raw(dumps(kept)))
        if len(self.ids) < 10 * MAX_FLOW_IDS:
            self.ids += _ids_of(flow, spec.related)
        if spec.sum_getters:
            sums = self.sums
            for i, get in enumerate(spec.sum_getters):
                v = get(flow)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    sums[i] += v
        ft, lt = flow.get("first_ts"), flow.get("last_ts")
        if isinstance(ft, (int, float)) and (self.first_ts is None or ft < self.first_ts):
            self.first_ts = ft
        if isinstance(lt, (int, float)) and (self.last_ts is None or lt > self.last_ts):
            self.last_ts = lt
        return joined

    def settle(self, spool: "Spool") -> Optional[dict]:
        """Write the projection ``add`` kept to the spool; return it (None if there was none)."""
        fresh = self.fresh
        if fresh is not None:
            self.sample.append(spool.put_raw(dumps(fresh)))
            self.fresh = None
        return fresh

    def totals(self, spec: "_GroupSpec") -> "_GroupTotals":
        return _GroupTotals(self.count, dict(zip(spec.sum_keys, self.sums or ())), self.ids, self.first_ts,
                            self.last_ts)


class _GroupSpec:
    """What every group of one rule shares."""

    __slots__ = ("sum_keys", "sum_getters", "paths", "projectable", "related", "spool")

    def __init__(self, rule: Rule, spool: "Spool"):
        self.sum_keys = _SUM_KEY.findall(getattr(rule.extras, "message", "") or "")
        self.sum_getters = [make_getter(k[4:]) for k in self.sum_keys]
        paths = rule_paths(rule)
        self.paths = projector(paths)
        self.projectable = not any(part.isdigit() for p in paths for part in p.split("."))
        self.related = rule.related_getter
        self.spool = spool

    def keep(self, flow: dict, limit: Optional[int]) -> dict:
        """What the rule's finding reads of ``flow``: its projection (lists cut at ``limit``),
        or the flow itself when a path goes through a list index (tls.certificates.0.subject),
        which the projection does not keep."""
        return self.paths(flow, limit) if self.projectable else flow


class _GroupTotals:
    __slots__ = ("count", "sums", "ids", "first_ts", "last_ts")

    def __init__(self, count, sums, ids, first_ts, last_ts):
        self.count, self.sums, self.ids, self.first_ts, self.last_ts = count, sums, ids, first_ts, last_ts


_ALONE = _GroupTotals(1, {}, (), None, None)
"""The totals of a finding on one flow that is no aggregate: those of the flow."""


def _group_draft(rule: Rule, draft: Optional[tuple], sample: list, get: Callable) -> dict:
    """An aggregate's draft: the one stored at ``draft``, else made from its ``sample`` (spool
    references of its first flows)."""
    if draft is not None:
        return get(draft)
    return draft_finding(rule, [get(ref) for ref in sample], single=len(sample) == 1)


def _group_finding(rule: Rule, draft: Optional[tuple], sample: list, get: Callable, totals: _GroupTotals,
                   fresh: Optional[dict] = None) -> dict:
    """An aggregate's finding (``_group_draft`` finished with its ``totals``); ``fresh``: the
    projection of its only flow, kept in memory (_Group.fresh)."""
    if fresh is not None:
        return finish_single(rule, fresh, totals)
    if totals.count == 1 and draft is None and len(sample) == 1:
        return finish_single(rule, get(sample[0]), totals)
    return finish_dict(rule, _group_draft(rule, draft, sample, get), totals)


class Evaluator:
    """Rules over a stream of flows: ``add`` each (correlated) flow, then ``findings``.

    Per-flow findings are built as flows go by; per-pair aggregates keep a bounded sample, so a
    capture with tens of thousands of plaintext DNS flows costs a few counters per pair.
    """

    def __init__(self, rules: list[Rule], policy: Policy):
        self.rules = rules
        self.policy = policy
        self.index = RuleIndex(rules)
        self.by_name = {r.name: r for r in rules}
        self.spool = Spool()
        self.specs = {r.name: _GroupSpec(r, self.spool) for r in rules}
        # the findings, in the spool beside the samples and drafts: a pair's finding made from
        # its only flow is indexed at the end as it stands, not copied
        self.findings = RecordStore(key=sort_key, spool=self.spool)
        self.groups: dict[tuple, _Group] = {}
        self.eager = True
        """Make each finding or draft as its flow arrives; else leave it in ``stale`` for
        ``work`` or the end."""
        self.stale: dict[tuple, None] = {}   # keys of the groups whose finding or draft is to be made
        self.singles: deque = deque()         # (rule, projected flow) of findings on one flow, to be made

    def add(self, flow: dict, index: Optional[RuleIndex] = None) -> None:
        """Evaluate every rule (or only those of ``index``) on one flow."""
        for rule in match_flow(flow, self.index if index is None else index):
            if rule.extras.aggregate == "pair":
                key = (rule.name,) + _pair_key(flow)
                group = self.groups.get(key)
                spec = self.specs[rule.name]
                if group is None:
                    group = self.groups[key] = _Group(len(spec.sum_keys))
                    group.add(flow, spec, not self.eager)
                else:
                    group.built = None
                    if group.add(flow, spec):
                        group.draft = None   # the sample changed
                    elif self.eager:
                        continue             # only the totals changed: they finish the draft at the end
                    elif group.count > REBUILD_EVERY_FLOW and group.count & (group.count - 1):
                        continue             # a large aggregate: made again at powers of two, and at the end
                if self.eager:
                    self._build(key, group, finish=False)
                else:
                    self.stale[key] = None
            elif self.eager:
                self.findings.add(finish_single(rule, flow, _ALONE))
            else:   # what the finding reads, kept until ``work`` or the end makes it
                self.singles.append((rule, self.specs[rule.name].keep(flow, None)))

    def _build(self, key: tuple, group: _Group, finish: bool) -> None:
        """A pair's finding from its first flow (most pairs see only one); with more flows, the
        draft of its sample and, when ``finish``, the finding with the totals so far (made
        again if more flows come; else it stands at the end)."""
        rule = self.by_name[key[0]]
        spool = self.spool
        if group.count == 1:
            built = _group_finding(rule, None, group.sample, spool.get, group.totals(self.specs[key[0]]),
                                   group.settle(spool))
        else:
            draft = _group_draft(rule, group.draft, group.sample, spool.get)
            # the draft is kept for the findings of later counts; while the sample is not full,
            # a later flow joins it and the draft is made again
            if group.draft is None and (not finish or len(group.sample) >= GROUP_SAMPLE):
                group.draft = spool.put(draft)
                if not finish:
                    return
            built = finish_dict(rule, draft, group.totals(self.specs[key[0]]))
        group.built = sort_key(built) + spool.put(built)

    def work(self, limit: int) -> bool:
        """Make up to ``limit`` of the findings ``add`` left for later (oldest first); whether
        any are left.  A judge process calls it while it waits for records, so the work is
        done while the packets are still being read, and what is left at the end is the
        aggregates the last flows changed."""
        stale, groups = self.stale, self.groups
        for key in list(islice(stale, limit)):
            del stale[key]
            self._build(key, groups[key], finish=True)
            limit -= 1
        singles, add = self.singles, self.findings.add
        for _ in range(min(limit, len(singles))):
            rule, flow = singles.popleft()
            add(finish_single(rule, flow, _ALONE))
        return self.pending()

    def pending(self) -> bool:
        """Are there findings ``add`` left for ``work``?"""
        return bool(self.stale or self.singles)

    def flow_findings(self) -> RecordStore:
        """The findings on flows (aggregates completed), not yet sorted."""
        findings = self.findings
        for rule, flow in self.singles:
            findings.add(finish_single(rule, flow, _ALONE))
        self.singles = deque()
        get = self.spool.get
        index = findings.index
        for key, group in self.groups.items():
            built = group.built
            if built is not None:
                index.append(built)
                continue
            name = key[0]
            rule = self.by_name[name]
            totals = group.totals(self.specs[name])
            # no flow can join now: a projection kept in memory need not be written
            findings.add(_group_finding(rule, group.draft, group.sample, get, totals, group.fresh))
        self.groups = {}
        self.stale = {}
        return findings

    def result(self, report: dict, flow_findings: Optional[RecordStore] = None) -> RecordStore:
        """All findings, sorted; a list-like store that spills to disk when large.
        ``flow_findings``: what ``flow_findings`` returned in a judge process."""
        if flow_findings is None:
            findings = self.flow_findings()
        else:
            findings = flow_findings
            findings.key = sort_key
            if findings.spool is not self.spool:
                self.spool.close()   # the judge process's spool holds the findings
        for finding in self.capture_findings(report):
            findings.add(finding)
        findings.sort()
        return findings

    def capture_findings(self, report: dict) -> list[dict]:
        """The capture rules' findings on ``report`` (its inputs and statistics: capture_record)."""
        if not self.index.capture:
            return []
        record = capture_record(report)
        return [build_finding(rule, [record], record_is_capture=True).to_dict()
                for rule in self.index.capture if rule.match(record)]


def evaluate(report: dict, rules: list[Rule], policy: Policy) -> list[dict]:
    """Findings for ``report`` (flows and capture record), deduplicated and sorted."""
    flows = [f for f in (report.get("flows") or []) if isinstance(f, dict)]
    if any("correlations" not in f or "policy" not in f for f in flows):
        correlate(flows, policy)
    ev = Evaluator(rules, policy)
    for flow in flows:
        ev.add(flow)
    return ev.result(report).to_list()
