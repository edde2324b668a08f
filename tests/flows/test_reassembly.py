"""In-order TCP reassembly: retransmissions, out-of-order segments, overlaps, holes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dotaudit.flows.reassembly import TcpDirection


class Sink:
    def __init__(self):
        self.data = b""
        self.frames = []
        self.gaps = 0

    def __call__(self, data, frame, ts):
        self.data += data
        self.frames.append(frame)

    def gap(self):
        self.gaps += 1


def make():
    s = Sink()
    d = TcpDirection(s, s.gap)
    d.start(1001)
    return s, d


def test_in_order_and_retransmission():
    s, d = make()
    d.segment(1001, b"hello ", 1, 0.0)
    d.segment(1001, b"hello ", 2, 0.1)  # retransmitted
    d.segment(1007, b"world", 3, 0.2)
    assert s.data == b"hello world" and d.retrans == 1 and s.frames == [1, 3]


def test_out_of_order_is_buffered_until_the_hole_fills():
    s, d = make()
    d.segment(1007, b"world", 1, 0.0)
    assert s.data == b"" and d.ooo == 1
    d.segment(1001, b"hello ", 2, 0.1)
    assert s.data == b"hello world"


def test_partial_overlap_delivers_only_new_bytes():
    s, d = make()
    d.segment(1001, b"abcdef", 1, 0.0)
    d.segment(1004, b"defghi", 2, 0.1)
    assert s.data == b"abcdefghi"


def test_hole_acknowledged_by_peer_is_skipped_as_gap():
    s, d = make()
    d.segment(1001, b"aaaa", 1, 0.0)
    d.segment(1009, b"cccc", 3, 0.2)  # bytes 1005..1008 never captured
    d.acked(1013)
    assert s.data == b"aaaacccc" and s.gaps == 1 and d.gaps == 1


def test_flush_reports_holes_at_end():
    s, d = make()
    d.segment(1005, b"late", 1, 0.0)
    d.flush()
    assert s.data == b"late" and s.gaps == 1


def test_sequence_wraparound():
    s = Sink()
    d = TcpDirection(s, s.gap)
    d.start(0xFFFFFFFE)
    d.segment(0xFFFFFFFE, b"ab", 1, 0.0)
    d.segment(0, b"cd", 2, 0.0)
    assert s.data == b"abcd"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.lists(st.integers(1, 60), min_size=1, max_size=30),
       st.randoms(use_true_random=False), st.floats(0, 1))
def test_any_order_with_duplicates_reassembles_exactly(payload, cuts, rnd, dup):
    segs = []
    pos = 0
    i = 0
    while pos < len(payload):
        n = cuts[i % len(cuts)]
        segs.append((1001 + pos, payload[pos:pos + n]))
        pos += n
        i += 1
    order = segs[:]
    rnd.shuffle(order)
    if dup > 0.5:
        order += segs[: len(segs) // 2]
    s, d = make()
    for k, (seq, data) in enumerate(order):
        d.segment(seq, data, k + 1, 0.0)
    d.flush()
    assert s.data == payload and s.gaps == 0
