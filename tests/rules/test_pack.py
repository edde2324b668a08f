"""Each shipped rule fires on a factory flow built to its intent and not on a compliant one."""

from pathlib import Path

import pytest

from dotaudit.rules.engine import evaluate
from dotaudit.rules.loader import load_rules
from dotaudit.rules.policy import Policy
from tests.factories import (
    T0, make_cert, make_dns, make_do53_flow, make_failed_dot_flow, make_flow, make_mdns_flow,
    make_report, make_tls12_flow,
)

RULES = load_rules()
LAB_CA = str(Path(__file__).resolve().parents[2] / "pcaps" / "lab" / "ca.pem")
LAB_CA_NAME = "dotaudit lab CA,O=dotaudit lab"  # make_cert writes "CN=" + issuer: the lab CA's RFC 4514 subject
LAB_TRUST = Policy(trust_anchors=[LAB_CA], system_trust=False)


def fired(flows, policy=None, **report_overrides):
    report = make_report(flows, **report_overrides)
    return evaluate(report, RULES, policy or Policy())


def ids(findings):
    return {f["rule_id"] for f in findings}


def cert_bad(**validation):
    base = {"trusted": True, "error": None, "name_checked": "dns.lab.example", "name_match": True, "expired": False,
            "not_yet_valid": False, "expires_in_days": 200, "reference_time": "2024-06-01T00:00:00Z",
            "chain_length": 2}
    base.update(validation)
    return base


def abort(flow):
    """The client aborted after the certificate: no application data."""
    flow["tls"]["app_data"] = {"c2s": {"records": 0, "bytes": 0}, "s2c": {"records": 0, "bytes": 0}}
    flow["tls"]["app_record_sizes"] = {"c2s": [], "s2c": []}
    return flow


def one_query(i, resumed=False, **kw):
    f = make_flow(id=i, first_ts=T0 + i, last_ts=T0 + i + 0.2, client__port=50000 + i, **kw)
    f["tls"]["app_data"]["c2s"]["records"] = 1
    f["tls"]["app_record_sizes"]["c2s"] = f["tls"]["app_record_sizes"]["c2s"][:1]
    f["tls"]["resumed"] = resumed
    return f


