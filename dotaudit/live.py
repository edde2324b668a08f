"""``dotaudit live``: the long-running gateway service around the offline pipeline.

One loop reads raw frames from a live source (``dotaudit.capture.live``) and feeds them to the
same ``FlowTable`` -> ``Collector`` -> ``assemble`` / ``apply_rules`` / ``finalize_summary`` path
as ``dotaudit audit``.  No packet is stored.

Memory is bounded by live flows: the flow table expires idle flows (by packet count, and here
also from a one-second timer while traffic is idle); finished flows become records in a
``FlowStore``, which spills to an anonymous temporary file beyond 1000 records.

Report periods.  The report at ``-o PATH`` covers one *period*: every flow that finished since
the period began, and the capture counters of the period.  It is rewritten atomically (temporary
file in the same directory, fsync, ``os.replace``) every ``--interval`` seconds; flows still open
are not judged yet and appear only as counts (``stats.live_flows``): building their records would
flush their reassembly buffers.  They are judged in the period in which they finish.  SIGHUP (or
``--period`` seconds) ends the period: its final report is written (and kept as
``PATH-stem.<start>.ext`` with ``--archive``), its flow store is dropped, a new period begins
(flows still open carry over).  SIGINT and SIGTERM finish every open flow, write the final report
and exit 0.

Capture counters (``stats.capture``) are ``{received, kernel_drops, if_drops}`` for the period
(``since_start`` for the whole run); kernel drops raise the ``capture-incomplete`` rule.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import sys
import time
from typing import Callable, TextIO

from .capture.pcap import CaptureInfo
from .flows.classify import CLASSES
from .flows.flow import DEEP
from .flows.record import AnalysisOptions
from .flows.store import FlowStore
from .flows.table import SWEEP_MASK, FlowTable, Stats
from .pipeline import Collector, apply_rules, assemble, finalize_summary

CHECK_EVERY = 255          # look at the clock and the signal flags every 256 packets
SWEEP_EVERY = 1.0          # seconds: idle-flow sweep driven by the clock when traffic is slow


class LiveCollector(Collector):
    """The pipeline's collector, with a period boundary."""

    def reset(self) -> None:
        self.records.close()
        self.records = FlowStore()
        self.by_class = {c: 0 for c in CLASSES}


class _StatsView:
    """``Stats`` of the current period: now minus the values when the period began."""

    def __init__(self, stats: Stats, base: dict):
        self.stats = stats
        self.base = base

    def to_json(self) -> dict:
        now = self.stats.to_json()
        return {k: v - self.base.get(k, 0) for k, v in now.items()}


class _DefragView:
    def __init__(self, dropped: int):
        self.dropped = dropped


class _TableView:
    """What ``assemble`` reads from a table (``stats``, ``defrag.dropped``), for one period."""

    def __init__(self, table: FlowTable, stats_base: dict, defrag_base: int):
        self.stats = _StatsView(table.stats, stats_base)
        self.defrag = _DefragView(table.defrag.dropped - defrag_base)


class _LiveInput:
    """``inputs[0]`` of a live report (``assemble`` calls ``to_json`` and reads ``errors``)."""

    def __init__(self, data: dict):
        self.data = data
        self.errors: dict = {}

    def to_json(self) -> dict:
        return self.data


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="seconds")


def archive_path(path: str, start_ts: float) -> str:
    stem, ext = os.path.splitext(path)
    stamp = _dt.datetime.fromtimestamp(start_ts, _dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stem}.{stamp}{ext}"


