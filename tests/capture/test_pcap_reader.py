"""Classic pcap: resolutions, byte orders, gzip, stdin, several files in one report."""

from __future__ import annotations

import gzip
import json

import pytest
from scapy.layers.l2 import Ether


MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def pair_frames(dns_pair, **kw):
    q, r = dns_pair(**kw)
    return bytes(Ether(**MAC) / q), bytes(Ether(**MAC) / r)


@pytest.mark.parametrize("nanos", [False, True], ids=["micro", "nano"])
@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcap_resolution_and_byte_order(tmp_path, write_pcap, run_audit, dns_pair, nanos, big_endian, read_capture):
    fq, fr = pair_frames(dns_pair)
    frac = (123_456_789, 123_457_001) if nanos else (123_456, 123_999)
    path = write_pcap(tmp_path / "x.pcap", [((1_600_000_000, frac[0]), fq), ((1_600_000_000, frac[1]), fr)],
                      nanos=nanos, big_endian=big_endian)
    info, recs = read_capture(path)
    assert info.format == ("pcap-ns" if nanos else "pcap")
    scale = 1e-9 if nanos else 1e-6
    assert [r[0] for r in recs] == pytest.approx([1_600_000_000 + f * scale for f in frac], abs=1e-7)
    assert [r[1] for r in recs] == [1, 1]
    assert [r[2] for r in recs] == [fq, fr]
    assert [r[3] for r in recs] == [len(fq), len(fr)]

    report = run_audit([path])
    inp = report["inputs"][0]
    assert inp["format"] == info.format
    assert inp["packets"] == 2 and inp["bytes"] == len(fq) + len(fr)
    assert inp["first_ts"] == pytest.approx(1_600_000_000 + frac[0] * scale, abs=1e-7)
    assert inp["last_ts"] == pytest.approx(1_600_000_000 + frac[1] * scale, abs=1e-7)
    assert inp["linktypes"] == ["ethernet"]
    (flow,) = report["flows"]
    assert flow["class"] == "do53" and flow["dns"]["queries"] == 1 and flow["dns"]["responses"] == 1
    assert flow["first_frame"] == 1 and flow["last_frame"] == 2


def test_nanosecond_precision_is_kept(tmp_path, write_pcap, read_capture):
    path = write_pcap(tmp_path / "ns.pcap", [((1, 1234), b"\x00" * 20), ((1, 999_999_999), b"\x00" * 20)],
                      nanos=True)
    _, recs = read_capture(path)
    assert recs[0][0] == pytest.approx(1.000001234, abs=1e-12)
    assert recs[1][0] == pytest.approx(1.999999999, abs=1e-12)


@pytest.mark.parametrize("name", ["cap.pcap.gz", "cap.bin"])
def test_gzip_with_and_without_suffix(tmp_path, write_pcap, run_audit, dns_pair, name):
    fq, fr = pair_frames(dns_pair)
    plain = write_pcap(tmp_path / "plain.pcap", [fq, fr])
    gz = write_pcap(tmp_path / name, [fq, fr], compress=True)
    report = run_audit([gz])
    inp = report["inputs"][0]
    assert inp["compressed"] is True
    assert inp["packets"] == 2 and not inp["truncated"] and inp["errors"] == []
    # sha256 and size are of the file as stored (compressed), not of the decompressed stream
    import hashlib
    assert inp["sha256"] == hashlib.sha256(gz.read_bytes()).hexdigest()
    assert inp["size"] == gz.stat().st_size
    plain_report = run_audit([plain])
    assert report["flows"][0]["dns"] == plain_report["flows"][0]["dns"]


def test_gzip_multi_member(tmp_path, pcap_bytes, run_audit, dns_pair):
    """A gzip made of two concatenated members (``cat a.gz b.gz``) is read to the end."""
    fq, fr = pair_frames(dns_pair)
    data = pcap_bytes([fq, fr])
    path = tmp_path / "multi.pcap.gz"
    path.write_bytes(gzip.compress(data[:70]) + gzip.compress(data[70:]))
    report = run_audit([path])
    assert report["inputs"][0]["packets"] == 2 and not report["inputs"][0]["truncated"]


