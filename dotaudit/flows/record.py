"""A finished flow becomes its record: the JSON-ready dict of docs/flow-record.md."""

from __future__ import annotations

from dataclasses import dataclass

from .classify import classify
from ..timing import flow_timing
from .flow import Flow, ip_text


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """What the analyzers need besides packets."""

    reference_time: float | None = None   # judge certificates at this time; None = capture time
    trust: object | None = None           # dotaudit.tls.certs.TrustConfig
    all_flows: bool = False               # list "other" flows too


def _pair(c: int, s: int) -> dict:
    return {"c2s": c, "s2c": s}


def tcp_facts(flow: Flow) -> dict:
    cdir, sdir = flow.cdir, flow.sdir
    z = _pair(0, 0)
    return {
        "syn": flow.syn,
        "syn_ack": flow.syn_ack,
        "ack": flow.ack_seen,
        "syn_frame": flow.syn_frame,
        "syn_ack_frame": flow.syn_ack_frame,
        "ack_frame": flow.ack_frame,
        "syn_ts": flow.syn_ts,
        "syn_ack_ts": flow.syn_ack_ts,
        "ack_ts": flow.ack_ts,
        "syn_retries": flow.syn_retries,
        "midstream": flow.midstream,
        "rst_from": flow.rst_from,
        "rst_frame": flow.rst_frame,
        "rst_ts": flow.rst_ts,
        "fin_from": list(flow.fin_from),
        "retransmissions": _pair(cdir.retrans, sdir.retrans) if cdir and sdir else dict(z),
        "out_of_order": _pair(cdir.ooo, sdir.ooo) if cdir and sdir else dict(z),
        "gaps": _pair(cdir.gaps, sdir.gaps) if cdir and sdir else dict(z),
        "reassembly_truncated": {"c2s": bool(cdir and cdir.truncated), "s2c": bool(sdir and sdir.truncated)},
        "tfo": flow.tfo,
        "tfo_data": flow.tfo_data,
        "mss": flow.mss,
        "wscale": flow.wscale,
        "sack_ok": flow.sack_ok,
        "first_payload_frame": _pair(*(fp[0] if fp else None for fp in flow.first_payload)),
        "first_payload_ts": _pair(*(fp[1] if fp else None for fp in flow.first_payload)),
    }


def build_record(flow: Flow, options: AnalysisOptions, capture_end_ts: float) -> dict | None:
    """The flow's record, or None for an "other" flow when they are not listed."""
    flow.flush()
    tcp = tcp_facts(flow) if flow.proto == 6 else None
    tls = None
    if flow.tls is not None:
        tls = flow.tls.summary(tcp=tcp or {}, reference_time=options.reference_time, trust=options.trust,
                               capture_end_ts=capture_end_ts)
    cls = classify(flow, tls)
    flow.cls = cls
    if cls == "other" and not options.all_flows:
        return None
    rec = {
        "id": flow.id,
        "input": flow.input,
        "transport": "tcp" if flow.proto == 6 else "udp",
        "ip_version": flow.ipver,
        "client": {"ip": ip_text(flow.cip), "port": flow.cport},
        "server": {"ip": ip_text(flow.sip), "port": flow.sport},
        "class": cls,
        "vlan": list(flow.vlans),
        "first_ts": flow.first_ts,
        "last_ts": flow.last_ts,
        "first_frame": flow.first_frame,
        "last_frame": flow.last_frame,
        "packets": _pair(flow.pk_c, flow.pk_s),
        "bytes": _pair(flow.by_c, flow.by_s),
        "payload_bytes": _pair(flow.pl_c, flow.pl_s),
        "ended": flow.ended,
        "tcp": tcp,
        "dns": flow.dns.to_json() if flow.dns is not None else None,
        "tls": tls,
        "quic": ({"long_header_packets": flow.quic_long, "short_header_packets": flow.quic_short,
                  "versions": sorted(f"0x{v:08x}" for v in (flow.quic_versions or ())),
                  "alpn": list(flow.quic_alpn or ()), "sni": flow.quic_sni,
                  "initial_version": None if flow.quic_version is None else f"0x{flow.quic_version:08x}"}
                 if (flow.quic_long or flow.quic_short) else None),
        "timing": None,
        "correlations": None,
    }
    if flow.http is not None and rec["dns"] is not None:
        rec["dns"]["carrier"] = "http/2 cleartext" if flow.http.h2 else "http/1.1 cleartext"
    rec["timing"] = flow_timing(flow, rec)
    return rec
