"""Damaged and non-capture inputs: counted and survived, or refused with one clear line (exit 3)."""

from __future__ import annotations

import gzip
import json
import os
import struct

import pytest
from scapy.layers.l2 import Ether

MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def dns_frames(dns_pair, n: int, base_port: int = 30000):
    """n query/response pairs on n flows, as Ethernet frames."""
    out = []
    for i in range(n):
        q, r = dns_pair("192.0.2.10", "192.0.2.53", sport=base_port + i, qid=i, qname=f"q{i}.example")
        out += [bytes(Ether(**MAC) / q), bytes(Ether(**MAC) / r)]
    return out


def errors_by_kind(inp):
    return {e["kind"]: e for e in inp["errors"]}


def dns_totals(report):
    flows = [f for f in report["flows"] if f["dns"]]
    return sum(f["dns"]["queries"] for f in flows), sum(f["dns"]["responses"] for f in flows)


# ------------------------------------------------------------------------------ truncation

@pytest.mark.parametrize("cut", [5, 16 + 10], ids=["in-header", "in-data"])
def test_pcap_truncated_last_record(tmp_path, pcap_bytes, run_audit, dns_pair, cut):
    frames = dns_frames(dns_pair, 3)
    data = pcap_bytes(frames)
    last = 16 + len(frames[-1])
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:len(data) - last + cut])
    report = run_audit([path])
    inp = report["inputs"][0]
    assert inp["truncated"] is True
    assert "truncated-record" in errors_by_kind(inp)
    assert errors_by_kind(inp)["truncated-record"]["first_frame"] == 6
    assert inp["packets"] == 5
    assert dns_totals(report) == (3, 2)
    assert any(s["reason"] == "truncated-record" for s in report["skipped"])


@pytest.mark.parametrize("cut", [6, 30], ids=["in-block-header", "in-block"])
def test_pcapng_truncated_last_block(tmp_path, write_pcapng, run_audit, dns_pair, cut):
    frames = dns_frames(dns_pair, 3)
    full = write_pcapng(tmp_path / "full.pcapng", frames).read_bytes()
    last_block = 32 + ((len(frames[-1]) + 3) & ~3)
    path = tmp_path / "cut.pcapng"
    path.write_bytes(full[:len(full) - last_block + cut])
    report = run_audit([path])
    inp = report["inputs"][0]
    assert inp["truncated"] is True and "truncated-record" in errors_by_kind(inp)
    assert inp["packets"] == 5
    assert dns_totals(report) == (3, 2)


