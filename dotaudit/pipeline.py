"""source -> decode -> flows -> analyzers -> records -> correlate -> rules -> report dict.

``audit(paths)`` is the whole offline job; the CLI, the rule tests and the live mode call it
(or its pieces).  The returned dict is the JSON report (docs/flow-record.md, DESIGN.md).
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
import sys
from contextlib import nullcontext
from typing import Iterable, Optional, Sequence

from . import SCHEMA_VERSION, __version__
from .capture import fast
from .capture.pcap import CaptureError, CaptureInfo, iter_capture
from .findings import severities
from .flows.classify import CLASSES
from .flows.flow import Flow
from .flows.record import AnalysisOptions, build_record
from .flows.store import FlowStore
from .flows.table import FlowTable
from .latency import LatencyStats
from . import sink as _sink

SEVERITIES = ("critical", "high", "medium", "low", "info")
GC_THRESHOLD = 50_000
PROGRESS_EVERY = 16384
# glibc malloc: the heap is not given back to the kernel (trimmed) until this much is free at
# its top, grows in steps of TOP_PAD, and blocks up to MMAP_THRESHOLD come from it rather than
# from mmap.  An audit allocates and frees records, their JSON and read buffers at a steady
# rate; with glibc's defaults the freed top of the heap goes back to the kernel and the next
# records fault the same pages in again, which on a virtual machine costs 5-10% of an audit.
HEAP_TRIM_THRESHOLD = 64 << 20
HEAP_TOP_PAD = 1 << 20
HEAP_MMAP_THRESHOLD = 32 << 20
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3   # mallopt parameters (malloc.h)


class Collector:
    """Receives finished flows from the table and keeps their records and class counts.

    With a ``sink`` (sink.py: in this process or in a judge process), the records go there for
    statistics, storage and rules; ``finish`` collects the results.  Without, they are kept
    here (the live mode)."""

    def __init__(self, options: AnalysisOptions, sink=None):
        self.options = options
        self.sink = sink
        self.records = FlowStore() if sink is None else None
        self.latency = LatencyStats() if sink is None else None
        self.flow_findings = None
        self.capture_judged = False   # flow_findings holds the capture rules' findings too
        self.latency_json = None   # stats.latency made ahead (report/json.prerender), if it was
        self.damage = [0, 0, 0]   # malformed DNS messages, broken DNS/TCP framings, flows with bad TLS
        self.by_class: dict[str, int] = {c: 0 for c in CLASSES}
        self.capture_end_ts = 0.0

    def __call__(self, flow: Flow) -> None:
        rec = build_record(flow, self.options, self.capture_end_ts)
        flow.release()
        self.by_class[flow.cls] = self.by_class.get(flow.cls, 0) + 1
        if rec is not None:
            dns, tls = rec["dns"], rec["tls"]
            if dns:
                self.damage[0] += dns["malformed"]
                self.damage[1] += dns["tcp_length_errors"]
            if tls and tls.get("malformed"):
                self.damage[2] += 1
            if self.sink is not None:
                self.sink.add(rec)
            else:
                self.latency.add(rec)
                self.records.add(rec)

    def mark_tail(self) -> None:
        """The flows from now on are those still open at the end (sink.RecordSink.mark_tail)."""
        if self.sink is not None:
            self.sink.mark_tail()

    def finish(self, capture: Optional[dict] = None) -> None:
        """``capture``: the inputs and packet statistics of the report (capture_view), for the
        capture rules, which a sink with a judge evaluates with the rest."""
        if self.sink is not None:
            self.records, self.latency, self.flow_findings = self.sink.finish(capture)
            self.capture_judged = capture is not None and self.flow_findings is not None
            self.latency_json = self.sink.latency_json
            self.sink = None

    def abort(self) -> None:
        if self.sink is not None and hasattr(self.sink, "abort"):
            self.sink.abort()
        self.sink = None


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, \
        TransferSpeedColumn
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), transient=True, console=None)


def make_sink(judge=None, *, fork: bool | None = None):
    """The record sink of an offline audit: a judge process when there is a second CPU."""
    if fork is None:
        fork = _sink.can_fork()
    return _sink.ProcessSink(judge) if fork else _sink.RecordSink(_sink.judge_of(judge))


def keep_heap() -> bool:
    """Keep freed memory in the process (glibc's mallopt, see HEAP_TRIM_THRESHOLD) for the rest
    of its life: an offline audit, which exits when its report is written.  The peak memory is
    the same; the process no longer shrinks before it exits.  False where there is no glibc."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD), (_M_TOP_PAD, HEAP_TOP_PAD),
        (_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)))


