"""Realistic flow dicts (docs/flow-record.md) for rule, engine and correlator tests.

``make_flow(**overrides)`` returns a healthy DoT flow: TLS 1.3, TLS_AES_128_GCM_SHA256,
ALPN ``dot``, SNI, four padded queries on one connection. Overrides take dotted paths with
``__`` (``tls__version="TLS 1.2"``) or full sub-dicts (``tls=None``); ``klass`` sets ``class``.
``make_do53_flow``, ``make_tls12_flow``, ``make_report`` and friends build the usual variants.
"""

from __future__ import annotations

import copy
from typing import Any

T0 = 1_700_000_000.0

TLS13_QUERY_RECORD = 2 + 128 + 17
"""A padded 128-byte query in a TLS 1.3 AES-GCM record: length prefix + block + type + tag."""
TLS13_RESPONSE_RECORD = 2 + 468 + 17

_TLS13_CIPHER = {
    "id": 0x1301,
    "name": "TLS_AES_128_GCM_SHA256",
    "kex": None,
    "auth": None,
    "enc": "AES_128",
    "mode": "GCM",
    "mac": "SHA256",
    "weaknesses": [],
    "profiles": ["modern", "intermediate", "old"],
}

TLS12_CIPHERS = {
    "ecdhe-gcm": {
        "id": 0xC02F, "name": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "kex": "ECDHE", "auth": "RSA",
        "enc": "AES_128", "mode": "GCM", "mac": "SHA256", "weaknesses": [],
        "profiles": ["intermediate", "old"],
    },
    "rsa-cbc": {
        "id": 0x002F, "name": "TLS_RSA_WITH_AES_128_CBC_SHA", "kex": "RSA", "auth": "RSA",
        "enc": "AES_128", "mode": "CBC", "mac": "SHA", "weaknesses": ["no_pfs", "cbc"],
        "profiles": ["old"],
    },
    "ecdhe-cbc": {
        "id": 0xC013, "name": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "kex": "ECDHE", "auth": "RSA",
        "enc": "AES_128", "mode": "CBC", "mac": "SHA", "weaknesses": ["cbc"], "profiles": ["old"],
    },
    "3des": {
        "id": 0x000A, "name": "TLS_RSA_WITH_3DES_EDE_CBC_SHA", "kex": "RSA", "auth": "RSA",
        "enc": "3DES_EDE", "mode": "CBC", "mac": "SHA", "weaknesses": ["3des", "no_pfs", "cbc"],
        "profiles": ["old"],
    },
    "rc4": {
        "id": 0x0005, "name": "TLS_RSA_WITH_RC4_128_SHA", "kex": "RSA", "auth": "RSA",
        "enc": "RC4_128", "mode": None, "mac": "SHA", "weaknesses": ["rc4", "no_pfs"], "profiles": [],
    },
    "des": {
        "id": 0x0009, "name": "TLS_RSA_WITH_DES_CBC_SHA", "kex": "RSA", "auth": "RSA",
        "enc": "DES", "mode": "CBC", "mac": "SHA", "weaknesses": ["des", "no_pfs", "cbc"], "profiles": [],
    },
    "null": {
        "id": 0x0002, "name": "TLS_RSA_WITH_NULL_SHA", "kex": "RSA", "auth": "RSA",
        "enc": "NULL", "mode": None, "mac": "SHA", "weaknesses": ["null", "no_pfs"], "profiles": [],
    },
    "export": {
        "id": 0x0003, "name": "TLS_RSA_EXPORT_WITH_RC4_40_MD5", "kex": "RSA_EXPORT", "auth": "RSA",
        "enc": "RC4_40", "mode": None, "mac": "MD5", "weaknesses": ["export", "rc4", "no_pfs"], "profiles": [],
    },
    "anon": {
        "id": 0x0034, "name": "TLS_DH_anon_WITH_AES_128_CBC_SHA", "kex": "DH", "auth": "anon",
        "enc": "AES_128", "mode": "CBC", "mac": "SHA", "weaknesses": ["anon", "cbc"], "profiles": [],
    },
    "chacha": {
        "id": 0xCCA8, "name": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "kex": "ECDHE", "auth": "RSA",
        "enc": "CHACHA20", "mode": "POLY1305", "mac": None, "weaknesses": [],
        "profiles": ["intermediate", "old"],
    },
}


def _cert(cn: str = "dns.lab.example", issuer: str = "dotaudit lab CA", key_type: str = "EC",
          key_bits: int = 256, signature_hash: str = "sha256", self_signed: bool = False) -> dict:
    return {
        "subject": f"CN={cn}",
        "issuer": f"CN={issuer}",
        "sans": [cn],
        "not_before": "2023-01-01T00:00:00Z",
        "not_after": "2025-01-01T00:00:00Z",
        "key_type": key_type,
        "key_bits": key_bits,
        "signature_hash": signature_hash,
        "self_signed": self_signed,
        "sha256": "00" * 32,
    }


def make_cert(**kw: Any) -> dict:
    return _cert(**kw)


