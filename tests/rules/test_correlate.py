"""Correlators: cross-flow facts and policy facts on the flow dict."""

import pytest

from dotaudit.rules.correlate import correlate, is_link_local_name, padding_consistent
from dotaudit.rules.policy import Policy
from tests.factories import (
    T0, TLS12_CIPHERS, make_cert, make_do53_flow, make_failed_dot_flow, make_flow, make_mdns_flow,
    make_tls12_flow,
)


def run(flows, policy=None):
    correlate(flows, policy or Policy())
    return flows


@pytest.mark.parametrize("kind", ["rst", "timeout", "alert", "reset", "silent", "not_tls"])
def test_fallback_after_each_kind_of_dot_failure(kind):
    dot = make_failed_dot_flow(kind, id=7)
    q = make_do53_flow(id=8, first_ts=dot["last_ts"] + 1.5)
    run([dot, q])
    c = q["correlations"]
    assert c["fallback_after_dot_failure"] is True
    assert c["fallback_dot_flow_id"] == 7
    assert c["fallback_delay_s"] == pytest.approx(1.5)


def test_no_fallback_outside_window_other_client_before_failure_or_local():
    dot = make_failed_dot_flow("rst", id=1)
    late = make_do53_flow(id=2, first_ts=dot["last_ts"] + 11)
    other = make_do53_flow(id=3, first_ts=T0 + 1, client__ip="192.0.2.99")
    before = make_do53_flow(id=4, first_ts=T0 - 1)
    local = make_do53_flow(id=5, first_ts=T0 + 1, server__ip="127.0.0.53")
    run([dot, late, other, before, local])
    assert not any(f["correlations"]["fallback_after_dot_failure"] for f in (late, other, before, local))
    late2 = make_do53_flow(id=6, first_ts=dot["last_ts"] + 11)
    run([dot, late2], Policy(fallback_window_s=20))
    assert late2["correlations"]["fallback_after_dot_failure"]


def test_successful_dot_is_not_a_failure():
    q = make_do53_flow(id=2, first_ts=T0 + 2)
    run([make_flow(id=1), q])
    assert q["correlations"]["fallback_after_dot_failure"] is False


def test_handshake_and_query_counts():
    a = make_flow(id=1)
    b = make_flow(id=2, client__port=50001)
    c = make_flow(id=3, client__port=50002, tls__resumed=True)
    other_server = make_flow(id=4, server__ip="198.51.100.54")
    for f in (b, c):
        f["tls"]["app_data"]["c2s"]["records"] = 1
        f["tls"]["app_record_sizes"]["c2s"] = [147, 19]  # one query + an encrypted close_notify
    run([a, b, c, other_server])
    assert a["correlations"]["full_handshakes_to_server"] == 2
    assert other_server["correlations"]["full_handshakes_to_server"] == 1
    assert a["correlations"]["queries_per_connection"] == 4
    assert b["correlations"]["queries_per_connection"] == 1
    assert a["correlations"]["single_query_connections_to_server"] == 2


def test_padding_inference_per_suite():
    assert run([make_flow()])[0]["correlations"]["padding_inferred"] is True
    assert run([make_flow()])[0]["correlations"]["padding_inferred_responses"] is True
    assert run([make_flow(tls__app_record_sizes__c2s=[61, 80])])[0]["correlations"]["padding_inferred"] is False
    for cipher in ("ecdhe-gcm", "chacha"):
        assert run([make_tls12_flow(cipher)])[0]["correlations"]["padding_inferred"] is True
    assert run([make_tls12_flow("ecdhe-cbc")])[0]["correlations"]["padding_inferred"] is None
    assert run([make_flow(tls__app_record_sizes__c2s=[])])[0]["correlations"]["padding_inferred"] is None


