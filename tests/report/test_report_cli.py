"""The output side of the CLI: --format (repeatable), -o file or directory, report, exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from dotaudit.cli import main

CA = "pcaps/lab/ca.pem"
CLEAN = "pcaps/dot/tls13-multi-query.pcap"      # findings: low (client offers weak suites), info
WEAK = "pcaps/dot/tls10.pcap"                   # critical: TLS 1.0, certificate error ignored


@pytest.fixture(autouse=True)
def _cwd(repo, monkeypatch):
    monkeypatch.chdir(repo)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("capture,fail_on,code", [
    (CLEAN, None, 0), (CLEAN, "medium", 0), (CLEAN, "low", 1), (CLEAN, "info", 1), (CLEAN, "never", 0),
    (WEAK, None, 1), (WEAK, "critical", 1), (WEAK, "never", 0),
])
def test_fail_on_exit_codes(tmp_path, capture, fail_on, code):
    args = ["audit", capture, "--trust-anchor", CA, "-o", tmp_path / "r.json"]
    if fail_on:
        args += ["--fail-on", fail_on]
    assert run(*args).exit_code == code


def test_several_formats_write_a_directory(tmp_path):
    out = tmp_path / "out"
    r = run("audit", WEAK, "--trust-anchor", CA, "-f", "html", "-f", "json", "-f", "md", "-f", "jsonl",
            "-f", "ocsf", "-f", "junit", "-f", "text", "-o", out)
    assert r.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.html", "report.json", "report.md", "report.jsonl", "report.ocsf.json", "report.junit.xml",
         "report.txt"])
    rep = json.loads((out / "report.json").read_text())
    assert rep["summary"]["verdict"] == "fail"
    ET.fromstring((out / "report.junit.xml").read_text())
    # one format: -o is a file
    assert run("audit", WEAK, "--trust-anchor", CA, "-f", "md", "-o", tmp_path / "one.md",
               "--fail-on", "never").exit_code == 0
    assert (tmp_path / "one.md").read_text().startswith("## DNS encryption audit")


def test_several_formats_need_a_directory(tmp_path):
    assert run("audit", CLEAN, "-f", "html", "-f", "md").exit_code == 2
    (tmp_path / "f").write_text("x")
    assert run("audit", CLEAN, "-f", "html", "-f", "md", "-o", tmp_path / "f").exit_code == 2


def test_report_rerenders_and_keeps_exit_codes(tmp_path):
    saved = tmp_path / "r.json"
    run("audit", WEAK, "--trust-anchor", CA, "-o", saved, "--fail-on", "never")
    r = run("report", saved, "-f", "html", "-f", "junit", "-f", "ocsf", "-o", tmp_path / "d",
            "--ocsf-class", "compliance", "--redact")
    assert r.exit_code == 0                       # report: --fail-on never by default
    junit = ET.fromstring((tmp_path / "d" / "report.junit.xml").read_text())
    assert len(junit.findall(".//testcase")) > 30      # every rule of the pack
    assert junit.get("failures") != "0"
    ocsf = json.loads((tmp_path / "d" / "report.ocsf.json").read_text())
    assert {e["class_uid"] for e in ocsf} == {2003}
    page = (tmp_path / "d" / "report.html").read_text()
    assert "lab.test" not in page and "redacted-" in page
    assert run("report", saved, "-f", "md", "--fail-on", "high").exit_code == 1
    assert run("report", tmp_path / "missing.json").exit_code == 3


def test_redact_key_gives_stable_tokens(tmp_path):
    outs = []
    for n in range(2):
        p = tmp_path / f"{n}.jsonl"
        run("audit", WEAK, "--trust-anchor", CA, "-f", "jsonl", "-o", p, "--redact-key", "s3cret",
            "--fail-on", "never")
        outs.append(p.read_text())
    assert outs[0] == outs[1] and "lab.test" not in outs[0] and "redacted-" in outs[0]


def test_help_documents_formats_and_exit_codes():
    text = run("audit", "--help").output
    for word in ("--format", "--redact", "--redact-key", "--ocsf-class", "junit", "ocsf", "Exit codes",
                 "3  unreadable input"):
        assert word in text
    assert "Exit codes" in run("report", "--help").output
