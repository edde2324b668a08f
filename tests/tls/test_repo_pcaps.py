"""Smoke test: every capture in the repository goes through the analyzer without raising and
gives a JSON-ready summary (fixture contents are owned by other tests; only robustness here)."""

from __future__ import annotations

import json

import pytest

from .conftest import REPO, run_flow, tcp_flows

PCAPS = sorted(p for p in (REPO / "pcaps").rglob("*.pcap*") if p.stat().st_size < 2_000_000)


@pytest.mark.skipif(not PCAPS, reason="no captures in pcaps/")
def test_every_repo_capture_analyses():
    flows = 0
    for path in PCAPS:
        try:
            found = tcp_flows(path)
        except Exception:  # scapy cannot read it: not our concern here
            continue
        for fl in found:
            if not fl.segments:
                continue
            _, out = run_flow(fl)
            json.dumps(out)
            flows += 1
    assert flows > 0
