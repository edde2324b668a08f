"""Finished flow records, kept off the heap once there are many.

A gateway capture has tens of thousands of DNS flows; their records must not grow the process
with the capture (memory is bounded by live flows).  Records are kept in memory up to
``spill_at``; beyond that all of them go, as compact JSON lines, to an anonymous temporary file
that is read back sequentially in report order.  The heap keeps one small index entry a flow.
"""

from __future__ import annotations

import tempfile
from array import array
from typing import Callable, Iterator

import orjson

SPILL_AT = 1000


def _dumps(rec: dict) -> bytes:
    return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


_loads = orjson.loads


class FlowStore:
    def __init__(self, spill_at: int = SPILL_AT):
        self.spill_at = spill_at
        self.records: list[dict] | None = []
        self.file = None
        # when spilled: parallel arrays (8 bytes a value), and the report order as a permutation
        self.keys_input = array("q")
        self.keys_frame = array("q")
        self.keys_ts = array("d")
        self.offsets = array("q")
        self.lengths = array("q")
        self.order: array | None = None
        self.numbered_in_file = True   # the ids stored in the spill file are the report's ids

    def __len__(self) -> int:
        return len(self.records) if self.records is not None else len(self.offsets)

    @property
    def spilled(self) -> bool:
        return self.records is None

    def add(self, rec: dict) -> None:
        if self.records is not None:
            self.records.append(rec)
            if len(self.records) > self.spill_at:
                self._spill()
            return
        self._write(rec)

    def _spill(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="dotaudit-flows-")
        records, self.records = self.records, None
        for rec in records:
            self._write(rec)

    def _write(self, rec: dict) -> None:
        line = _dumps(rec) + b"\n"
        off = self.file.seek(0, 2)
        self.file.write(line)
        self.keys_input.append(rec["input"])
        self.keys_frame.append(rec["first_frame"])
        self.keys_ts.append(rec["first_ts"])
        self.offsets.append(off)
        self.lengths.append(len(line))

    def number(self) -> None:
        """Sort into report order (input, first frame) and give ids 1..N."""
        if self.records is not None:
            self.records.sort(key=lambda r: (r["input"], r["first_frame"], r["first_ts"]))
            for i, rec in enumerate(self.records, 1):
                rec["id"] = i
        else:
            # ids are given by position when read back; the file is rewritten by map() or,
            # at the latest, by raw_lines()
            ki, kf, kt = self.keys_input, self.keys_frame, self.keys_ts
            self.order = array("q", sorted(range(len(ki)), key=lambda i: (ki[i], kf[i], kt[i])))
            self.numbered_in_file = False

    def __iter__(self) -> Iterator[dict]:
        if self.records is not None:
            yield from self.records
            return
        f = self.file
        loads = _loads
        offsets, lengths = self.offsets, self.lengths
        order = self.order if self.order is not None else range(len(offsets))
        for i, j in enumerate(order, 1):
            f.seek(offsets[j])
            rec = loads(f.read(lengths[j]))
            rec["id"] = i
            yield rec

    def raw_lines(self) -> Iterator[bytes]:
        """Each record as one compact JSON line (no newline), in order."""
        if self.records is not None:
            for rec in self.records:
                yield _dumps(rec)
            return
        if not self.numbered_in_file:
            for rec in self:
                yield _dumps(rec)
            return
        f = self.file
        for off, ln in zip(self.offsets, self.lengths):
            f.seek(off)
            yield f.read(ln - 1)

    def map(self, fn: Callable[[dict], dict]) -> None:
        """Replace every record by ``fn(record)``, in order (the file is rewritten once)."""
        if self.records is not None:
            self.records = [fn(r) for r in self.records]
            return
        new = tempfile.TemporaryFile(prefix="dotaudit-flows-")
        offsets, lengths = array("q"), array("q")
        for rec in self:
            rec = fn(rec)
            line = _dumps(rec) + b"\n"
            offsets.append(new.tell())
            new.write(line)
            lengths.append(len(line))
        self.file.close()
        self.file = new
        self.offsets, self.lengths = offsets, lengths
        self.order = None   # the new file is in report order
        self.numbered_in_file = True

    def to_list(self) -> list[dict]:
        return list(self)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
