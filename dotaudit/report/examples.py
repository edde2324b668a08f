"""Build the example reports in ``reports/`` from bundled captures (``make reports``).

    python -m dotaudit.report.examples [OUTDIR]     # from the repository root; default reports/

Each example is audited with the pipeline and written as JSON, HTML and Markdown.  Paths stay
relative to the repository root (the captures and the lab CA), so the files hold nothing of the
machine they were made on; ``tests/report`` compares them with fresh renders, volatile fields
(generation time, tool version) masked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import EXTENSIONS, OutputFormat, write

LAB_CA = "pcaps/lab/ca.pem"
EXAMPLES = {
    # name: (captures, trust anchors)
    "gateway": (["pcaps/gateway/mixed.pcap"], [LAB_CA]),
    "dot-tls13-clean": (["pcaps/dot/tls13-multi-query.pcap"], [LAB_CA]),
    "dot-tls10-weak": (["pcaps/dot/tls10.pcap"], [LAB_CA]),
}
FORMATS = (OutputFormat.JSON, OutputFormat.HTML, OutputFormat.MD)


def build(name: str) -> dict:
    """Audit one example (cwd must be the repository root); return the report dict."""
    from ..pipeline import audit
    from ..rules.policy import Policy

    captures, anchors = EXAMPLES[name]
    policy = Policy(trust_anchors=list(anchors))
    return audit(captures, policy=policy)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "reports")
    out.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLES:
        report = build(name)
        for fmt in FORMATS:
            path = out / f"{name}.{EXTENSIONS[fmt]}"
            tmp = str(path) + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                write(report, fmt, fh)
            os.replace(tmp, path)
            print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