# (rule, flows that must fire, flows that must not, policy)
CASES = {
    "dns-plaintext-query": ([make_do53_flow()], [make_do53_flow(server__ip="127.0.0.53")], None),
    "dns-plaintext-fallback": (
        [make_failed_dot_flow("rst", id=1), make_do53_flow(id=2, first_ts=T0 + 2)],
        [make_failed_dot_flow("rst", id=1), make_do53_flow(id=2, first_ts=T0 + 30)], None),
    "dns-nonstandard-port": ([make_do53_flow(klass="dns-nonstandard-port", server__port=5353)], [make_do53_flow()], None),
    "dns-padding-in-cleartext": ([make_do53_flow(dns=make_dns(2, padding_queries=2))], [make_do53_flow()], None),
    "dns-multicast-leak": ([make_mdns_flow(["printer.local", "intranet.corp.example"])],
                           [make_mdns_flow(["printer.local", "_ipp._tcp.local", "4.3.2.1.254.169.in-addr.arpa"]),
                            make_mdns_flow(["wpad"], klass="llmnr")], None),
    "dot-no-padding": ([make_flow(tls__app_record_sizes__c2s=[60, 75, 66])], [make_flow()], None),
    "dot-tls-version-prohibited": ([make_tls12_flow("ecdhe-cbc", tls__version="TLS 1.0")], [make_tls12_flow()], None),
    "dot-tls-version-not-1-3": ([make_tls12_flow()], [make_flow(), make_tls12_flow(tls__version="TLS 1.1")], None),
    "dot-tls-downgrade-sentinel": ([make_tls12_flow(tls__downgrade_sentinel="tls12", tls__versions_offered=["TLS 1.3", "TLS 1.2"])],
                                   [make_tls12_flow(tls__downgrade_sentinel="tls12"), make_tls12_flow()], None),
    "dot-cipher-null-export-anon": ([make_tls12_flow("null"), make_tls12_flow("export", id=2), make_tls12_flow("anon", id=3)],
                                    [make_tls12_flow("rsa-cbc"), make_flow(id=2)], None),
    "dot-cipher-rc4-des": ([make_tls12_flow("rc4"), make_tls12_flow("des", id=2)], [make_tls12_flow("3des")], None),
    "dot-cipher-3des": ([make_tls12_flow("3des")], [make_tls12_flow("des"), make_tls12_flow("ecdhe-gcm", id=2)], None),
    "dot-cipher-no-pfs": ([make_tls12_flow("rsa-cbc")], [make_tls12_flow("ecdhe-cbc"), make_flow(id=2)], None),
    "dot-cipher-cbc": ([make_tls12_flow("ecdhe-cbc")], [make_tls12_flow("ecdhe-gcm"), make_tls12_flow("chacha", id=2)], None),
    "dot-cipher-not-in-profile": ([make_tls12_flow("ecdhe-cbc")], [make_tls12_flow("ecdhe-gcm"), make_flow(id=2)], None),
    "dot-client-offers-weak": ([make_flow(tls__versions_offered=["TLS 1.3", "TLS 1.2", "TLS 1.1", "TLS 1.0"]),
                                make_tls12_flow(id=2, tls__versions_offered=["TLS 1.2"], tls__offered_weaknesses=["3des", "cbc"]),
                                make_tls12_flow(id=3, tls__versions_offered=["TLS 1.2"], tls__ciphers_offered=["TLS_RSA_WITH_RC4_128_SHA"]),
                                make_failed_dot_flow("alert", id=4, tls__versions_offered=["TLS 1.0"])],
                               [make_tls12_flow(tls__versions_offered=["TLS 1.2"], tls__offered_weaknesses=[]),
                                # CBC, static RSA, SHA-1 MACs: offered by every default client, not counted
                                make_tls12_flow(id=2, tls__versions_offered=["TLS 1.3", "TLS 1.2"],
                                                tls__offered_weaknesses=["cbc", "no_pfs", "sha1_mac"],
                                                tls__ciphers_offered=["TLS_RSA_WITH_AES_128_CBC_SHA"])], None),
    "dot-tls-compression": ([make_tls12_flow(tls__compression=1)], [make_tls12_flow()], None),
    "dot-cert-expired": ([make_tls12_flow(tls__cert_validation=cert_bad(trusted=False, expired=True, expires_in_days=-3))],
                         [make_tls12_flow(), make_flow(id=2)], None),
    "dot-cert-not-yet-valid": ([make_tls12_flow(tls__cert_validation=cert_bad(trusted=False, not_yet_valid=True))],
                               [make_tls12_flow()], None),
    "dot-cert-expires-soon": ([make_tls12_flow(tls__cert_validation=cert_bad(expires_in_days=5))],
                              [make_tls12_flow(), make_tls12_flow(id=2, tls__cert_validation=cert_bad(expired=True, expires_in_days=-1))], None),
    "dot-cert-self-signed": ([make_tls12_flow(tls__certificates=[make_cert(self_signed=True, issuer="dns.lab.example")],
                                              tls__cert_validation=cert_bad(trusted=False, chain_length=1))],
                             [make_tls12_flow()], None),
    "dot-cert-untrusted": ([make_tls12_flow(tls__cert_validation=cert_bad(trusted=False, error="unable to get local issuer certificate")),
                            make_tls12_flow(id=2, tls__certificates=[make_cert(self_signed=True)], tls__cert_validation=cert_bad(trusted=False)),
                            # expired or SHA-1 and issued by a CA that is not an anchor: untrusted too
                            make_tls12_flow(id=3, tls__certificates=[make_cert(issuer="Other CA", signature_hash="sha1")],
                                            tls__cert_validation=cert_bad(trusted=False, error="forbidden signature algorithm")),
                            make_tls12_flow(id=4, tls__certificates=[make_cert(issuer="Other CA")],
                                            tls__cert_validation=cert_bad(trusted=False, expired=True))],
                           [make_tls12_flow(),
                            # issued by the anchor, failing only on dates or a weak signature: their own rules
                            make_tls12_flow(id=2, tls__certificates=[make_cert(issuer=LAB_CA_NAME)],
                                            tls__cert_validation=cert_bad(trusted=False, expired=True)),
                            make_tls12_flow(id=3, tls__certificates=[make_cert(issuer=LAB_CA_NAME, signature_hash="sha1")],
                                            tls__cert_validation=cert_bad(trusted=False, error="forbidden signature algorithm"))],
                           LAB_TRUST),
    "dot-cert-name-mismatch": ([make_tls12_flow(tls__cert_validation=cert_bad(name_match=False))],
                               [make_tls12_flow(), make_tls12_flow(id=2, tls__cert_validation=cert_bad(name_checked=False, name_match=None))], None),
    "dot-cert-weak-key": ([make_tls12_flow(tls__certificates=[make_cert(key_type="RSA", key_bits=1024)])],
                          [make_tls12_flow(tls__certificates=[make_cert(key_type="RSA", key_bits=2048)])], None),
    "dot-cert-weak-signature": ([make_tls12_flow(tls__certificates=[make_cert(signature_hash="sha1")])],
                                [make_tls12_flow(tls__certificates=[make_cert(signature_hash="sha256")])], None),
    "dot-cert-error-ignored": ([make_tls12_flow(tls__cert_validation=cert_bad(trusted=False, expired=True)),
                                make_tls12_flow(id=2, tls__certificates=[make_cert(signature_hash="sha1")]),
                                make_tls12_flow(id=3, tls__certificates=[make_cert(key_type="RSA", key_bits=1024)])],
                               [abort(make_tls12_flow(tls__cert_validation=cert_bad(trusted=False, expired=True))),
                                make_tls12_flow(id=2)], None),
    "dot-cert-not-observable": ([make_flow()], [make_tls12_flow()], None),
    "dot-handshake-alert": ([make_failed_dot_flow("alert")], [make_flow()], None),
    "dot-handshake-reset": ([make_failed_dot_flow("reset")], [make_failed_dot_flow("rst"), make_flow(id=2)], None),
    "dot-handshake-incomplete": ([make_failed_dot_flow("silent")], [make_failed_dot_flow("alert"), make_flow(id=2)], None),
    "dot-not-tls": ([make_failed_dot_flow("not_tls")], [make_flow()], None),
    "dot-port-unreachable": ([make_failed_dot_flow("rst")], [make_failed_dot_flow("timeout"), make_flow(id=2)], None),
    "dot-connect-timeout": ([make_failed_dot_flow("timeout")], [make_failed_dot_flow("rst"), make_flow(id=2)], None),
    "dot-nonstandard-port": ([make_flow(klass="dot-nonstandard-port", server__port=8853)], [make_flow()], None),
    "dot-no-sni": ([make_flow(tls__sni=None)], [make_flow()], None),
    "dot-unapproved-resolver": ([make_flow()], [make_flow(server__ip="192.0.2.1")], Policy(approved_resolvers=["192.0.2.1"])),
    "dot-no-connection-reuse": ([one_query(1), one_query(2), one_query(3)], [make_flow(), one_query(2), one_query(3)], None),
    "dot-no-session-resumption": ([one_query(1), one_query(2), one_query(3)],
                                  [one_query(1), one_query(2),  # two full handshakes: not yet a pattern
                                   one_query(3, client__ip="10.0.0.9"), one_query(4, client__ip="10.0.0.9"),
                                   one_query(5, client__ip="10.0.0.9"), one_query(6, client__ip="10.0.0.9", resumed=True)], None),
    "doh-known-resolver": ([make_flow(klass="doh", server__port=443, tls__alpn="h2")],
                           [make_flow(klass="doh", server__ip="192.0.2.1", server__port=443)], Policy(approved_resolvers=["192.0.2.1"])),
    "doq-observed": ([make_do53_flow(klass="doq", server__port=853, dns=None)], [make_flow()], None),
}