def _base_flow() -> dict:
    return {
        "id": 1,
        "input": 0,
        "transport": "tcp",
        "client": {"ip": "192.0.2.10", "port": 50514},
        "server": {"ip": "198.51.100.53", "port": 853},
        "class": "dot",
        "vlan": [],
        "first_ts": T0,
        "last_ts": T0 + 1.25,
        "first_frame": 1,
        "last_frame": 24,
        "packets": {"c2s": 12, "s2c": 12},
        "bytes": {"c2s": 2100, "s2c": 5200},
        "payload_bytes": {"c2s": 1400, "s2c": 4500},
        "ended": "fin",
        "tcp": {
            "syn": True, "syn_ack": True, "ack": True, "syn_frame": 1, "syn_ack_frame": 2,
            "syn_retries": 0, "midstream": False, "rst_from": None, "rst_frame": None,
            "fin_from": ["client", "server"], "retransmissions": {"c2s": 0, "s2c": 0},
            "out_of_order": {"c2s": 0, "s2c": 0}, "gaps": {"c2s": 0, "s2c": 0},
            "tfo": False, "tfo_data": False,
            "reassembly_truncated": {"c2s": False, "s2c": False},
            "mss": 1460, "wscale": 7, "sack_ok": True,
        },
        "dns": None,
        "tls": {
            "version": "TLS 1.3",
            "record_version": "TLS 1.2",
            "versions_offered": ["TLS 1.3", "TLS 1.2"],
            "cipher": copy.deepcopy(_TLS13_CIPHER),
            "ciphers_offered": [
                "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ],
            "offered_weaknesses": [],
            "sni": "dns.lab.example",
            "alpn_offered": ["dot"],
            "alpn": None,
            "compression": 0,
            "downgrade_sentinel": None,
            "resumed": False,
            "resumption": {"offered": None, "ticket_offered": False, "psk_offered": False, "session_id_match": False},
            "certificates": "not_observable",
            "cert_validation": "not_observable",
            "alerts": [],
            "established": True,
            "handshake_complete": True,
            "failure": None,
            "not_tls": False,
            "app_data": {"c2s": {"records": 4, "bytes": 4 * TLS13_QUERY_RECORD},
                         "s2c": {"records": 4, "bytes": 4 * TLS13_RESPONSE_RECORD}},
            "app_record_sizes": {"c2s": [TLS13_QUERY_RECORD] * 4, "s2c": [TLS13_RESPONSE_RECORD] * 4},
            "frames": {"client_hello": 4, "server_hello": 6, "certificate": None,
                       "first_app_data_c2s": 8, "first_alert": None},
            "ja3": None,
            "ja4": None,
        },
        "timing": {
            "tcp_rtt_ms": {"server": 10.2, "client": 0.1, "total": 10.3},
            "tls_handshake_ms": 21.0,
            "time_to_first_answer_ms": 45.0,
            "query_rtt_ms": [12.0, 11.5, 13.1, 12.2],
        },
    }


def _set(d: dict, path: list[str], value: Any) -> None:
    for p in path[:-1]:
        nxt = d.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            d[p] = nxt
        d = nxt
    d[path[-1]] = value


def apply(flow: dict, **overrides: Any) -> dict:
    for key, value in overrides.items():
        if key == "klass":
            key = "class"
        _set(flow, key.replace("__", ".").split("."), copy.deepcopy(value))
    return flow


def make_flow(**overrides: Any) -> dict:
    """A healthy DoT flow (TLS 1.3), with overrides applied."""
    return apply(_base_flow(), **overrides)


def make_dns(queries: int = 1, qnames: list[str] | None = None, padding_queries: int = 0, **kw: Any) -> dict:
    qnames = qnames if qnames is not None else ["example.com"]
    dns = {
        "messages": queries * 2, "queries": queries, "responses": queries, "malformed": 0,
        "qnames": sorted(qnames), "qnames_total": len(qnames), "qnames_truncated": False,
        "qtypes": {"A": queries}, "rcodes": {"NOERROR": queries}, "opcodes": {"QUERY": queries},
        "answered": queries, "unanswered": 0, "unmatched_responses": 0,
        "edns": {"queries": queries, "responses": queries, "padding_queries": padding_queries,
                 "padding_responses": 0, "keepalive": 0, "udp_size_max": 1232, "do_bit": 0,
                 "cookie": 0, "ecs": 0},
        "padding": (padding_queries == queries) if queries else None,
        "tcp_length_errors": 0, "first_query_frame": 1, "frames_sample": [1, 2],
    }
    dns.update(kw)
    return dns


def make_do53_flow(**overrides: Any) -> dict:
    """A plaintext DNS/UDP query and answer to a remote resolver."""
    flow = _base_flow()
    flow.update({
        "transport": "udp",
        "class": "do53",
        "server": {"ip": "203.0.113.53", "port": 53},
        "client": {"ip": "192.0.2.10", "port": 40000},
        "packets": {"c2s": 1, "s2c": 1},
        "last_ts": T0 + 0.02,
        "last_frame": 2,
        "ended": "idle",
        "tcp": None,
        "tls": None,
        "dns": make_dns(1, ["example.com"]),
        "timing": {"query_rtt_ms": [20.0]},
    })
    return apply(flow, **overrides)


def make_tls12_flow(cipher: str = "ecdhe-gcm", **overrides: Any) -> dict:
    """A DoT flow on TLS 1.2 with the certificate chain visible and validated."""
    flow = _base_flow()
    c = TLS12_CIPHERS[cipher]
    overhead = 24 if c["mode"] in ("GCM", "CCM") else (16 if c["mode"] == "POLY1305" else None)
    tls = flow["tls"]
    tls.update({
        "version": "TLS 1.2",
        "versions_offered": ["TLS 1.2"],
        "cipher": copy.deepcopy(c),
        "alpn": "dot",
        "certificates": [_cert(), _cert(cn="dotaudit lab CA", issuer="dotaudit lab CA", self_signed=True)],
        "cert_validation": {"trusted": True, "error": None, "name_checked": "dns.lab.example", "name_match": True,
                            "expired": False, "not_yet_valid": False, "expires_in_days": 200,
                            "reference_time": "2024-06-01T00:00:00Z", "chain_length": 2},
    })
    tls["frames"]["certificate"] = 6
    if overhead is not None:
        tls["app_record_sizes"] = {"c2s": [2 + 128 + overhead] * 4, "s2c": [2 + 468 + overhead] * 4}
    else:
        tls["app_record_sizes"] = {"c2s": [160] * 4, "s2c": [512] * 4}
    return apply(flow, **overrides)


def make_failed_dot_flow(kind: str = "rst", **overrides: Any) -> dict:
    """A DoT attempt that failed: ``rst`` (port closed), ``timeout`` (SYN unanswered),
    ``alert`` (fatal alert), ``reset`` (RST mid-handshake), ``silent`` (server silent)."""
    flow = _base_flow()
    flow["last_ts"] = T0 + 0.01
    tcp, tls = flow["tcp"], flow["tls"]
    if kind in ("rst", "timeout"):
        tcp.update({"syn_ack": False, "ack": False, "syn_ack_frame": None, "fin_from": []})
        flow["tls"] = None
        flow["class"] = "other"
        flow["packets"] = {"c2s": 1, "s2c": 1 if kind == "rst" else 0}
        if kind == "rst":
            tcp.update({"rst_from": "server", "rst_frame": 2})
            flow["ended"] = "rst"
        else:
            tcp.update({"syn_retries": 3})
            flow["ended"] = "idle"
            flow["last_ts"] = T0 + 7.0
        return apply(flow, **overrides)
    tls.update({"established": False, "handshake_complete": False, "app_data": {
        "c2s": {"records": 0, "bytes": 0}, "s2c": {"records": 0, "bytes": 0}},
        "app_record_sizes": {"c2s": [], "s2c": []}, "cipher": None, "version": None})
    tls["frames"].update({"server_hello": None, "first_app_data_c2s": None})
    if kind == "alert":
        tls.update({"failure": "alert", "alerts": [{"from": "server", "level": "fatal", "description": 70,
                                                    "name": "protocol_version", "encrypted": False, "frame": 6}]})
        tls["frames"]["first_alert"] = 6
    elif kind == "reset":
        tls["failure"] = "reset"
        tcp.update({"rst_from": "server", "rst_frame": 6, "fin_from": []})
        flow["ended"] = "rst"
    elif kind == "silent":
        tls["failure"] = "timeout"
        tcp["fin_from"] = []
        flow["ended"] = "idle"
    elif kind == "not_tls":
        tls.update({"failure": "not_tls", "not_tls": True, "version": None})
        flow["class"] = "other"
    else:
        raise ValueError(kind)
    return apply(flow, **overrides)


def make_mdns_flow(qnames: list[str], klass: str = "mdns", **overrides: Any) -> dict:
    port = {"mdns": 5353, "llmnr": 5355, "nbns": 137}[klass]
    group = {"mdns": "224.0.0.251", "llmnr": "224.0.0.252", "nbns": "192.0.2.255"}[klass]
    flow = make_do53_flow(klass=klass, server={"ip": group, "port": port},
                          client={"ip": "192.0.2.10", "port": port})
    flow["dns"] = make_dns(len(qnames) or 1, qnames)
    return apply(flow, **overrides)


def make_report(flows: list[dict], **overrides: Any) -> dict:
    """A minimal report dict around ``flows`` (ids renumbered 1..n when duplicated)."""
    ids = [f.get("id") for f in flows]
    if len(set(ids)) != len(ids):
        for i, f in enumerate(flows, 1):
            f["id"] = i
    report = {
        "schema_version": "1.0",
        "tool": {"name": "dotaudit", "version": "0.0.0"},
        "generated_at": "2024-06-01T00:00:00Z",
        "inputs": [{"path": "capture.pcap", "sha256": "0" * 64, "format": "pcap", "linktypes": [1],
                    "packets": 100, "bytes": 10000, "first_ts": T0, "last_ts": T0 + 10,
                    "truncated": False, "errors": []}],
        "summary": {},
        "flows": flows,
        "findings": [],
        "stats": {"evictions": 0, "kernel_drops": 0},
        "skipped": [],
    }
    return apply(report, **overrides)
