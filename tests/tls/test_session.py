from __future__ import annotations

import json

from dotaudit.tls import TlsSession
from dotaudit.tls.ciphers import HRR_RANDOM

from .conftest import (
    client_hello_body,
    ext,
    feed_events,
    hs,
    record,
    server_hello_body,
    sni_ext,
    tls13_client_hello,
    tls13_full_flow,
    tls13_server_hello,
    u8,
    u16,
    u24,
    vec16,
)

END = 2000.0


def summ(s: TlsSession, **tcp):
    return s.summary(tcp=tcp, reference_time=None, trust=None, capture_end_ts=END)


def _json_ready(v):
    if isinstance(v, dict):
        return all(isinstance(k, str) and _json_ready(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_json_ready(x) for x in v)
    return v is None or isinstance(v, (str, int, float, bool))


def test_tls13_full_handshake():
    s = feed_events(tls13_full_flow(app_c=3, app_s=2))
    out = summ(s)
    assert s.is_tls is True
    assert out["version"] == "TLS 1.3" and out["client_version"] == "TLS 1.2"
    assert out["versions_offered"] == ["TLS 1.3", "TLS 1.2"]
    assert out["cipher"]["name"] == "TLS_AES_128_GCM_SHA256"
    assert out["ciphers_offered"][0] == "TLS_AES_128_GCM_SHA256"  # GREASE skipped
    assert out["sni"] == "dns.example" and out["alpn_offered"] == ["dot"]
    assert out["alpn"] == "not_observable"
    assert out["certificates"] == "not_observable" and out["cert_validation"] == "not_observable"
    assert out["selected_group"] == "x25519" and out["key_share_groups"] == ["x25519"]
    assert out["groups_offered"] == ["x25519", "secp256r1"]
    assert out["handshake_complete"] and out["established"]
    assert out["failure"] is None and out["history"] == "CseFAa"
    assert out["app_data"] == {"c2s": {"records": 3, "bytes": 60 + 61 + 62},
                               "s2c": {"records": 2, "bytes": 120 + 121}}
    assert out["app_record_sizes"]["c2s"] == [60, 61, 62]
    assert out["frames"]["server_hello"] == 2 and out["frames"]["server_hello_done_or_finished"] == 2
    assert out["frames"]["first_app_data_c2s"] == 4 and out["frames"]["first_app_data_s2c"] == 5
    assert out["ccs_compat"] == 2 and out["resumed"] is False and out["key_exchange"] == "ecdhe"
    assert len(s.app_records) == 5 and s.app_records[0][1:] == (4, True, 60)
    assert out["ja4"].startswith("t13d0")
    assert _json_ready(out)
    json.dumps(out)


def test_tls13_psk_resumption_and_early_data():
    ev = [(True, tls13_client_hello(early=True, psk=True) + record(23, b"e" * 30)),
          (True, record(23, b"e" * 31)),
          (False, tls13_server_hello(psk=True) + record(23, b"x" * 40) + record(23, b"f" * 40)),
          (True, record(23, b"F" * 40)),
          (True, record(23, b"q" * 70)),
          (False, record(23, b"r" * 90))]
    out = summ(feed_events(ev))
    assert out["resumed"] and out["resumption"] == "psk" and out["key_exchange"] == "psk_dhe"
    assert out["psk_offered"] and out["early_data_offered"]
    assert out["early_data_accepted"] == "not_observable" and out["early_data_records"] == 2
    assert out["established"] and out["history"] == "CYseFAa"


def test_hello_retry_request():
    hrr = record(22, hs(2, server_hello_body(cipher=0x1301, random=HRR_RANDOM,
                                              exts=ext(43, u16(0x0304)) + ext(51, u16(23)))))
    ev = [(True, tls13_client_hello()), (False, hrr + record(20, b"\x01")),
          (True, record(20, b"\x01") + tls13_client_hello())] + tls13_full_flow()[1:]
    out = summ(feed_events(ev))
    assert out["hello_retry_request"] is True
    assert out["history"].startswith("CrCs") and out["established"]


def _cert_msg(ders):
    body = b"".join(u24(len(d)) + d for d in ders)
    return hs(11, u24(len(body)) + body)


def tls12_full(ders=(b"\x30\x03\x02\x01\x01",), cipher=0xC02F, ske=True, alert=None, sni="dns.example"):
    ch = record(22, hs(1, client_hello_body(ciphers=(0xC02F, 0x0035, 0x000A, 0x5600),
                                            exts=(sni_ext(sni) if sni else b"") + ext(23) + ext(0xFF01, b"\x00"))), 0x0301)
    sh = hs(2, server_hello_body(cipher=cipher, session_id=b"\x44" * 32, exts=ext(0xFF01, b"\x00") + ext(23)))
    flight = sh + _cert_msg(list(ders))
    if ske:
        flight += hs(12, u8(3) + u16(23) + u8(65) + b"\x04" * 65 + u16(0x0401) + vec16(b"s" * 64))
    flight += hs(14, b"")
    # the flight split across two records, the certificate message spanning both
    cut = len(sh) + 20
    ev = [(True, ch), (False, record(22, flight[:cut]) + record(22, flight[cut:]))]
    if alert is not None:
        ev.append((True, record(21, bytes(alert))))
        return ev
    ev += [(True, record(22, hs(16, b"\x41" + b"k" * 65)) + record(20, b"\x01") + record(22, b"F" * 40)),
           (False, record(20, b"\x01") + record(22, b"f" * 40)),
           (True, record(23, b"q" * 60)), (False, record(23, b"r" * 100))]
    return ev


def test_tls12_full_handshake():
    s = feed_events(tls12_full())
    out = summ(s)
    assert out["version"] == "TLS 1.2" and out["cipher"]["kex"] == "ECDHE"
    assert out["fallback_scsv"] is True
    assert out["offered_weaknesses"] == ["3des", "cbc", "no_pfs", "sha1_mac"]
    assert out["server_key_exchange"] == {"kind": "ecdhe", "curve": "secp256r1", "dh_bits": None}
    assert out["selected_group"] == "secp256r1"
    assert out["renegotiation_info"] is True and out["extended_master_secret"] is True
    assert out["history"] == "CstkdKXFxfAa" and out["established"] and out["failure"] is None
    assert out["frames"]["certificate"] == 2 and out["frames"]["server_hello_done_or_finished"] == 2
    assert out["certificates"][0]["error"] == "certificate does not parse"
    assert out["alpn"] is None and out["resumed"] is False


def test_tls12_abbreviated_ticket_and_session_id():
    def flow(ticket: bytes, sid: bytes):
        ch = record(22, hs(1, client_hello_body(ciphers=(0xC02F,), session_id=sid,
                                                exts=ext(35, ticket))))
        sh = record(22, hs(2, server_hello_body(cipher=0xC02F, session_id=sid)))
        return [(True, ch), (False, sh + record(20, b"\x01") + record(22, b"f" * 40)),
                (True, record(20, b"\x01") + record(22, b"F" * 40) + record(23, b"q" * 50)),
                (False, record(23, b"r" * 50))]

    t = summ(feed_events(flow(b"T" * 100, b"\x55" * 32)))
    assert t["resumed"] and t["resumption"] == "ticket" and t["session_ticket_offered"]
    assert t["history"] == "CsxfXFAa" and t["established"] and t["certificates"] == []
    assert t["cert_validation"] is None
    i = summ(feed_events(flow(b"", b"\x55" * 32)))
    assert i["resumption"] == "session_id" and i["session_ticket_offered"] is False
    assert i["session_ticket_supported"] is True and i["session_id_offered"] is True


def test_failures():
    ch = [(True, tls13_client_hello())]
    assert summ(feed_events(ch))["failure"] == "timeout"
    assert summ(feed_events(ch), rst_from="server")["failure"] == "reset"
    assert summ(feed_events(ch), fin_from=["server"])["failure"] == "closed"
    out = summ(feed_events(ch + [(False, b"HTTP/1.1 400 Bad Request\r\n\r\n")]))
    assert out["failure"] == "not_tls" and out["not_tls"] and out["not_tls_from"] == "server"
    s = feed_events([(True, b"\x00\x1c\x12\x34\x01\x00\x00\x01")])  # DNS over TCP
    assert s.is_tls is False and summ(s)["failure"] == "not_tls"
    al = summ(feed_events(tls12_full(alert=b"\x02\x28")[:1] + [(False, record(21, b"\x02\x28"))]),
              fin_from=["server"])
    assert al["failure"] == "alert" and al["alerts"][0]["name"] == "handshake_failure"
    assert al["alerts"][0]["from"] == "server" and al["frames"]["first_alert"] == 2


def test_client_alert_after_certificate():
    out = summ(feed_events(tls12_full(alert=b"\x02\x30")))  # unknown_ca
    assert out["failure"] == "alert" and out["alerts"][0]["name"] == "unknown_ca"
    assert out["history"].endswith("L")


def test_encrypted_close_notify_after_handshake_is_not_failure():
    ev = tls12_full()[:4] + [(True, record(21, b"\x99" * 26))]
    out = summ(feed_events(ev))
    assert out["alerts"][0]["encrypted"] and out["alerts"][0]["level"] is None
    assert out["handshake_complete"] and out["failure"] is None


def test_gap_resync_in_application_data():
    s = TlsSession()
    ev = tls13_full_flow(app_c=1, app_s=1)
    for i, (fc, d) in enumerate(ev, 1):
        s.feed(fc, d, i, 1000.0 + i)
    rec = record(23, b"z" * 300)
    s.feed(False, rec[:100], 20, 1020.0)
    s.gap(False)
    s.feed(False, rec[180:] + record(23, b"y" * 77) + record(23, b"w" * 33), 22, 1022.0)
    out = summ(s)
    assert out["gaps"]["s2c"] == 1 and out["resyncs"]["s2c"] == 1
    assert out["app_record_sizes"]["s2c"][-2:] == [77, 33]
    assert "g" in out["history"]


def test_app_record_cap():
    ev = tls13_full_flow(app_c=1, app_s=1)
    s = feed_events(ev)
    blob = record(23, b"a" * 10) * 5000
    s.feed(True, blob, 99, 1099.0)
    out = summ(s)
    assert len(s.app_records) == 4096
    assert out["app_records_dropped"] == 5002 - 4096
    assert out["app_data"]["c2s"]["records"] == 5001
    assert len(out["app_record_sizes"]["c2s"]) == 64


def test_ssl2_compatible_client_hello():
    body = b"\x01\x03\x01" + u16(9) + u16(0) + u16(16) + b"\x01\x00\x80\x07\x00\xc0\x00\x00\x2f" + b"\xaa" * 16
    v2 = bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body
    sh = record(22, hs(2, server_hello_body(version=0x0301, cipher=0x002F)), 0x0301)
    out = summ(feed_events([(True, v2[:7]), (True, v2[7:]), (False, sh)]))
    assert out["client_version"] == "TLS 1.0" and out["version"] == "TLS 1.0"
    assert out["ciphers_offered"] == ["SSL2_RC4_128_WITH_MD5", "SSL2_DES_192_EDE3_CBC_WITH_MD5",
                                      "TLS_RSA_WITH_AES_128_CBC_SHA"]
    assert "rc4" in out["offered_weaknesses"] and out["history"].startswith("Cs")
    assert out["ja3_string"].startswith("769,65664-")


def test_malformed_hello_is_counted_not_raised():
    bad = record(22, hs(1, b"\x03\x03" + b"\x00" * 20))
    s = feed_events([(True, bad), (False, record(22, b"\xff\xff\xff\xff\xff"))])
    out = summ(s)
    assert out["malformed"] >= 1 and out["error"]
    assert _json_ready(out)


def test_is_tls_undecided_until_enough_bytes():
    s = TlsSession()
    assert s.is_tls is None
    s.feed(True, b"\x16\x03", 1, 1.0)
    assert s.is_tls is None
    s.feed(True, tls13_client_hello()[2:], 2, 2.0)
    assert s.is_tls is True


def test_summary_with_tcp_none_and_no_bytes():
    out = TlsSession().summary(tcp={}, reference_time=None, trust=None, capture_end_ts=0.0)
    assert out["failure"] is None and out["version"] is None and out["history"] == ""


def test_gap_before_first_bytes_resyncs_instead_of_not_tls():
    s = TlsSession()
    s.gap(False)
    assert s.is_tls is None
    rec = record(23, b"z" * 50)
    s.feed(False, rec[7:] + record(23, b"y" * 20) + record(23, b"x" * 10), 1, 1.0)
    out = summ(s)
    assert out["not_tls"] is False and out["resyncs"]["s2c"] == 1
    assert out["unexpected_records"] == 2  # no handshake seen: counted, not application data


def test_summary_has_every_contract_key():
    from dotaudit.tls.session import SUMMARY_KEYS

    for s in (TlsSession(), feed_events(tls13_full_flow()), feed_events(tls12_full())):
        out = summ(s)
        assert set(SUMMARY_KEYS) <= set(out)
    broken = TlsSession()._minimal_summary()
    assert set(SUMMARY_KEYS) <= set(broken) and _json_ready(broken)
