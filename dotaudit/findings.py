"""Findings: what a rule concluded about one flow (or one client -> server pair), as JSON.

The JSON shape is the DESIGN.md contract::

    {id, rule_id, title, severity, observability, flow_ids[], client{ip, port},
     server{ip, port}, first_ts, last_ts, frames[], message, evidence{}, references[],
     remediation, count}

``id`` is stable across runs: the first 16 hex digits of sha1(rule_id + flow ids).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Iterator, Optional

MAX_FLOW_IDS = 100
"""An aggregated finding lists at most this many flow ids; ``count`` keeps the total."""
MAX_FRAMES = 50


class Severity(str, Enum):
    """Report severity; Sigma levels map one to one (``informational`` -> ``info``)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self.value]

    @classmethod
    def from_level(cls, level: str) -> "Severity":
        return cls("info" if level == "informational" else level)


_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
_NAME = {rank: name for name, rank in _RANK.items()}


def severity_rank(severity: str) -> int:
    return _RANK.get(severity, -1)


def severities(findings) -> Iterator[str]:
    """The severity of each finding; a store sorted by ``sort_key`` (spill.RecordStore) answers
    from its index, without reading spilled findings back."""
    if getattr(findings, "key", None) is sort_key:
        for key in findings.keys():
            yield _NAME.get(-key[0], "")
    else:
        for f in findings:
            yield f.get("severity", "")


def finding_id(rule_id: str, flow_ids: Iterable[int]) -> str:
    """Stable id: sha1 of ``rule_id`` and the sorted flow ids, first 16 hex digits."""
    key = rule_id + ":" + ",".join(map(str, sorted(flow_ids)))
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def sort_key(finding: dict) -> tuple:
    """Severity (highest first), rule id, first flow id."""
    flows = finding.get("flow_ids") or []
    return (-severity_rank(finding.get("severity", "")), finding.get("rule_id", ""),
            flows[0] if flows else -1, finding.get("id", ""))


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's conclusion about one flow, or about all matching flows of a client -> server pair."""

    rule_id: str
    """The rule's kebab-case ``name``."""
    title: str
    severity: Severity
    observability: str
    """``observed``, ``inferred`` or ``not_observable``."""
    message: str
    """One sentence with the concrete values."""
    flow_ids: tuple[int, ...] = ()
    """Flows that matched, plus related flows (e.g. the failed DoT attempt before a fallback)."""
    count: int = 1
    """Number of flows the rule matched (``flow_ids`` is capped at MAX_FLOW_IDS)."""
    client: Optional[dict] = None
    server: Optional[dict] = None
    first_ts: Optional[float] = None
    last_ts: Optional[float] = None
    frames: tuple[int, ...] = ()
    evidence: dict = field(default_factory=dict)
    references: tuple[str, ...] = ()
    remediation: str = ""

    @property
    def id(self) -> str:
        return finding_id(self.rule_id, self.flow_ids)

    def to_dict(self) -> dict[str, Any]:
        flow_ids = list(self.flow_ids)
        out = {
            "id": self.id,
            "rule_id": self.rule_id,
            "title": self.title,
            "severity": self.severity.value,
            "observability": self.observability,
            "flow_ids": flow_ids[:MAX_FLOW_IDS],
            "client": self.client,
            "server": self.server,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "frames": list(self.frames)[:MAX_FRAMES],
            "message": self.message,
            "evidence": self.evidence,
            "references": list(self.references),
            "remediation": self.remediation,
            "count": self.count,
        }
        if len(flow_ids) > MAX_FLOW_IDS:
            out["flow_ids_total"] = len(flow_ids)
        return out
