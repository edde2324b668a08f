"""The analyzer on real captures, checked against tshark 4.0.17 (JA3/JA3S, frames, versions,
ciphers; values read with ``tshark -T fields -e tls.handshake.ja3 -e tls.handshake.ja3s``) and
against pcaps/public/truth.json."""

from __future__ import annotations

import json

import pytest

from .conftest import PUBLIC, public_pcap, run_flow, tcp_flows

ARK = "arkime_arkime/tests/pcap/"
PPP = "seladb_PcapPlusPlus/Tests/"

# (file, client hello frame) -> expected facts (tshark 4.0.17 unless noted)
CASES = {
    (ARK + "openssl-ssl3.pcap", 4): dict(
        ja3="f917ae2520ef9784557b0a3c02489c2c", ja3s="59e3f99fd4b68388f5ba9349e0ca71a4",
        version="SSL 3.0", cipher="TLS_ECDHE_RSA_WITH_RC4_128_SHA", server_hello=6,
        history="CstkdKXFxfW", handshake_complete=True, failure=None),
    (ARK + "openssl-tls1.pcap", 4): dict(
        ja3="503053a0c5b2bd9b9334bf7f3d3b8852", ja3s="bed95e1b525d2f41db3a6d68fac5b566",
        version="TLS 1.0", cipher="TLS_ECDHE_RSA_WITH_RC4_128_SHA", server_hello=6),
    (ARK + "openssl-tls1_1.pcap", 4): dict(
        ja3="a314eb64cee6cb832aaaa372c8295bab", ja3s="130fac2dc19b142500acb0abc63b6379",
        version="TLS 1.1", cipher="TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", server_hello=6),
    (ARK + "openssl-tls1_2.pcap", 4): dict(
        ja3="c1a36e1a870786cc75edddc0009eaf3a", ja3s="ccc514751b175866924439bdbb5bba34",
        version="TLS 1.2", cipher="TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", server_hello=6,
        certificate=10, history="CstkdKXFnxfW"),
    (ARK + "ssl-selfsign.pcap", 5): dict(
        ja3="03e697d7655911e630ee3ee8e2a02ba4", ja3s="9f527afa113542d92a2c3b08c525ee1d",
        version="SSL 3.0", cipher="TLS_RSA_WITH_AES_256_CBC_SHA", server_hello=7,
        established=True),
    (ARK + "tls-client-sessionid.pcap", 4): dict(
        ja3="42e6d8174e649efbf780f0d9b6ef9610", ja3s="4f018bc336c48beb79763b308b43c6dd",
        version="TLS 1.0", cipher="TLS_DHE_RSA_WITH_AES_128_CBC_SHA", server_hello=6,
        sni="bl.a.im", resumed=True, resumption="session_id", established=True),
    (ARK + "tls13.pcap", 4): dict(
        ja3="4826a90ec2daf4f7b4b64cc1c8bd343b", ja3s="b8a8031b301aef7618403061e9f33065",
        version="TLS 1.3", version_draft=18, cipher="TLS_AES_128_GCM_SHA256", server_hello=6,
        sni="blog.cloudflare.com", alpn="not_observable", certificates="not_observable"),
    (PPP + "ExamplesTest/pcap_examples/tls.pcap", 1): dict(
        ja3="2aef69b4ba1938c3a400de4188743185", ja3s="6b96cf9c27b0223177b0e9f135fe4899",
        version="TLS 1.0", cipher="TLS_RSA_WITH_RC4_128_SHA", server_hello=2, sni="bawmashbij"),
    (PPP + "ExamplesTest/pcap_examples/tls.pcap", 9): dict(
        ja3="8fbbd0f3c1f089979b04b8f8f1b21d41", ja3s="2d1eb5817ece335c24904f516ad5da12",
        version="TLS 1.2", cipher="TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", server_hello=11,
        alpn="spdy/3.1"),
    (PPP + "ExamplesTest/pcap_examples/tls.pcap", 29): dict(
        ja3="a75de44db3e351bbd8d38b64c41f444e", ja3s="eb1d94daa7e0344597e756a1fb6e7054",
        version="TLS 1.3", cipher="TLS_AES_128_GCM_SHA256", server_hello=31,
        handshake_complete=True, established=True, history="CseFAa"),
    (PPP + "Packet++Test/PacketExamples/tls1_3.pcap", 1): dict(
        ja3="a66e498c488aa0523759691248cdfb01", ja3s="15af977ce25de452b96affa2addb1036",
        version="TLS 1.3", version_draft=28, cipher="TLS_AES_256_GCM_SHA384", server_hello=2),
    (PPP + "Packet++Test/PacketExamples/tls1_3.pcap", 3): dict(
        ja3="aa7744226c695c0b2e440419848cf700", ja3s="eb1d94daa7e0344597e756a1fb6e7054",
        version="TLS 1.3", cipher="TLS_AES_128_GCM_SHA256", server_hello=4,
        sni="www.google.com"),
    ("ntop_nDPI/tests/cfgs/default/pcap/dns_dot.pcap", 4): dict(
        ja3="4fa5e77b91a47e7cdcf5a5e6d25f8449", ja3s="2b341b88c742e940cfb485ce7d93dde7",
        version="TLS 1.2", cipher="TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        server_hello=6, established=True, handshake_complete=True, failure=None,
        selected_group="x25519"),
    ("cisco_mercury/unit_tests/pcaps/sll_tls.pcap", 1): dict(
        ja3="331a436afb23d4e31134c11b301bdcb5", ja3s=None, version=None, sni="api.scarf.sh"),
}


