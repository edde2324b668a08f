"""Every TLS handshake in pcaps/ (lab and public captures) as dotaudit reports it and as tshark
reads it, field by field: negotiated version, cipher suite, SNI and plaintext alerts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dotaudit.pipeline import audit

from .conftest import run_flow, tcp_flows

REPO = Path(__file__).resolve().parents[2]
CAPTURES = sorted(p for p in (REPO / "pcaps").rglob("*") if p.suffix in (".pcap", ".pcapng")
                  and p.stat().st_size < 2_000_000)
TLS_PORTS = (853, 8853, 4443, 443)
VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
FIELDS = ["tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport",
          "tls.handshake.type", "tls.handshake.version", "tls.handshake.extensions.supported_version",
          "tls.handshake.ciphersuite", "tls.handshake.extensions_server_name", "tls.alert_message.level",
          "tls.alert_message.desc"]

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


def version_name(v: int | None) -> str | None:
    """tshark prints TLS 1.3 drafts as 0x7fNN (in supported_versions, or as the version itself)."""
    if v is not None and v >> 8 == 0x7F:
        return "TLS 1.3"
    return VERSIONS.get(v)


def frame_payload(path: Path, frame: int) -> bytes:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", f"frame.number=={frame}", "-T", "fields",
                          "-e", "tcp.payload"], capture_output=True, text=True, timeout=60).stdout.strip()
    return bytes.fromhex(out.replace(":", ""))


def _ints(v: str) -> list[int]:
    return [int(x, 0) for x in v.split(";") if x]


def tshark_handshakes(path: Path) -> dict[tuple, dict]:
    """(client ip, client port, server ip, server port) -> {sni, version, cipher, alerts}."""
    cmd = ["tshark", "-n", "-r", str(path), "-Y", "tls.handshake or tls.alert_message", "-T", "fields",
           "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=;"]
    for port in TLS_PORTS:
        cmd += ["-d", f"tcp.port=={port},tls"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    streams: dict[str, dict] = {}
    for line in out.splitlines():
        (stream, s4, s6, sport, d4, d6, dport, htype, hver, sver, cipher, sni, alevel,
         adesc) = (line.split("|") + [""] * 14)[:14]
        src, dst = s4 or s6, d4 or d6
        if not sport:
            continue  # TLS inside QUIC (tshark decrypts with keys embedded in the pcapng): not TCP
        st = streams.setdefault(stream, {"sni": None, "version": None, "cipher": None, "alerts": [],
                                         "client": None})
        types = _ints(htype)
        if 1 in types and st["client"] is None:
            st["client"] = (src, int(sport), dst, int(dport))
            st["sni"] = sni.split(";")[0] or None
        if 2 in types:
            sv = _ints(sver)
            tls13 = [x for x in sv if x == 0x0304 or x >> 8 == 0x7F]
            v = tls13[0] if tls13 else (_ints(hver)[types.index(2)] if _ints(hver) else None)
            st["version"] = version_name(v)
            st["cipher"] = _ints(cipher)[-1] if cipher else None
            st["server"] = src
        if adesc:
            st["alerts"] += [(src, lvl, desc) for lvl, desc in zip(_ints(alevel), _ints(adesc))]
    out_map = {}
    for st in streams.values():
        if st["client"] is None:
            continue
        cip = st["client"][0]
        st["alerts"] = sorted(("client" if src == cip else "server", lvl, desc) for src, lvl, desc in st["alerts"])
        out_map[st["client"]] = st
    return out_map


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(REPO / "pcaps")))
def test_tls_facts_equal_tshark(path):
    want = tshark_handshakes(path)
    if not want:
        pytest.skip("no TLS handshake in this capture")
    report = audit([str(path)], evaluate_rules=False)
    got = {}
    for f in report["flows"]:
        tls = f.get("tls")
        if tls and tls.get("frames", {}).get("client_hello"):
            key = (f["client"]["ip"], f["client"]["port"], f["server"]["ip"], f["server"]["port"])
            got[key] = tls
    # TLS that carries no DNS (HTTPS to ordinary sites) is not analysed by an audit; feed those
    # handshakes to the same analyzer directly, from the capture's TCP streams
    missing = {k for k in want if k not in got and k[3] not in (853, 8853)}
    if missing:
        for fl in tcp_flows(path):
            key = (str(fl.client[0]), int(fl.client[1]), str(fl.server[0]), int(fl.server[1]))
            if key in missing and fl.segments:
                got[key] = run_flow(fl)[1]
    assert set(want) <= set(got), f"handshakes tshark sees that dotaudit does not: {sorted(set(want) - set(got))}"
    for key, w in want.items():
        g = got[key]
        assert g["sni"] == w["sni"], key
        assert g["version"] == w["version"], key
        assert (g["cipher"] or {}).get("id") == w["cipher"], key
        plain = [a for a in g["alerts"] if not a["encrypted"]]
        extra = [a for a in plain if (a["from"], a["level"], a["description"]) not in w["alerts"]]
        for a in extra:
            # tshark stops dissecting TLS on a stream once the peer sent non-TLS bytes; the bytes
            # decide: the alert record must be in the frame dotaudit names
            rec = bytes([21, 3]) + b"\x00\x02" + bytes([a["level"], a["description"]])
            payload = frame_payload(path, a["frame"])
            assert payload[:2] == rec[:2] and payload[3:7] == rec[2:], (key, a)
        assert sorted((a["from"], a["level"], a["description"]) for a in plain if a not in extra) == w["alerts"], key

