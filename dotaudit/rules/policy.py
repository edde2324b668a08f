"""The audit policy: which resolvers are local or approved, what to trust, which profile to hold
DoT sessions to, and the thresholds the rules compare against.

Policy values never live in rule files. A policy file is YAML parsed with pydantic
(``extra="forbid"``): an unknown key or a bad value raises :class:`PolicyError` with one line
naming the key.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dotaudit.rules import profiles

IpNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

PROFILES = ("rfc9325", "mozilla-intermediate", "mozilla-modern", "nist-800-52r2")


class PolicyError(ValueError):
    """A policy file could not be read or holds a bad key or value (one line, names the key)."""


def _parse_networks(values: list[str], key: str) -> tuple[IpNetwork, ...]:
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR: {value!r}") from None
    return tuple(nets)


class Policy(BaseModel):
    """What the audit holds the capture to. Every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    local_resolvers: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1"])
    """Plaintext DNS to these addresses (stubs on the host or the LAN) is not a leak."""
    approved_resolvers: list[str] = Field(default_factory=list)
    """Encrypted resolvers clients may use; empty means any."""
    trust_anchors: list[str] = Field(default_factory=list)
    """PEM files with extra trusted CAs, relative to the policy file's directory."""
    system_trust: bool = True
    """Also trust the system CA store when validating certificates."""
    reference_time: str = "capture"
    """Time certificates are validated at: "capture" (first packet), "now", or an ISO date."""
    profile: Literal["rfc9325", "mozilla-intermediate", "mozilla-modern", "nist-800-52r2"] = "rfc9325"
    """TLS profile cipher suites and versions are held to."""
    fallback_window_s: float = Field(default=10.0, ge=0)
    """A plaintext query this long after a failed DoT attempt by the same client is a fallback."""
    cert_expiry_warning_days: int = Field(default=30, ge=0)
    disabled_rules: list[str] = Field(default_factory=list)
    max_tls_handshake_ms: Optional[float] = Field(default=None, gt=0)
    max_query_rtt_ms: Optional[float] = Field(default=None, gt=0)
    min_rsa_bits: int = Field(default=2048, ge=512)
    min_ec_bits: int = Field(default=256, ge=128)

    source: Optional[str] = Field(default=None, exclude=True)
    """The file the policy came from (None for the defaults); not a policy key."""

    @field_validator("local_resolvers", "approved_resolvers", mode="before")
    @classmethod
    def _list_of_addresses(cls, value, info):
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ValueError("must be a list of IP addresses or CIDRs")
        _parse_networks(value, info.field_name)
        return [str(v).strip() for v in value]

    @field_validator("trust_anchors", "disabled_rules", mode="before")
    @classmethod
    def _list_of_strings(cls, value):
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        return value

    @field_validator("reference_time", mode="before")
    @classmethod
    def _reference_time(cls, value):
        if isinstance(value, (_dt.date, _dt.datetime)):
            value = value.isoformat()
        if not isinstance(value, str):
            raise ValueError('must be "capture", "now" or an ISO date')
        if value not in ("capture", "now"):
            try:
                _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f'must be "capture", "now" or an ISO date, got {value!r}') from None
        return value

    # -- derived, cached -------------------------------------------------------------------

    @property
    def local_networks(self) -> tuple[IpNetwork, ...]:
        return _networks(tuple(self.local_resolvers))

    @property
    def approved_networks(self) -> tuple[IpNetwork, ...]:
        return _networks(tuple(self.approved_resolvers))

    def is_local_resolver(self, ip: str | None) -> bool:
        return _in_networks(ip, self.local_networks)

    def is_approved_resolver(self, ip: str | None) -> bool:
        """True when the approved list is empty (any resolver) or lists ``ip``."""
        return not self.approved_resolvers or _in_networks(ip, self.approved_networks)

    def is_listed_resolver(self, ip: str | None) -> bool:
        """True only when a non-empty approved list names ``ip``."""
        return bool(self.approved_resolvers) and _in_networks(ip, self.approved_networks)

    def trust_anchor_paths(self) -> list[Path]:
        """Trust anchors resolved against the policy file's directory (or the cwd)."""
        base = Path(self.source).parent if self.source else Path.cwd()
        return [(base / p) if not Path(p).is_absolute() else Path(p) for p in self.trust_anchors]

    def reference_datetime(self, capture_ts: float | None) -> _dt.datetime:
        """The instant certificates are judged at, given the capture's first timestamp."""
        if self.reference_time == "now" or (self.reference_time == "capture" and capture_ts is None):
            return _dt.datetime.now(_dt.timezone.utc)
        if self.reference_time == "capture":
            return _dt.datetime.fromtimestamp(capture_ts, _dt.timezone.utc)
        when = _dt.datetime.fromisoformat(self.reference_time.replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)

    def cipher_in_profile(self, cipher: dict | None, version: str | None) -> bool | None:
        return profiles.cipher_in_profile(self.profile, cipher, version)

    def version_in_profile(self, version: str | None) -> bool | None:
        return profiles.version_in_profile(self.profile, version)


@lru_cache(maxsize=64)
def _networks(values: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return _parse_networks(list(values), "")


@lru_cache(maxsize=4096)
def _ip(value: str):
    try:
        return ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None


_MEMBERSHIP: dict[tuple[str, int], tuple[tuple, bool]] = {}


def _in_networks(ip: str | None, nets: tuple[IpNetwork, ...]) -> bool:
    """Once per address and network list: a capture asks about the same resolvers many times."""
    if not ip or not nets:
        return False
    key = (ip, id(nets))   # the entry holds ``nets`` itself, so its id cannot be reused meanwhile
    hit = _MEMBERSHIP.get(key)
    if hit is None:
        if len(_MEMBERSHIP) > 65536:
            _MEMBERSHIP.clear()
        hit = _MEMBERSHIP[key] = (nets, _in_networks_uncached(ip, nets))
    return hit[1]


def _in_networks_uncached(ip: str, nets: tuple[IpNetwork, ...]) -> bool:
    addr = _ip(ip)
    if addr is None:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in nets)


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "policy"
    if first.get("type") == "extra_forbidden":
        return f"unknown policy key {loc!r}"
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    return f"policy key {loc!r}: {msg} (got {first.get('input')!r})"


def load_policy(path: str | None) -> Policy:
    """Read a policy file; ``None`` gives the defaults. Raises :class:`PolicyError`."""
    if path is None:
        return Policy()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"policy file {path}{where}: not valid YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"policy file {path}: must be a mapping of keys to values")
    if "source" in data:
        raise PolicyError("unknown policy key 'source'")
    try:
        policy = Policy(**data, source=str(p))
    except ValidationError as exc:
        raise PolicyError(f"{path}: {_format_error(exc)}") from None
    anchors = policy.trust_anchor_paths()
    for anchor in anchors:
        if not anchor.is_file():
            raise PolicyError(f"{path}: policy key 'trust_anchors': file not found: {anchor}")
    # Consumers read trust_anchors directly: hand them paths that work from any cwd.
    return policy.model_copy(update={"trust_anchors": [str(a.resolve()) for a in anchors]})
