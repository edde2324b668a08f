"""Per-flow timing measured from frame timestamps (``flows[].timing``).

All values are milliseconds at the capture point; ``None`` where the packets needed were not
seen.  See docs/flow-record.md for what each one measures.
"""

from __future__ import annotations


def _ms(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a) * 1000.0, 3)


def flow_timing(flow, rec: dict) -> dict:
    tcp = rec["tcp"]
    out: dict = {
        "tcp_rtt_ms": None,
        "tls_handshake_ms": None,
        "time_to_first_answer_ms": None,
        "query_rtt_ms": [],
        "queries_per_connection": None,
        "lifetime_ms": _ms(flow.first_ts, flow.last_ts),
        "rtt_inference": None,
    }
    if tcp is not None:
        out["tcp_rtt_ms"] = {
            "server": _ms(tcp["syn_ts"], tcp["syn_ack_ts"]),
            "client": _ms(tcp["syn_ack_ts"], tcp["ack_ts"]),
            "total": _ms(tcp["syn_ts"], tcp["ack_ts"]),
        }
    dns = flow.dns
    if dns is not None and dns.rtts:
        out["query_rtt_ms"] = [r[1] for r in dns.rtts]
        out["rtt_inference"] = "dns-id-and-question"
    if dns is not None and dns.first_query_ts is not None and dns.first_response_ts is not None:
        out["time_to_first_answer_ms"] = _ms(flow.first_ts, dns.first_response_ts)
    tls = rec.get("tls")
    if tls:
        ts = tls.get("ts") or {}
        out["tls_handshake_ms"] = _ms(ts.get("client_hello"), ts.get("first_app_data_c2s"))
    return out
