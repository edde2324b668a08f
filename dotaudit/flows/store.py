"""Finished flow records, kept off the heap once there are many.

A gateway capture has tens of thousands of DNS flows; their records must not grow the process
with the capture (memory is bounded by live flows).  Records are kept in memory up to
``spill_at``; beyond that all of them go, as compact JSON lines, to an anonymous temporary file
and the heap keeps three numbers a flow (id, offset, length).  A record can be replaced (the new
version is appended and the offset moved), and the store reads back in id order.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from typing import Callable, Iterator

import orjson

from ..spill import read_many

SPILL_AT = 1000
WRITE_BUFFER = 1 << 18
"""Bytes of records buffered before a write to the spill file (a record is about 2 KB)."""


def _dumps(rec: dict) -> bytes:
    return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


_loads = orjson.loads


class FlowStore:
    def __init__(self, spill_at: int = SPILL_AT):
        self.spill_at = spill_at
        self.records: list[dict] | None = []
        self.file = None
        self.end = 0
        self._dirty = False   # buffered writes not yet flushed for os.pread
        self.ids = array("q")
        self.offsets = array("q")
        self.lengths = array("q")
        self.order: list[int] | None = None   # positions in id order, once ``number`` ran

    def __len__(self) -> int:
        return len(self.records) if self.records is not None else len(self.offsets)

    @property
    def spilled(self) -> bool:
        return self.records is None

    def add(self, rec: dict) -> int:
        """Store a record; return its position (for ``get``/``replace``)."""
        if self.records is not None:
            self.records.append(rec)
            if len(self.records) > self.spill_at:
                self._spill()
            return len(self) - 1
        self._write(rec)
        return len(self.offsets) - 1

    def _spill(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="dotaudit-flows-", buffering=WRITE_BUFFER)
        records, self.records = self.records, None
        for rec in records:
            self._write(rec)

    def _append(self, rec: dict) -> tuple[int, int]:
        line = _dumps(rec)
        self.file.write(line)   # append-only: the position is always the end
        self._dirty = True
        off = self.end
        self.end += len(line)
        return off, len(line)

    def _write(self, rec: dict) -> None:
        off, ln = self._append(rec)
        self.ids.append(rec["id"])
        self.offsets.append(off)
        self.lengths.append(ln)

    def _fd(self) -> int:
        """The spill file's descriptor, for os.pread (no seek, no buffer refill; mmap would
        count the file in our RSS), with the buffered writes flushed."""
        if self._dirty:
            self.file.flush()
            self._dirty = False
        return self.file.fileno()

    def _read(self, off: int, ln: int) -> bytes:
        return os.pread(self._fd(), ln, off)

    def get(self, pos: int) -> dict:
        if self.records is not None:
            return self.records[pos]
        return _loads(self._read(self.offsets[pos], self.lengths[pos]))

    def replace(self, pos: int, rec: dict) -> None:
        if self.records is not None:
            self.records[pos] = rec
            return
        off, ln = self._append(rec)
        self.offsets[pos] = off
        self.lengths[pos] = ln

    def number(self) -> None:
        """Fix the report order: by flow id (ids follow the first packet of each flow)."""
        if self.records is not None:
            # positions stay valid (rules read and replace records by position afterwards)
            records = self.records
            self.order = sorted(range(len(records)), key=lambda i: records[i]["id"])
        else:
            ids = self.ids
            self.order = sorted(range(len(ids)), key=ids.__getitem__)

    def _positions(self):
        if self.order is not None:
            return self.order
        return range(len(self.records) if self.records is not None else len(self.offsets))

    def __iter__(self) -> Iterator[dict]:
        if self.records is not None:
            records = self.records
            for pos in self._positions():
                yield records[pos]
            return
        for pos in self._positions():
            yield self.get(pos)

    def raw_lines(self) -> Iterator[bytes]:
        """Each record as one compact JSON line (no newline), in order."""
        if self.records is not None:
            for pos in self._positions():
                yield _dumps(self.records[pos])
            return
        offsets, lengths = self.offsets, self.lengths
        yield from read_many(self._fd(), ((offsets[pos], lengths[pos]) for pos in self._positions()))

    def map(self, fn: Callable[[dict], dict]) -> None:
        """Replace every record by ``fn(record)`` (in file order: the fastest to read)."""
        n = len(self)
        for pos in range(n):
            self.replace(pos, fn(self.get(pos)))

    def scan(self) -> Iterator[dict]:
        """Every record, in storage order (cheaper than report order when spilled)."""
        if self.records is not None:
            yield from self.records
            return
        for pos in range(len(self.offsets)):
            yield self.get(pos)

    def export_state(self) -> dict:
        """What ``from_state`` needs, besides the spill file (handed over by descriptor)."""
        return {"spill_at": self.spill_at, "records": self.records, "end": self.end, "ids": self.ids,
                "offsets": self.offsets, "lengths": self.lengths, "order": self.order}

    @classmethod
    def from_state(cls, state: dict, file) -> "FlowStore":
        store = cls(state["spill_at"])
        store.records = state["records"]
        store.file = file
        store.end = state["end"]
        store.ids, store.offsets, store.lengths = state["ids"], state["offsets"], state["lengths"]
        store.order = state["order"]
        if file is not None:
            file.seek(0, os.SEEK_END)   # appends (replace) go to the end
        return store

    def to_list(self) -> list[dict]:
        return list(self)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