def write_atomic(path: str, render: Callable[[TextIO], None]) -> None:
    """Write through a temporary file in the same directory, then rename over ``path``."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            render(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class LiveService:
    def __init__(self, source, *, options: AnalysisOptions, policy=None, rules=None, evaluate_rules: bool = True,
                 output: str | None = None, fmt: str = "json", interval: float = 60.0, duration: float = 0.0,
                 period: float = 0.0, archive: bool = False, log: TextIO | None = None,
                 clock: Callable[[], float] = time.time):
        self.source = source
        self.options = options
        self.policy = policy
        self.rules = rules
        self.evaluate_rules = evaluate_rules
        self.output = output if output not in (None, "-") else None
        self.fmt = fmt
        self.interval = interval
        self.duration = duration
        self.period = period
        self.archive = archive
        self.log = log if log is not None else sys.stderr
        self.clock = clock
        self.collector = LiveCollector(options)
        self.table = FlowTable(self.collector)
        self.frame = 0
        self.nbytes = 0
        self.started = clock()
        self.reports_written = 0
        self._stop = False
        self._rotate = False
        self._begin_period(self.started, {"received": 0, "kernel_drops": 0, "if_drops": 0})

    # ------------------------------------------------------------------ periods
    def _begin_period(self, now: float, capture_base: dict) -> None:
        self.period_start = now
        self.period_index = getattr(self, "period_index", -1) + 1
        self.period_frame0 = self.frame
        self.period_bytes0 = self.nbytes
        self.period_first_ts: float | None = None
        self.last_ts: float | None = None
        self.capture_base = dict(capture_base)
        self.stats_base = self.table.stats.to_json()
        self.stats_base["packets"] = self.frame
        self.defrag_base = self.table.defrag.dropped

    def _on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGHUP:
            self._rotate = True
        else:
            self._stop = True

    def stop(self) -> None:
        self._stop = True

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (tests): no signals
                pass
        try:
            return self._loop()
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)

    def _loop(self) -> int:
        src = self.source
        nxt = src.next
        table = self.table
        tpacket = table.packet
        collector = self.collector
        clock = self.clock
        frame = self.frame
        nbytes = self.nbytes
        last_sweep = clock()
        sweep_frame = frame
        next_report = self.started + self.interval if self.interval > 0 else float("inf")
        end = self.started + self.duration if self.duration > 0 else float("inf")
        ts = None
        error = None
        first = self.period_frame0 + 1
        try:
            while True:
                pkt = nxt()
                if pkt is not None:
                    ts, data, wirelen = pkt
                    frame += 1
                    nbytes += wirelen
                    if frame == first:
                        self.period_first_ts = ts
                    tpacket(ts, src.linktype, data, frame)
                    if frame & CHECK_EVERY:
                        continue
                # every 256 packets, and whenever the source had nothing for a read timeout
                self.frame = frame
                self.nbytes = nbytes
                if ts is not None:
                    self.last_ts = ts
                    collector.capture_end_ts = ts
                now = clock()
                if now - last_sweep >= SWEEP_EVERY:
                    if frame - sweep_frame <= SWEEP_MASK:  # the table did not sweep by itself
                        table.sweep(now)
                    last_sweep = now
                    sweep_frame = frame
                if self._stop or now >= end:
                    break
                if self._rotate or (self.period > 0 and now - self.period_start >= self.period):
                    self._rotate = False
                    self._end_period(now)
                    first = self.period_frame0 + 1
                if now >= next_report:
                    self.write_report(final=False)
                    next_report = now + self.interval
        except Exception as exc:  # the source failed (interface gone): report what we have, then fail
            error = exc
        self.frame = frame
        self.nbytes = nbytes
        if ts is not None:
            self.last_ts = ts
            collector.capture_end_ts = ts
        try:
            src.stop()
            if error is None:  # what the kernel (or tshark) already captured belongs to this run
                for ts, data, wirelen in src.drain():
                    self.frame += 1
                    self.nbytes += wirelen
                    if self.frame == first:
                        self.period_first_ts = ts
                    tpacket(ts, src.linktype, data, self.frame)
                    self.last_ts = collector.capture_end_ts = ts
        except Exception as exc:  # pragma: no cover - a failing source while stopping
            error = error or exc
        src.close()
        table.finish_all()
        self.write_report(final=True)
        if error is not None:
            raise error
        return 0

    def _end_period(self, now: float) -> None:
        capture_now = self.write_report(final=True, period_end=True)
        self.collector.reset()
        self._begin_period(now, capture_now)

    # ------------------------------------------------------------------ reports
    def live_flows(self) -> dict:
        by_hint: dict[str, int] = {}
        deep = 0
        tcp = udp = 0
        for flow in self.table.live.values():
            h = flow.hint or "other"
            by_hint[h] = by_hint.get(h, 0) + 1
            if flow.proto == 6:
                tcp += 1
            else:
                udp += 1
            if flow.mode is DEEP:
                deep += 1
        return {"open": len(self.table.live), "tcp": tcp, "udp": udp, "analysed": deep,
                "by_hint": dict(sorted(by_hint.items()))}

    def build_report(self, *, final: bool, capture_now: dict | None = None) -> dict:
        src = self.source
        if capture_now is None:
            capture_now = src.stats()
        cap = {k: max(0, capture_now.get(k, 0) - self.capture_base.get(k, 0))
               for k in ("received", "kernel_drops", "if_drops")}
        packets = self.frame - self.period_frame0
        info = CaptureInfo(path=f"{src.engine}:{src.iface}", format="live")
        info.linktypes.add(src.linktype)
        info.packets = packets
        info.bytes = self.nbytes - self.period_bytes0
        info.first_ts = self.period_first_ts if packets else None
        info.last_ts = self.last_ts if packets else None
        info.interface_drops = cap["if_drops"]
        inp = info.to_json()
        inp.update({"sha256": "", "size": 0, "interface": src.iface, "filter": src.filter, "engine": src.engine,
                    "kernel_drops": cap["kernel_drops"]})
        self.table.stats.packets = self.frame
        report = assemble([_LiveInput(inp)], self.collector,
                          _TableView(self.table, self.stats_base, self.defrag_base))
        stats = report["stats"]
        stats["capture"] = dict(cap, since_start={k: capture_now.get(k, 0) for k in ("received", "kernel_drops",
                                                                                      "if_drops")})
        stats["live_flows"] = self.live_flows()
        if cap["kernel_drops"] or cap["if_drops"]:
            report["skipped"].append({"reason": "capture-drops", "count": cap["kernel_drops"] + cap["if_drops"],
                                      "input": 0, "detail": f"packets dropped by the kernel ({cap['kernel_drops']}) "
                                                            f"or the interface ({cap['if_drops']}) before dotaudit "
                                                            "saw them"})
        now = self.clock()
        report["live"] = {
            "interface": src.iface,
            "engine": src.engine,
            "filter": src.filter,
            "period": self.period_index,
            "period_start": _iso(self.period_start),
            "period_start_ts": self.period_start,
            "started": _iso(self.started),
            "uptime_s": round(now - self.started, 3),
            "interval_s": self.interval,
            "final": final,
            "open_flows_not_judged": 0 if final and self._finished_all() else stats["live_flows"]["open"],
        }
        if self.evaluate_rules:
            apply_rules(report, policy=self.policy, rules=self.rules)
        finalize_summary(report)
        return report

    def _finished_all(self) -> bool:
        return not self.table.live

    def write_report(self, *, final: bool, period_end: bool = False) -> dict:
        capture_now = self.source.stats()
        if self.output is None and not (final and not period_end):
            return capture_now  # without -o only the last report is written (to stdout)
        report = self.build_report(final=final, capture_now=capture_now)
        if self.output is None:
            if final and not period_end:
                self._render(report, sys.stdout)
                sys.stdout.flush()
            return capture_now
        try:
            write_atomic(self.output, lambda fh: self._render(report, fh))
            if period_end and self.archive:
                write_atomic(archive_path(self.output, self.period_start), lambda fh: self._render(report, fh))
        except OSError as exc:
            print(f"dotaudit: warning: cannot write {self.output}: {exc.strerror or exc}", file=self.log, flush=True)
            return capture_now
        self.reports_written += 1
        cap = report["stats"]["capture"]
        kind = "final" if final else "interval"
        print(f"dotaudit: {kind} report (period {self.period_index}): {report['inputs'][0]['packets']} packets, "
              f"{len(report['flows'])} flows, {len(report['findings'])} findings, "
              f"{cap['kernel_drops']} kernel drops, {report['stats']['live_flows']['open']} flows open",
              file=self.log, flush=True)
        return capture_now

    def _render(self, report: dict, fh: TextIO) -> None:
        if self.fmt == "json":
            from .report import json as json_report
            json_report.write(report, fh)
        else:
            from .report import text as text_report
            fh.write(text_report.render(report))


__all__ = ["LiveService", "LiveCollector", "archive_path", "write_atomic"]