def run_files(paths: Sequence[str], options: AnalysisOptions, *, progress: bool = False, judge=None,
              fork: bool | None = None) -> tuple[list[CaptureInfo], Collector, FlowTable]:
    """Stream every capture through one flow table (``judge``: evaluate rules as flows finish;
    ``fork``: in a second process, default when there is a second CPU)."""
    # Records are nests of dicts and lists: with the default threshold (700 allocations) the
    # cyclic collector runs every few records and costs about 10% of an audit; the few cycles
    # there are (a flow's analyzers, released when it finishes) wait a little longer.
    threshold = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, 20, 100)
    collector = Collector(options, make_sink(judge, fork=fork))
    try:
        return _run_files(paths, options, collector, progress)
    except BaseException:
        collector.abort()
        raise
    finally:
        gc.set_threshold(*threshold)


def _run_files(paths, options, collector: Collector, progress: bool):
    table = FlowTable(collector, count_other=options.all_flows)
    scanner = None
    if table.fast_other and fast.available():
        scanner = fast.Scanner(table.max_flows + 1)
        table.attach_scanner(scanner)
    infos: list[CaptureInfo] = []
    with _progress(progress) as bar:
        for index, path in enumerate(paths):
            if scanner is not None:
                scanner.reset(index)
            info, packets, hasher = iter_capture(path, scanner)
            info.path = path
            infos.append(info)
            try:
                _read_input(index, path, info, packets, hasher, table, collector, scanner, bar)
            finally:
                hasher.close()   # also when the input turns out not to be a capture
    collector.mark_tail()
    table.finish_all()
    if scanner is not None:
        scanner.close()
        table.scanner = None
    collector.finish(capture_view(infos, table))
    return infos, collector, table


def packet_stats(table: FlowTable) -> dict:
    """The report's ``stats.packets``."""
    st = table.stats.to_json()
    st["fragments_dropped"] = table.defrag.dropped
    return st


def capture_view(infos: list[CaptureInfo], table: FlowTable) -> dict:
    """What the capture rules read of the report (rules/engine.capture_record): its inputs and
    packet statistics, known once the capture is read."""
    return {"inputs": [i.to_json() for i in infos], "stats": {"packets": packet_stats(table)}}


def _read_input(index, path, info, packets, hasher, table, collector, scanner, bar) -> None:
    """Every packet of one input through the flow table; the input's totals into ``info``."""
    table.new_input(index)
    total = None
    if path != "-":
        try:
            total = os.path.getsize(path)
        except OSError:
            total = None
    task = bar.add_task(os.path.basename(path) if path != "-" else "stdin", total=total) if bar else None
    tpacket = table.packet
    n = 0
    nbytes = 0
    lo = float("inf")
    hi = float("-inf")
    if scanner is not None:
        # the scanner numbers the frames and accounts the records it keeps to itself
        for ts, linktype, data, wirelen in packets:
            collector.capture_end_ts = scanner.hi
            tpacket(ts, linktype, data, scanner.frame)
            n += 1
            if bar is not None and not n % PROGRESS_EVERY:
                bar.update(task, completed=hasher.size)
        n, nbytes, lo, hi, _muted = scanner.totals()
        if n:
            collector.capture_end_ts = hi
        packets = ()
    for ts, linktype, data, wirelen in packets:
        n += 1
        nbytes += wirelen
        if ts < lo:
            lo = ts
        if ts > hi:
            hi = ts
            collector.capture_end_ts = ts
        tpacket(ts, linktype, data, n)
        if bar is not None and not n % PROGRESS_EVERY:
            bar.update(task, completed=hasher.size)
    hasher.drain()
    info.packets = n
    info.bytes = nbytes
    info.first_ts = lo if n else None   # earliest and latest: interfaces interleave
    info.last_ts = hi if n else None
    info.sha256 = hasher.hexdigest()
    table.stats.packets += n
    info.size = hasher.size
    if bar is not None:
        bar.update(task, completed=hasher.size)


