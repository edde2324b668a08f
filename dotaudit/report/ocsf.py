"""OCSF 1.x events: one Detection Finding (class 2004) per finding, or a Compliance Finding
(class 2003) with ``--ocsf-class compliance``.  Output is a JSON array of events.

``data/ocsf-required.json`` lists the required attributes of each class and object, with the
OCSF schema files (and commits) they were read from; ``missing_required(event)`` checks an event
against it, and the tests run it on every event.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from .common import endpoint

SEVERITY_ID = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
SEVERITY_NAME = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
ACTIVITY_CREATE = 1


@lru_cache(maxsize=1)
def required_spec() -> dict:
    text = resources.files(__package__).joinpath("data", "ocsf-required.json").read_text(encoding="utf-8")
    return json.loads(text)


def _ms(ts: float | None) -> int | None:
    return None if ts is None else int(round(ts * 1000))


def _ep(e: dict | None) -> dict | None:
    if not e or e.get("ip") is None:
        return None
    out = {"ip": e["ip"]}
    if e.get("port") is not None:
        out["port"] = e["port"]
    return out


def _generated_ms(report: dict) -> int:
    import datetime as _dt
    try:
        return int(_dt.datetime.fromisoformat(report["generated_at"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError):
        return 0


def event(report: dict, finding: dict, ocsf_class: str = "detection") -> dict:
    spec = required_spec()
    cls = spec["classes"]["compliance_finding" if ocsf_class == "compliance" else "detection_finding"]
    class_uid = cls["class_uid"]
    sev_id = SEVERITY_ID.get(finding.get("severity"), 0)
    tool = report.get("tool") or {}
    created = _generated_ms(report)
    first = _ms(finding.get("first_ts"))
    last = _ms(finding.get("last_ts")) or first
    ev = {
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": cls["category_uid"],
        "category_name": "Findings",
        "class_uid": class_uid,
        "class_name": "Compliance Finding" if ocsf_class == "compliance" else "Detection Finding",
        "type_uid": class_uid * 100 + ACTIVITY_CREATE,
        "type_name": ("Compliance Finding" if ocsf_class == "compliance" else "Detection Finding") + ": Create",
        "severity_id": sev_id,
        "severity": SEVERITY_NAME.get(sev_id, "Unknown"),
        "time": first if first is not None else created,
        "start_time": first,
        "end_time": last,
        "message": finding.get("message"),
        "status_id": 1,
        "status": "New",
        "count": finding.get("count", 1),
        "metadata": {
            "version": spec["ocsf_version"],
            "product": {"name": tool.get("name", "dotaudit"), "vendor_name": "dotaudit",
                        "version": tool.get("version")},
            "uid": finding.get("id"),
            "log_name": "dotaudit",
            "labels": [finding.get("rule_id")],
        },
        "finding_info": {
            "uid": finding.get("id"),
            "title": finding.get("title"),
            "desc": finding.get("message"),
            "created_time": created,
            "first_seen_time": first,
            "last_seen_time": last,
            "types": [finding.get("rule_id")],
            "analytic": {"name": finding.get("rule_id"), "type_id": 1, "type": "Rule",
                         "uid": finding.get("rule_id")},
            "src_url": (finding.get("references") or [None])[0],
        },
        "evidences": [{"src_endpoint": _ep(finding.get("client")), "dst_endpoint": _ep(finding.get("server")),
                       "data": {"frames": finding.get("frames") or [], "flow_ids": finding.get("flow_ids") or [],
                                "observability": finding.get("observability"),
                                "evidence": finding.get("evidence") or {}}}],
        "resources": [{"type": "network_endpoint", "name": endpoint(finding.get("server")),
                       "uid": endpoint(finding.get("server"))}],
        "remediation": {"desc": finding.get("remediation") or "",
                        "references": finding.get("references") or []},
        "unmapped": {"dotaudit": {"rule_id": finding.get("rule_id"), "severity": finding.get("severity"),
                                  "client": endpoint(finding.get("client")),
                                  "server": endpoint(finding.get("server"))}},
    }
    if ocsf_class == "compliance":
        ev["compliance"] = {
            "standards": _standards(finding.get("references") or []) or ["dotaudit rule pack"],
            "control": finding.get("rule_id"),
            "requirements": finding.get("references") or [],
            "status_id": 3, "status": "Fail",
            "status_detail": finding.get("message"),
        }
    else:
        ev["is_alert"] = sev_id >= SEVERITY_ID["high"]
        ev["confidence_id"] = 3 if finding.get("observability") == "observed" else 2
    return _drop_none(ev)


def _standards(refs: list[str]) -> list[str]:
    import re
    out = []
    for r in refs:
        m = re.search(r"rfc(\d+)", r, re.IGNORECASE)
        label = f"RFC {m.group(1)}" if m else r
        if label not in out:
            out.append(label)
    return out


def _drop_none(obj):
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj if v is not None]
    return obj


def events(report: dict, ocsf_class: str = "detection") -> list[dict]:
    return [event(report, f, ocsf_class) for f in report.get("findings") or []]


def missing_required(ev: dict) -> list[str]:
    """Dotted names of the required attributes ``ev`` lacks (empty when it is complete)."""
    spec = required_spec()
    cls = next(c for name, c in spec["classes"].items() if c["class_uid"] == ev.get("class_uid")) \
        if any(c["class_uid"] == ev.get("class_uid") for c in spec["classes"].values()) else None
    if cls is None:
        return ["class_uid"]
    missing = [a for a in cls["required"] if ev.get(a) in (None, "", [])]
    for obj, path in spec["paths"].items():
        node = ev
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            if path.split(".")[0] in cls["required"]:
                missing.append(path)
            continue
        for a in spec["objects"][obj]["required"]:
            if not isinstance(node, dict) or node.get(a) in (None, "", []):
                missing.append(f"{path}.{a}")
    return missing


def render(report: dict, ocsf_class: str = "detection") -> str:
    return json.dumps(events(report, ocsf_class), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
