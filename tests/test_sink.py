"""The judge process (sink.py) gives the in-process result, and fails with one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dotaudit import sink
from dotaudit.flows.store import FlowStore
from dotaudit.report.json import Rendered, render
from dotaudit.spill import RecordStore
from dotaudit.pipeline import audit, options_from_policy, run_files

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


class _SlowLazyJudge:
    """A LazyJudge whose main-process copy takes long to make, and notes whether the judge
    process had already sent its statistics by the time it was asked for."""

    def __init__(self):
        from dotaudit.pipeline import make_judge

        self.parent = os.getpid()
        self.make = make_judge
        self.sink = None
        self.child_was_done = None

    def get(self):
        import select

        if os.getpid() != self.parent:
            return self.make()
        if self.child_was_done is None:
            # the judge process reads to the end of the records and sends the statistics
            # without waiting for this process to make its own judge
            self.child_was_done = bool(select.select([self.sink.sock], [], [], 20)[0])
        return self.make()


def test_judge_process_finishes_without_waiting_for_the_main_process(monkeypatch, gateway):
    """The pipe is closed as soon as the last record is in it (sink.ProcessSink._close_pipe),
    before the main process counts the statistics of the last flows and loads its own rules."""
    import dotaudit.pipeline as pipeline

    judge = _SlowLazyJudge()

    def make_sink(j=None, *, fork=None):
        judge.sink = sink.ProcessSink(j)
        return judge.sink

    monkeypatch.setattr(pipeline, "make_sink", make_sink)
    _infos, collector, _table = run_files([str(gateway)], options_from_policy(None), judge=judge, fork=True)
    assert judge.child_was_done is True
    assert len(collector.records) > 1000 and collector.flow_findings
