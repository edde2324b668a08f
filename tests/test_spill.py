"""Spool and RecordStore: the disk-backed scratch space of findings and aggregates; the heap an
audit process keeps (pipeline.keep_heap)."""

from __future__ import annotations

import os

import pytest

from dotaudit.findings import severities, sort_key
from dotaudit.spill import RecordStore, Spool, dumps


def test_spool_reads_back_buffered_and_written_values_alike(monkeypatch):
    monkeypatch.setattr(Spool, "BUFFER", 64)   # a few values per buffer
    spool = Spool()
    values = [{"n": i, "pad": "x" * (i % 7)} for i in range(200)]
    refs = [spool.put(v) for v in values]
    values.append({"last": 1})
    refs.append(spool.put(values[-1]))
    assert spool.base > 0                      # most went to the file already ...
    assert spool.buf                           # ... the newest still wait in the buffer
    assert [spool.get(r) for r in refs] == values
    assert spool.raw(refs[-1]) == dumps(values[-1])
    spool.close()


def test_spool_flush_lets_another_reader_see_everything():
    spool = Spool()
    refs = [spool.put([i, "v"]) for i in range(10)]
    spool.flush()
    assert not spool.buf
    other = Spool(os.fdopen(os.dup(spool.file.fileno()), "r+b"))   # as the parent adopts it
    assert [other.get(r) for r in refs] == [[i, "v"] for i in range(10)]
    ref = other.put({"after": True})   # appends go to the end
    assert ref[0] == spool.end and other.get(ref) == {"after": True}
    other.close()
    spool.close()


def _finding(rule: str, severity: str, fid: int) -> dict:
    return {"rule_id": rule, "severity": severity, "flow_ids": [fid], "id": f"{fid:016x}"}


def test_add_raw_and_keys_in_memory_and_spilled():
    for spill_at in (1000, 3):
        store = RecordStore(spill_at=spill_at, key=sort_key)
        recs = [_finding("b", "low", 2), _finding("a", "high", 5), _finding("c", "info", 1), _finding("a", "high", 1)]
        for rec in recs[:2]:
            store.add(rec)
        for rec in recs[2:]:
            store.add_raw(sort_key(rec), dumps(rec))
        assert list(store.keys()) == [sort_key(r) for r in recs]
        store.sort()
        assert [r["flow_ids"][0] for r in store] == [1, 5, 2, 1]
        assert list(severities(store)) == ["high", "high", "low", "info"]
        store.close()


def test_severities_of_a_plain_list():
    assert list(severities([_finding("a", "medium", 1), {"rule_id": "x"}])) == ["medium", ""]


def test_keep_heap_keeps_freed_memory_in_the_process():
    """An audit process keeps what it frees (pipeline.keep_heap): records, their JSON and read
    buffers are freed and allocated again at a steady rate, and each page handed back to the
    kernel would be faulted in again.  Tens of MiB freed at the top of the heap stay resident
    with it, and go back to the kernel without it (glibc's default trim threshold)."""
    import subprocess
    import sys

    probe = r"""
import os, sys
from dotaudit.pipeline import keep_heap
if sys.argv[1] == "keep":
    assert keep_heap()
page = os.sysconf("SC_PAGE_SIZE")
def rss():   # os.read: no buffered file allocated on the heap above the blocks
    fd = os.open("/proc/self/statm", os.O_RDONLY)
    try:
        return int(os.read(fd, 200).split()[1]) * page
    finally:
        os.close(fd)
blocks = [bytes(2048) for _ in range(20000)]   # 40 MiB of malloc'd (not pymalloc) blocks
before = rss()
del blocks
print((before - rss()) >> 20)
"""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt")
    freed = {}
    for mode in ("keep", "default"):
        out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True)
        freed[mode] = int(out.stdout)
    assert freed["default"] >= 30, freed   # without it the heap shrinks ...
    assert freed["keep"] <= 2, freed       # ... with it the pages stay


def test_read_many_returns_each_value_in_the_order_asked(tmp_path):
    """read_many reads spans of nearby values at once (READ_SPAN), in batches (READ_BATCH),
    and returns each value's bytes in the order of the references, those still in the
    writer's buffer included, whatever their order, size and place in the file."""
    import random

    from dotaudit.spill import READ_BATCH, READ_SPAN, read_many

    rng = random.Random(5)
    blob = bytearray()
    refs = []
    for i in range(3 * READ_BATCH + 17):
        n = rng.choice([1, 40, 3000, READ_SPAN + 5]) if i % 97 else READ_SPAN * 2
        refs.append((len(blob), n))
        blob += bytes(rng.randrange(256) for _ in range(8)) * (n // 8) + bytes(n % 8)
    path = tmp_path / "values"
    cut = refs[-40][0]   # the last 40 values are "in the buffer", not in the file
    path.write_bytes(bytes(blob[:cut]))
    order = refs[:]
    rng.shuffle(order)
    order += order[:50]   # some asked twice
    with open(path, "rb") as fh:
        got = list(read_many(fh.fileno(), order, (cut, bytes(blob[cut:]))))
    assert got == [bytes(blob[o:o + n]) for o, n in order]
    assert all(isinstance(b, bytes) for b in got)
