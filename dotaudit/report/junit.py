"""JUnit XML for CI: one test case per rule (every loaded rule), failed when the rule has a
finding at or above ``--fail-on``; findings below it are reported in ``system-out``.

Built with xml.etree, so names and messages from the network are escaped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Sequence

from .common import at_or_above, endpoint, rule_entries, sorted_findings


def render(report: dict, rules: Sequence | None = None, fail_on: str = "high") -> str:
    entries = rule_entries(report, rules)
    by_rule: dict[str, list[dict]] = {}
    for f in sorted_findings(report.get("findings") or []):
        by_rule.setdefault(f["rule_id"], []).append(f)
    inputs = ", ".join(i.get("path", "") for i in report.get("inputs") or [])
    suite = ET.Element("testsuite", {"name": "dotaudit", "timestamp": str(report.get("generated_at") or "")})
    props = ET.SubElement(suite, "properties")
    for name, value in (("inputs", inputs), ("verdict", str((report.get("summary") or {}).get("verdict"))),
                        ("fail_on", fail_on), ("dotaudit_version", str((report.get("tool") or {}).get("version")))):
        ET.SubElement(props, "property", {"name": name, "value": value})
    failures = 0
    for e in entries:
        case = ET.SubElement(suite, "testcase", {"classname": "dotaudit.rules", "name": e["name"], "time": "0"})
        found = by_rule.get(e["name"], [])
        failing = [f for f in found if at_or_above(f["severity"], fail_on)]
        if failing:
            failures += 1
            fail = ET.SubElement(case, "failure", {
                "type": failing[0]["severity"],
                "message": f"{len(failing)} finding(s) at or above {fail_on}: {e['title']}"})
            fail.text = "\n".join(_describe(f) for f in failing)
        if found and len(failing) < len(found):
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(_describe(f) for f in found if f not in failing)
    suite.set("tests", str(len(entries)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    suites = ET.Element("testsuites", {"name": "dotaudit", "tests": str(len(entries)), "failures": str(failures)})
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _describe(f: dict) -> str:
    frames = ",".join(str(x) for x in (f.get("frames") or [])[:10])
    return (f"[{f['severity']}] {f.get('message', '')} ({endpoint(f.get('client'))} -> "
            f"{endpoint(f.get('server'))}, frames {frames or '-'})")
