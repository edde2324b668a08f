"""The terminal summary: verdict, inputs, flows by class, findings, latency."""

from __future__ import annotations

from tabulate import tabulate

SEV_ORDER = ("critical", "high", "medium", "low", "info")


def _ep(e: dict | None) -> str:
    if not e:
        return "-"
    ip = e.get("ip", "")
    return f"[{ip}]:{e.get('port')}" if ":" in ip else f"{ip}:{e.get('port')}"


def render(report: dict) -> str:
    s = report["summary"]
    out = [f"dotaudit {report['tool']['version']}  verdict: {str(s.get('verdict') or '-').upper()}", ""]
    rows = []
    for i, inp in enumerate(report["inputs"]):
        errs = sum(e["count"] for e in inp["errors"])
        rows.append([i, inp["path"], inp["format"], ",".join(inp["linktypes"]) or "-", inp["packets"],
                     "yes" if inp["truncated"] else "no", errs])
    out.append(tabulate(rows, headers=["#", "input", "format", "link types", "packets", "truncated", "errors"]))
    out.append("")
    cls_rows = [[k, v] for k, v in sorted(s["flows_by_class"].items(), key=lambda kv: (-kv[1], kv[0])) if v]
    out.append(tabulate(cls_rows, headers=["class", "flows"]) if cls_rows else "no flows")
    out.append("")
    sev = s.get("findings_by_severity") or {}
    out.append("findings: " + ", ".join(f"{k} {sev.get(k, 0)}" for k in SEV_ORDER))
    findings = report.get("findings") or []
    if findings:
        frows = []
        for f in findings[:50]:
            frows.append([f["severity"], f["rule_id"], _ep(f.get("client")), _ep(f.get("server")),
                          ",".join(str(x) for x in (f.get("frames") or [])[:4]), f.get("count", 1)])
        out.append(tabulate(frows, headers=["severity", "rule", "client", "server", "frames", "count"]))
        if len(findings) > 50:
            out.append(f"... and {len(findings) - 50} more (see the JSON report)")
    lat = (report.get("stats") or {}).get("latency")
    if lat and lat.get("table"):
        out.append("")
        out.append(tabulate(lat["table"]["rows"], headers=lat["table"]["headers"]))
    if report.get("skipped"):
        out.append("")
        out.append("skipped: " + "; ".join(f"{k['reason']} x{k['count']}" for k in report["skipped"]))
    return "\n".join(out) + "\n"
