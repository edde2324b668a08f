"""The JSON Schema of the report (``dotaudit schema``).

Stable fields are required and typed; analyzers may add fields freely (``additionalProperties``
stays open below the top level), never rename them without a ``schema_version`` bump.
"""

from __future__ import annotations

import json

from .. import SCHEMA_VERSION

CLASSES = ["do53", "dot", "doq", "doh", "dns-nonstandard-port", "dot-nonstandard-port", "mdns", "llmnr",
           "nbns", "tls-on-853-not-dns", "other"]
SEVERITIES = ["info", "low", "medium", "high", "critical"]

_num_or_null = {"type": ["number", "null"]}
_int_or_null = {"type": ["integer", "null"]}
_str_or_null = {"type": ["string", "null"]}
_pair_int = {"type": "object", "required": ["c2s", "s2c"],
             "properties": {"c2s": {"type": "integer", "minimum": 0}, "s2c": {"type": "integer", "minimum": 0}}}
_endpoint = {"type": "object", "required": ["ip", "port"],
             "properties": {"ip": {"type": "string"}, "port": {"type": "integer", "minimum": 0, "maximum": 65535}}}

_tcp = {
    "type": ["object", "null"],
    "required": ["syn", "syn_ack", "ack", "syn_frame", "syn_ack_frame", "midstream", "rst_from", "rst_frame",
                 "fin_from", "retransmissions", "out_of_order", "gaps", "tfo", "tfo_data"],
    "properties": {
        "syn": {"type": "boolean"}, "syn_ack": {"type": "boolean"}, "ack": {"type": "boolean"},
        "syn_frame": _int_or_null, "syn_ack_frame": _int_or_null, "midstream": {"type": "boolean"},
        "rst_from": {"enum": ["client", "server", None]}, "rst_frame": _int_or_null,
        "fin_from": {"type": "array", "items": {"enum": ["client", "server"]}},
        "retransmissions": _pair_int, "out_of_order": _pair_int, "gaps": _pair_int,
        "tfo": {"type": "boolean"}, "tfo_data": {"type": "boolean"},
    },
}

_dns = {
    "type": ["object", "null"],
    "required": ["messages", "queries", "responses", "malformed", "qnames", "qtypes", "rcodes", "edns", "padding",
                 "answered", "unanswered"],
    "properties": {
        "messages": {"type": "integer"}, "queries": {"type": "integer"}, "responses": {"type": "integer"},
        "malformed": {"type": "integer"},
        "qnames": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "qtypes": {"type": "object", "additionalProperties": {"type": "integer"}},
        "rcodes": {"type": "object", "additionalProperties": {"type": "integer"}},
        "edns": {"type": "object", "required": ["queries", "responses", "padding_queries", "padding_responses",
                                                "keepalive"]},
        "padding": {"type": ["boolean", "null"]},
        "answered": {"type": "integer"}, "unanswered": {"type": "integer"},
    },
}

_alert = {"type": "object", "required": ["from", "level", "description", "name", "encrypted"],
          "properties": {"from": {"enum": ["client", "server"]}, "level": _int_or_null,
                         "description": _int_or_null, "name": _str_or_null, "encrypted": {"type": "boolean"}}}

