"""Every lab capture under pcaps/ has a truth file that parses, and the truth agrees with tshark.

The captures and truth files are made by pcaps/lab/make.sh (see pcaps/README.md). pcaps/public/
holds third-party captures without truth files and is not checked here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PCAPS = REPO / "pcaps"
LAB_PCAPS = sorted(p for p in PCAPS.rglob("*.pcap") if "public" not in p.relative_to(PCAPS).parts[:1])
TLS_PORTS = (853, 8853)

CLASSES = {"do53", "dot", "doq", "doh", "dns-nonstandard-port", "dot-nonstandard-port", "mdns", "llmnr",
           "nbns", "tls-on-853-not-dns", "other"}
FAILURES = {None, "alert", "reset", "timeout", "not_tls", "closed"}
RULES = {
    "dns-plaintext-query", "dns-plaintext-fallback", "dns-nonstandard-port", "dns-padding-in-cleartext",
    "dns-multicast-leak", "dot-tls-version-prohibited", "dot-tls-version-not-1-3",
    "dot-cipher-null-export-anon", "dot-cipher-rc4-des", "dot-cipher-3des", "dot-cipher-no-pfs",
    "dot-cipher-cbc", "dot-cipher-not-in-profile", "dot-client-offers-weak", "dot-tls-downgrade-sentinel",
    "dot-tls-compression", "dot-cert-expired", "dot-cert-not-yet-valid", "dot-cert-expires-soon",
    "dot-cert-self-signed", "dot-cert-untrusted", "dot-cert-name-mismatch", "dot-cert-weak-key",
    "dot-cert-weak-signature", "dot-cert-error-ignored", "dot-cert-not-observable", "dot-handshake-alert",
    "dot-handshake-reset", "dot-handshake-incomplete", "dot-not-tls", "dot-port-unreachable",
    "dot-connect-timeout", "dot-nonstandard-port", "dot-no-padding", "dot-no-sni",
    "dot-unapproved-resolver", "dot-no-connection-reuse", "dot-no-session-resumption",
    "doh-known-resolver", "doq-observed", "capture-incomplete",
}
VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
TOP_KEYS = {"scenario", "description", "commands", "tools", "packets", "flows", "findings"}
FLOW_KEYS = {"transport", "client", "server", "class", "first_frame", "tls", "dns", "timing", "failure"}
TLS_KEYS = {"version", "cipher", "cipher_id", "sni", "alpn_offered", "established", "resumed", "alerts",
            "certificates"}


def ids(paths):
    return [str(p.relative_to(PCAPS)) for p in paths]


def load_truth(pcap: Path) -> dict:
    path = pcap.with_suffix(".truth.json")
    assert path.exists(), f"{path.relative_to(REPO)} is missing"
    return json.loads(path.read_text())


def test_lab_captures_exist():
    assert len(LAB_PCAPS) >= 38, "run sudo pcaps/lab/make.sh to regenerate the lab captures"


@pytest.mark.parametrize("pcap", LAB_PCAPS, ids=ids(LAB_PCAPS))
def test_truth_file_shape(pcap: Path):
    truth = load_truth(pcap)
    assert TOP_KEYS <= truth.keys()
    assert truth["scenario"] == pcap.stem
    assert pcap.stat().st_size < 1_000_000
    assert truth["packets"] > 0 and truth["flows"], "a capture without flows"
    for flow in truth["flows"]:
        assert FLOW_KEYS <= flow.keys()
        assert flow["transport"] in ("tcp", "udp")
        assert flow["class"] in CLASSES
        assert flow["failure"] in FAILURES
        assert {"ip", "port"} <= flow["client"].keys() and {"ip", "port"} <= flow["server"].keys()
        assert {"queries", "responses", "padding"} <= flow["dns"].keys()
        assert {"tcp_rtt_ms", "tls_handshake_ms"} <= flow["timing"].keys()
        if flow["tls"] is not None:
            assert TLS_KEYS <= flow["tls"].keys()
            certs = flow["tls"]["certificates"]
            assert certs == "not_observable" or isinstance(certs, list)
            if flow["tls"]["version"] == "TLS 1.3":
                assert certs == "not_observable"
    for finding in truth["findings"]:
        assert finding["rule_id"] in RULES
        assert 0 <= finding["flow"] < len(truth["flows"])
    # serialised the documented way: sorted keys, indent 2
    text = pcap.with_suffix(".truth.json").read_text()
    assert text == json.dumps(truth, indent=2, sort_keys=True) + "\n"


def test_every_truth_file_has_a_capture():
    for path in PCAPS.rglob("*.truth.json"):
        assert path.with_name(path.name.replace(".truth.json", ".pcap")).exists(), path


FIELDS = ["frame.number", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tls.handshake.type",
          "tls.handshake.version", "tls.handshake.extensions.supported_version",
          "tls.handshake.ciphersuite", "tls.handshake.extensions_server_name",
          "tls.alert_message.level", "tls.alert_message.desc"]


def tshark_tls(pcap: Path) -> tuple[int, dict[tuple[str, int], dict]]:
    """Frame count, and per TCP client endpoint: ServerHello version/cipher, SNI, plaintext alerts."""
    argv = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
            "-E", "separator=\t"]
    for port in TLS_PORTS:
        argv += ["-d", f"tcp.port=={port},tls"]
    for field in FIELDS:
        argv += ["-e", field]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout
    flows: dict[tuple[str, int], dict] = {}
    frames = 0
    for line in out.splitlines():
        frames += 1
        row = dict(zip(FIELDS, line.split("\t")))
        if not row.get("tcp.srcport"):
            continue
        sport, dport = int(row["tcp.srcport"]), int(row["tcp.dstport"])
        from_server = sport in TLS_PORTS
        if from_server:
            key = ("peer", row["ip.dst"] or row["ipv6.dst"], dport)
        else:
            key = (row["ip.src"] or row["ipv6.src"], sport)
        types = [int(t) for t in row["tls.handshake.type"].split(",") if t]
        flow = flows.setdefault(key, {"version": None, "cipher_id": None, "sni": None, "alerts": []})
        if 1 in types and not from_server:
            flow["sni"] = row["tls.handshake.extensions_server_name"] or None
        if 2 in types and from_server:
            sv = [int(v, 16) for v in row["tls.handshake.extensions.supported_version"].split(",") if v]
            legacy = [int(v, 16) for v in row["tls.handshake.version"].split(",") if v]
            flow["version"] = VERSIONS.get((sv or legacy)[0])
            flow["cipher_id"] = int(row["tls.handshake.ciphersuite"].split(",")[0], 16)
        levels = [int(v) for v in row["tls.alert_message.level"].split(",") if v]
        descs = [int(v) for v in row["tls.alert_message.desc"].split(",") if v]
        for level, desc in zip(levels, descs):
            flow["alerts"].append(("server" if from_server else "client", level, desc))
    # fold the server-side rows ("peer", client port) into the client's key
    merged: dict[tuple[str, int], dict] = {}
    for key, flow in flows.items():
        if key[0] == "peer":
            continue
        peer = flows.get(("peer", *key), {"version": None, "cipher_id": None, "alerts": []})
        merged[key] = {"version": peer["version"], "cipher_id": peer["cipher_id"], "sni": flow["sni"],
                       "alerts": sorted(flow["alerts"] + peer["alerts"])}
    return frames, merged


@pytest.mark.parametrize("pcap", LAB_PCAPS, ids=ids(LAB_PCAPS))
def test_truth_agrees_with_tshark(pcap: Path):
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not on PATH: TLS facts cannot be cross-checked")
    truth = load_truth(pcap)
    frames, seen = tshark_tls(pcap)
    assert frames == truth["packets"]
    for flow in truth["flows"]:
        tls = flow["tls"]
        if flow["transport"] != "tcp" or flow["server"]["port"] not in TLS_PORTS or tls is None:
            continue
        key = (flow["client"]["ip"], flow["client"]["port"])
        got = seen.get(key, {"version": None, "cipher_id": None, "sni": None, "alerts": []})
        assert tls["version"] == got["version"], key
        assert tls["cipher_id"] == got["cipher_id"], key
        assert tls["sni"] == got["sni"], key
        plain = sorted((a["from"], a["level"], a["description"]) for a in tls["alerts"] if not a["encrypted"])
        assert plain == got["alerts"], key
