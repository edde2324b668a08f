"""Merge JSON reports: ``dotaudit merge a.json b.json -o all.json``.

Kept simple (docs/latency.md): inputs, flows, findings and skipped entries are concatenated;
flows get new ids 1..N in report order and every reference to a flow id (findings'
``flow_ids``, ``*_flow_id`` fields of correlations and evidence) is re-keyed; summary counts
are added and the verdict recomputed; ``stats.packets`` counters are added; ``stats.latency``
sketches are merged (so fleet percentiles are those of all flows, within the sketch's stated
relative accuracy).  The policy is the first report's.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys

import click

from .latency import LatencyStats


def _remap_ids(d: dict | None, m: dict) -> None:
    if not d:
        return
    for k, v in list(d.items()):
        if k.endswith("flow_id") and isinstance(v, int) and not isinstance(v, bool):
            d[k] = m.get(v, v)
        elif k.endswith("flow_ids") and isinstance(v, list):
            d[k] = [m.get(x, x) if isinstance(x, int) else x for x in v]


def _add_numbers(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        w = out.get(k)
        if isinstance(v, bool) or isinstance(w, bool):
            out[k] = bool(w) or bool(v)
        elif isinstance(v, (int, float)) and isinstance(w, (int, float)):
            out[k] = w + v
        elif isinstance(v, dict) and isinstance(w, dict):
            out[k] = _add_numbers(w, v)
        elif k not in out:
            out[k] = v
    return out


def merge_reports(reports: list[dict]) -> dict:
    """One report holding every input, flow and finding of ``reports``."""
    from .pipeline import SEVERITIES, verdict

    if not reports:
        raise ValueError("nothing to merge")
    versions = {r.get("schema_version") for r in reports}
    if len(versions) != 1:
        raise ValueError(f"reports have different schema versions: {sorted(map(str, versions))}")
    first = reports[0]
    inputs: list = []
    flows: list = []
    findings: list = []
    skipped: list = []
    by_class: dict = {}
    listed = 0
    packets: dict = {}
    latency = LatencyStats()
    for r in reports:
        in_off = len(inputs)
        inputs.extend(r.get("inputs") or [])
        idmap: dict[int, int] = {}
        for f in r.get("flows") or []:
            f = dict(f)
            new = len(flows) + 1
            idmap[f["id"]] = new
            f["id"] = new
            if isinstance(f.get("input"), int):
                f["input"] += in_off
            flows.append(f)
        for f in flows[len(flows) - len(idmap):]:
            if f.get("correlations"):
                f["correlations"] = dict(f["correlations"])
                _remap_ids(f["correlations"], idmap)
        for fd in r.get("findings") or []:
            fd = dict(fd)
            fd["flow_ids"] = [idmap.get(x, x) for x in fd.get("flow_ids") or []]
            if fd.get("evidence"):
                fd["evidence"] = dict(fd["evidence"])
                _remap_ids(fd["evidence"], idmap)
            findings.append(fd)
        for s in r.get("skipped") or []:
            s = dict(s)
            if isinstance(s.get("input"), int):
                s["input"] += in_off
            skipped.append(s)
        summ = r.get("summary") or {}
        for k, v in (summ.get("flows_by_class") or {}).items():
            by_class[k] = by_class.get(k, 0) + v
        listed += summ.get("flows_listed", len(r.get("flows") or []))
        st = r.get("stats") or {}
        packets = _add_numbers(packets, st.get("packets") or {})
        latency.merge(LatencyStats.from_json(st.get("latency")))
    sev = {s: 0 for s in SEVERITIES}
    for fd in findings:
        sev[fd["severity"]] = sev.get(fd["severity"], 0) + 1
    skipped.sort(key=lambda s: (s["reason"], -1 if s.get("input") is None else s["input"]))
    out = {
        "schema_version": first["schema_version"],
        "tool": first.get("tool"),
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "summary": {"flows_by_class": dict(sorted(by_class.items())), "flows_listed": listed,
                    "findings_by_severity": sev, "verdict": verdict(findings, by_class)},
        "flows": flows,
        "findings": findings,
        "stats": {"packets": packets, "latency": latency.to_json(),
                  "merged": {"reports": len(reports), "generated_at": [r.get("generated_at") for r in reports]}},
        "skipped": skipped,
    }
    if "policy" in first:
        out["policy"] = first["policy"]
    return out


@click.command("merge")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True),
                metavar="REPORT.json...")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              show_default=True, help="Merged JSON report (- for stdout).")
def merge_command(reports, output):
    """Merge JSON reports: flows renumbered, findings re-keyed, latency sketches merged."""
    from .report import json as json_report

    data = []
    for path in reports:
        try:
            with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as fh:
                d = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise click.ClickException(f"{path}: cannot read a JSON report: {exc}")
        if not isinstance(d, dict) or "schema_version" not in d:
            raise click.ClickException(f"{path}: not a dotaudit JSON report (no schema_version)")
        data.append(d)
    try:
        merged = merge_reports(data)
    except ValueError as exc:
        raise click.ClickException(str(exc))
    if output and output != "-":
        tmp = output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json_report.write(merged, fh)
        os.replace(tmp, output)
    else:
        json_report.write(merged, sys.stdout)
