"""DNS in cleartext HTTP (DoH without TLS): HTTP/1.1 GET and POST, HTTP/2 with HPACK."""

from __future__ import annotations

import base64
import struct

import dns.message
from hpack import Encoder

from dotaudit.dns.collector import DnsCollector
from dotaudit.dns.http import H2_PREFACE, HttpDnsStream, looks_like_cleartext_doh


def query(name="doh.example.", qid=0):
    return dns.message.make_query(name, "A", id=qid).to_wire()


def b64(w):
    return base64.urlsafe_b64encode(w).rstrip(b"=").decode()


def h2_frame(ftype, flags, sid, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack("!I", sid) + payload


def test_http1_get_and_post():
    q = query()
    get = f"GET /dns-query?dns={b64(q)} HTTP/1.1\r\nHost: x\r\nAccept: application/dns-message\r\n\r\n".encode()
    assert looks_like_cleartext_doh(get) is True
    assert looks_like_cleartext_doh(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n") is False
    c = DnsCollector()
    s = HttpDnsStream(c, get)
    s.feed(True, get, 1, 0.0)
    post = (b"POST /dns-query HTTP/1.1\r\nContent-Type: application/dns-message\r\nContent-Length: "
            + str(len(q)).encode() + b"\r\n\r\n" + q)
    s.feed(True, post[:30], 2, 0.1)
    s.feed(True, post[30:], 3, 0.1)
    r = dns.message.make_response(dns.message.from_wire(q)).to_wire()
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/dns-message\r\nContent-Length: "
            + str(len(r)).encode() + b"\r\n\r\n" + r)
    s.feed(False, resp, 4, 0.2)
    assert (c.queries, c.responses) == (2, 1) and "doh.example" in c.qnames


def test_h2c_get_and_response_with_huffman_headers():
    q = query("h2.example.")
    enc = Encoder()
    headers = enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "dns.example"),
                          (":path", "/dns-query?dns=" + b64(q)), ("accept", "application/dns-message")],
                         huffman=True)
    client = H2_PREFACE + h2_frame(4, 0, 0, b"") + h2_frame(1, 0x05, 1, headers)
    assert looks_like_cleartext_doh(client) is True
    c = DnsCollector()
    s = HttpDnsStream(c, client)
    s.feed(True, client, 1, 0.0)
    r = dns.message.make_response(dns.message.from_wire(q)).to_wire()
    senc = Encoder()
    rh = senc.encode([(":status", "200"), ("content-type", "application/dns-message")], huffman=True)
    server = h2_frame(4, 0, 0, b"") + h2_frame(1, 0x04, 1, rh) + h2_frame(0, 0x01, 1, r)
    s.feed(False, server[:7], 2, 0.1)
    s.feed(False, server[7:], 3, 0.1)
    assert (c.queries, c.responses, c.answered) == (1, 1, 1)


def test_garbage_never_raises():
    c = DnsCollector()
    s = HttpDnsStream(c, H2_PREFACE)
    s.feed(True, H2_PREFACE + b"\xff" * 40, 1, 0.0)
    s.feed(False, b"\x00\x00\x05\x01\x04\x00\x00\x00\x01\xff\xff\xff\xff\xff", 2, 0.0)
    assert c.messages == 0
