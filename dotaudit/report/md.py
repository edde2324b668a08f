"""The Markdown summary, sized for a ticket body: verdict, counts, the top findings with evidence.

Values from the network are put in code spans with their backticks and line breaks neutralised,
so a hostile name cannot break out into Markdown (or the HTML a tracker renders it to).
"""

from __future__ import annotations

from .common import CLASS_LABELS, SEVERITIES, VERDICT_TEXT, endpoint, sorted_findings
from .redact import is_redacted

TOP = 10


def _code(value) -> str:
    text = str(value).replace("\r", " ").replace("\n", " ").replace("`", "'")
    return f"`{text}`" if text else "``"


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _esc(text: str) -> str:
    """Plain text from the report (messages quote names): escape Markdown and HTML specials."""
    out = str(text).replace("\\", "\\\\")
    for ch in "`*_[]<>|#!":
        out = out.replace(ch, "\\" + ch)
    return out.replace("\n", " ")


def render(report: dict) -> str:
    s = report.get("summary") or {}
    verdict = s.get("verdict") or "no-dns-observed"
    sev = s.get("findings_by_severity") or {}
    lines = [f"## DNS encryption audit: **{verdict.upper()}**", ""]
    lines.append(VERDICT_TEXT.get(verdict, ""))
    lines.append("")
    inputs = report.get("inputs") or []
    for i in inputs:
        lines.append(f"- capture {_code(i.get('path'))}: {i.get('packets')} packets, sha256 {_code(i.get('sha256'))}"
                     + (", **truncated**" if i.get("truncated") else ""))
    lines.append(f"- dotaudit {report.get('tool', {}).get('version')}, report generated {report.get('generated_at')}"
                 + (" (names redacted)" if is_redacted(report) else ""))
    lines.append("")
    lines.append("| " + " | ".join(SEVERITIES) + " |")
    lines.append("|" + "---:|" * len(SEVERITIES))
    lines.append("| " + " | ".join(str(sev.get(k, 0)) for k in SEVERITIES) + " |")
    lines.append("")
    by_class = {k: v for k, v in (s.get("flows_by_class") or {}).items() if v}
    if by_class:
        lines.append("Flows: " + ", ".join(f"{CLASS_LABELS.get(k, k)} {v}"
                                           for k, v in sorted(by_class.items(), key=lambda kv: (-kv[1], kv[0]))))
        lines.append("")
    findings = sorted_findings(report.get("findings") or [])
    if findings:
        lines.append(f"### Top findings ({min(TOP, len(findings))} of {len(findings)})")
        lines.append("")
        for n, f in enumerate(findings[:TOP], 1):
            lines.append(f"{n}. **{f['severity'].upper()}** {_esc(f.get('title', ''))} ({_code(f['rule_id'])})  ")
            lines.append(f"   {_esc(f.get('message', ''))}  ")
            lines.append(f"   {_code(endpoint(f.get('client')))} → {_code(endpoint(f.get('server')))}, "
                         f"frames {', '.join(str(x) for x in (f.get('frames') or [])[:8]) or '-'}"
                         f"{' …' if len(f.get('frames') or []) > 8 else ''}, flows "
                         f"{', '.join(str(x) for x in (f.get('flow_ids') or [])[:8]) or '-'}  ")
            ev = f.get("evidence") or {}
            if ev:
                lines.append("   evidence: " + "; ".join(f"{_code(k)} = {_code(_val(v))}" for k, v in sorted(ev.items()))
                             + "  ")
            refs = f.get("references") or []
            if refs:
                lines.append("   standard: " + ", ".join(f"<{r}>" if r.startswith("https://") and " " not in r
                                                         and ">" not in r else _code(r) for r in refs) + "  ")
            if f.get("remediation"):
                lines.append(f"   remediation: {_esc(f['remediation'])}")
            lines.append("")
        if len(findings) > TOP:
            lines.append(f"{len(findings) - TOP} more findings are in the HTML and JSON reports.")
            lines.append("")
    else:
        lines.append("No finding.")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _val(v) -> str:
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)
