"""Disk-backed sequences of JSON records: memory stays flat however many a capture produces.

``RecordStore`` keeps records in memory up to ``spill_at``, then moves all of them, as compact
JSON lines, to an anonymous temporary file and keeps only a small index entry each.  It is
iterable, sized and sliceable like a list, and sorts by a key computed once per record.
"""

from __future__ import annotations

import os
import tempfile
from itertools import islice
from typing import Callable, Iterable, Iterator

import orjson

_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def dumps(rec) -> bytes:
    return orjson.dumps(rec, option=_OPTS)


loads = orjson.loads


READ_SPAN = 1 << 18
"""Values read back in bulk (``read_many``) come in reads of up to this many bytes ..."""
READ_GAP = 1 << 14
"""... that skip at most this many bytes between two values (a read costs about as much as
copying 20-40 KiB more) ..."""
READ_BATCH = 1024
"""... in batches of this many values, sorted by their place in the file."""


def read_many(fd: int, refs: Iterable[tuple[int, int]], buffer: tuple[int, bytes] = (1 << 62, b"")
              ) -> Iterator[bytes]:
    """The bytes of each (offset, length) in ``refs``, in that order, read from file ``fd`` with
    one ``pread`` per span of values close together in the file (a report reads thousands of
    records and findings that sit in the file in another order, among other values: one read
    each cost 2-3 us).
    ``buffer``: (file offset, bytes) of data not written to the file yet."""
    base, data = buffer
    it = iter(refs)
    while True:
        batch = list(islice(it, READ_BATCH))
        if not batch:
            return
        got: list = [None] * len(batch)
        order = sorted(range(len(batch)), key=lambda i: batch[i][0])
        i = 0
        while i < len(order):
            off, ln = batch[order[i]]
            if off >= base:   # in the buffer
                got[order[i]] = bytes(data[off - base:off - base + ln])
                i += 1
                continue
            j, end = i + 1, off + ln
            while j < len(order):
                o, n = batch[order[j]]
                if o >= base or o - end > READ_GAP or o + n - off > READ_SPAN:
                    break
                end = max(end, o + n)
                j += 1
            span = os.pread(fd, end - off, off)
            for k in order[i:j]:
                o, n = batch[k]
                got[k] = span[o - off:o - off + n]
            i = j
        yield from got


class Spool:
    """Append-only scratch file of JSON values, read back by (offset, length).

    The newest values wait in a buffer of up to BUFFER bytes, and reads of them are served
    from it: values written and soon read again (an aggregate's sample) cost no system call."""

    BUFFER = 1 << 18

    def __init__(self, file=None) -> None:
        self.file = tempfile.TemporaryFile(prefix="dotaudit-") if file is None else file
        self.file.seek(0, os.SEEK_END)
        self.end = self.file.tell()
        self.base = self.end        # file offset of the buffer's first byte
        self.buf = bytearray()

    def put(self, value) -> tuple[int, int]:
        return self.put_raw(dumps(value))

    def put_raw(self, data: bytes) -> tuple[int, int]:
        ref = (self.end, len(data))
        self.buf += data
        self.end += len(data)
        if len(self.buf) >= self.BUFFER:
            self.flush()
        return ref

    def flush(self) -> None:
        """Write the buffer out (before another process reads the file)."""
        if self.buf:
            self.file.write(self.buf)
            self.buf = bytearray()
            self.base = self.end
        self.file.flush()

    def raw(self, ref: tuple[int, int]) -> bytes:
        off, n = ref
        if off >= self.base:
            off -= self.base
            return bytes(self.buf[off:off + n])
        return os.pread(self.file.fileno(), n, ref[0])

    def raw_many(self, refs: Iterable[tuple[int, int]]) -> Iterator[bytes]:
        """``raw`` of each reference, in that order, with few reads (``read_many``)."""
        return read_many(self.file.fileno(), refs, (self.base, self.buf))

    def get(self, ref: tuple[int, int]):
        return loads(self.raw(ref))

    def close(self) -> None:
        self.file.close()


class RecordStore:
    """``spool``: keep the records in this spool from the start (it may hold other values too;
    the store knows its records by its index)."""

    def __init__(self, spill_at: int = 500, key: Callable[[dict], tuple] | None = None,
                 spool: Spool | None = None):
        self.spill_at = spill_at
        self.key = key
        self.records: list[dict] | None = [] if spool is None else None
        self.spool: Spool | None = spool
        self.index: list[tuple] = []   # sort key + (offset, length), once spilled

    def add(self, rec: dict) -> None:
        if self.records is not None:
            self.records.append(rec)
            if len(self.records) > self.spill_at:
                self.spool = Spool()
                records, self.records = self.records, None
                for r in records:
                    self._put(r)
            return
        self._put(rec)

    def add_raw(self, key: tuple, data: bytes) -> None:
        """Add a record given as its JSON (``dumps``) and its sort key."""
        if self.records is not None:
            self.add(loads(data))
            return
        self.index.append(key + self.spool.put_raw(data))

    def _put(self, rec: dict) -> None:
        self.index.append((self.key(rec) if self.key else ()) + self.spool.put(rec))

    def sort(self) -> None:
        if self.records is not None:
            if self.key:
                self.records.sort(key=self.key)
        elif self.key:
            self.index.sort(key=lambda e: e[:-2])

    def __len__(self) -> int:
        return len(self.records) if self.records is not None else len(self.index)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[dict]:
        if self.records is not None:
            yield from self.records
            return
        for e in self.index:
            yield self.spool.get(e[-2:])

    def __getitem__(self, item):
        if self.records is not None:
            return self.records[item]
        if isinstance(item, slice):
            return [self.spool.get(e[-2:]) for e in self.index[item]]
        return self.spool.get(self.index[item][-2:])

    def keys(self) -> Iterator[tuple]:
        """Each record's sort key, in store order, without reading spilled records back."""
        if self.records is not None:
            yield from map(self.key, self.records)
            return
        for e in self.index:
            yield e[:-2]

    def raw_lines(self) -> Iterator[bytes]:
        if self.records is not None:
            for rec in self.records:
                yield dumps(rec)
            return
        yield from self.spool.raw_many(e[-2:] for e in self.index)

    def to_list(self) -> list[dict]:
        return list(self)

    def export_state(self) -> dict:
        """What ``from_state`` needs, besides the spool file (handed over by descriptor)."""
        return {"spill_at": self.spill_at, "records": self.records, "index": self.index}

    @classmethod
    def from_state(cls, state: dict, file, key: Callable[[dict], tuple] | None = None) -> "RecordStore":
        store = cls(state["spill_at"], key)
        store.records = state["records"]
        store.index = state["index"]
        store.spool = Spool(file) if file is not None else None
        return store

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
