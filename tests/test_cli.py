"""The command line as a user runs it: exit codes, stdin, several files, schema, errors."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from dotaudit import __version__
from dotaudit.cli import main
from dotaudit.report.schema import SCHEMA

REPO = Path(__file__).resolve().parents[1]
PUBLIC = REPO / "pcaps" / "public"
DNS_PCAP = PUBLIC / "DNS-OARC_dnscap/src/test/dns.pcap"
LLMNR_PCAP = PUBLIC / "OISF_suricata-verify/tests/llmnr/llmnr-udp/input.pcap"
DOT_PCAP = PUBLIC / "ntop_nDPI/tests/cfgs/default/pcap/dns_dot.pcap"


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def dotaudit(*args, stdin=None):
    """The installed console script, in a real process (stderr separate, real exit code)."""
    exe = shutil.which("dotaudit")
    cmd = [exe] if exe else [sys.executable, "-m", "dotaudit.cli"]
    return subprocess.run(cmd + [str(a) for a in args], input=stdin, capture_output=True, timeout=120)


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_schema_is_valid_json_schema():
    r = run("schema")
    schema = json.loads(r.output)
    jsonschema.Draft202012Validator.check_schema(schema)


def test_audit_writes_valid_report_and_exit_code_reflects_findings(tmp_path):
    out = tmp_path / "r.json"
    r = run("audit", DNS_PCAP, "-o", out)
    report = json.loads(out.read_text())
    jsonschema.validate(report, SCHEMA)
    # 41 plaintext queries to a remote resolver: a high finding, so exit 1 with --fail-on high
    assert any(f["rule_id"] == "dns-plaintext-query" for f in report["findings"])
    assert r.exit_code == 1
    assert run("audit", DNS_PCAP, "-o", out, "--fail-on", "critical").exit_code == 0
    assert run("audit", DNS_PCAP, "-o", out, "--fail-on", "never").exit_code == 0


def test_deterministic_output(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run("audit", DNS_PCAP, "-o", a, "--fail-on", "never")
    run("audit", DNS_PCAP, "-o", b, "--fail-on", "never")
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    ja.pop("generated_at"), jb.pop("generated_at")
    assert ja == jb


def test_several_files_one_report(tmp_path):
    gz = tmp_path / "llmnr.pcap.gz"
    gz.write_bytes(gzip.compress(LLMNR_PCAP.read_bytes()))
    out = tmp_path / "r.json"
    run("audit", DNS_PCAP, gz, "-o", out, "--fail-on", "never")
    report = json.loads(out.read_text())
    assert [i["packets"] for i in report["inputs"]] == [133, 2]
    assert report["inputs"][1]["compressed"] is True
    assert {f["input"] for f in report["flows"]} == {0, 1}
    assert report["summary"]["flows_by_class"]["llmnr"] == 2


def test_stdin(tmp_path):
    out = tmp_path / "r.json"
    p = dotaudit("audit", "-", "-o", out, "--fail-on", "never", stdin=DNS_PCAP.read_bytes())
    assert p.returncode == 0, p.stderr
    report = json.loads(out.read_text())
    assert report["inputs"][0]["path"] == "-" and report["inputs"][0]["packets"] == 133


@pytest.mark.parametrize("content", [b"", b"hello, this is not a capture\n", b"\xd4\xc3\xb2"])
def test_not_a_capture_exits_3_with_one_line(tmp_path, content):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    p = dotaudit("audit", bad, "-o", tmp_path / "r.json")
    assert p.returncode == 3
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dotaudit: error:") and "Traceback" not in p.stderr.decode()


def test_missing_file_and_directory_exit_3(tmp_path):
    for target in (tmp_path / "nope.pcap", tmp_path):
        p = dotaudit("audit", target)
        assert p.returncode == 3
        assert p.stderr.decode().count("\n") == 1 and "Traceback" not in p.stderr.decode()


def test_usage_errors_exit_2(tmp_path):
    assert run("audit").exit_code == 2
    assert run("audit", DNS_PCAP, "--fail-on", "sometimes").exit_code == 2
    pol = tmp_path / "p.yml"
    pol.write_text("no_such_key: 1\n")
    p = dotaudit("audit", DNS_PCAP, "--policy", pol)
    assert p.returncode == 2 and "no_such_key" in p.stderr.decode()


def test_text_format_and_report_rerender(tmp_path):
    out = tmp_path / "r.json"
    run("audit", DOT_PCAP, "-o", out, "--fail-on", "never")
    r = run("report", out, "-f", "text")
    assert r.exit_code == 0 and "dot" in r.output and "verdict" in r.output
    r = run("report", out, "-f", "json")
    assert json.loads(r.output)["flows"][0]["class"] == "dot"


def test_report_rejects_non_report(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    p = dotaudit("report", bad)
    assert p.returncode == 3 and p.stderr.decode().startswith("dotaudit: error:")


def test_quiet_when_piped():
    p = dotaudit("audit", DNS_PCAP, "-f", "json", "--fail-on", "never")
    assert p.returncode == 0
    assert p.stderr == b""  # no progress bar when stderr is not a terminal
    json.loads(p.stdout)
