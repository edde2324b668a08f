"""DNS over TCP framing (RFC 7766 section 8): several messages per segment, one message over
several segments, a stream picked up mid-message."""

from __future__ import annotations

import struct

import dns.message

from dotaudit.dns.collector import DnsCollector, DnsTcpFramer


def framed(*names):
    out = b""
    for i, n in enumerate(names):
        w = dns.message.make_query(n, "A", id=i + 1).to_wire()
        out += struct.pack("!H", len(w)) + w
    return out


def test_several_messages_in_one_segment():
    c = DnsCollector()
    DnsTcpFramer(c, True).feed(framed("a.example.", "b.example.", "c.example."), 1, 0.0)
    assert c.queries == 3 and sorted(c.qnames) == ["a.example", "b.example", "c.example"]


def test_one_message_across_segments_byte_by_byte():
    c = DnsCollector()
    f = DnsTcpFramer(c, True)
    for i, b in enumerate(framed("split.example.", "two.example.")):
        f.feed(bytes([b]), i + 1, 0.0)
    assert c.queries == 2 and c.malformed == 0


def test_stream_picked_up_mid_message_resynchronises():
    c = DnsCollector()
    stream = framed("first.example.", "second.example.", "third.example.")
    cut = 9  # inside the first message
    DnsTcpFramer(c, True).feed(stream[cut:], 1, 0.0)
    assert c.queries == 2 and {"second.example", "third.example"} <= c.qnames
    assert c.malformed == 0


def test_gap_then_resync():
    c = DnsCollector()
    f = DnsTcpFramer(c, True)
    stream = framed("one.example.", "two.example.", "three.example.")
    f.feed(stream[:20], 1, 0.0)
    f.gap()
    f.feed(stream[40:], 3, 0.0)
    assert "three.example" in c.qnames


def test_garbage_stream_is_counted_not_raised():
    c = DnsCollector()
    f = DnsTcpFramer(c, True)
    f.feed(b"\x00\x05hello" + b"\xff" * 5000, 1, 0.0)
    assert c.queries == 0 and c.tcp_length_errors == 1


def test_response_matching_and_rtt():
    c = DnsCollector()
    q = dns.message.make_query("rtt.example.", "AAAA", id=77)
    r = dns.message.make_response(q)
    c.message(q.to_wire(), 10.0, 1, True)
    c.message(r.to_wire(), 10.025, 2, False)
    j = c.to_json()
    assert j["answered"] == 1 and j["unanswered"] == 0 and j["rcodes"] == {"NOERROR": 1}
    assert c.rtts[0][1] == 25.0
