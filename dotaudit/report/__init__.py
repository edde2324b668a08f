"""Report formatters: each renders the JSON report dict (DESIGN.md decision 8), never the engine.

``render(report, fmt, ...)`` returns the text of one format; ``write(report, fmt, fh, ...)``
writes it (the JSON and JSONL writers stream the flows).  ``OutputFormat`` lists the formats
and ``EXTENSIONS`` the file name each gets in an output directory (``report.<ext>``).
"""

from __future__ import annotations

from enum import Enum
from typing import Sequence, TextIO


class OutputFormat(str, Enum):
    JSON = "json"
    TEXT = "text"
    HTML = "html"
    MD = "md"
    JSONL = "jsonl"
    OCSF = "ocsf"
    JUNIT = "junit"


EXTENSIONS = {
    OutputFormat.JSON: "json",
    OutputFormat.TEXT: "txt",
    OutputFormat.HTML: "html",
    OutputFormat.MD: "md",
    OutputFormat.JSONL: "jsonl",
    OutputFormat.OCSF: "ocsf.json",
    OutputFormat.JUNIT: "junit.xml",
}


class OcsfClass(str, Enum):
    DETECTION = "detection"
    COMPLIANCE = "compliance"


def write(report: dict, fmt: str | OutputFormat, out: TextIO, *, rules: Sequence | None = None,
          fail_on: str = "high", ocsf_class: str = "detection") -> None:
    """Write ``report`` to ``out`` in format ``fmt`` (exhaustive over OutputFormat)."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.JSON:
        from . import json as mod
        mod.write(report, out)
    elif fmt is OutputFormat.JSONL:
        from . import jsonl
        jsonl.write(report, out)
    elif fmt is OutputFormat.TEXT:
        from . import text
        out.write(text.render(report))
    elif fmt is OutputFormat.HTML:
        from . import html
        out.write(html.render(report))
    elif fmt is OutputFormat.MD:
        from . import md
        out.write(md.render(report))
    elif fmt is OutputFormat.OCSF:
        from . import ocsf
        out.write(ocsf.render(report, ocsf_class=ocsf_class))
    elif fmt is OutputFormat.JUNIT:
        from . import junit
        out.write(junit.render(report, rules=rules, fail_on=fail_on))
    else:  # pragma: no cover - the enum is exhaustive
        raise AssertionError(fmt)


def render(report: dict, fmt: str | OutputFormat, **kwargs) -> str:
    import io
    buf = io.StringIO()
    write(report, fmt, buf, **kwargs)
    return buf.getvalue()
