"""The JSON report: the source of truth every other format renders from (DESIGN.md decision 8).

Keys are sorted and lists are in a fixed order, so two reports diff cleanly.  Each flow is one
compact line inside the ``flows`` array: a 1M-packet capture has tens of thousands of flows,
and a line per flow keeps the file small and still diffable.  ``write`` streams the flows from
the flow store, so writing a report never holds all of it in memory.
"""

from __future__ import annotations

import io
import json
from typing import TextIO

import orjson

WRITE_BATCH = 512
"""Stored lines joined into one write (a few hundred KiB)."""

_compact = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode


def _clean(obj):
    """Make values JSON-ready: sets become sorted lists, NaN/inf become null."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_clean(v) for v in obj)
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, bytes):
        return obj.hex()
    return obj


class Rendered(dict):
    """A value whose pretty JSON text was made ahead of the report (``prerender``): for the JSON
    writer that text, for everything else a dict.  A deep copy is a plain dict (the copy may
    be changed, e.g. redacted, and is rendered again)."""

    __slots__ = ("text",)

    def __deepcopy__(self, memo):
        import copy
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}


def prerender(value: dict) -> Rendered:
    """``value`` with its pretty JSON text, as ``write`` would make it.  The judge process's
    latency statistics arrive before its findings; the main process renders them (the largest
    pretty part of a report) while it waits for the rest."""
    out = Rendered(value)
    out.text = _pretty_text(value)
    return out


def _pretty_text(value) -> str:
    """``_dump_pretty(value)``, with the text of Rendered values in a dict used as it is."""
    if isinstance(value, Rendered):
        return value.text
    if isinstance(value, dict) and value and any(isinstance(v, Rendered) for v in value.values()):
        items = [json.dumps(str(k), ensure_ascii=False) + ": " + _pretty_text(value[k]) for k in sorted(value)]
        return "{\n  " + ",\n  ".join(t.replace("\n", "\n  ") for t in items) + "\n}"
    return _dump_pretty(value)


_PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


def _dump_pretty(value) -> str:
    """json.dumps(_clean(value), indent=2, sort_keys=True, ensure_ascii=False), made by orjson
    (the latency statistics of a report: 2 ms instead of 30-70).  Floats are written as in the
    flow and finding lines, which orjson writes too (1e-05 as 0.00001)."""
    try:
        return orjson.dumps(value, option=_PRETTY).decode()
    except TypeError:   # a set, bytes, a key that is no string: cleaned first
        pass
    cleaned = _clean(value)
    try:
        return orjson.dumps(cleaned, option=_PRETTY).decode()
    except TypeError:   # an integer beyond 64 bits
        return json.dumps(cleaned, indent=2, sort_keys=True, ensure_ascii=False)


def _pretty(value, indent: str) -> str:
    return _pretty_text(value).replace("\n", "\n" + indent)


def write(report: dict, out: TextIO) -> None:
    """Stream the report to ``out``."""
    keys = sorted(report)
    out.write("{\n")
    for n, key in enumerate(keys):
        sep = ",\n" if n < len(keys) - 1 else "\n"
        value = report[key]
        out.write(f"  {json.dumps(key)}: ")
        if key in ("flows", "findings"):
            binary = getattr(out, "buffer", None) if hasattr(value, "raw_lines") else None
            if binary is not None and str(getattr(out, "encoding", "")).lower().replace("-", "") == "utf8":
                # already clean JSON bytes (UTF-8): straight to the byte stream under ``out``
                out.flush()
                write = binary.write
                first = True
                batch: list[bytes] = []
                for line in value.raw_lines():
                    batch.append(line)
                    if len(batch) >= WRITE_BATCH:
                        write((b"[\n    " if first else b",\n    ") + b",\n    ".join(batch))
                        first = False
                        batch = []
                if batch:
                    write((b"[\n    " if first else b",\n    ") + b",\n    ".join(batch))
                    first = False
                write(b"[]" if first else b"\n  ]")
                binary.flush()
                out.write(sep)
                continue
            if hasattr(value, "raw_lines"):
                lines = (ln.decode("utf-8") for ln in value.raw_lines())  # already clean JSON
            else:
                lines = (_compact(_clean(v)) for v in value)
            first = True
            for line in lines:
                out.write("[\n    " if first else ",\n    ")
                out.write(line)
                first = False
            out.write("[]" if first else "\n  ]")
        else:
            out.write(_pretty(value, "  "))
        out.write(sep)
    out.write("}\n")


def render(report: dict) -> str:
    buf = io.StringIO()
    write(report, buf)
    return buf.getvalue()
