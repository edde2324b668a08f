"""In-order TCP reassembly for one direction of a flow.

Only flows that can carry name resolution get one of these.  Retransmissions (segments that
carry only sequence space already delivered) are counted and dropped; segments ahead of a hole
are buffered (bounded) until the hole fills, the peer acknowledges past it (the capture lost
those bytes), the buffer is full, or the flow ends; then the hole is reported as a gap to the
consumer, which resynchronises.
"""

from __future__ import annotations

from typing import Callable

MAX_PENDING_BYTES = 256 * 1024
MAX_PENDING_SEGMENTS = 256
MAX_DELIVERED = 16 * 1024 * 1024   # per direction; beyond it bytes are counted, not delivered

Sink = Callable[[bytes, int, float], None]
GapSink = Callable[[], None]


def seq_lt(a: int, b: int) -> bool:
    return ((a - b) & 0xFFFFFFFF) > 0x7FFFFFFF


class TcpDirection:
    __slots__ = ("next", "pending", "pending_bytes", "delivered", "retrans", "ooo", "gaps", "truncated", "sink",
                 "gap_sink", "bytes_seen")

    def __init__(self, sink: Sink, gap_sink: GapSink):
        self.next: int | None = None
        self.pending: dict[int, tuple[bytes, int, float]] = {}
        self.pending_bytes = 0
        self.delivered = 0
        self.retrans = 0
        self.ooo = 0
        self.gaps = 0
        self.truncated = False
        self.sink = sink
        self.gap_sink = gap_sink
        self.bytes_seen = 0

    def start(self, isn_plus_one: int) -> None:
        if self.next is None:
            self.next = isn_plus_one & 0xFFFFFFFF

    def segment(self, seq: int, data: bytes, frame: int, ts: float) -> None:
        n = len(data)
        nxt = self.next
        if nxt is None:  # picked up mid-stream: start where we are
            nxt = self.next = seq
        if seq == nxt:
            self._deliver(data, frame, ts)
            if self.pending:
                self._drain()
            return
        end = (seq + n) & 0xFFFFFFFF
        if seq_lt(seq, nxt):
            if not seq_lt(nxt, end):  # entirely old
                self.retrans += 1
                return
            # overlaps what we have: deliver the new tail
            self.retrans += 1
            self._deliver(data[(nxt - seq) & 0xFFFFFFFF:], frame, ts)
            if self.pending:
                self._drain()
            return
        # ahead of a hole
        if seq in self.pending:
            self.retrans += 1
            return
        self.ooo += 1
        self.pending[seq] = (data, frame, ts)
        self.pending_bytes += n
        if self.pending_bytes > MAX_PENDING_BYTES or len(self.pending) > MAX_PENDING_SEGMENTS:
            self.skip_gap()

    def acked(self, ack: int) -> None:
        """The peer acknowledged up to ``ack``: a hole below it will never be filled from the capture."""
        if self.pending and self.next is not None and seq_lt(self.next, ack):
            lowest = min(self.pending, key=lambda s: (s - self.next) & 0xFFFFFFFF)
            if not seq_lt(ack, lowest) and lowest != self.next:
                self.skip_gap()

    def _deliver(self, data: bytes, frame: int, ts: float) -> None:
        n = len(data)
        self.next = (self.next + n) & 0xFFFFFFFF
        self.bytes_seen += n
        if self.delivered + n > MAX_DELIVERED:
            self.truncated = True
            return
        self.delivered += n
        self.sink(data, frame, ts)

    def _drain(self) -> None:
        pending = self.pending
        while pending:
            nxt = self.next
            item = pending.pop(nxt, None)
            if item is None:
                # drop segments that are now entirely old; deliver partial overlaps
                progressed = False
                for s in list(pending):
                    if seq_lt(s, nxt):
                        data, frame, ts = pending.pop(s)
                        self.pending_bytes -= len(data)
                        end = (s + len(data)) & 0xFFFFFFFF
                        if seq_lt(nxt, end):
                            self._deliver(data[(nxt - s) & 0xFFFFFFFF:], frame, ts)
                            progressed = True
                            break
                if not progressed:
                    return
                continue
            self.pending_bytes -= len(item[0])
            self._deliver(*item)

    def skip_gap(self) -> None:
        """Give up on the current hole: jump to the lowest buffered segment."""
        if not self.pending:
            return
        nxt = self.next
        lowest = min(self.pending, key=lambda s: (s - nxt) & 0xFFFFFFFF)
        self.gaps += 1
        self.gap_sink()
        self.next = lowest
        self._drain()

    def flush(self) -> None:
        """End of flow: deliver what is buffered, reporting each hole."""
        while self.pending:
            self.skip_gap()
