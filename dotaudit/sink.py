"""Where finished flow records go: latency statistics, the flow store and the rules.

``RecordSink`` does it in this process.  ``ProcessSink`` does the same work in a second process
(forked, so it shares the loaded rules and modules copy-on-write): the packet loop only
serialises each record onto a pipe and goes on, while the other core keeps the statistics,
stores the record and judges it.  The records arrive in the same order, so the results are the
same (tests/test_sink.py); on one CPU, or with DOTAUDIT_NO_FORK=1, the in-process sink is used.

The flows still open at the end of the capture come in one burst, which the judge process is
last to finish: their statistics are counted by the main process instead (``mark_tail``), while
the judge process judges them.  The pipe is closed as soon as the last record is in it.

At ``finish`` the judge process sends back, over a Unix socket, its state (pickled) and the
descriptors of its spill files (SCM_RIGHTS), so no record is copied twice.
"""

from __future__ import annotations

import atexit
import fcntl
import gc
import os
import pickle
import select
import signal
import socket
import struct
import sys
import tempfile
from collections import deque
from typing import Optional

import orjson

from .flows.store import FlowStore
from .latency import LatencyStats, stats_view

_LEN = struct.Struct("<I")
MAX_FDS = 8
INLINE_BYTES = 1 << 16        # a message larger than this travels in a file (its descriptor)
IN_FILE = 0xFFFFFFFF          # the length that says so
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
CHUNK_BYTES = 1 << 16        # records are sent in chunks of about 64 KiB ...
TAIL_CHUNK_BYTES = 1 << 13   # ... the flows still open at the end in chunks of about 8 KiB
OUT_BYTES = 3 << 20          # ... at most 3 MiB of them waiting for room in the pipe
READ_SIZE = 1 << 20
TAIL_SLICE = 64             # records counted (mark_tail) between two writes to the pipe
IDLE_WORK = 16               # findings made between two looks at the pipe (about 0.5 ms)


class SinkError(RuntimeError):
    """The judge process failed; its message says why."""


def judging_failed(exc: BaseException) -> SinkError:
    """The one-line error of a rule (or the rules' loading) that raised ``exc``."""
    return SinkError(f"judging failed: {type(exc).__name__}: {exc}")


def judge_of(judge):
    """The judge itself, or the one a LazyJudge (pipeline.py: anything with ``get``) makes."""
    return judge.get() if hasattr(judge, "get") else judge


class RecordSink:
    """Latency statistics, the flow store and (with a judge) the rules, in this process.

    ``defer``: the judge only matches and counts in ``add``, and makes the findings in ``work``
    (called when no record waits) or at the end.  ``spill_at``: records the flow store keeps
    in memory (default: FlowStore's)."""

    latency_json = None   # stats.latency rendered ahead (ProcessSink)

    def __init__(self, judge=None, defer: bool = False, spill_at: Optional[int] = None):
        self.latency = LatencyStats()
        self.tail: Optional[LatencyStats] = None   # statistics of the records after ``mark_tail``
        self._count = self.latency.add             # where a record's statistics go
        self.records = FlowStore() if spill_at is None else FlowStore(spill_at)
        self.judge = judge
        # a judge that can leave work for idle moments (StreamJudge) does, when ``defer``
        self.deferred = judge if defer and hasattr(judge, "defer") else None
        if judge is not None:
            judge.store = self.records
        if self.deferred is not None:
            self.deferred.defer()

    def add(self, rec: dict) -> None:
        self._count(rec)
        if self.judge is not None:
            try:
                self.judge.add(rec)
            except Exception as exc:   # noqa: BLE001 - a rule's failure: one line, exit 4
                raise judging_failed(exc) from exc
        else:
            self.records.add(rec)

    def mark_tail(self, count: bool = True) -> None:
        """The records from now on are the flows still open at the end of the capture: with a
        judge, their statistics are counted apart and merged in at ``finish`` (``count``), or
        not at all here (a judge process: the main process counts them while this one judges
        them).  Either way the result is the same (the merge is not sequential adds: sums of
        floats may differ in their last bit), so both kinds of sink give the same report.
        Without a judge, nothing changes: a judge process then keeps up with the records."""
        if self.judge is None:
            return
        self.tail = LatencyStats() if count else None
        self._count = self.tail.add if count else _skip

    def pending(self) -> bool:
        """Is there work for ``work`` (StreamJudge.pending)?"""
        return self.deferred is not None and self.deferred.pending()

    def work(self) -> None:
        """IDLE_WORK of the findings ``add`` left (about half a millisecond), or one generated
        matcher (StreamJudge.work)."""
        try:
            self.deferred.work(IDLE_WORK)
        except Exception as exc:   # noqa: BLE001 - as in add
            raise judging_failed(exc) from exc

    def finish(self, capture: Optional[dict] = None):
        """(flow store, latency stats, flow findings store or None).  ``capture``: the report's
        inputs and statistics (pipeline.capture_view): the capture rules' findings join the
        flow findings."""
        if self.tail is not None:
            self.latency.merge(self.tail)
            self.tail = None
        findings = None
        if self.judge is not None:
            try:
                findings = self.judge.finish_flows()
                if capture is not None and findings is not None:
                    self.judge.judge_capture(capture, findings)
            except Exception as exc:   # noqa: BLE001
                raise judging_failed(exc) from exc
        return self.records, self.latency, findings


