"""The judge process (sink.py) gives the in-process result, and fails with one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dotaudit import sink
from dotaudit.flows.store import FlowStore
from dotaudit.report.json import Rendered, render
from dotaudit.spill import RecordStore
from dotaudit.pipeline import audit, make_judge, options_from_policy, run_files

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = [ROOT / "pcaps" / "gateway" / "mixed.pcap", ROOT / "pcaps" / "leak" / "fallback-after-dot-failure.pcap",
            ROOT / "pcaps" / "dot" / "tls13-one-query-per-connection.pcap"]

pytestmark = pytest.mark.skipif(not sink.can_fork(), reason="needs fork and two CPUs")


def _audit(paths, monkeypatch, fork: bool, spill_at: int) -> dict:
    with monkeypatch.context() as m:
        m.setattr(FlowStore.__init__, "__defaults__", (spill_at,))
        m.setattr(RecordStore.__init__, "__defaults__", (spill_at, None, None))   # findings spill too
        m.setattr(sink, "can_fork", lambda: fork)
        report = audit([str(p) for p in paths])
    report.pop("generated_at")
    return report


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, stress_frames, write_pcap) -> Path:
    """Synthetic gateway traffic: thousands of DNS flows, dozens of aggregated findings."""
    return write_pcap(tmp_path_factory.mktemp("sink") / "gateway.pcap", stress_frames(seed=3, n=12000))


@pytest.mark.parametrize("spill_at", [1000, 2], ids=["memory", "spilled"])
def test_judge_process_equals_in_process(monkeypatch, spill_at, gateway):
    for path in CAPTURES:
        assert path.exists(), path
    for paths in (CAPTURES, [gateway]):
        forked = _audit(paths, monkeypatch, True, spill_at)
        local = _audit(paths, monkeypatch, False, spill_at)
        assert forked["findings"] and forked["flows"]
        assert forked == local
        # the forked audit's statistics were rendered ahead (report/json.prerender): same text
        assert isinstance(forked["stats"]["latency"], Rendered)
        assert render(forked) == render(local)


class _BrokenJudge:
    """A judge whose evaluation raises on the third flow (say, a user rule's bug)."""

    store = None

    def __init__(self):
        self.seen = 0

    def add(self, rec):
        self.seen += 1
        if self.seen == 3:
            raise ValueError("boom in a rule")
        self.store.add(rec)

    def finish_flows(self):
        return None


@pytest.mark.parametrize("fork", [True, False], ids=["process", "in-process"])
def test_judge_failure_is_one_clear_error(fork):
    with pytest.raises(sink.SinkError) as exc:
        run_files([str(ROOT / "pcaps" / "gateway" / "mixed.pcap")], options_from_policy(None),
                  judge=_BrokenJudge(), fork=fork)
    msg = str(exc.value)
    assert "judging failed: ValueError: boom in a rule" in msg and "\n" not in msg


def test_cli_reports_a_judge_failure_on_one_line(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from dotaudit import cli, pipeline

    monkeypatch.setattr(pipeline, "make_judge", lambda *a, **k: _BrokenJudge())
    result = CliRunner().invoke(cli.main, ["audit", str(ROOT / "pcaps" / "gateway" / "mixed.pcap"),
                                           "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 4
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines == ["dotaudit: error: judging failed: ValueError: boom in a rule"]
    assert not (tmp_path / "r.json").exists()


def test_abort_stops_the_judge_process(gateway):
    """An audit that fails half-way (here: the second input is not a capture) leaves nothing:
    no judge process, no thread, no open descriptor."""
    import threading

    from dotaudit.capture.pcap import CaptureError

    def children() -> set[str]:
        out: set[str] = set()
        for tid in os.listdir(f"/proc/{os.getpid()}/task"):
            with open(f"/proc/{os.getpid()}/task/{tid}/children") as fh:
                out.update(fh.read().split())
        return out

    before = {t.name for t in threading.enumerate()}
    fds = set(os.listdir(f"/proc/{os.getpid()}/fd"))
    kids = children()
    bad = gateway.with_suffix(".txt")
    bad.write_text("not a capture\n")
    with pytest.raises(CaptureError):
        run_files([str(gateway), str(bad)], options_from_policy(None), fork=True)
    assert {t.name for t in threading.enumerate()} <= before
    assert children() <= kids   # the judge process is gone, not even a zombie
    assert set(os.listdir(f"/proc/{os.getpid()}/fd")) <= fds


def test_a_finished_judge_process_is_reaped_later(gateway):
    """``finish`` does not wait for the judge process to exit (it frees its memory while the
    report is written); the next sink, or the exit, reaps it: no zombie piles up."""
    def children() -> set[int]:
        out: set[int] = set()
        for tid in os.listdir(f"/proc/{os.getpid()}/task"):
            with open(f"/proc/{os.getpid()}/task/{tid}/children") as fh:
                out.update(int(p) for p in fh.read().split())
        return out

    import time

    sink._reap(block=True)
    before = children()
    for _ in range(3):
        run_files([str(gateway)], options_from_policy(None), fork=True, judge=make_judge())
        # every judge process still there is one to reap (each new sink reaps those that exited)
        assert children() - before <= sink._UNREAPED
    deadline = time.monotonic() + 30
    while sink._UNREAPED and time.monotonic() < deadline:   # they exit on their own
        sink._reap()
        time.sleep(0.01)
    assert not sink._UNREAPED and children() <= before


def test_the_last_burst_goes_to_the_judge_process_at_once(monkeypatch):
    """At the start of the last burst (mark_tail) the records waiting for a chunk to fill are
    written at once, and the burst's records go in small chunks: the judge process, the last
    to finish, starts on them without waiting for the main process to fill 64 KiB."""
    writes: list[bytes] = []
    ps = object.__new__(sink.ProcessSink)
    ps.judge, ps.broken, ps.tail_views = object(), False, None
    ps.chunk, ps.chunk_bytes, ps.chunk_limit = [], 0, sink.CHUNK_BYTES
    ps.out, ps.out_bytes = __import__("collections").deque(), 0
    ps._dumps, ps._pack = __import__("orjson").dumps, sink._LEN.pack
    monkeypatch.setattr(sink.ProcessSink, "_write", lambda self, block: (writes.extend(bytes(v) for v in self.out),
                                                                          self.out.clear()))
    rec = {"id": 1, "class": "do53", "pad": "x" * 3000}
    for _ in range(5):
        ps.add(rec)
    assert not writes                       # 5 records: not a chunk yet
    ps.mark_tail()
    assert len(writes) == 1 and writes[0].endswith(sink._LEN.pack(0)) and not ps.chunk
    for _ in range(9):
        ps.add(rec)
    assert len(writes) == 4                 # the burst in chunks of three such records
    assert all(len(w) <= sink.TAIL_CHUNK_BYTES + 3100 for w in writes[1:])


def test_the_judge_process_stores_each_record_as_it_comes(gateway):
    """The judge process's flow store writes each record to its file as it comes (spill_at=0)
    instead of keeping a thousand and writing them at once (8-13 ms on 100k packets, just
    before the last burst); the report is the same (test_judge_process_equals_in_process)."""
    rs = sink.RecordSink(None, spill_at=0)
    rs.add({"id": 1, "class": "do53", "timing": None})
    assert rs.records.spilled and len(rs.records) == 1
    assert sink.RecordSink(None).records.spill_at == FlowStore().spill_at


def test_large_messages_travel_in_a_file():
    """A message larger than a socket buffer goes in a file whose descriptor travels with the
    other descriptors: the sender does not wait for the reader (the statistics are a few
    hundred KiB; the judge process goes on to the last findings at once)."""
    import socket
    import tempfile

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    big = {"latency": list(range(300_000)), "text": "x" * 100_000}
    with tempfile.TemporaryFile() as extra:
        extra.write(b"spool")
        extra.flush()
        sink._send(a, big, [extra.fileno()])          # returns at once: nobody reads yet
        sink._send(a, {"small": 1}, [])
        got, fds = sink._recv(b)
        assert got == big and len(fds) == 1
        assert os.pread(fds[0], 5, 0) == b"spool"
        os.close(fds[0])
        assert sink._recv(b) == ({"small": 1}, [])
    before = set(os.listdir(f"/proc/{os.getpid()}/fd"))
    sink._send(a, big, [])
    assert sink._recv(b)[0] == big
    assert set(os.listdir(f"/proc/{os.getpid()}/fd")) <= before   # the message file is closed
    a.close()
    b.close()


class _WatchedLazyJudge:
    """A LazyJudge that notes whether the main process made it."""

    def __init__(self):
        from dotaudit.pipeline import make_judge
        from dotaudit.rules.policy import load_policy

        self.main = os.getpid()
        self.policy = load_policy(None)
        self.make = make_judge
        self.made_in_main = False

    def get(self):
        if os.getpid() == self.main:
            self.made_in_main = True
        return self.make(self.policy)


def test_judge_process_judges_everything_without_the_main_process(gateway, tmp_path):
    """The pipe is closed as soon as the last record is in it (sink.ProcessSink._close_pipe) and
    the judge process makes the capture rules' findings too: the main process never makes a
    judge (loads no rules), and the report is the in-process one."""
    from dotaudit.pipeline import assemble, finalize_summary, finish_rules

    cut = tmp_path / "cut.pcap"
    cut.write_bytes(gateway.read_bytes()[:-37])   # a truncated last record: capture-incomplete
    reports = []
    for fork in (True, False):
        judge = _WatchedLazyJudge()
        infos, collector, table = run_files([str(cut)], options_from_policy(None), judge=judge, fork=fork)
        assert collector.capture_judged
        report = assemble(infos, collector, table)
        finish_rules(report, judge, collector.flow_findings, collector.capture_judged)
        finalize_summary(report)
        assert judge.made_in_main is not fork   # in-process: made here, for the sink
        report.pop("generated_at")
        reports.append(render(report))
        assert "capture-incomplete" in {f["rule_id"] for f in report["findings"]}
    assert reports[0] == reports[1]


def test_main_process_imports_no_rule_engine(tmp_path):
    """pySigma and the compiled rules live in the judge process: an audit's main process does
    not import them (about 50 ms at start-up), with rules or without."""
    import subprocess
    import sys

    code = ("import sys; from dotaudit import cli\n"
            "sys.argv = ['dotaudit', 'audit', sys.argv[1], '-o', sys.argv[2], '--no-progress', '--fail-on', 'never']"
            " + sys.argv[3:]\n"
            "try:\n    cli.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in sys.modules if m.startswith(('sigma.', 'dotaudit.rules.engine',"
            " 'dotaudit.rules.compiler'))))")
    env = {k: v for k, v in os.environ.items() if k not in ("DOTAUDIT_NO_CACHE", "DOTAUDIT_NO_FORK")}
    env["DOTAUDIT_CACHE_DIR"] = str(tmp_path / "cache")
    seen = []
    for extra in ([], [], ["--no-rules"]):
        out = subprocess.run([sys.executable, "-c", code, str(ROOT / "pcaps" / "gateway" / "mixed.pcap"),
                              str(tmp_path / "r.json"), *extra], capture_output=True, text=True, check=True, env=env)
        seen.append(out.stdout.strip())
    # the first audit parses the rules in the main process (to check them before it starts) and
    # leaves the parsed-rule cache; from then on only the judge process loads them
    assert seen[0] != "[]" and seen[1:] == ["[]", "[]"], seen