def test_sha256_of_plain_file(tmp_path, write_pcap, run_audit, dns_pair):
    import hashlib
    fq, fr = pair_frames(dns_pair)
    path = write_pcap(tmp_path / "p.pcap", [fq, fr])
    inp = run_audit([path])["inputs"][0]
    assert inp["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert inp["size"] == path.stat().st_size


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_stdin(tmp_path, write_pcap, validate_report, dns_pair, run_cli, compress):
    fq, fr = pair_frames(dns_pair)
    path = write_pcap(tmp_path / "in.pcap", [fq, fr], compress=compress)
    out = tmp_path / "out.json"
    with open(path, "rb") as fh:
        proc = run_cli("audit", "-", "-o", out, "--no-rules", stdin=fh)
    assert proc.returncode == 0, proc.stderr.decode()
    report = validate_report(json.loads(out.read_text()))
    inp = report["inputs"][0]
    assert inp["path"] == "-"
    assert inp["packets"] == 2 and inp["compressed"] is compress
    import hashlib
    assert inp["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    (flow,) = report["flows"]
    assert flow["class"] == "do53" and flow["dns"]["queries"] == 1 and flow["dns"]["responses"] == 1


def test_several_files_one_report(tmp_path, write_pcap, write_pcapng, run_audit, dns_pair):
    a = write_pcap(tmp_path / "a.pcap", [*pair_frames(dns_pair, sport=40001, qname="a.example")])
    filler = bytes(Ether(**MAC, type=0x0806)) + b"\x00" * 28  # ARP-ish, not IP
    b = write_pcapng(tmp_path / "b.pcapng", [(1_700_000_100.0, filler),
                                              *[(1_700_000_100.5 + i, f) for i, f in
                                                enumerate(pair_frames(dns_pair, sport=40002, qname="b.example"))]])
    report = run_audit([a, b])
    assert [i["path"] for i in report["inputs"]] == [str(a), str(b)]
    assert [i["format"] for i in report["inputs"]] == ["pcap", "pcapng"]
    assert [i["packets"] for i in report["inputs"]] == [2, 3]
    flows = sorted(report["flows"], key=lambda f: f["input"])
    assert [f["input"] for f in flows] == [0, 1]
    assert [f["dns"]["qnames"] for f in flows] == [["a.example"], ["b.example"]]
    # frame numbers restart with each file
    assert (flows[0]["first_frame"], flows[0]["last_frame"]) == (1, 2)
    assert (flows[1]["first_frame"], flows[1]["last_frame"]) == (2, 3)
    assert flows[1]["dns"]["first_query_frame"] == 2
    assert report["stats"]["packets"]["packets"] == 5


def test_same_file_twice_and_snaplen_zero(tmp_path, write_pcap, run_audit, dns_pair):
    """snaplen 0 in the header (seen in the wild) must not reject ordinary records."""
    path = write_pcap(tmp_path / "s0.pcap", list(pair_frames(dns_pair)), snaplen=0)
    report = run_audit([path, path])
    assert [i["packets"] for i in report["inputs"]] == [2, 2]
    assert all(not i["errors"] for i in report["inputs"])


def test_large_capture_crosses_read_chunks(tmp_path, write_pcap, run_audit, dns_pair):
    """More than one 1 MiB read chunk, with records straddling chunk boundaries."""
    frames = []
    for i in range(1500):
        fq, fr = pair_frames(dns_pair, sport=20000 + i, qid=i)
        frames += [fq + b"\0" * 300, fr + b"\0" * 300]
    path = write_pcap(tmp_path / "big.pcap", frames)
    assert path.stat().st_size > (1 << 20) + 100
    report = run_audit([path])
    assert report["inputs"][0]["packets"] == 3000 and not report["inputs"][0]["errors"]
    assert report["summary"]["flows_by_class"]["do53"] == 1500
    assert sum(f["dns"]["responses"] for f in report["flows"]) == 1500
