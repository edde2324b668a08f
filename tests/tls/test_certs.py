"""Certificate facts and validation with certificates made here with ``cryptography``."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dotaudit.tls import TlsSession, TrustConfig, certificate_facts, validate_chain
from dotaudit.tls.certs import _system_anchors

from .conftest import client_hello_body, ext, hs, record, server_hello_body, sni_ext, u24

T0 = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
NOW = (T0 + dt.timedelta(days=10)).timestamp()


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn, key, issuer_cn, issuer_key, *, ca=False, sans=(), days=90, start=T0,
          hash_alg=hashes.SHA256()):
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(issuer_cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                            critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return b.sign(issuer_key, None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hash_alg)


def _der(c):
    return c.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Test Root", ca_key, "Test Root", ca_key, ca=True, days=3650,
               start=T0 - dt.timedelta(days=365))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path_factory.mktemp("pki") / "root.pem"
    path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return {"ca": ca, "ca_key": ca_key, "leaf_key": leaf_key, "dir": path.parent,
            "trust": TrustConfig(anchors=(str(path),), system_trust=False)}


def _leaf(pki, **kw):
    kw.setdefault("sans", ("dns.example",))
    return _cert("dns.example", pki["leaf_key"], "Test Root", pki["ca_key"], **kw)


def test_valid_chain(pki):
    v = validate_chain([_der(_leaf(pki))], "dns.example", NOW, pki["trust"])
    assert v["trusted"] and v["valid"] and v["name_match"] is True and v["error"] is None
    assert v["chain_length"] == 2 and v["name_checked"] == "dns.example"
    assert v["expired"] is False and v["expires_in_days"] == pytest.approx(80.0, abs=0.01)
    assert v["reference_time"] == NOW


def test_wrong_name(pki):
    v = validate_chain([_der(_leaf(pki))], "evil.example", NOW, pki["trust"])
    assert v["name_match"] is False and v["trusted"] is True and v["valid"] is False
    assert "subjectAltName" in v["error"]


def test_wildcard_name(pki):
    leaf = _leaf(pki, sans=("*.resolver.example",))
    assert validate_chain([_der(leaf)], "dot.resolver.example", NOW, pki["trust"])["valid"]
    v = validate_chain([_der(leaf)], "a.b.resolver.example", NOW, pki["trust"])
    assert v["name_match"] is False


def test_no_sni_checks_chain_only(pki):
    v = validate_chain([_der(_leaf(pki))], None, NOW, pki["trust"])
    assert v["trusted"] and v["name_checked"] is None and v["name_match"] is None


def test_expired_and_not_yet_valid(pki):
    der = _der(_leaf(pki))
    late = (T0 + dt.timedelta(days=100)).timestamp()
    v = validate_chain([der], "dns.example", late, pki["trust"])
    assert v["expired"] and not v["trusted"] and v["expires_in_days"] < 0
    assert "not valid at validation time" in v["error"]
    assert v["name_match"] is True  # the name question is answered apart from the dates
    early = (T0 - dt.timedelta(days=1)).timestamp()
    v = validate_chain([der], "dns.example", early, pki["trust"])
    assert v["not_yet_valid"] and not v["trusted"]


def test_self_signed(pki):
    key = ec.generate_private_key(ec.SECP384R1())
    ss = _cert("dns.example", key, "dns.example", key, sans=("dns.example",))
    facts = certificate_facts(_der(ss))
    assert facts["self_signed"] is True and facts["curve"] == "secp384r1" and facts["key_bits"] == 384
    v = validate_chain([_der(ss)], "dns.example", NOW, pki["trust"])
    assert not v["trusted"] and v["name_match"] is True


def test_rsa_1024_and_sha1(pki):
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    leaf = _cert("dns.example", weak_key, "Test Root", pki["ca_key"], sans=("dns.example",))
    f = certificate_facts(_der(leaf))
    assert f["key_type"] == "RSA" and f["key_bits"] == 1024
    # the web-PKI verifier judges signatures, not the leaf's own key size: rules read key_bits
    assert validate_chain([_der(leaf)], "dns.example", NOW, pki["trust"])["trusted"]
    # a chain signed by a 1024-bit RSA key is refused
    ca = _cert("Weak Root", weak_key, "Weak Root", weak_key, ca=True, days=3650,
               start=T0 - dt.timedelta(days=1))
    tmp = pki["dir"] / "weak.pem"
    tmp.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf2 = _cert("dns.example", pki["leaf_key"], "Weak Root", weak_key, sans=("dns.example",))
    v = validate_chain([_der(leaf2)], "dns.example", NOW,
                       TrustConfig(anchors=(str(tmp),), system_trust=False))
    assert not v["trusted"] and v["error"]



def test_sha1_signed_chain_from_public_capture():
    """cryptography 48 no longer signs with SHA-1, so the SHA-1 chain comes from a real capture."""
    from .conftest import public_pcap, run_flow, tcp_flows

    fl = tcp_flows(public_pcap("arkime_arkime/tests/pcap/openssl-tls1_2.pcap"))[0]
    _, out = run_flow(fl)
    leaf = out["certificates"][0]
    assert leaf["signature_algorithm"] == "sha1WithRSAEncryption" and leaf["signature_hash"] == "sha1"
    assert leaf["subject"].startswith("CN=*.google.com")
    assert out["cert_validation"]["trusted"] is False


def test_ed25519_facts(pki):
    key = ed25519.Ed25519PrivateKey.generate()
    c = _cert("ed.example", key, "ed.example", key, sans=("ed.example",))
    f = certificate_facts(_der(c))
    assert f["key_type"] == "Ed25519" and f["signature_hash"] is None
    assert f["signature_algorithm"] == "ed25519"
    assert len(f["spki_sha256"]) == 64 and len(f["sha256"]) == 64


def test_cert_facts_fields(pki):
    leaf = _leaf(pki)
    f = certificate_facts(_der(leaf))
    assert f["subject"] == "CN=dns.example" and f["issuer"] == "CN=Test Root"
    assert f["sans"] == ["dns.example"] and f["serial"] == format(leaf.serial_number, "x")
    assert f["not_before"] == "2025-06-01T00:00:00Z" and f["not_after"] == "2025-08-30T00:00:00Z"
    assert f["signature_algorithm"] == "ecdsa-with-SHA256" and f["self_signed"] is False


def test_garbage_certificate():
    assert certificate_facts(b"\x30\x00")["error"]
    v = validate_chain([b"junk"], "x.example", NOW, TrustConfig(system_trust=False))
    assert v["trusted"] is False and v["error"]


def test_system_bundle_loads_once():
    anchors = _system_anchors()
    assert _system_anchors() is anchors
    if not anchors:
        pytest.skip("no system CA bundle on this machine")
    assert len(anchors) > 50


def test_session_validates_at_certificate_time(pki):
    leaf = _leaf(pki)
    ca = pki["ca"]
    certs = b"".join(u24(len(d)) + d for d in (_der(leaf), _der(ca)))
    ch = record(22, hs(1, client_hello_body(ciphers=(0xC02B,), exts=sni_ext("dns.example"))))
    flight = (hs(2, server_hello_body(cipher=0xC02B, exts=ext(0xFF01, b"\x00")))
              + hs(11, u24(len(certs)) + certs) + hs(14, b""))
    s = TlsSession()
    s.feed(True, ch, 1, NOW)
    s.feed(False, record(22, flight), 2, NOW + 0.02)
    out = s.summary(tcp={}, reference_time=None, trust=pki["trust"], capture_end_ts=NOW + 1)
    assert [c["subject"] for c in out["certificates"]] == ["CN=dns.example", "CN=Test Root"]
    cv = out["cert_validation"]
    assert cv["trusted"] and cv["name_match"] and cv["reference_time"] == NOW + 0.02
    later = s.summary(tcp={}, reference_time=(T0 + dt.timedelta(days=400)).timestamp(),
                      trust=pki["trust"], capture_end_ts=NOW + 1)
    assert later["cert_validation"]["expired"] is True
