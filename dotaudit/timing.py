"""Per-flow timing measured from frame timestamps (``flows[].timing``).

All values are milliseconds at the capture point; ``None`` where the packets needed were not
seen.  See docs/latency.md for what each one measures and what is inferred.

``flow_timing`` runs once per finished flow and only reads what the analyzers already kept
(TCP handshake timestamps, the DNS collector's matched queries, the TLS session's
application-data record list): no per-packet work.
"""

from __future__ import annotations

MAX_QUERY_RTTS = 1000   # values listed per flow; query_rtt_count says how many there were

# An encrypted alert (close_notify...) is a type-23 record after the handshake: 19 bytes in TLS
# 1.3, 26 with TLS 1.2 AES-GCM/CCM, 18 with ChaCha20.  The smallest DNS message over TCP (2-byte
# length + 12-byte header + root name + type + class = 19 bytes) makes a record of at least 36.
MAX_NON_DNS_RECORD = 26

INFER_DNS = "dns-id-and-question"
INFER_TLS = "tls-record-pairing"


def _ms(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a) * 1000.0, 3)


def _tls_exchanges(app_records, tls13: bool) -> tuple[list[tuple[float, float]], float | None]:
    """Pair client and server application-data records into (query ts, response ts).

    The inference (docs/latency.md): records of at most MAX_NON_DNS_RECORD bytes (encrypted
    alerts) are skipped; a side's records carried by one frame are one burst (TLS 1.0 clients
    split each write into 1 + n-1 byte records; pipelined queries share a segment).  Each server
    burst answers the oldest unanswered client burst; a server burst with none pending is a
    further answer to the latest client burst (several queries in one burst).  In TLS 1.3 the
    server's NewSessionTicket messages are application data on the wire: as every query gets
    one answer, the server bursts beyond the client's count are taken as tickets, and tickets
    come first (they are sent when the client's Finished arrives).
    """
    bursts: list[list] = []   # [from_client, ts, frame]
    last_server = None
    for ts, frame, from_client, ln in app_records:
        if ln <= MAX_NON_DNS_RECORD:
            continue
        if bursts and bursts[-1][2] == frame and bursts[-1][0] == from_client:
            continue
        bursts.append([from_client, ts, frame])
        if not from_client:
            last_server = ts
    skip = 0
    if tls13:
        nc = sum(1 for b in bursts if b[0])
        skip = max(0, len(bursts) - 2 * nc)   # server bursts minus client bursts
    pending: list[float] = []
    head = 0
    pairs: list[tuple[float, float]] = []
    for from_client, ts, _frame in bursts:
        if from_client:
            pending.append(ts)
        elif skip:
            skip -= 1
        elif head < len(pending):
            pairs.append((pending[head], ts))
            head += 1
        elif pending:
            pairs.append((pending[-1], ts))
    return pairs, last_server


def flow_timing(flow, rec: dict) -> dict:
    tcp = rec["tcp"]
    out: dict = {
        "tcp_rtt_ms": None,
        "tls_handshake_ms": None,
        "tls_handshake_end": None,
        "time_to_first_answer_ms": None,
        "query_rtt_ms": [],
        "query_rtt_count": 0,
        "rtt_inference": None,
        "queries_per_connection": None,
        "lifetime_ms": _ms(flow.first_ts, flow.last_ts),
        "idle_ms": None,
        "retransmissions": None,
        "retransmission_cost_ms": None,
        "bytes_per_query": None,
    }
    if tcp is not None:
        out["tcp_rtt_ms"] = {
            "server": _ms(tcp["syn_ts"], tcp["syn_ack_ts"]),
            "client": _ms(tcp["syn_ack_ts"], tcp["ack_ts"]),
            "total": _ms(tcp["syn_ts"], tcp["ack_ts"]),
        }
        rt = tcp["retransmissions"]
        out["retransmissions"] = {"c2s": rt["c2s"], "s2c": rt["s2c"], "syn": tcp["syn_retries"]}
    queries = None
    last_answer = None
    dns = flow.dns
    if dns is not None and (dns.queries or dns.rtts):
        rtts = dns.rtts
        if rtts:
            out["query_rtt_ms"] = [r[1] for r in rtts[:MAX_QUERY_RTTS]]
            out["query_rtt_count"] = len(rtts)
            out["rtt_inference"] = INFER_DNS
            last_answer = max(r[0] + r[1] / 1000.0 for r in rtts)
        queries = dns.queries
        if dns.first_response_ts is not None:
            out["time_to_first_answer_ms"] = _ms(flow.first_ts, dns.first_response_ts)
    tls = rec.get("tls")
    session = flow.tls
    if tls and session is not None:
        ts = tls.get("ts") or {}
        tls13 = tls.get("version") == "TLS 1.3"
        ch = ts.get("client_hello")
        if tls13:
            # the client's Finished is its first type-23 record after the server's flight
            fin = getattr(session, "client_finished_ts", None)
            if fin is not None:
                out["tls_handshake_ms"] = _ms(ch, fin)
                out["tls_handshake_end"] = "client_finished"
        if out["tls_handshake_end"] is None and ts.get("first_app_data_c2s") is not None:
            out["tls_handshake_ms"] = _ms(ch, ts.get("first_app_data_c2s"))
            out["tls_handshake_end"] = "first_app_data" if out["tls_handshake_ms"] is not None else None
        if out["rtt_inference"] is None and session.app_records:
            pairs, last_server = _tls_exchanges(session.app_records, tls13)
            if pairs:
                out["query_rtt_ms"] = [round((r - q) * 1000.0, 3) for q, r in pairs[:MAX_QUERY_RTTS]]
                out["query_rtt_count"] = len(pairs)
                out["rtt_inference"] = INFER_TLS
                out["time_to_first_answer_ms"] = _ms(flow.first_ts, pairs[0][1])
                last_answer = pairs[-1][1]
                queries = len(pairs) if queries is None else queries
    if queries is not None:
        out["queries_per_connection"] = queries
        if queries:
            out["bytes_per_query"] = round((flow.by_c + flow.by_s) / queries, 1)
    if last_answer is not None:
        out["idle_ms"] = max(0.0, _ms(last_answer, flow.last_ts))
    if tcp is not None and tcp["syn_retries"] and out["tcp_rtt_ms"]["server"] is not None:
        # the first SYN went unanswered: the retries cost the handshake time beyond one RTT
        # (the RTT taken from the fastest exchange seen later on the same connection)
        later = list(out["query_rtt_ms"][:50])
        tts = ((tls or {}).get("ts") or {})
        hello_rtt = _ms(tts.get("client_hello"), tts.get("server_hello"))
        if hello_rtt is not None:
            later.append(hello_rtt)
        if later:
            out["retransmission_cost_ms"] = round(max(0.0, out["tcp_rtt_ms"]["server"] - min(later)), 3)
    return out
