"""The shipped, dated list of public DoH resolvers (dotaudit/data/doh-resolvers.json)."""

from __future__ import annotations

import ipaddress
import json
from importlib import resources

_DATA = json.loads(resources.files("dotaudit.data").joinpath("doh-resolvers.json").read_text("utf-8"))

DOH_LIST_UPDATED: str = _DATA["updated"]
DOH_NAMES: frozenset[str] = frozenset(n.lower() for n in _DATA["names"])
DOH_ADDRESSES: frozenset[bytes] = frozenset(ipaddress.ip_address(a).packed for a in _DATA["addresses"])


def is_doh_name(sni: str) -> bool:
    """Exact match, or a name under a listed one (``x.dns.nextdns.io``)."""
    name = sni.lower().rstrip(".")
    if name in DOH_NAMES:
        return True
    parts = name.split(".")
    return any(".".join(parts[i:]) in DOH_NAMES for i in range(1, len(parts) - 1))
