"""Latency and overhead statistics per resolver and per class (``stats.latency``).

Built from the flow records' ``timing`` (dotaudit/timing.py), one ``add`` per flow.  Every
distribution is a DDSketch (relative accuracy RELATIVE_ACCURACY on every quantile) serialised
into the JSON, so reports from several captures or gateways merge exactly
(``dotaudit merge``): merging two sketches gives the sketch of all values.

Only one sketch set per (resolver, class) is fed per flow; the per-class figures are those
sketches merged when the JSON is written.  See docs/latency.md.
"""

from __future__ import annotations

from bisect import bisect_right as _bisect_right
from itertools import accumulate as _accumulate
from math import ceil as _ceil, log as _log

from ddsketch import LogCollapsingLowestDenseDDSketch

RELATIVE_ACCURACY = 0.01
BIN_LIMIT = 2048
MAX_RESOLVERS = 1024          # distinct server addresses kept; the rest are pooled as OTHER
OTHER = "(other)"
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
SKIP_CLASSES = frozenset(("other",))

METRICS = (
    "tcp_rtt_server_ms", "tcp_rtt_client_ms", "tcp_rtt_total_ms", "tls_handshake_ms",
    "time_to_first_answer_ms", "query_rtt_ms", "queries_per_connection", "lifetime_ms", "idle_ms",
    "bytes_per_query", "retransmission_cost_ms",
)
COUNTERS = (
    "flows", "tcp_flows", "queries", "bytes", "tls_flows", "tls_established", "resumed", "full",
    "tfo", "tfo_data", "early_data_offered", "early_data_flows", "retransmitted_segments",
    "syn_retries", "handshake_ms_sum", "tcp_setup_ms_sum",
)


def _new_sketch() -> LogCollapsingLowestDenseDDSketch:
    return LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, BIN_LIMIT)


def sketch_add_pairs(pairs) -> None:
    """``s.add(v)`` for every (sketch, value) in turn (all of a flow's), with ddsketch's five
    calls inlined for the common case, a positive value inside the bins the store already has
    (a judge process adds about 200k values per million packets).  The same arithmetic in the
    same order: the sketches end up identical (tests/test_latency.py)."""
    for s, val in pairs:
        m = s._mapping
        if val > m.min_possible:
            key = int(_ceil(_log(val, 2) * m._multiplier) + m._offset)
            st = s._store
            if st.min_key <= key <= st.max_key:
                st.bins[key - st.offset] += 1.0
                st.count += 1.0
            else:
                st.add(key, 1.0)
        elif val < -m.min_possible:
            s._negative_store.add(m.key(-val), 1.0)
        else:
            s._zero_count += 1.0
        s._count += 1.0
        s._sum += val * 1.0
        if val < s._min:
            s._min = val
        if val > s._max:
            s._max = val


def _store_bins(store) -> list[list]:
    off = store.offset
    return [[off + i, c] for i, c in enumerate(store.bins) if c]


def sketch_to_json(s) -> dict:
    return {
        "count": s._count, "sum": s._sum, "min": s._min, "max": s._max, "zero": s._zero_count,
        "bins": _store_bins(s._store), "neg": _store_bins(s._negative_store),
    }


def sketch_from_json(d: dict):
    s = _new_sketch()
    for k, c in d.get("bins") or ():
        s._store.add(int(k), c)
    for k, c in d.get("neg") or ():
        s._negative_store.add(int(k), c)
    s._zero_count = d.get("zero", 0)
    s._count = d["count"]
    s._sum = d["sum"]
    s._min = float("inf") if d.get("min") is None else d["min"]
    s._max = float("-inf") if d.get("max") is None else d["max"]
    return s


def _r(v):
    return None if v is None else round(v, 3)