def test_every_rule_has_a_case():
    assert set(CASES) | {"capture-incomplete"} == {r.name for r in RULES}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fires(name):
    flows, _, policy = CASES[name]
    import copy
    assert name in ids(fired(copy.deepcopy(flows), policy))


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_does_not_fire(name):
    _, flows, policy = CASES[name]
    import copy
    assert name not in ids(fired(copy.deepcopy(flows), policy))


def test_capture_incomplete():
    assert "capture-incomplete" in ids(fired([make_flow()], stats={"evictions": 3, "kernel_drops": 0}))
    assert "capture-incomplete" in ids(fired([], inputs=[{"path": "x.pcap", "truncated": True, "errors": []}]))
    assert "capture-incomplete" in ids(fired([], inputs=[{"path": "x.pcap", "errors": ["bad block"]}]))
    assert "capture-incomplete" not in ids(fired([make_flow()]))


def test_healthy_tls13_dot_only_reports_hidden_certificate():
    assert ids(fired([make_flow(tls__offered_weaknesses=[])])) == {"dot-cert-not-observable"}


def test_tls13_certificate_rules_never_pass_silently():
    """Whatever the analyzer put in the cert fields, TLS 1.3 gives only dot-cert-not-observable."""
    got = ids(fired([make_flow()]))
    assert "dot-cert-not-observable" in got
    assert not {n for n in got if n.startswith("dot-cert-") and n != "dot-cert-not-observable"}


def test_healthy_tls12_dot_only_reports_version():
    assert ids(fired([make_tls12_flow()])) == {"dot-tls-version-not-1-3"}


@pytest.mark.parametrize("profile,cipher,expected", [
    ("rfc9325", "ecdhe-gcm", False), ("rfc9325", "chacha", False), ("rfc9325", "ecdhe-cbc", True),
    ("mozilla-intermediate", "ecdhe-cbc", True), ("mozilla-intermediate", "chacha", False),
    ("mozilla-modern", "ecdhe-gcm", True), ("nist-800-52r2", "ecdhe-cbc", False),
    ("nist-800-52r2", "chacha", True), ("nist-800-52r2", "rsa-cbc", True),
])
def test_cipher_profile(profile, cipher, expected):
    got = ids(fired([make_tls12_flow(cipher)], Policy(profile=profile)))
    assert ("dot-cipher-not-in-profile" in got) is expected
