"""Classification by content, confirmed by port (DESIGN.md): never by port alone."""

from __future__ import annotations

from enum import Enum

from .flow import Flow


class FlowClass(str, Enum):
    DO53 = "do53"
    DOT = "dot"
    DOQ = "doq"
    DOH = "doh"
    DNS_NONSTANDARD_PORT = "dns-nonstandard-port"
    DOT_NONSTANDARD_PORT = "dot-nonstandard-port"
    MDNS = "mdns"
    LLMNR = "llmnr"
    NBNS = "nbns"
    TLS_ON_853_NOT_DNS = "tls-on-853-not-dns"
    OTHER = "other"


CLASSES = tuple(c.value for c in FlowClass)
DNS_HINTS = {"do53": "do53", "mdns": "mdns", "llmnr": "llmnr", "nbns": "nbns",
             "dns-nonstandard-port": "dns-nonstandard-port"}


def classify(flow: Flow, tls: dict | None = None) -> str:
    """The flow's class, from what its analyzers saw (``tls`` is the TLS summary, if any)."""
    if flow.cls is not None and flow.hint is None:
        return flow.cls
    hint = flow.hint
    dns = flow.dns
    has_dns = dns is not None and dns.messages > 0
    if hint in DNS_HINTS:
        if has_dns:
            return DNS_HINTS[hint]
        if flow.proto == 6 and not (flow.pl_c or flow.pl_s) and hint == "do53":
            return "do53"  # a TCP/53 connection attempt that carried nothing yet
        return "other"
    if hint == "doq":
        if flow.quic_long or flow.quic_short:
            return "doq"
        if has_dns:
            return "dns-nonstandard-port"
        return "other"
    if hint == "dot":
        if has_dns and flow.framers is not None:
            return "dns-nonstandard-port"  # plaintext DNS on the DoT port
        if not flow.pl_c:
            return "dot"  # an attempt: RST, no SYN-ACK, silence, or a server that spoke non-TLS
        if flow.c_tls:
            alpn = (tls or {}).get("alpn_offered") or ()
            if alpn and "dot" not in alpn:
                return "tls-on-853-not-dns"
            return "dot"
        return "other"  # the client itself spoke something else than TLS or DNS
    if hint == "dns-over-http":
        # DoH without TLS: every query is in clear on the wire, like DNS on an odd port
        return "dns-nonstandard-port" if has_dns else "other"
    if hint in ("dot-nonstandard-port", "doh"):
        return hint if flow.c_tls is not False else "other"
    return flow.cls or "other"