def assemble(infos: list[CaptureInfo], collector: Collector, table: FlowTable) -> dict:
    """The report dict without findings: inputs, flows (numbered), summary, stats, skipped."""
    records = collector.records
    records.number()
    st = packet_stats(table)
    dns_malformed, dns_tcp_errors, tls_malformed = collector.damage
    skipped = []
    for idx, info in enumerate(infos):
        for err in info.errors.values():
            skipped.append({"reason": err["kind"], "count": err["count"], "input": idx, "detail": err["message"]})
    if st["decode_errors"]:
        skipped.append({"reason": "malformed-ip-or-transport", "count": st["decode_errors"], "input": None,
                        "detail": "packets whose IP or TCP/UDP header is malformed"})
    if st["truncated_l4"]:
        skipped.append({"reason": "truncated-transport-header", "count": st["truncated_l4"], "input": None,
                        "detail": "packets cut before the end of their TCP/UDP header"})
    if dns_malformed:
        skipped.append({"reason": "malformed-dns-message", "count": dns_malformed, "input": None,
                        "detail": "DNS messages that did not parse; the rest of their flows was analysed"})
    if dns_tcp_errors:
        skipped.append({"reason": "dns-tcp-framing", "count": dns_tcp_errors, "input": None,
                        "detail": "DNS-over-TCP streams whose length framing broke; analysis of that direction stopped"})
    if tls_malformed:
        skipped.append({"reason": "malformed-tls", "count": tls_malformed, "input": None,
                        "detail": "flows with a malformed TLS record or handshake message (marked on the flow)"})
    if st["fragments_dropped"]:
        skipped.append({"reason": "incomplete-ip-fragments", "count": st["fragments_dropped"], "input": None,
                        "detail": "fragmented datagrams never completed"})
    if st["evicted"]:
        skipped.append({"reason": "flow-table-full", "count": st["evicted"], "input": None,
                        "detail": "flows finished early because the flow table was full"})
    skipped.sort(key=lambda s: (s["reason"], -1 if s["input"] is None else s["input"]))
    flows_by_class = {k: v for k, v in sorted(collector.by_class.items())}
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "dotaudit", "version": __version__},
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [i.to_json() for i in infos],
        "summary": {
            "flows_by_class": flows_by_class,
            "flows_listed": len(records),
            "findings_by_severity": {s: 0 for s in SEVERITIES},
            "verdict": None,
        },
        "flows": records,
        "findings": [],
        "stats": {"packets": st, "latency": collector.latency_json or collector.latency.to_json()},
        "skipped": skipped,
    }


def verdict(findings: Iterable[dict], flows_by_class: dict) -> str:
    return _verdict({f["severity"] for f in findings}, flows_by_class)


def _verdict(sev: set, flows_by_class: dict) -> str:
    if "critical" in sev or "high" in sev:
        return "fail"
    if "medium" in sev:
        return "warn"
    dnsish = sum(v for k, v in flows_by_class.items() if k != "other")
    if not dnsish:
        return "no-dns-observed"
    return "pass"


def audit(paths: Sequence[str], *, policy=None, rules=None, options: AnalysisOptions | None = None,
          progress: bool = False, evaluate_rules: bool = True) -> dict:
    """Audit capture files; return the JSON report as a dict.  Raises CaptureError (exit 3)."""
    if options is None:
        options = options_from_policy(policy)
    judge = make_judge(policy, rules) if evaluate_rules else None
    infos, collector, table = run_files(paths, options, progress=progress, judge=judge)
    report = assemble(infos, collector, table)
    if judge is not None:
        finish_rules(report, judge, collector.flow_findings, collector.capture_judged)
    finalize_summary(report)
    for key in ("flows", "findings"):
        store = report[key]
        if not isinstance(store, list):
            report[key] = store.to_list()
            store.close()
    return report


def options_from_policy(policy, *, all_flows: bool = False) -> AnalysisOptions:
    """What the analyzers take from the policy: trust anchors and the time certificates are judged at."""
    from .rules.policy import load_policy
    from .tls.certs import TrustConfig

    if policy is None:
        policy = load_policy(None)
    trust = TrustConfig(anchors=tuple(policy.trust_anchors or ()), system_trust=policy.system_trust)
    reference_time = None
    rt = policy.reference_time
    if rt not in (None, "capture"):
        if rt == "now":
            reference_time = _dt.datetime.now(_dt.timezone.utc).timestamp()
        elif isinstance(rt, (int, float)):
            reference_time = float(rt)
        else:
            d = rt if isinstance(rt, _dt.datetime) else _dt.datetime.fromisoformat(str(rt))
            if d.tzinfo is None:
                d = d.replace(tzinfo=_dt.timezone.utc)
            reference_time = d.timestamp()
    return AnalysisOptions(reference_time=reference_time, trust=trust, all_flows=all_flows)


