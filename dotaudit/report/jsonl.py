"""JSON Lines: one flow record per line, then one finding per line.

Each line is a JSON object with a ``record_type`` of ``flow`` or ``finding`` and otherwise the
fields of the JSON report's ``flows[]`` / ``findings[]`` (docs/flow-record.md), so a SIEM or a
pySigma backend can run the same rules on the flows.  Flows stream from the flow store.
"""

from __future__ import annotations

import json
from typing import TextIO

from .json import _clean

_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode


def write(report: dict, out: TextIO) -> None:
    for rec in report.get("flows") or []:
        out.write(_dumps(_clean(dict(rec, record_type="flow"))))
        out.write("\n")
    for f in report.get("findings") or []:
        out.write(_dumps(_clean(dict(f, record_type="finding"))))
        out.write("\n")


def render(report: dict) -> str:
    import io
    buf = io.StringIO()
    write(report, buf)
    return buf.getvalue()
