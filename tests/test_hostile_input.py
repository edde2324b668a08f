"""Hostile bytes anywhere in a capture never escape as a traceback: the audit finishes, counts
what it skipped, and keeps everything else."""

from __future__ import annotations

import random
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dotaudit.capture.pcap import CaptureError
from dotaudit.pipeline import audit
from dotaudit.report.schema import SCHEMA

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "pcaps/gateway/mixed.pcap", REPO / "pcaps/dot/tls12-static-rsa-cbc.pcap",
           REPO / "pcaps/public/DNS-OARC_dnscap/src/test/dnsotcp-many1pkt.pcap",
           REPO / "pcaps/public/ntop_nDPI/tests/cfgs/default/pcap/doq.pcapng"]


def _records(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each classic-pcap record's packet bytes."""
    out, pos = [], 24
    while pos + 16 <= len(data):
        incl = int.from_bytes(data[pos + 8:pos + 12], "little")
        out.append((pos + 16, incl))
        pos += 16 + incl
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(0, len(SOURCES) - 2), st.integers(0, 2**32 - 1), st.integers(1, 40))
def test_corrupted_payload_bytes_never_raise(tmp_path_factory, which, seed, flips):
    data = bytearray(SOURCES[which].read_bytes())
    recs = _records(bytes(data))
    rnd = random.Random(seed)
    for _ in range(flips):
        off, ln = rnd.choice(recs)
        if ln > 34:  # keep Ethernet framing, hit IP/TCP/UDP headers and payloads
            data[off + rnd.randrange(14, ln)] = rnd.randrange(256)
    path = tmp_path_factory.mktemp("fuzz") / "mutated.pcap"
    path.write_bytes(bytes(data))
    report = audit([str(path)])
    jsonschema.validate(report, SCHEMA)
    assert report["inputs"][0]["packets"] == len(recs)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, len(SOURCES) - 1), st.floats(0.0, 1.0))
def test_truncated_anywhere(tmp_path_factory, which, frac):
    data = SOURCES[which].read_bytes()
    cut = int(len(data) * frac)
    path = tmp_path_factory.mktemp("cut") / ("cut" + SOURCES[which].suffix)
    path.write_bytes(data[:cut])
    try:
        report = audit([str(path)])
    except CaptureError as exc:  # too short to be a capture at all: one clear line
        assert "\n" not in str(exc)
        return
    jsonschema.validate(report, SCHEMA)