def test_gzip_cut_in_the_middle_keeps_earlier_packets(tmp_path, pcap_bytes, run_audit, dns_pair):
    frames = dns_frames(dns_pair, 200)
    data = pcap_bytes(frames)
    comp = gzip.compress(data, compresslevel=1)
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(comp[: len(comp) // 2])
    report = run_audit([path])
    inp = report["inputs"][0]
    assert inp["compressed"] is True and inp["truncated"] is True
    assert errors_by_kind(inp)["read-error"]["first_frame"] == inp["packets"] + 1
    # everything decompressed before the cut is analysed (at least a third of the records)
    assert inp["packets"] > len(frames) // 3, inp["packets"]
    q, r = dns_totals(report)
    assert q >= inp["packets"] // 2 and r >= inp["packets"] // 2 - 1


def test_gzip_corrupt_crc(tmp_path, pcap_bytes, run_audit, dns_pair):
    """A bad CRC is found at the end of the member: what came before it is still analysed."""
    frames = [f + bytes(range(256)) * 8 for f in dns_frames(dns_pair, 400)]  # > 1 MiB decompressed
    data = pcap_bytes(frames)
    comp = bytearray(gzip.compress(data))
    comp[-8] ^= 0xFF  # CRC32 of the member
    path = tmp_path / "crc.pcap.gz"
    path.write_bytes(bytes(comp))
    inp = run_audit([path])["inputs"][0]
    assert inp["truncated"] is True and "read-error" in errors_by_kind(inp)
    assert 0 < inp["packets"] <= len(frames)


# ------------------------------------------------------------------------------ corrupt records

@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcap_corrupt_record_header_resyncs(tmp_path, pcap_bytes, run_audit, dns_pair, big_endian):
    """Record 3 gets a huge incl_len: counted, and the reader finds record 4 and goes on."""
    frames = dns_frames(dns_pair, 6)
    data = bytearray(pcap_bytes(frames, big_endian=big_endian))
    off = 24 + sum(16 + len(f) for f in frames[:2])
    struct.pack_into(">I" if big_endian else "<I", data, off + 8, 0x7FFF0000)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    report = run_audit([path])
    inp = report["inputs"][0]
    kinds = errors_by_kind(inp)
    assert kinds["corrupt-record"]["count"] == 1
    assert kinds["corrupt-record"]["first_frame"] == 3
    assert inp["packets"] == 11          # only the damaged record is lost
    assert inp["truncated"] is False
    flows = {f["client"]["port"]: f for f in report["flows"]}
    assert flows[30001]["dns"]["queries"] == 0 or flows[30001]["dns"]["responses"] == 1
    for port in range(30002, 30006):      # DNS after the damage is still analysed
        assert flows[port]["dns"]["queries"] == 1 and flows[port]["dns"]["responses"] == 1, port


def test_pcap_garbage_between_records_resyncs(tmp_path, pcap_bytes, run_audit, dns_pair):
    frames = dns_frames(dns_pair, 4)
    data = pcap_bytes(frames)
    off = 24 + sum(16 + len(f) for f in frames[:4])
    path = tmp_path / "garbage.pcap"
    path.write_bytes(data[:off] + b"\xff" * 37 + data[off:])
    report = run_audit([path])
    inp = report["inputs"][0]
    assert "corrupt-record" in errors_by_kind(inp)
    assert dns_totals(report) == (4, 4)


def test_pcapng_corrupt_block_length(tmp_path, write_pcapng, run_audit, dns_pair):
    frames = dns_frames(dns_pair, 3)
    data = bytearray(write_pcapng(tmp_path / "ok.pcapng", frames).read_bytes())
    off = 28 + 20  # SHB (28) + IDB (20): first EPB
    off += 32 + ((len(frames[0]) + 3) & ~3)
    struct.pack_into("<I", data, off + 4, 0x7FFFFFF0)  # second EPB: absurd block length
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(data))
    report = run_audit([path])
    inp = report["inputs"][0]
    assert "corrupt-record" in errors_by_kind(inp) and inp["truncated"] is True
    assert inp["packets"] == 1


# ------------------------------------------------------------------------------ snapped, unknown link type

def test_snapped_packet_counted(tmp_path, write_pcap, run_audit, dns_pair):
    q, r = dns_pair("192.0.2.10", "192.0.2.53", sport=30000)
    fq, fr = bytes(Ether(**MAC) / q), bytes(Ether(**MAC) / r)
    path = write_pcap(tmp_path / "snap.pcap", [fq, (1_700_000_000.5, fr[:50], len(fr))], snaplen=50)
    report = run_audit([path])
    inp = report["inputs"][0]
    kinds = errors_by_kind(inp)
    assert kinds["snapped"]["count"] == 1 and kinds["snapped"]["first_frame"] == 2
    assert inp["snapped_packets"] == 1 and inp["truncated"] is False
    assert inp["bytes"] == len(fq) + len(fr)      # wire length
    (f,) = report["flows"]
    assert f["packets"] == {"c2s": 1, "s2c": 1} and f["dns"]["queries"] == 1


def test_unknown_linktype_counted_file_still_read(tmp_path, write_pcap, run_audit):
    path = write_pcap(tmp_path / "u147.pcap", [b"\x45" + b"\0" * 40] * 3, linktype=147)
    report = run_audit([path])
    inp = report["inputs"][0]
    assert inp["packets"] == 3 and inp["linktype_numbers"] == [147]
    assert inp["linktypes"] == ["linktype-147"]
    assert errors_by_kind(inp)["unknown-linktype"]["count"] == 1
    assert report["flows"] == []


def test_unknown_linktype_on_one_pcapng_interface(tmp_path, Pcapng, run_audit, dns_pair):
    q, r = dns_pair()
    ng = (Pcapng().idb(147).idb(101).epb(1, b"\x45" + b"\0" * 40, if_id=0)
          .epb(2, bytes(q), if_id=1).epb(3, bytes(r), if_id=1))
    report = run_audit([ng.write(tmp_path / "mixed.pcapng")])
    inp = report["inputs"][0]
    assert "unknown-linktype" in errors_by_kind(inp) and inp["packets"] == 3
    assert report["flows"][0]["dns"]["responses"] == 1


# ------------------------------------------------------------------------------ not a capture (exit 3)

def _assert_exit3(proc):
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("dotaudit: error: ")
    assert "Traceback" not in proc.stderr.decode()


@pytest.mark.parametrize("kind", ["text", "random", "empty", "short", "directory", "missing", "bad-pcapng",
                                  "pcap-header-only-part", "gzip-of-text"])
def test_not_a_capture_exits_3(tmp_path, run_cli, kind):
    p = tmp_path / f"input-{kind}"
    if kind == "text":
        p.write_text("this is not a capture\n" * 20)
    elif kind == "random":
        p.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(4096)))
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "short":
        p.write_bytes(b"\xd4\xc3")
    elif kind == "directory":
        p.mkdir()
    elif kind == "bad-pcapng":
        p.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\x1c\0\0\0" + b"\x00\x11\x22\x33" + b"\0" * 16)
    elif kind == "pcap-header-only-part":
        p.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00")
    elif kind == "gzip-of-text":
        p.write_bytes(gzip.compress(b"hello world, not a pcap\n" * 10))
    out = tmp_path / "out.json"
    proc = run_cli("audit", p, "-o", out, "--no-rules")
    _assert_exit3(proc)
    assert not out.exists()


def test_unreadable_file_exits_3(tmp_path, run_cli):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading (missing path and "
                    "directory cases cover the open-error path)")
    p = tmp_path / "secret.pcap"
    p.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\0" * 20)
    p.chmod(0)
    _assert_exit3(run_cli("audit", p, "-o", tmp_path / "o.json", "--no-rules"))


def test_second_file_bad_exits_3(tmp_path, write_pcap, run_cli, dns_pair):
    good = write_pcap(tmp_path / "good.pcap", dns_frames(dns_pair, 1))
    bad = tmp_path / "bad.pcap"
    bad.write_text("nope")
    _assert_exit3(run_cli("audit", good, bad, "-o", tmp_path / "o.json", "--no-rules"))


def test_empty_stdin_exits_3(tmp_path, run_cli):
    with open(os.devnull, "rb") as fh:
        _assert_exit3(run_cli("audit", "-", "-o", tmp_path / "o.json", "--no-rules", stdin=fh))


def test_damaged_file_cli_exit_0_with_warning(tmp_path, pcap_bytes, run_cli, validate_report, dns_pair):
    data = pcap_bytes(dns_frames(dns_pair, 2))
    p = tmp_path / "cut.pcap"
    p.write_bytes(data[:-7])
    out = tmp_path / "o.json"
    proc = run_cli("audit", p, "-o", out, "--no-rules")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr.decode()
    assert "dotaudit: warning:" in proc.stderr.decode()
    report = validate_report(json.loads(out.read_text()))
    assert report["inputs"][0]["truncated"] is True
