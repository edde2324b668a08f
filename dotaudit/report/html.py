"""The self-contained HTML report: one file a reviewer opens offline.

Inline CSS, inline SVG charts and one small inline script (flow table filter and sort); a
Content-Security-Policy meta tag allows nothing else (no fetch, no image, no font, no frame),
and admits the style and script by their SHA-256 hashes.  Everything from the network (SNI,
ALPN, query names, certificate fields, messages quoting them) goes through jinja2's autoescape,
so it renders as text.  The page is deterministic for a given report (no nonce, no clock).
"""

from __future__ import annotations

import base64
import hashlib
import json as _json
from functools import lru_cache
from importlib import resources

import jinja2
from markupsafe import Markup

from .common import (CLASS_LABELS, PLAINTEXT_CLASSES, SEVERITIES, SEVERITY_RANK, VERDICT_TEXT, endpoint,
                     latency_comparisons, latency_rows, latency_table_rows, sorted_findings, ts_text)
from .redact import is_redacted

MAX_FLOWS = 5000
"""Flows listed in the table; the rest are counted (they are all in the JSON report)."""

ENCRYPTED_CLASSES = {"dot", "doq", "doh", "dot-nonstandard-port"}
CLASS_COLORS = {"do53": "#c62828", "dns-nonstandard-port": "#c62828", "mdns": "#e57373", "llmnr": "#e57373",
                "nbns": "#e57373", "dot": "#15803d", "dot-nonstandard-port": "#4d9e6a", "doq": "#0f766e",
                "doh": "#0e7490", "tls-on-853-not-dns": "#d97706", "other": "#94a3b8"}


SHORT_CLASS = {"do53": "Do53", "dot": "DoT", "doq": "DoQ", "doh": "DoH", "dns-nonstandard-port": "DNS/odd port",
               "dot-nonstandard-port": "DoT/odd port", "mdns": "mDNS", "llmnr": "LLMNR", "nbns": "NBNS",
               "tls-on-853-not-dns": "TLS/853 not DNS", "other": "other"}


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: _read(name)),
        autoescape=True,   # always: the template is HTML whatever its file name ends with
        undefined=jinja2.StrictUndefined,
        trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True,
    )
    return env


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _fmtnum(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v.is_integer() and abs(v) >= 100:
            return str(int(v))
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _show(v) -> str:
    """A value as compact text (strings as they are, the rest as JSON)."""
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(x, (str, int, float)) for x in v):
        return ", ".join(str(x) for x in v) if v else "[]"
    return _json.dumps(v, sort_keys=True, ensure_ascii=False)


def _ref_label(ref: str) -> str:
    import re
    m = re.search(r"rfc(\d+)(?:\.html)?(?:#section-([\d.]+))?", ref, re.IGNORECASE)
    if m:
        return f"RFC {m.group(1)}" + (f" §{m.group(2)}" if m.group(2) else "")
    return ref


def _bar_chart(items: list[tuple[str, float, str]], width: int = 460, label_w: int = 150) -> dict:
    top = max((v for _, v, _ in items), default=0) or 1
    span = width - label_w - 60
    bars = []
    for n, (label, value, color) in enumerate(items):
        bars.append({"label": label, "value": _fmtnum(value) if isinstance(value, float) else value,
                     "w": max(2, round(span * value / top)), "y": 6 + n * 28, "color": color})
    return {"bars": bars, "width": width, "height": 12 + 28 * len(bars), "label_w": label_w}


def _latency_chart(chart: dict, width: int = 460, label_w: int = 70) -> dict:
    top = max((max(b["p50"] or 0, b["p95"] or 0) for b in chart["bars"]), default=0) or 1
    span = width - label_w - 190
    bars = []
    palette = ["#c62828", "#15803d", "#2563eb", "#d97706"]
    for n, b in enumerate(chart["bars"]):
        bars.append({
            "label": b["label"], "y": 6 + n * 28, "color": palette[n % len(palette)],
            "w": max(2, round(span * (b["p50"] or 0) / top)),
            "w95": round(span * b["p95"] / top) if b.get("p95") is not None else None,
            "p50": _fmtnum(b["p50"]), "p95": _fmtnum(b["p95"]) if b.get("p95") is not None else None,
            "count": int(b["count"]) if b.get("count") is not None else None,
        })
    return {"title": chart["title"], "bars": bars, "width": width, "height": 12 + 28 * len(bars), "label_w": label_w}


