"""Hostile bytes: nothing raises, the summary stays JSON-ready, chunking changes nothing."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dotaudit.tls import TlsSession, looks_like_tls, peek_client_hello
from dotaudit.tls.records import RecordReader

from .conftest import record, tls13_client_hello, tls13_full_flow
from .test_session import tls12_full

SETTINGS = settings(max_examples=int(__import__("os").environ.get("TLS_HYP_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CT = st.sampled_from([20, 21, 22, 23, 24, 25, 0x80, 0x16])


@st.composite
def records(draw):
    """A record with a plausible, truncated or oversized header and random body."""
    ct = draw(CT)
    ver = draw(st.sampled_from([0x0300, 0x0301, 0x0303, 0x0304, 0x0305, 0x0203]))
    body = draw(st.binary(max_size=300))
    kind = draw(st.sampled_from(["ok", "short", "long", "huge"]))
    ln = {"ok": len(body), "short": max(0, len(body) - 3), "long": len(body) + 7,
          "huge": 0xFFFF}[kind]
    return bytes([ct]) + ver.to_bytes(2, "big") + ln.to_bytes(2, "big") + body


@st.composite
def hostile_flows(draw):
    """Events mixing valid flows, mutated valid flows, random records and random bytes."""
    base = draw(st.sampled_from(["tls13", "tls12", "none"]))
    events = {"tls13": tls13_full_flow(), "tls12": tls12_full(), "none": []}[base]
    events = [(fc, bytearray(d)) for fc, d in events]
    for _ in range(draw(st.integers(0, 4))):
        if events and draw(st.booleans()):
            i = draw(st.integers(0, len(events) - 1))
            d = events[i][1]
            if d:
                pos = draw(st.integers(0, len(d) - 1))
                d[pos] = draw(st.integers(0, 255))
        else:
            blob = draw(st.one_of(records(), st.binary(max_size=200)))
            events.insert(draw(st.integers(0, len(events))), (draw(st.booleans()), bytearray(blob)))
    if events and draw(st.booleans()):  # truncate the last event
        fc, d = events[-1]
        events[-1] = (fc, d[: draw(st.integers(0, len(d)))])
    return [(fc, bytes(d)) for fc, d in events]


def _chunk(data: bytes, cuts: list[int]) -> list[bytes]:
    pts = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in pts + [len(data)]:
        if p > prev:
            out.append(data[prev:p])
            prev = p
    return out


def _run(events, cuts=None, gaps=()):
    s = TlsSession()
    for i, (fc, d) in enumerate(events, 1):
        if i in gaps:
            s.gap(fc)
        parts = [d] if cuts is None else _chunk(d, cuts)
        for p in parts:
            s.feed(fc, p, i, 1000.0 + i)
    out = s.summary(tcp={"rst_from": None, "fin_from": []}, reference_time=None, trust=None,
                    capture_end_ts=2000.0)
    return s, out


@SETTINGS
@given(hostile_flows(), st.lists(st.integers(0, 5000), max_size=12))
def test_never_raises_and_chunking_is_irrelevant(events, cuts):
    s1, a = _run(events)
    s2, b = _run(events, cuts)
    json.dumps(a)
    assert a == b
    assert s1.app_records == s2.app_records
    assert s1.is_tls == s2.is_tls


@SETTINGS
@given(hostile_flows(), st.lists(st.integers(0, 5000), max_size=8),
       st.sets(st.integers(1, 12), max_size=3))
def test_gaps_never_raise(events, cuts, gaps):
    _, out = _run(events, cuts, gaps)
    json.dumps(out)
    assert isinstance(out["malformed"], int)


@SETTINGS
@given(st.binary(max_size=600))
def test_first_bytes_functions_never_raise(buf):
    looks_like_tls(buf)
    p = peek_client_hello(buf)
    if p is not None:
        assert 0 < p.needed <= 16384 + 5 or p.complete


@SETTINGS
@given(st.integers(1, 400))
def test_peek_any_prefix_of_a_hello(cut):
    rec = tls13_client_hello()
    p = peek_client_hello(rec[:cut])
    assert p is not None
    assert p.complete == (cut >= len(rec))


@SETTINGS
@given(st.lists(records(), max_size=10), st.lists(st.integers(0, 4000), max_size=10))
def test_record_reader_chunking(recs, cuts):
    blob = b"".join(recs)
    r1, r2 = RecordReader(), RecordReader()
    a = r1.feed(blob)
    b: list = []
    for p in _chunk(blob, cuts):
        b += r2.feed(p)
    assert a == b
    assert (r1.dead, r1.resyncs, r1.bad_headers) == (r2.dead, r2.resyncs, r2.bad_headers)


def test_appdata_bodies_are_skipped_not_buffered():
    r = RecordReader()
    big = record(23, b"x" * 16000)
    for i in range(0, len(big), 1000):
        r.feed(big[i:i + 1000])
    assert not r.buf and r.records == 1


@SETTINGS
@given(st.data())
def test_peek_fast_path_agrees_with_full_parser(data):
    from dotaudit.tls.handshake import parse_client_hello

    rec = bytearray(tls13_client_hello(sni=data.draw(st.sampled_from(["a.example", "X.Y.", None])),
                                       alpn=data.draw(st.sampled_from([("dot",), ("h2", "http/1.1"), ()]))))
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(9, len(rec) - 1))
        rec[pos] = data.draw(st.integers(0, 255))
    rec = bytes(rec)
    p = peek_client_hello(rec)
    try:
        ch = parse_client_hello(rec[9:])
    except ValueError:
        return
    if p is not None and p.complete and not ch.truncated_extensions:
        assert (p.sni, p.alpn) == (ch.sni, ch.alpn)