def summarize(s) -> dict:
    """count, min, p50, p95, p99, max, mean of one sketch (min/max/mean exact)."""
    n = s._count
    if not n:
        return {"count": 0, "min": None, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    out = {"count": int(n) if n == int(n) else n, "min": _r(s._min)}
    zero, neg, store = s._zero_count, s._negative_store.count, s._store
    cum = None
    for name, q in QUANTILES:
        rank = q * (n - 1)   # as get_quantile_value has it
        if rank < zero + neg:   # at or below zero: rare, ddsketch's own walk
            v = s.get_quantile_value(q)
        else:
            # ddsketch's DenseStore.key_at_rank (a Python loop over the bins, three times a
            # sketch): the same running sums, made once, searched for the first above ``rank``
            if cum is None:
                cum = list(_accumulate(store.bins))
            i = _bisect_right(cum, rank - zero - neg)
            v = s._mapping.value(i + store.offset if i < len(cum) else store.max_key)
        # a quantile can never leave [min, max]; the sketch's bucket midpoint may, slightly
        out[name] = _r(None if v is None else min(max(v, s._min), s._max))
    out["max"] = _r(s._max)
    out["mean"] = _r(s._sum / n)
    return out


class Group:
    """Counters and sketches of one (resolver, class) pair, or of a merged set of them."""

    __slots__ = ("counters", "sketches", "by_version", "by_mode")

    def __init__(self) -> None:
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.sketches: dict = {}
        self.by_version: dict = {}    # TLS version -> handshake sketch
        self.by_mode: dict = {}       # "full" | "resumed" -> handshake sketch

    def merge(self, other: "Group") -> None:
        c = self.counters
        for k, v in other.counters.items():
            c[k] = c.get(k, 0) + v
        for mine, theirs in ((self.sketches, other.sketches), (self.by_version, other.by_version),
                             (self.by_mode, other.by_mode)):
            for k, s in theirs.items():
                m = mine.get(k)
                if m is None:
                    m = mine[k] = _new_sketch()
                m.merge(s)

    def to_json(self, *, sketches: bool = True) -> dict:
        def block(d):
            out = {}
            for k in sorted(d):
                e = summarize(d[k])
                if sketches:
                    e["sketch"] = sketch_to_json(d[k])
                out[k] = e
            return out

        c = self.counters
        q = c["queries"]
        derived = {
            "bytes_per_query": round(c["bytes"] / q, 1) if q else None,
            # connection set-up amortised over the queries, plus the mean query time
            "time_per_query_ms": self.time_per_query(),
        }
        return {"counters": dict(c), "derived": derived, "metrics": block(self.sketches),
                "tls_handshake_ms_by_version": block(self.by_version),
                "tls_handshake_ms_by_mode": block(self.by_mode)}

    def time_per_query(self) -> float | None:
        c = self.counters
        s = self.sketches.get("query_rtt_ms")
        if not c["queries"] or s is None or not s._count:
            return None
        return round((c["tcp_setup_ms_sum"] + c["handshake_ms_sum"] + s._sum) / c["queries"], 3)

    @classmethod
    def from_json(cls, d: dict) -> "Group":
        g = cls()
        for k, v in (d.get("counters") or {}).items():
            g.counters[k] = v
        for attr, key in (("sketches", "metrics"), ("by_version", "tls_handshake_ms_by_version"),
                          ("by_mode", "tls_handshake_ms_by_mode")):
            tgt = getattr(g, attr)
            for k, e in (d.get(key) or {}).items():
                if e.get("sketch") is not None:
                    tgt[k] = sketch_from_json(e["sketch"])
        return g


_TLS_READ = ("established", "early_data_offered", "early_data_records", "version", "resumed")


def stats_view(rec: dict) -> dict:
    """What ``LatencyStats.add`` reads of a flow record (``add`` of the view counts the same): a
    judge process's main process keeps it, not the whole record, for each flow still open at
    the end of the capture (sink.ProcessSink.mark_tail)."""
    server, tcp, tls = rec.get("server"), rec.get("tcp"), rec.get("tls")
    return {
        "class": rec.get("class"),
        "timing": rec.get("timing"),
        "server": {"ip": server.get("ip")} if isinstance(server, dict) and "ip" in server else server,
        "tcp": {"tfo": tcp.get("tfo"), "tfo_data": tcp.get("tfo_data")} if tcp else tcp,
        "tls": {k: tls.get(k) for k in _TLS_READ} if tls else tls,
        "bytes": rec.get("bytes"),
    }


class LatencyStats:
    """``add(flow_record)`` per flow; ``to_json()`` for ``stats.latency``; mergeable."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], Group] = {}
        self.resolvers: set[str] = set()
        self.pooled_flows = 0

    # ------------------------------------------------------------------ feeding
    def add(self, rec: dict) -> None:
        cls = rec.get("class")
        t = rec.get("timing")
        if cls in SKIP_CLASSES or not t:
            return
        ip = rec["server"]["ip"]
        if ip not in self.resolvers:
            if len(self.resolvers) >= MAX_RESOLVERS:
                ip = OTHER
                self.pooled_flows += 1
            else:
                self.resolvers.add(ip)
        key = (ip, cls)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = Group()
        c = g.counters
        c["flows"] += 1
        sk = g.sketches
        rtt = t.get("tcp_rtt_ms")
        total = None
        hs = t.get("tls_handshake_ms")
        if rtt:
            c["tcp_flows"] += 1
            total = rtt.get("total")
            metrics = [("tcp_rtt_server_ms", rtt.get("server")), ("tcp_rtt_client_ms", rtt.get("client")),
                       ("tcp_rtt_total_ms", total)]
        else:
            metrics = []
        tcp = rec.get("tcp")
        if tcp:
            if tcp.get("tfo"):
                c["tfo"] += 1
            if tcp.get("tfo_data"):
                c["tfo_data"] += 1
        rt = t.get("retransmissions")
        if rt:
            c["retransmitted_segments"] += rt.get("c2s", 0) + rt.get("s2c", 0)
            c["syn_retries"] += rt.get("syn", 0)
        metrics += (("retransmission_cost_ms", t.get("retransmission_cost_ms")),
                    ("time_to_first_answer_ms", t.get("time_to_first_answer_ms")),
                    ("queries_per_connection", t.get("queries_per_connection")),
                    ("lifetime_ms", t.get("lifetime_ms")), ("idle_ms", t.get("idle_ms")),
                    ("bytes_per_query", t.get("bytes_per_query")))
        pairs = []   # (sketch, value): every value of this flow, added in one go
        tls = rec.get("tls")
        if tls:
            c["tls_flows"] += 1
            if tls.get("established"):
                c["tls_established"] += 1
            if tls.get("early_data_offered"):
                c["early_data_offered"] += 1
            if tls.get("early_data_records"):
                c["early_data_flows"] += 1
            if hs is not None:
                metrics.append(("tls_handshake_ms", hs))
                mode = "resumed" if tls.get("resumed") else "full"
                c[mode] += 1
                for d, k in ((g.by_version, tls.get("version") or "unknown"), (g.by_mode, mode)):
                    s = d.get(k)
                    if s is None:
                        s = d[k] = _new_sketch()
                    pairs.append((s, hs))
        for name, v in metrics:
            if v is not None:
                s = sk.get(name)
                if s is None:
                    s = sk[name] = _new_sketch()
                pairs.append((s, v))
        qs = t.get("query_rtt_ms")
        if qs:
            s = sk.get("query_rtt_ms")
            if s is None:
                s = sk["query_rtt_ms"] = _new_sketch()
            pairs += [(s, v) for v in qs]
        sketch_add_pairs(pairs)
        answered = t.get("query_rtt_count") or 0
        if answered:
            # set-up cost and bytes only of connections that carried answered queries
            c["queries"] += answered
            b = rec.get("bytes") or {}
            c["bytes"] += b.get("c2s", 0) + b.get("s2c", 0)
            if total is not None:
                c["tcp_setup_ms_sum"] += total
            if hs is not None:
                c["handshake_ms_sum"] += hs

    # ------------------------------------------------------------------ merging
    def merge(self, other: "LatencyStats") -> None:
        for (ip, cls), g in other.groups.items():
            if ip not in self.resolvers and ip != OTHER:
                if len(self.resolvers) >= MAX_RESOLVERS:
                    self.pooled_flows += g.counters["flows"]
                    ip = OTHER
                else:
                    self.resolvers.add(ip)
            mine = self.groups.get((ip, cls))
            if mine is None:
                mine = self.groups[(ip, cls)] = Group()
            mine.merge(g)
        self.pooled_flows += other.pooled_flows

    # ------------------------------------------------------------------ output
    def by_class(self) -> dict[str, Group]:
        out: dict[str, Group] = {}
        for (_ip, cls), g in self.groups.items():
            m = out.get(cls)
            if m is None:
                m = out[cls] = Group()
            m.merge(g)
        return out

    def overhead(self) -> list[dict]:
        """DoT against Do53 to the same resolver address: bytes and time per query."""
        rows = []
        for ip in sorted({ip for ip, _ in self.groups}):
            dot = self.groups.get((ip, "dot"))
            do53 = self.groups.get((ip, "do53"))
            if dot is None or do53 is None or not dot.counters["queries"] or not do53.counters["queries"]:
                continue

            def side(g: Group) -> dict:
                s = g.sketches.get("query_rtt_ms")
                return {"queries": g.counters["queries"],
                        "bytes_per_query": round(g.counters["bytes"] / g.counters["queries"], 1),
                        "query_rtt_p50_ms": _r(s.get_quantile_value(0.5)) if s is not None else None,
                        "time_per_query_ms": g.time_per_query()}

            a, b = side(dot), side(do53)
            rows.append({
                "resolver": ip, "dot": a, "do53": b,
                "bytes_per_query_ratio": round(a["bytes_per_query"] / b["bytes_per_query"], 2)
                if b["bytes_per_query"] else None,
                "time_per_query_delta_ms": None if a["time_per_query_ms"] is None or b["time_per_query_ms"] is None
                else round(a["time_per_query_ms"] - b["time_per_query_ms"], 3),
            })
        return rows

    def to_json(self) -> dict:
        by_resolver: dict[str, dict] = {}
        for (ip, cls) in sorted(self.groups):
            by_resolver.setdefault(ip, {})[cls] = self.groups[(ip, cls)].to_json()
        classes = self.by_class()
        return {
            "sketch": {"type": "DDSketch", "implementation": "LogCollapsingLowestDenseDDSketch",
                       "mapping": "logarithmic", "relative_accuracy": RELATIVE_ACCURACY, "bin_limit": BIN_LIMIT,
                       "note": f"p50/p95/p99 are within {RELATIVE_ACCURACY:.0%} of the exact value; "
                               "count, min, max and mean are exact"},
            "relative_accuracy": RELATIVE_ACCURACY,
            "by_class": {k: classes[k].to_json(sketches=False) for k in sorted(classes)},
            "by_resolver": by_resolver,
            "resolvers_pooled_flows": self.pooled_flows,
            "overhead": self.overhead(),
            "table": self.table(classes),
        }

    @classmethod
    def from_json(cls, d: dict | None) -> "LatencyStats":
        st = cls()
        if not d:
            return st
        for ip, per in (d.get("by_resolver") or {}).items():
            if ip != OTHER:
                st.resolvers.add(ip)
            for c, gj in per.items():
                st.groups[(ip, c)] = Group.from_json(gj)
        st.pooled_flows = d.get("resolvers_pooled_flows", 0)
        return st

    def table(self, classes: dict[str, Group] | None = None) -> dict:
        if classes is None:
            classes = self.by_class()
        acc = f"{RELATIVE_ACCURACY:.0%}"
        headers = [f"class (p: ±{acc})", "flows", "queries", "tcp rtt p50", "tls hs p50", "tls hs p95",
                   "query p50", "query p95", "query p99", "bytes/query"]
        rows = []

        def p(g, name, q):
            s = g.sketches.get(name) if isinstance(g, Group) else g
            if s is None or not s._count:
                return None
            return summarize(s)[q]

        for k in sorted(classes):
            g = classes[k]
            c = g.counters
            rows.append([k, c["flows"], c["queries"], p(g, "tcp_rtt_server_ms", "p50"),
                         p(g, "tls_handshake_ms", "p50"), p(g, "tls_handshake_ms", "p95"),
                         p(g, "query_rtt_ms", "p50"), p(g, "query_rtt_ms", "p95"), p(g, "query_rtt_ms", "p99"),
                         round(c["bytes"] / c["queries"], 1) if c["queries"] else None])
            for label, d in (("", g.by_version), ("", g.by_mode)):
                for sub in sorted(d):
                    s = d[sub]
                    rows.append([f"  {k} {sub} handshakes", int(s._count), None, None, p(s, None, "p50"),
                                 p(s, None, "p95"), None, None, None, None])
        for o in self.overhead():
            rows.append([f"  dot vs do53 {o['resolver']}", None, None, None, None, None,
                         o["dot"]["query_rtt_p50_ms"], None, None,
                         f"{o['bytes_per_query_ratio']}x" if o["bytes_per_query_ratio"] is not None else None])
        return {"headers": headers, "rows": rows}
