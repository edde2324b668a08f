"""Helpers shared by the formatters: severity order, endpoints, rule lists, latency rows."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, Sequence

SEVERITIES = ("critical", "high", "medium", "low", "info")
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
VERDICT_TEXT = {
    "pass": "PASS: no finding of medium severity or above",
    "warn": "WARN: findings of medium severity",
    "fail": "FAIL: findings of high or critical severity",
    "no-dns-observed": "NO DNS OBSERVED: nothing to judge",
}
CLASS_LABELS = {
    "do53": "Do53 (plaintext)", "dot": "DoT", "doq": "DoQ", "doh": "DoH",
    "dns-nonstandard-port": "DNS, odd port", "dot-nonstandard-port": "DoT, odd port",
    "mdns": "mDNS", "llmnr": "LLMNR", "nbns": "NBNS", "tls-on-853-not-dns": "TLS on 853, not DNS",
    "other": "other",
}
PLAINTEXT_CLASSES = {"do53", "dns-nonstandard-port", "mdns", "llmnr", "nbns"}


def endpoint(e: dict | None) -> str:
    if not e or e.get("ip") is None:
        return "-"
    ip = e.get("ip", "")
    port = e.get("port")
    if port is None:
        return str(ip)
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def ts_text(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def at_or_above(severity: str, floor: str) -> bool:
    if floor == "never":
        return False
    return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK[floor]


def sorted_findings(findings: Iterable[dict]) -> list[dict]:
    return sorted(findings, key=lambda f: (-SEVERITY_RANK.get(f.get("severity"), 0), f.get("rule_id", ""),
                                           min(f.get("flow_ids") or [0]), f.get("id", "")))


def rule_entries(report: dict, rules: Sequence | None) -> list[dict]:
    """The rules a report was judged by: ``name, title, severity, references, remediation``.

    ``rules`` are loaded rule objects (the engine's ``Rule``) when the caller has them;
    otherwise the rules are those named by findings."""
    out: dict[str, dict] = {}
    for r in rules or ():
        out[r.name] = {"name": r.name, "title": r.title, "severity": r.severity,
                       "references": list(r.references), "remediation": getattr(r, "remediation", None)}
    for f in report.get("findings") or []:
        out.setdefault(f["rule_id"], {"name": f["rule_id"], "title": f.get("title", ""),
                                      "severity": f.get("severity", "info"),
                                      "references": list(f.get("references") or []),
                                      "remediation": f.get("remediation")})
    return sorted(out.values(), key=lambda e: e["name"])


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def latency_rows(report: dict) -> list[dict]:
    """Percentile summaries found in ``stats.latency``, whatever its nesting.

    Every dict with a numeric ``p50`` is one row: ``label`` (its path, joined by " / "),
    ``count``, ``min``, ``p50``, ``p95``, ``p99``, ``max``.  Returns [] when the section is
    missing, so formatters render nothing for it."""
    lat = (report.get("stats") or {}).get("latency")
    rows: list[dict] = []

    def walk(obj: Any, path: tuple[str, ...]) -> None:
        if len(rows) > 500:
            return
        if isinstance(obj, dict):
            if _num(obj.get("p50")) is not None:
                shown = [p for p in path if p not in ("by_class", "metrics")]
                row = {"label": " / ".join(shown) or "all", "path": path}
                for k in ("count", "min", "p50", "p95", "p99", "max"):
                    row[k] = _num(obj.get(k))
                rows.append(row)
                return
            for k in sorted(obj, key=str):
                if k in ("table", "sketch", "sketches"):
                    continue
                walk(obj[k], path + (str(k),))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                label = v.get("name") or v.get("label") or v.get("resolver") if isinstance(v, dict) else None
                walk(v, path + (str(label or i),))

    if isinstance(lat, (dict, list)):
        walk(lat, ())
    return rows


def _norm(part: str) -> str:
    return "".join(ch for ch in str(part).lower() if ch.isalnum())


def latency_comparisons(rows: list[dict]) -> list[dict]:
    """Pick the rows for the charts of the issue: DoT against Do53 (query time) and the TLS
    handshake by version (TLS 1.2 against 1.3, and any other version seen).

    Rows per resolver are not used when per-class rows exist.  Returns
    ``[{title, bars: [{label, p50, p95, count}]}]``; empty when nothing fits."""
    overall = [r for r in rows if not any(_norm(p).startswith("byresolver") or _norm(p) == "resolvers"
                                          for p in r["path"])] or rows
    charts = []
    for metric, title in (("query_rtt_ms", "query time"), ("time_to_first_answer_ms", "time to first answer")):
        bars = []
        for cls, label in (("do53", "Do53"), ("dot", "DoT")):
            cand = [r for r in overall if r["path"] and r["path"][-1] == metric and cls in r["path"]]
            if cand:
                r = cand[0]
                bars.append({"label": label, "p50": r["p50"], "p95": r["p95"], "count": r["count"]})
        if bars:
            charts.append({"title": f"DoT against Do53: {title} (ms)", "bars": bars})
            break
    versions: dict[str, dict] = {}
    for r in overall:
        if not any("handshake" in _norm(p) for p in r["path"]):
            continue
        for p in r["path"]:
            n = _norm(p)
            if n.startswith("tls1") and len(n) == 5:
                versions.setdefault(f"TLS 1.{n[4]}", r)
            elif n.startswith("ssl") and len(n) == 5:
                versions.setdefault(f"SSL {n[3]}.{n[4]}", r)
    if versions:
        bars = [{"label": v, "p50": r["p50"], "p95": r["p95"], "count": r["count"]}
                for v, r in sorted(versions.items())]
        charts.append({"title": "TLS handshake by version (ms)", "bars": bars})
    return charts


def latency_table_rows(rows: list[dict]) -> list[dict]:
    """The rows worth a table in a report: per class when there are such rows, at most 40."""
    by_class = [r for r in rows if r["path"] and _norm(r["path"][0]) in ("byclass", "classes")]
    return (by_class or rows)[:40]
