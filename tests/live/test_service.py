"""The live service loop without a network: a fake source replays a capture file.

These run everywhere (no root, no namespace); tests/live/test_netns.py does the real thing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dotaudit.capture.pcap import CaptureInfo, open_capture, read_packets
from dotaudit.live import LiveService, archive_path
from dotaudit.pipeline import audit, options_from_policy
from dotaudit.rules.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]
MIXED = ROOT / "pcaps" / "gateway" / "mixed.pcap"


class FakeSource:
    """Replays a capture; ``hup_after`` raises the SIGHUP flag after that many packets."""

    engine = "fake"
    iface = "fake0"
    filter = "port 53 or port 853"

    def __init__(self, path: Path, *, kernel_drops: int = 0, hup_after: int | None = None):
        stream, _hasher, info = open_capture(str(path))
        self.packets = list(read_packets(stream, info))
        self.linktype = self.packets[0][1]
        self.i = 0
        self.kernel_drops = kernel_drops
        self.hup_after = hup_after
        self.service: LiveService | None = None
        self.closed = False

    def next(self):
        if self.i >= len(self.packets):
            self.service.stop()
            return None
        ts, lt, data, wirelen = self.packets[self.i]
        self.i += 1
        if self.hup_after is not None and self.i == self.hup_after:
            self.service._rotate = True  # what the SIGHUP handler does; read at the 256-packet check
        return ts, data, wirelen

    def stats(self):
        return {"received": self.i, "kernel_drops": self.kernel_drops if self.i else 0, "if_drops": 0}

    def stop(self):
        pass

    def drain(self):
        return iter(())

    def close(self):
        self.closed = True


def _service(src, tmp_path, **kw) -> LiveService:
    policy = load_policy(None)
    svc = LiveService(src, options=options_from_policy(policy), policy=policy, output=str(tmp_path / "r.json"),
                      interval=kw.pop("interval", 3600), log=open("/dev/null", "w"), **kw)
    src.service = svc
    return svc


def _key(report):
    flows = sorted((f["class"], f["transport"], f["server"]["ip"], f["server"]["port"]) for f in report["flows"])
    return flows, sorted(f["rule_id"] for f in report["findings"])


def test_same_flows_and_findings_as_offline(tmp_path, validate_report):
    svc = _service(FakeSource(MIXED), tmp_path)
    assert svc.run() == 0
    live = json.loads((tmp_path / "r.json").read_text())
    offline = audit([str(MIXED)])
    assert _key(live) == _key(offline)
    assert live["inputs"][0]["format"] == "live"
    assert live["inputs"][0]["packets"] == 50
    assert live["stats"]["capture"]["kernel_drops"] == 0
    assert live["live"]["final"] is True and live["stats"]["live_flows"]["open"] == 0
    assert "capture-incomplete" not in {f["rule_id"] for f in live["findings"]}
    live["inputs"][0]["sha256"] = "0" * 64  # a live input has no file to hash (see the README)
    validate_report(live)


def test_kernel_drops_raise_capture_incomplete(tmp_path):
    svc = _service(FakeSource(MIXED, kernel_drops=7), tmp_path)
    svc.run()
    live = json.loads((tmp_path / "r.json").read_text())
    assert live["stats"]["capture"]["kernel_drops"] == 7
    assert any(s["reason"] == "capture-drops" for s in live["skipped"])
    assert "capture-incomplete" in {f["rule_id"] for f in live["findings"]}


def test_sighup_starts_a_new_period_and_archives_the_old(tmp_path):
    src = FakeSource(MIXED, hup_after=256)  # the flag is read at the 256-packet check... or when idle
    src.packets = src.packets * 6           # > 256 packets: the same flows again, later
    svc = _service(src, tmp_path, archive=True)
    svc.run()
    final = json.loads((tmp_path / "r.json").read_text())
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("r.") and p.name != "r.json"]
    assert len(archived) == 1 and archived[0].name == Path(archive_path(str(tmp_path / "r.json"),
                                                                        svc.started)).name
    old = json.loads(archived[0].read_text())
    assert old["live"]["period"] == 0 and final["live"]["period"] == 1
    assert old["inputs"][0]["packets"] == 256 and final["inputs"][0]["packets"] == 300 - 256
    assert final["stats"]["packets"]["packets"] == 300 - 256


def test_interval_reports_are_rewritten_atomically(tmp_path):
    src = FakeSource(MIXED)
    writes = []
    svc = _service(src, tmp_path, interval=0.1)
    orig = svc.write_report

    def spy(**kw):
        writes.append(kw.get("final"))
        return orig(**kw)

    svc.write_report = spy
    nxt = src.next

    idle = iter([False, True] * 100)

    def slow_next():  # every other read is idle: the loop checks its clock and writes interval reports
        if src.i < len(src.packets) and next(idle, False):
            time.sleep(0.02)
            return None
        return nxt()

    src.next = slow_next
    svc.run()
    assert writes[-1] is True and writes.count(False) >= 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_no_output_writes_the_final_report_to_stdout(capsys):
    src = FakeSource(MIXED)
    policy = load_policy(None)
    svc = LiveService(src, options=options_from_policy(policy), policy=policy, output=None, fmt="text",
                      log=open("/dev/null", "w"))
    src.service = svc
    assert svc.run() == 0
    out = capsys.readouterr().out
    assert "verdict: FAIL" in out and "fake:fake0" in out


@pytest.mark.parametrize("name", ["bad filter", "missing interface"])
def test_usage_errors_without_privileges(name, tmp_path):
    pytest.importorskip("scapy.libs.winpcapy")
    from click.testing import CliRunner

    from dotaudit.live_cli import live_command
    args = ["-i", "lo", "-f", "port 53 and and"] if name == "bad filter" else ["-i", "dotaudit-nope0"]
    res = CliRunner().invoke(live_command, args + ["-o", str(tmp_path / "r.json")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("dotaudit: error: ")
    assert ("bad capture filter" if name == "bad filter" else "no such interface") in lines[0]