def make_judge(policy=None, rules=None):
    """A StreamJudge for run_files: rules evaluated while the flows finish (rules/stream.py)."""
    from .rules.loader import load_rules
    from .rules.policy import load_policy
    from .rules.stream import StreamJudge

    if policy is None:
        policy = load_policy(None)
    if rules is None:
        rules = load_rules(disabled=getattr(policy, "disabled_rules", ()) or ())
    return StreamJudge(rules, policy)


class LazyJudge:
    """``make_judge(policy, rules)``, made when first asked for (``get``); ``rules`` are
    ``load_rules(rule_dirs, disabled)`` unless given.

    ``audit`` hands one to the judge process, which makes it (and, when the rule directories'
    parsed-rule caches showed the set valid, loads the rules: ``rules_cached``) while the first
    packets are read, and judges the capture record too; the main process then never loads
    pySigma or the rules, unless it writes junit (a test case per rule) or there was no judge
    process.  ``sink.judge_of`` gives the judge of either kind."""

    def __init__(self, policy, rule_dirs=(), disabled=(), rules=None):
        self.policy = policy
        self.rule_dirs = tuple(rule_dirs)
        self.disabled = frozenset(disabled)
        self.rules = rules
        self._judge = None

    def get(self):
        if self._judge is None:
            from .rules.loader import load_rules
            rules = self.rules if self.rules is not None else load_rules(self.rule_dirs, self.disabled)
            self._judge = make_judge(self.policy, rules)
        return self._judge


def finish_rules(report: dict, judge, flow_findings=None, capture_judged: bool = False) -> None:
    """Cross-flow facts and the rules reading them, then the findings, into ``report``.
    ``flow_findings``: the flow findings a judge process already made (Collector.flow_findings);
    ``capture_judged``: with the capture rules' findings (Collector.capture_judged), so the rules
    are not needed here (``judge`` may be a LazyJudge that is never made in this process)."""
    if capture_judged:
        flow_findings.sort()   # a store keyed by findings.sort_key (Evaluator, sink._adopt_record_store)
        report["findings"] = flow_findings
    else:
        report["findings"] = _sink.judge_of(judge).finish(report, flow_findings)
    report["policy"] = policy_summary(judge.policy)


def apply_rules(report: dict, *, policy=None, rules=None) -> None:
    """Correlate (two streaming passes over the flows), then evaluate every rule once per flow."""
    from .rules.correlate import Correlator
    from .rules.engine import Evaluator
    from .rules.loader import load_rules
    from .rules.policy import load_policy

    if policy is None:
        policy = load_policy(None)
    if rules is None:
        rules = load_rules(disabled=getattr(policy, "disabled_rules", ()) or ())
    flows = report["flows"]
    correlator = Correlator(policy)
    for rec in (flows.scan() if isinstance(flows, FlowStore) else flows):
        correlator.observe(rec)
    evaluator = Evaluator(rules, policy)

    def judge(rec: dict) -> dict:
        correlator.annotate(rec)
        evaluator.add(rec)
        return rec

    if isinstance(flows, FlowStore):
        flows.map(judge)
    else:
        for rec in flows:
            judge(rec)
    report["findings"] = evaluator.result(report)
    report["policy"] = policy_summary(policy)


def policy_summary(policy) -> dict:
    """The policy the findings were judged by, for the report (reviewers need it)."""
    return policy.model_dump(mode="json")


def finalize_summary(report: dict) -> None:
    counts = {s: 0 for s in SEVERITIES}
    for sev in severities(report["findings"]):
        counts[sev] = counts.get(sev, 0) + 1
    report["summary"]["findings_by_severity"] = counts
    report["summary"]["verdict"] = _verdict({s for s, n in counts.items() if n},
                                            report["summary"]["flows_by_class"])


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = ["audit", "CaptureError", "run_files", "assemble", "apply_rules", "make_judge", "LazyJudge", "finish_rules",
           "finalize_summary",
           "options_from_policy"]