def _flow_row(fl: dict, worst: dict[int, tuple[str, int]]) -> dict:
    tls = fl.get("tls") or {}
    quic = fl.get("quic") or {}
    dns = fl.get("dns") or {}
    timing = fl.get("timing") or {}
    cipher = tls.get("cipher") or {}
    qnames = list(dns.get("qnames") or [])
    alpn = tls.get("alpn")
    if alpn in (None, "not_observable"):
        alpn = ", ".join(tls.get("alpn_offered") or quic.get("alpn_offered") or []) or None
        if alpn:
            alpn += " (offered)"
    w = worst.get(fl.get("id"))
    pk = fl.get("packets") or {}
    return {
        "id": fl.get("id"), "cls": fl.get("class"), "transport": fl.get("transport"),
        "plaintext": fl.get("class") in PLAINTEXT_CLASSES, "encrypted": fl.get("class") in ENCRYPTED_CLASSES,
        "client": endpoint(fl.get("client")), "server": endpoint(fl.get("server")),
        "tls_version": tls.get("version") or quic.get("version"), "cipher": cipher.get("name"),
        "sni": tls.get("sni") or quic.get("sni"), "alpn": alpn,
        "qnames": qnames[:5], "qnames_more": max(0, (dns.get("qnames_total") or len(qnames)) - 5),
        "first_frame": fl.get("first_frame"), "last_frame": fl.get("last_frame"),
        "packets": (pk.get("c2s") or 0) + (pk.get("s2c") or 0),
        "handshake_ms": timing.get("tls_handshake_ms"),
        "worst": w[0] if w else None, "worst_rank": SEVERITY_RANK[w[0]] + 1 if w else 0, "nfindings": w[1] if w else 0,
    }


def context(report: dict) -> dict:
    """The template's variables, all plain data."""
    summary = report.get("summary") or {}
    findings = sorted_findings(report.get("findings") or [])
    by_class = {k: v for k, v in (summary.get("flows_by_class") or {}).items() if v}
    worst: dict[int, tuple[str, int]] = {}
    for f in findings:
        for fid in f.get("flow_ids") or []:
            prev = worst.get(fid)
            if prev is None:
                worst[fid] = (f["severity"], 1)
            else:
                sev = f["severity"] if SEVERITY_RANK[f["severity"]] > SEVERITY_RANK[prev[0]] else prev[0]
                worst[fid] = (sev, prev[1] + 1)
    flows = []
    omitted = 0
    for fl in report.get("flows") or []:
        if len(flows) >= MAX_FLOWS:
            omitted += 1
            continue
        flows.append(_flow_row(fl, worst))
    rule_counts: dict[str, dict] = {}
    for f in findings:
        e = rule_counts.setdefault(f["rule_id"], {"rule_id": f["rule_id"], "severity": f["severity"], "count": 0})
        e["count"] += 1
    rows = latency_rows(report)
    verdict = summary.get("verdict") or "no-dns-observed"
    class_items = [(CLASS_LABELS.get(k, k), v, CLASS_COLORS.get(k, "#94a3b8"))
                   for k, v in sorted(by_class.items(), key=lambda kv: (-kv[1], kv[0])) if k != "other"]
    if by_class.get("other"):
        class_items.append(("other", by_class["other"], CLASS_COLORS["other"]))
    dns_total = sum(v for k, v in by_class.items() if k != "other")
    return {
        "schema_version": report.get("schema_version"), "tool": report.get("tool") or {},
        "generated_at": report.get("generated_at"), "redacted": is_redacted(report),
        "verdict": verdict, "verdict_word": verdict.replace("-", " ").upper(),
        "verdict_text": VERDICT_TEXT.get(verdict, ""),
        "severities": SEVERITIES, "by_severity": summary.get("findings_by_severity") or {},
        "flows_total": dns_total,
        "plaintext_total": sum(v for k, v in by_class.items() if k in PLAINTEXT_CLASSES),
        "encrypted_total": sum(v for k, v in by_class.items() if k in ENCRYPTED_CLASSES),
        "class_chart": _bar_chart(class_items),
        "rule_counts": sorted(rule_counts.values(), key=lambda e: (-SEVERITY_RANK[e["severity"]], e["rule_id"])),
        "latency_rows": latency_table_rows(rows),
        "latency_charts": [_latency_chart(c) for c in latency_comparisons(rows)],
        "findings_total": len(findings),
        "finding_groups": [{"severity": s, "findings": [f for f in findings if f["severity"] == s]}
                           for s in SEVERITIES if any(f["severity"] == s for f in findings)],
        "flows": flows, "flows_omitted": omitted,
        "flow_classes": sorted({fl["cls"] for fl in flows if fl["cls"]}),
        "inputs": report.get("inputs") or [], "live": report.get("live"),
        "packet_stats": (report.get("stats") or {}).get("packets") or {},
        "skipped": report.get("skipped") or [], "policy": report.get("policy"),
    }


def render(report: dict) -> str:
    css = _read("report.css")
    js = _read("report.js")
    csp = ("default-src 'none'; style-src " + _sha256_source(css) + "; script-src " + _sha256_source(js)
           + "; img-src data:; base-uri 'none'; form-action 'none'")
    ctx = context(report)
    ctx.update(css=Markup(css), js=Markup(js), csp=csp, endpoint=endpoint, ts_text=ts_text, fmtnum=_fmtnum,
               show=_show, ref_label=_ref_label, class_label=lambda c: CLASS_LABELS.get(c, c),
               short_class=lambda c: SHORT_CLASS.get(c, c))
    return _env().get_template("report.html.j2").render(ctx)