_tls = {
    "type": ["object", "null"],
    "required": ["version", "cipher", "sni", "alpn_offered", "established", "resumed", "history", "failure",
                 "alerts", "certificates", "ja3", "ja4"],
    "properties": {
        "version": {"anyOf": [{"enum": ["TLS 1.3", "TLS 1.2", "TLS 1.1", "TLS 1.0", "SSL 3.0", "SSL 2.0", None]},
                              {"type": "string", "pattern": "^0x[0-9a-f]{4}$"}]},
        "cipher": {"type": ["object", "null"], "required": ["id", "name", "kex", "weaknesses"],
                   "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                  "kex": _str_or_null, "weaknesses": {"type": "array", "items": {"type": "string"}}}},
        "sni": _str_or_null,
        "alpn_offered": {"type": "array", "items": {"type": "string"}},
        "established": {"type": "boolean"},
        "resumed": {"type": "boolean"},
        "history": {"type": "string"},
        "failure": {"enum": [None, "alert", "reset", "timeout", "not_tls", "closed"]},
        "alerts": {"type": "array", "items": _alert},
        "certificates": {"oneOf": [{"type": "array", "items": {"type": "object"}}, {"const": "not_observable"}]},
        "ja3": _str_or_null,
        "ja4": _str_or_null,
    },
}

_flow = {
    "type": "object",
    "required": ["id", "input", "transport", "client", "server", "class", "first_ts", "last_ts", "packets",
                 "bytes", "first_frame", "last_frame", "tcp", "dns", "tls", "timing", "vlan", "ended"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "input": {"type": "integer", "minimum": 0},
        "transport": {"enum": ["tcp", "udp"]},
        "client": _endpoint,
        "server": _endpoint,
        "class": {"enum": CLASSES},
        "vlan": {"type": "array", "items": {"type": "integer"}},
        "first_ts": {"type": "number"},
        "last_ts": {"type": "number"},
        "first_frame": {"type": "integer", "minimum": 1},
        "last_frame": {"type": "integer", "minimum": 1},
        "packets": _pair_int,
        "bytes": _pair_int,
        "ended": {"enum": ["fin", "rst", "idle", "end_of_capture", "evicted"]},
        "tcp": _tcp,
        "dns": _dns,
        "tls": _tls,
        "timing": {"type": ["object", "null"]},
        "correlations": {"type": ["object", "null"]},
    },
}

_finding_endpoint = {"type": ["object", "null"], "required": ["ip", "port"],
                     "properties": {"ip": _str_or_null, "port": _int_or_null}}

_finding = {
    "type": "object",
    "required": ["id", "rule_id", "title", "severity", "observability", "flow_ids", "client", "server",
                 "first_ts", "frames", "message", "evidence", "references", "remediation"],
    "properties": {
        "id": {"type": "string"},
        "rule_id": {"type": "string"},
        "title": {"type": "string"},
        "severity": {"enum": SEVERITIES},
        "observability": {"enum": ["observed", "inferred", "not_observable"]},
        "flow_ids": {"type": "array", "items": {"type": "integer"}},
        "client": _finding_endpoint,   # ip/port null when an aggregated finding spans several
        "server": _finding_endpoint,
        "first_ts": _num_or_null,
        "frames": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "message": {"type": "string"},
        "evidence": {"type": "object"},
        "references": {"type": "array", "items": {"type": "string"}},
        "remediation": _str_or_null,
    },
}

_input = {
    "type": "object",
    "required": ["path", "sha256", "format", "linktypes", "packets", "bytes", "first_ts", "last_ts", "truncated",
                 "errors"],
    "properties": {
        "path": {"type": "string"},
        "sha256": {"type": "string", "pattern": "^([0-9a-f]{64})?$"},  # empty for a live capture
        "format": {"enum": ["pcap", "pcap-ns", "pcapng", "live", "unknown"]},
        "linktypes": {"type": "array", "items": {"type": "string"}},
        "packets": {"type": "integer", "minimum": 0},
        "bytes": {"type": "integer", "minimum": 0},
        "first_ts": _num_or_null,
        "last_ts": _num_or_null,
        "truncated": {"type": "boolean"},
        "errors": {"type": "array", "items": {"type": "object", "required": ["kind", "count", "message"]}},
    },
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"https://dotaudit.invalid/schema/report-{SCHEMA_VERSION}.json",
    "title": "dotaudit report",
    "type": "object",
    "required": ["schema_version", "tool", "generated_at", "inputs", "summary", "flows", "findings", "stats",
                 "skipped"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "tool": {"type": "object", "required": ["name", "version"],
                 "properties": {"name": {"const": "dotaudit"}, "version": {"type": "string"}}},
        "generated_at": {"type": "string"},
        "inputs": {"type": "array", "items": _input},
        "summary": {
            "type": "object",
            "required": ["flows_by_class", "findings_by_severity", "verdict"],
            "properties": {
                "flows_by_class": {"type": "object", "propertyNames": {"enum": CLASSES},
                                   "additionalProperties": {"type": "integer"}},
                "findings_by_severity": {"type": "object", "propertyNames": {"enum": SEVERITIES},
                                         "additionalProperties": {"type": "integer"}},
                "verdict": {"enum": ["pass", "warn", "fail", "no-dns-observed"]},
            },
        },
        "flows": {"type": "array", "items": _flow},
        "findings": {"type": "array", "items": _finding},
        "stats": {"type": "object"},
        "skipped": {"type": "array", "items": {"type": "object", "required": ["reason", "count"]}},
        "policy": {"type": ["object", "null"]},
        "live": {"type": ["object", "null"]},
    },
}


def schema_text() -> str:
    return json.dumps(SCHEMA, indent=2, sort_keys=True) + "\n"