@pytest.mark.parametrize("sizes,version,cipher,block,expected", [
    ([147, 147, 275], "TLS 1.3", {"name": "TLS_AES_128_GCM_SHA256"}, 128, True),   # 1 and 2 blocks
    ([152, 152], "TLS 1.3", {"name": "TLS_AES_128_GCM_SHA256"}, 128, True),        # sizes incl. header
    ([53, 147], "TLS 1.3", {"name": "TLS_AES_256_GCM_SHA384"}, 128, True),         # Finished skipped
    ([139], "TLS 1.3", {"name": "TLS_AES_128_CCM_8_SHA256"}, 128, True),            # 8-byte tag
    ([154], "TLS 1.2", {"name": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}, 128, True),
    ([146], "TLS 1.2", {"name": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"}, 128, True),
    ([494], "TLS 1.2", {"name": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}, 468, True),
    ([60], "TLS 1.3", {"name": "TLS_AES_128_GCM_SHA256"}, 128, False),
    ([160], "TLS 1.2", {"name": "TLS_RSA_WITH_AES_128_CBC_SHA"}, 128, None),
    ([147], None, {"name": "TLS_AES_128_GCM_SHA256"}, 128, None),
])
def test_padding_consistent(sizes, version, cipher, block, expected):
    assert padding_consistent(sizes, version, cipher, block) is expected


@pytest.mark.parametrize("name,local", [
    ("printer.local", True), ("wpad", True), ("_ipp._tcp.local", True), ("4.3.254.169.in-addr.arpa", True),
    ("1.0.0.0.8.e.f.ip6.arpa", True), ("intranet.corp.example", False), ("1.1.168.192.in-addr.arpa", False),
    ("4.c.d.4.f.d.ip6.arpa", False), ("example.com.", False),
])
def test_link_local_names(name, local):
    assert is_link_local_name(name) is local


def test_multicast_nonlocal_names():
    f = run([make_mdns_flow(["a.local", "corp.example", "b.corp.example"])])[0]
    assert f["correlations"]["multicast_nonlocal_qnames"] == ["b.corp.example", "corp.example"]
    assert f["correlations"]["multicast_nonlocal_count"] == 2


def test_policy_facts():
    pol = Policy(local_resolvers=["10.0.0.0/8"], approved_resolvers=["198.51.100.53"], cert_expiry_warning_days=10,
                 max_tls_handshake_ms=5, max_query_rtt_ms=100)
    dot, tls12, do53 = make_flow(), make_tls12_flow("rsa-cbc", server__ip="10.0.0.1"), make_do53_flow(server__ip="10.1.1.1")
    tls12["tls"]["cert_validation"]["expires_in_days"] = 7
    tls12["tls"]["certificates"] = [make_cert(key_type="RSA", key_bits=1024)]
    run([dot, tls12, do53], pol)
    assert dot["policy"]["approved_resolver"] and dot["policy"]["approved_resolver_listed"]
    assert not dot["policy"]["local_resolver"] and do53["policy"]["local_resolver"]
    assert not tls12["policy"]["approved_resolver"]
    assert dot["policy"]["cipher_in_profile"] is True and tls12["policy"]["cipher_in_profile"] is False
    assert dot["policy"]["version_in_profile"] is True
    assert tls12["policy"]["cert_expiring_soon"] is True and dot["policy"]["cert_expiring_soon"] is None
    assert tls12["policy"]["cert_weak_key"] is True
    assert dot["policy"]["tls_handshake_slow"] is True and dot["policy"]["query_rtt_slow"] is False
    assert do53["policy"]["cipher_in_profile"] is None


def test_resumed_handshakes_counted_per_pair():
    flows = [make_flow(id=i, client__port=50000 + i) for i in range(1, 4)]
    flows[2]["tls"]["resumed"] = True
    other = make_flow(id=9, client__ip="192.0.2.99")
    run(flows + [other])
    assert [f["correlations"]["full_handshakes_to_server"] for f in flows] == [2, 2, 2]
    assert [f["correlations"]["resumed_handshakes_to_server"] for f in flows] == [1, 1, 1]
    assert other["correlations"]["resumed_handshakes_to_server"] == 0


def test_cert_chain_anchored_by_name():
    from pathlib import Path
    ca = str(Path(__file__).resolve().parents[2] / "pcaps" / "lab" / "ca.pem")
    policy = Policy(trust_anchors=[ca], system_trust=False)
    bad = {"trusted": False, "expired": True, "not_yet_valid": False, "name_match": True, "expires_in_days": -3}
    lab = make_tls12_flow(id=1, tls__certificates=[make_cert(issuer="dotaudit lab CA,O=dotaudit lab")],
                          tls__cert_validation=dict(bad))
    other = make_tls12_flow(id=2, tls__certificates=[make_cert(issuer="Other CA")], tls__cert_validation=dict(bad))
    ok = make_tls12_flow(id=3, tls__cert_validation=dict(bad, trusted=True, expired=False))
    tls13 = make_flow(id=4)
    run([lab, other, ok, tls13], policy)
    assert lab["policy"]["cert_chain_anchored"] is True
    assert other["policy"]["cert_chain_anchored"] is False
    assert ok["policy"]["cert_chain_anchored"] is True
    assert tls13["policy"]["cert_chain_anchored"] is None
