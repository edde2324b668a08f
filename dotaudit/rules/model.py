"""A compiled rule: Sigma metadata, dotaudit's custom attributes, and the predicate over a flow.

Sigma's own fields are parsed and validated by pySigma; dotaudit's custom attributes
(``remediation``, ``observability``, ``evidence``, ``message``, ``aggregate``, ``related_flows``,
``tests``) by the pydantic models below (``extra="forbid"``, so a typo is an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

LEVEL_TO_SEVERITY = {
    "informational": "info",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "critical": "critical",
}

AREAS = ("leak", "cipher", "version", "cert", "handshake", "padding", "resolver", "capture")
CATEGORIES = ("flow", "capture")


class RuleTest(BaseModel):
    """One regression case: run ``pcap`` through the pipeline, expect the rule on ``expect`` flows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pcap: str
    expect: int = Field(ge=0)
    policy: Optional[str] = None
    """Policy file for this case, relative to the repository root (default: the lab policy)."""


class Evidence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: list[str] = Field(min_length=1)
    """Dotted flow paths whose observed values go into ``finding.evidence``."""
    expected: str
    """What a compliant flow would show, in words."""

    @field_validator("expected", mode="after")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())

    @field_validator("fields", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value


class RuleExtras(BaseModel):
    """dotaudit's custom attributes of a Sigma rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    remediation: str
    observability: Literal["observed", "inferred", "not_observable"]
    evidence: Evidence
    message: str
    """One sentence; ``{dotted.path}`` is replaced by the observed value, ``{count}`` by the
    number of flows, ``{sum:dotted.path}`` by the sum over the flows."""
    aggregate: Literal["flow", "pair"] = "flow"
    """``pair``: one finding per client IP -> server IP:port for all matching flows."""
    related_flows: Optional[str] = None
    """Dotted path of a flow id (or list of ids) to add to ``flow_ids`` (e.g. the failed DoT flow)."""
    tests: list[RuleTest] = Field(default_factory=list)

    @field_validator("remediation", "message", mode="after")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """A rule compiled once into a predicate over a flow (or capture) record."""

    name: str
    """Stable kebab-case id (the finding's ``rule_id``); equals the file name."""
    uuid: str
    title: str
    status: str
    level: str
    severity: str
    description: str
    references: tuple[str, ...]
    category: str
    """``flow`` (evaluated on each flow) or ``capture`` (on one record per report)."""
    extras: RuleExtras
    match: Callable[[dict], bool] = field(repr=False)
    """The compiled predicate."""
    match_indexed: Optional[Callable[[dict], bool]] = field(default=None, repr=False)
    """The predicate without its ``class`` test, for flows the engine's class index dispatched."""
    classes: Optional[frozenset[str]] = None
    """Flow classes the rule can match at all (None: any); the engine indexes on it."""
    path: Optional[str] = None
    """The file the rule came from."""
    area: Optional[str] = None
    sigma: Any = field(default=None, repr=False)
    source_text: str = field(default="", repr=False)
    render_message: Callable[[Callable[[str], Any]], str] = field(default=None, repr=False)
    evidence_getters: tuple = field(default=(), repr=False)
    related_getter: Optional[Callable[[dict], Any]] = field(default=None, repr=False)
    condition: Any = field(default=None, repr=False)
    """The pySigma condition tree ``match`` was compiled from (the engine generates one matcher
    per flow class from the trees of its rules); None for a rule made without one."""

    @property
    def remediation(self) -> str:
        return self.extras.remediation

    @property
    def observability(self) -> str:
        return self.extras.observability

    @property
    def tests(self) -> list[RuleTest]:
        return self.extras.tests
