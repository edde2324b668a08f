from __future__ import annotations

import hashlib

import pytest

from dotaudit.tls import looks_like_tls, peek_client_hello
from dotaudit.tls.fingerprint import ja3, ja4, ja4_parts
from dotaudit.tls.handshake import (
    PEEK_CAP,
    parse_client_hello,
    parse_server_hello,
    parse_ssl2_client_hello,
)

from .conftest import (
    alpn_ext,
    client_hello_body,
    ext,
    hs,
    record,
    server_hello_body,
    sni_ext,
    tls13_client_hello,
    u16,
    u16list_ext,
)


def test_peek_complete_hello():
    rec = tls13_client_hello(sni="Dns.Example.", alpn=("dot", "h2"))
    p = peek_client_hello(rec)
    assert p.complete and p.needed == len(rec)
    assert p.sni == "dns.example" and p.alpn == ("dot", "h2")


def test_peek_partial_hello():
    rec = tls13_client_hello()
    for cut in (1, 3, 5, 9, 40, len(rec) - 1):
        p = peek_client_hello(rec[:cut])
        assert p is not None and not p.complete, cut
        assert p.needed >= cut
    assert peek_client_hello(rec[:20]).needed == len(rec)


def test_peek_hello_spanning_two_records():
    msg = hs(1, client_hello_body(exts=sni_ext("split.example") + alpn_ext("dot")))
    a, b = msg[:30], msg[30:]
    data = record(22, a, 0x0301) + record(22, b, 0x0301)
    p = peek_client_hello(data)
    assert p.complete and p.sni == "split.example" and p.needed == len(data)
    p2 = peek_client_hello(data[:40])
    assert not p2.complete and p2.needed >= len(data) - 5


def test_peek_rejects_non_tls():
    assert peek_client_hello(b"GET / HTTP/1.1\r\n") is None
    assert peek_client_hello(b"") is None
    assert peek_client_hello(record(23, b"x" * 10)) is None
    assert peek_client_hello(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") is None  # ServerHello


def test_peek_cap():
    big = b"\x16\x03\x01\x48\x00\x01\xff\xff\xff"
    p = peek_client_hello(big)
    assert not p.complete and p.needed <= PEEK_CAP


def test_peek_ssl2():
    body = b"\x01\x03\x01" + u16(6) + u16(0) + u16(16) + b"\x01\x00\x80\x00\x00\x35" + b"\xaa" * 16
    rec = bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body
    p = peek_client_hello(rec)
    assert p.complete and p.needed == len(rec) and p.sni is None
    ch = parse_ssl2_client_hello(rec)
    assert ch.ssl2 and ch.version == 0x0301 and ch.ciphers == [0x010080, 0x000035]


@pytest.mark.parametrize(
    "buf,ok",
    [
        (record(22, b"\x01\x00\x00\x00"), True),
        (record(21, b"\x02\x46"), True),
        (record(23, b"abc"), True),
        (record(20, b"\x01"), True),
        (b"\x16\x03", True),
        (b"\x16\x04\x01", False),
        (b"\x16\x03\x09\x00\x10", False),
        (b"\x17\x03\x03\xff\xff", False),
        (b"\x00\x2c\x12\x34", False),  # DNS over TCP
        (b"GET /", False),
        (b"", False),
    ],
)
def test_looks_like_tls(buf, ok):
    assert looks_like_tls(buf) is ok


def test_parse_client_hello_fields():
    rec = tls13_client_hello(early=True, psk=True)
    ch = parse_client_hello(rec[9:])
    assert ch.version == 0x0303 and ch.sni == "dns.example" and ch.alpn == ("dot",)
    assert ch.groups == [0x0A0A, 29, 23] and ch.point_formats == [0]
    assert ch.supported_versions == [0x2A2A, 0x0304, 0x0303]
    assert ch.key_share_groups == [29]
    assert ch.early_data and ch.psk and len(ch.session_id) == 32


def test_parse_server_hello_tls13_and_hrr():
    from dotaudit.tls.ciphers import HRR_RANDOM

    sh = parse_server_hello(server_hello_body(cipher=0x1302, exts=ext(43, u16(0x0304)) + ext(41, u16(0))))
    assert sh.tls13 and sh.psk and sh.cipher == 0x1302
    hrr = parse_server_hello(server_hello_body(cipher=0x1301, random=HRR_RANDOM,
                                               exts=ext(43, u16(0x0304)) + ext(51, u16(23))))
    assert hrr.hello_retry and hrr.key_share_group == 23
    down = parse_server_hello(server_hello_body(random=b"\x00" * 24 + b"DOWNGRD\x01"))
    assert down.downgrade_sentinel == "tls12"


def test_parse_errors_raise_valueerror():
    with pytest.raises(ValueError):
        parse_client_hello(b"\x03\x03" + b"\x00" * 10)
    with pytest.raises(ValueError):
        parse_server_hello(b"\x03")


def _ja4_spec_hello():
    """The ClientHello of the JA4 specification example (technical_details/JA4.md)."""
    ciphers = [0x1A1A, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
               0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
    order = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023,
             0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]
    sigs = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
    exts = ext(0x0A0A)
    for e in order:
        if e == 0x0000:
            exts += sni_ext("example.com")
        elif e == 0x0010:
            exts += alpn_ext("h2", "http/1.1")
        elif e == 0x000D:
            exts += u16list_ext(13, sigs)
        elif e == 0x002B:
            exts += u16list_ext(43, [0x3A3A, 0x0304, 0x0303], prefix=1)
        else:
            exts += ext(e, b"\x00")
    return parse_client_hello(client_hello_body(ciphers=ciphers, exts=exts))


def test_ja4_specification_example():
    ch = _ja4_spec_hello()
    a, b, c = ja4_parts(ch)
    assert a == "t13d1516h2"
    assert b == "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
    assert c == ("0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
                 "0403,0804,0401,0503,0805,0501,0806,0601")
    assert ja4(ch) == "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_ja4_alpn_rules():
    def first(alpn):
        ch = parse_client_hello(client_hello_body(exts=alpn_ext(alpn) if alpn is not None else b""))
        return ja4(ch).split("_")[0][-2:]

    assert first("http/1.1") == "h1"
    assert first("dot") == "dt"
    assert first(b"\xab") == "ab"
    assert first(b"\x30\xab") == "3b"
    assert first(None) == "00"


def test_ja3_string_and_hash():
    ch = _ja4_spec_hello()
    digest, s = ja3(ch)
    parts = s.split(",")
    assert parts[0] == "771" and "6682" not in parts[1]  # GREASE 0x1a1a removed
    assert parts[2].startswith("27-0-51-16-17513-")
    assert digest == hashlib.md5(s.encode()).hexdigest()