def _session_for(rel: str, ch_frame: int):
    for fl in tcp_flows(public_pcap(rel)):
        sess, out = run_flow(fl)
        if out.get("frames", {}).get("client_hello") == ch_frame:
            return fl, sess, out
    pytest.fail(f"no flow with a ClientHello in frame {ch_frame} in {rel}")


@pytest.mark.parametrize("key", sorted(CASES), ids=lambda k: f"{k[0].rsplit('/', 1)[-1]}@{k[1]}")
def test_public_capture(key):
    rel, frame = key
    _, _, out = _session_for(rel, frame)
    exp = CASES[key]
    assert out["malformed"] == 0, out["error"]
    for k, v in exp.items():
        if k == "cipher":
            assert out["cipher"]["name"] == v
        elif k in ("server_hello", "certificate"):
            assert out["frames"][k] == v
        else:
            assert out[k] == v, k


def test_truth_json_cross_check():
    """Every TLS ServerHello tshark saw, we see with the same frame and cipher code."""
    truth_path = PUBLIC / "truth.json"
    if not truth_path.exists():
        pytest.skip("pcaps/public/truth.json missing")
    truth = json.loads(truth_path.read_text())
    checked = 0
    for rel in {k[0] for k in CASES}:
        t = truth.get(rel)
        if not t or not (PUBLIC / rel).exists():
            continue
        ours = {}
        for fl in tcp_flows(PUBLIC / rel):
            _, out = run_flow(fl)
            if out.get("cipher"):
                ours[out["frames"]["server_hello"]] = out["cipher"]["hex"]
        for sh in t["tls_server_hellos"]:
            assert ours.get(sh["frame"]) == sh["cipher"], (rel, sh)
            checked += 1
    assert checked >= 10


def test_dot_capture_certificate_facts():
    _, _, out = _session_for("ntop_nDPI/tests/cfgs/default/pcap/dns_dot.pcap", 4)
    leaf = out["certificates"][0]
    assert leaf["subject"].startswith("CN=dns.google")
    assert "dns.google" in leaf["sans"]
    assert leaf["key_type"] == "RSA" and leaf["key_bits"] == 2048
    assert leaf["signature_algorithm"] == "sha256WithRSAEncryption"
    assert leaf["signature_hash"] == "sha256"
    assert leaf["not_after"] == "2020-01-02T20:58:42Z"
    assert leaf["sha256"].startswith("6a879a39f12a2de5")  # truth.json
    cv = out["cert_validation"]
    assert cv["expired"] is False and cv["chain_length"] in (0, 2, 3)
    assert out["app_data"]["c2s"]["records"] >= 1 and out["app_data"]["s2c"]["records"] >= 1
    assert out["frames"]["first_app_data_c2s"] is not None


def test_selfsigned_capture():
    _, _, out = _session_for(ARK + "ssl-selfsign.pcap", 5)
    leaf = out["certificates"][0]
    assert leaf["subject"] == "CN=molochftw" and leaf["key_bits"] == 1024
    assert leaf["self_issued"] is True
    assert out["cipher"]["weaknesses"] == ["cbc", "no_pfs", "sha1_mac"]
    assert out["cert_validation"]["trusted"] is False
    assert out["client_certificate"] is True and out["certificate_request"] is True


def test_plaintext_alert_capture():
    fl = tcp_flows(public_pcap(PPP + "Packet++Test/PacketExamples/SSL-AlertClear.pcap"))[0]
    _, out = run_flow(fl)
    assert out["alerts"][0]["level"] == 2 and out["alerts"][0]["description"] == 70
    assert out["alerts"][0]["name"] == "protocol_version"
    assert out["failure"] == "alert"


def test_encrypted_alert_capture():
    fl = tcp_flows(public_pcap(PPP + "Packet++Test/PacketExamples/SSL-AlertEnc.pcap"))[0]
    _, out = run_flow(fl)
    assert len(out["alerts"]) == 1
    assert out["alerts"][0]["encrypted"] is True and out["alerts"][0]["level"] is None


@pytest.mark.parametrize("key", sorted(CASES)[:6], ids=lambda k: k[0].rsplit("/", 1)[-1])
def test_byte_by_byte_same_result(key):
    """Records spanning segments: feeding one byte at a time gives the same summary."""
    rel, frame = key
    fl, _, out = _session_for(rel, frame)
    _, out2 = run_flow(fl, chunker=lambda b: [b[i:i + 1] for i in range(len(b))])
    out.pop("ts"), out2.pop("ts")
    assert out2["frames"]["client_hello"] == out["frames"]["client_hello"]
    out.pop("frames"), out2.pop("frames")
    for a in out["alerts"] + out2["alerts"]:
        a.pop("ts")
    assert out2 == out