def _skip(rec: dict) -> None:
    pass


def can_fork() -> bool:
    if os.environ.get("DOTAUDIT_NO_FORK") or not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return False
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) >= 2


class ProcessSink:
    """A RecordSink in a forked process, fed through a pipe."""

    def __init__(self, judge=None):
        self.judge = judge
        _reap()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        rfd, wfd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        # Objects alive now are shared copy-on-write with the judge process; keep the garbage
        # collector of either process from writing to them (each write copies a page) until the
        # records are all handed over.
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
            for fd in (rfd, wfd):
                os.close(fd)
            parent_sock.close()
            child_sock.close()
            raise
        if pid == 0:   # the judge process
            try:
                os.close(wfd)
                parent_sock.close()
                signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides
                code = _serve(rfd, child_sock, judge)
            except BaseException:   # noqa: BLE001 - report, never unwind into the parent's code
                code = 1
            os._exit(code)
        os.close(rfd)
        child_sock.close()
        self.pid = pid
        self.sock = parent_sock
        try:
            fcntl.fcntl(wfd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass
        self.wfd = wfd
        # Flows finish in bursts (every idle sweep); the pipe is written without blocking and
        # what it cannot take yet waits here (up to OUT_BYTES), so the packet loop goes on while
        # the judge process catches up, with no writer thread to hand the GIL to.
        os.set_blocking(wfd, False)
        self.out: deque = deque()   # memoryviews of chunks not yet written
        self.out_bytes = 0
        self.chunk: list[bytes] = []
        self.chunk_bytes = 0
        self.chunk_limit = CHUNK_BYTES
        self.broken = False
        self._dumps = orjson.dumps
        self._pack = _LEN.pack
        self.tail_views: Optional[list] = None   # stats_view of the records after ``mark_tail``
        self.latency: Optional[LatencyStats] = None
        self.latency_json = None   # its stats.latency, rendered while the judge process finishes
        self.records: Optional[FlowStore] = None

    def add(self, rec: dict) -> None:
        if self.tail_views is not None:
            self.tail_views.append(stats_view(rec))
        data = self._dumps(rec)
        self.chunk.append(self._pack(len(data)))
        self.chunk.append(data)
        self.chunk_bytes += len(data) + 4
        if self.chunk_bytes >= self.chunk_limit:
            self._flush()

    def mark_tail(self) -> None:
        """The records from now on are the flows still open at the end of the capture: this
        process counts their statistics (RecordSink.mark_tail) at ``finish``, while the judge
        process, which would come last, judges them.  An empty record tells it.  Without a
        judge (no rules) it keeps up with the records, and counts them all.

        The records waiting for a chunk to fill go now, and the last ones in small chunks:
        finishing the flows still open finishes the other flows among them too (not sent), so a
        64 KiB chunk filled only after about 9 ms on 100k packets, a wait at the start of the
        judge process's last work."""
        self.chunk_limit = TAIL_CHUNK_BYTES
        if self.judge is not None:
            self.chunk.append(self._pack(0))
            self.chunk_bytes += 4
            self.tail_views = []
        if self.chunk:
            self._flush()

    def _tail_stats(self) -> Optional[LatencyStats]:
        """The statistics of the records after ``mark_tail``, counted while the judge process
        catches up: the pipe is fed between slices of them."""
        if self.tail_views is None:
            return None
        stats = LatencyStats()
        count, tail = stats.add, self.tail_views
        self.tail_views = None
        for i in range(0, len(tail), TAIL_SLICE):
            for rec in tail[i:i + TAIL_SLICE]:
                count(rec)
            if self.wfd >= 0:
                self._write(block=False)
                if not self.out:
                    self._close_pipe()
        return stats

    def _close_pipe(self) -> None:
        """Write what waits and close the pipe: the judge process then knows it has every
        record (and goes on to the end while this process is still busy)."""
        if self.wfd < 0:
            return
        if not self.broken:
            self._write(block=True)
        os.close(self.wfd)
        self.wfd = -1

    def _flush(self) -> None:
        if self.broken:
            raise SinkError(self._failure() or "the judge process stopped")
        data = b"".join(self.chunk)
        self.out.append(memoryview(data))
        self.out_bytes += len(data)
        self.chunk = []
        self.chunk_bytes = 0
        self._write(block=self.out_bytes > OUT_BYTES)

    def _write(self, block: bool) -> None:
        """Write what waits to the pipe, as much as it takes now; ``block``: all of it."""
        out, fd = self.out, self.wfd
        while out:
            view = out[0]
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                if not block:
                    return
                select.select([], [fd], [])
                continue
            except OSError:
                self.broken = True
                out.clear()
                self.out_bytes = 0
                return
            self.out_bytes -= n
            if n == len(view):
                out.popleft()
            else:
                out[0] = view[n:]

    def finish(self, capture: Optional[dict] = None):
        """As RecordSink.finish.  The judge process makes the capture rules' findings too, so
        this process needs no rules of its own (a LazyJudge is never made here)."""
        gc.unfreeze()
        if self.judge is not None and not self.broken:
            try:   # read by the judge process once it has every record
                _send(self.sock, {"capture": capture}, [])
            except OSError:
                self.broken = True
        if self.chunk:
            self._flush()
        tail = self._tail_stats()
        self._close_pipe()
        if self.broken:
            raise SinkError(self._failure() or "the judge process stopped")
        # what the judge process sends before its results: the statistics (complete at the end
        # of the records), rendered here while it finishes the rules
        first, fds = _recv(self.sock)
        latency = None
        if first is not None and "latency" in first:
            latency = first["latency"]
            if tail is not None:
                latency.merge(tail)
            from .report.json import prerender
            self.latency_json = prerender(latency.to_json())
            msg, fds = _recv(self.sock)
        else:
            msg = first
        self.sock.close()
        if msg is None or msg.get("error"):
            _, status = os.waitpid(self.pid, 0)
            for fd in fds:
                os.close(fd)
            raise SinkError((msg or {}).get("error") or f"the judge process ended with status {status}")
        # it has sent everything: it exits (freeing its memory, 2-5 ms) while this process
        # writes the report, and is reaped later
        _UNREAPED.add(self.pid)
        fds = list(fds)
        records = _adopt_flow_store(msg["records"], fds)
        findings = _adopt_record_store(msg["findings"], fds) if msg["findings"] is not None else None
        return records, latency, findings

    def abort(self) -> None:
        """Stop the judge process (the audit failed or was interrupted)."""
        gc.unfreeze()
        self.broken = True
        self.out.clear()
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        if self.wfd >= 0:
            try:
                os.close(self.wfd)
            except OSError:
                pass
            self.wfd = -1
        try:
            self.sock.close()
        except OSError:
            pass

    def _failure(self) -> Optional[str]:
        try:
            msg, fds = _recv(self.sock)
        except OSError:
            return None
        for fd in fds:
            os.close(fd)
        return (msg or {}).get("error")


_UNREAPED: set[int] = set()


def _reap(block: bool = False) -> None:
    """Reap the judge processes that ``finish`` left to exit on their own."""
    for pid in list(_UNREAPED):
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _UNREAPED.discard(pid)


atexit.register(_reap)   # what has not exited yet is left to init: never wait at the exit


def _serve(fd: int, sock: socket.socket, judge) -> int:
    # Findings are made when no record waits (the packet loop is between bursts of finished
    # flows), so the records of a burst are judged at once and the work left at the end is small.
    try:
        judge = judge_of(judge)   # a LazyJudge: the rules are loaded here
    except Exception as exc:  # noqa: BLE001 - the parent's one-line error
        _send(sock, {"error": str(judging_failed(exc))}, [])
        return 1
    # each record goes to the store's file as it comes: the first thousand, kept in memory
    # and written at once, took 8-13 ms, on 100k packets just before the last burst
    sink = RecordSink(judge, defer=True, spill_at=0)
    unpack_from = _LEN.unpack_from
    loads = orjson.loads
    add = sink.add
    buf = b""
    pos = 0
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    try:
        while True:
            # every whole record in the buffer
            n = len(buf)
            while pos + 4 <= n:
                (size,) = unpack_from(buf, pos)
                end = pos + 4 + size
                if end > n:
                    break
                if size:
                    add(loads(buf[pos + 4:end]))
                else:   # the main process counts the statistics of the records that follow
                    sink.mark_tail(count=False)
                pos = end
            if sink.pending() and not poll.poll(0):
                sink.work()
                continue
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                break
            buf = buf[pos:] + chunk
            pos = 0
        capture = None
        if judge is not None:   # sent before the pipe was closed
            got, extra = _recv(sock)
            for f in extra:
                os.close(f)
            capture = (got or {}).get("capture")
        # the statistics are complete: the main process renders them while the rules finish
        _send(sock, {"latency": sink.latency}, [])
        records, latency, findings = sink.finish(capture)
        fds: list[int] = []
        msg = {"records": _export_flow_store(records, fds),
               "findings": _export_record_store(findings, fds) if findings is not None else None}
        _send(sock, msg, fds)
        return 0
    except SinkError as exc:
        _send(sock, {"error": str(exc)}, [])
        return 1
    except Exception as exc:  # noqa: BLE001 - any failure becomes the parent's one-line error
        _send(sock, {"error": f"judge process failed: {type(exc).__name__}: {exc}"}, [])
        return 1


def _send(sock: socket.socket, msg: dict, fds: list[int]) -> None:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    fds = fds[:MAX_FDS - 1]
    if len(data) > INLINE_BYTES:
        # more than a socket buffer takes (the statistics: a few hundred KiB): in a file, so
        # this process goes on at once instead of waiting for the other to read it
        with tempfile.TemporaryFile(prefix="dotaudit-msg-") as file:
            file.write(data)
            file.flush()
            socket.send_fds(sock, [_LEN.pack(IN_FILE)], [*fds, file.fileno()])
        return
    socket.send_fds(sock, [_LEN.pack(len(data))], fds)
    sock.sendall(data)


def _recv(sock: socket.socket):
    head, fds, _flags, _addr = socket.recv_fds(sock, 4, MAX_FDS)
    if len(head) < 4:
        return None, fds
    (n,) = _LEN.unpack(head)
    if n == IN_FILE and fds:
        fd = fds.pop()
        try:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
        return pickle.loads(data), fds
    chunks = []
    while n:
        b = sock.recv(min(n, 1 << 20))
        if not b:
            return None, fds
        chunks.append(b)
        n -= len(b)
    return pickle.loads(b"".join(chunks)), fds


# -- handing the stores over --------------------------------------------------------------------

def _export_flow_store(store: FlowStore, fds: list[int]) -> dict:
    if store.file is not None:
        store.file.flush()
        fds.append(store.file.fileno())
    return {"state": store.export_state(), "fd": len(fds) - 1 if store.file is not None else None}


def _adopt_flow_store(msg: dict, fds: list[int]) -> FlowStore:
    file = os.fdopen(fds[msg["fd"]], "r+b") if msg["fd"] is not None else None
    return FlowStore.from_state(msg["state"], file)


def _export_record_store(store, fds: list[int]) -> dict:
    spool = store.spool
    if spool is not None:
        spool.flush()
        fds.append(spool.file.fileno())
    return {"state": store.export_state(), "fd": len(fds) - 1 if spool is not None else None}


def _adopt_record_store(msg: dict, fds: list[int]):
    from .findings import sort_key
    from .spill import RecordStore
    file = os.fdopen(fds[msg["fd"]], "r+b") if msg["fd"] is not None else None
    return RecordStore.from_state(msg["state"], file, key=sort_key)
