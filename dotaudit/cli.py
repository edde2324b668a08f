"""Command line: ``dotaudit audit|schema|report|rules``.

Exit codes (also in ``--help`` and the README):
  0  no finding at or above --fail-on
  1  findings at or above --fail-on
  2  usage error (bad option, bad policy or rule file)
  3  unreadable input (not a capture, cannot be opened)
"""

from __future__ import annotations

import gc
import json
import os
import sys
from enum import Enum

import click

from . import __version__
from .report import EXTENSIONS, OcsfClass, OutputFormat  # the output formats

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_INTERNAL = 4

SEVERITY_ORDER = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}




class FailOn(str, Enum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"
    NEVER = "never"


EXIT_HELP = """\b
Exit codes:
  0  no finding at or above --fail-on
  1  findings at or above --fail-on
  2  usage error (bad option, policy or rule file)
  3  unreadable input (not a capture, cannot be opened)
  4  the judging failed (a rule raised while evaluated: see the message)"""

FORMATS_HELP = """\b
Formats (-f, repeatable; with several, -o names a directory and each file is report.<ext>):
  json   the versioned JSON report, the source of truth (default with -o or a pipe)
  text   terminal summary (default on a terminal)
  html   self-contained page for a reviewer (no external resources)
  md     Markdown summary for a ticket
  jsonl  one flow per line, then one finding per line (record_type)
  ocsf   OCSF 1.x Detection Finding (2004) events; Compliance Finding (2003)
         with --ocsf-class compliance
  junit  JUnit XML, a test case per rule, failed at or above --fail-on"""

_FORMAT_CHOICE = click.Choice([f.value for f in OutputFormat])


def _output_options(func):
    """-f/-o/--redact/--redact-key/--ocsf-class, shared by ``audit`` and ``report``."""
    func = click.option("--ocsf-class", type=click.Choice([c.value for c in OcsfClass]), default="detection",
                        show_default=True, help="OCSF event class of the ocsf format.")(func)
    func = click.option("--redact-key", metavar="KEY", envvar="DOTAUDIT_REDACT_KEY",
                        help="Key of the redaction HMAC (implies --redact): the same key gives the same tokens "
                             "across reports. Also read from DOTAUDIT_REDACT_KEY.")(func)
    func = click.option("--redact", is_flag=True,
                        help="Replace query names, SNI and certificate names by keyed hashes (HMAC-SHA256, "
                             "random per-run key unless --redact-key) in every format.")(func)
    return func


def _resolve_formats(fmts: tuple[str, ...], output: str | None) -> list[str]:
    seen: list[str] = []
    for f in fmts:
        if f not in seen:
            seen.append(f)
    if not seen:
        seen = ["json" if (output and output != "-") or not sys.stdout.isatty() else "text"]
    if len(seen) > 1 and (not output or output == "-"):
        _die(EXIT_USAGE, "several --format values need -o DIRECTORY")
    return seen


def _write_outputs(report: dict, fmts: list[str], output: str | None, *, rules=None, fail_on: str = "high",
                   ocsf_class: str = "detection", redact: bool = False, redact_key: str | None = None) -> None:
    if redact or redact_key:
        from .report.redact import redact as redact_report
        report = redact_report(report, redact_key)
    opts = {"rules": rules, "fail_on": fail_on if fail_on != "never" else "high", "ocsf_class": ocsf_class}
    if len(fmts) == 1:
        _write(report, fmts[0], output, **opts)
        return
    if os.path.exists(output) and not os.path.isdir(output):
        _die(EXIT_USAGE, f"-o {output}: not a directory (several --format values write one file each)")
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as exc:
        _die(EXIT_USAGE, f"cannot create {output}: {exc.strerror or exc}")
    for fmt in fmts:
        _write(report, fmt, os.path.join(output, "report." + EXTENSIONS[OutputFormat(fmt)]), **opts)


def _die(code: int, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
    click.echo(f"dotaudit: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="dotaudit")
def main() -> None:
    """Passive encryption-compliance auditor for DNS.

    Reads pcap/pcapng captures (or a live interface) and reports which flows carry plaintext
    DNS, DNS-over-TLS (RFC 7858), DoQ, DoH, mDNS/LLMNR/NBNS or DNS on odd ports, with
    evidence a reviewer can check in Wireshark.
    """


def _load_policy(path: str | None, trust_anchors: tuple[str, ...], at: str | None):
    from .rules.policy import PolicyError, load_policy

    try:
        policy = load_policy(path)
    except PolicyError as exc:
        _die(EXIT_USAGE, str(exc))
    updates = {}
    if trust_anchors:
        updates["trust_anchors"] = list(getattr(policy, "trust_anchors", []) or []) + [
            os.path.abspath(p) for p in trust_anchors]
    if at:
        updates["reference_time"] = at
    if updates:
        policy = policy.model_copy(update=updates)
    return policy


def judging_setup(policy_file, trust_anchors, at, rule_dirs, disable, no_rules, all_flows, lazy=False):
    """Policy (with --trust-anchor, --at, --disable applied), rules and analysis options, as
    ``audit`` and ``live`` take them; a bad policy or rule file exits 2 with one line.
    ``lazy``: the rules come as a pipeline.LazyJudge (the judge process makes the judge, off
    the packet loop); when every rule directory has a parsed-rule cache (the set is known to
    be valid), it also loads the rules."""
    # Everything made here lives as long as the audit (rules, modules they import): a cyclic
    # collection now would only walk it (20-30 ms of the start of an audit with rules).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _judging_setup(policy_file, trust_anchors, at, rule_dirs, disable, no_rules, all_flows, lazy)
    finally:
        if enabled:
            gc.enable()


def _judging_setup(policy_file, trust_anchors, at, rule_dirs, disable, no_rules, all_flows, lazy):
    from .pipeline import LazyJudge, options_from_policy
    from .rules.loader import RuleError, load_rules, rules_cached

    pol = _load_policy(policy_file, trust_anchors, at)
    if disable:
        pol = pol.model_copy(update={"disabled_rules": list(pol.disabled_rules) + list(disable)})
    rules = None
    if not no_rules:
        disabled = set(pol.disabled_rules)
        try:
            if lazy and rules_cached(rule_dirs, disabled):
                rules = LazyJudge(pol, rule_dirs, disabled)
            else:
                rules = load_rules(rule_dirs, disabled)
                if lazy:
                    rules = LazyJudge(pol, rules=rules)
        except RuleError as exc:
            _die(EXIT_USAGE, str(exc))
    try:
        options = options_from_policy(pol, all_flows=all_flows)
    except ValueError as exc:
        _die(EXIT_USAGE, f"--at: {exc}")
    return pol, rules, options


@main.command(epilog=FORMATS_HELP + "\n\n" + EXIT_HELP)
@click.argument("captures", nargs=-1, required=True, metavar="CAPTURE...")
@click.option("-o", "--output", type=click.Path(writable=True, allow_dash=True),
              help="Write the report to this file, or with several --format to this directory "
                   "(default: stdout).")
@click.option("-f", "--format", "fmts", type=_FORMAT_CHOICE, multiple=True,
              help="Report format, repeatable (default: text on a terminal, json otherwise or with -o).")
@_output_options
@click.option("--policy", type=click.Path(exists=True, dir_okay=False), help="Policy file (YAML).")
@click.option("--rules", "rule_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Extra rule directory (repeatable); adds to the built-in pack.")
@click.option("--disable", multiple=True, metavar="RULE", help="Disable a rule by name (repeatable).")
@click.option("--fail-on", type=click.Choice([f.value for f in FailOn]), default="high", show_default=True,
              help="Exit 1 when a finding has at least this severity.")
@click.option("--at", "at", metavar="capture|now|DATE",
              help="Judge certificate validity at this time (default: at capture time).")
@click.option("--trust-anchor", "trust_anchors", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="PEM file of extra trusted CA certificates (repeatable).")
@click.option("--all-flows", is_flag=True, help="List flows of class 'other' in the report too.")
@click.option("--no-rules", is_flag=True, help="Describe flows only; evaluate no rule.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on when stderr is a terminal).")
def audit(captures, output, fmts, policy, rule_dirs, disable, fail_on, at, trust_anchors, all_flows, no_rules,
          progress, redact, redact_key, ocsf_class):
    """Audit capture files (pcap, pcapng, optionally gzip-compressed; '-' reads stdin).

    Several captures give one report. Examples:

    \b
      dotaudit audit capture.pcapng -o report.json
      dotaudit audit a.pcap b.pcapng.gz -o report.json
      tcpdump -i eth0 -w - port 53 or port 853 | dotaudit audit - -o report.json
      dotaudit audit capture.pcap -f html -f md -f json -o out/   # out/report.html ...
    """
    from .capture.pcap import CaptureError
    from .pipeline import assemble, finalize_summary, finish_rules, keep_heap, run_files, stderr_is_tty
    from .rules.loader import RuleError
    from .sink import SinkError, judge_of

    keep_heap()   # this process (and its judge process) exits once the report is written
    if captures.count("-") > 1:
        _die(EXIT_USAGE, "stdin ('-') can be read only once")
    formats = _resolve_formats(fmts, output)
    _pol, judge, options = judging_setup(policy, trust_anchors, at, rule_dirs, disable, no_rules, all_flows,
                                         lazy=True)   # judge: a LazyJudge, or None with --no-rules
    if progress is None:
        progress = stderr_is_tty()
    try:
        infos, collector, table = run_files(list(captures), options, progress=progress, judge=judge)
    except CaptureError as exc:
        _die(EXIT_INPUT, str(exc))
    except SinkError as exc:
        _die(EXIT_INTERNAL, str(exc))
    except KeyboardInterrupt:
        _die(130, "interrupted")
    # What is alive now (the flow table's leftovers, the rules if loaded here) lives until the
    # report is written and the process exits: the collector's passes over it buy nothing.
    gc.freeze()
    report = assemble(infos, collector, table)
    rules = None
    if judge is not None:
        try:
            # the judge process judged the capture too: the rules are loaded here only when
            # there was none (one CPU), or for junit (a test case per rule)
            if not collector.capture_judged or "junit" in formats:
                judge = judge_of(judge)
                rules = judge.evaluator.rules
        except RuleError as exc:
            _die(EXIT_USAGE, str(exc))
        if progress:
            from rich.console import Console
            with Console(stderr=True).status(f"correlating {len(report['flows'])} flows across the capture"):
                finish_rules(report, judge, collector.flow_findings, collector.capture_judged)
        else:
            finish_rules(report, judge, collector.flow_findings, collector.capture_judged)
    finalize_summary(report)
    _write_outputs(report, formats, output, rules=rules, fail_on=fail_on, ocsf_class=ocsf_class, redact=redact,
                   redact_key=redact_key)
    for info in report["inputs"]:
        for err in info["errors"]:
            click.echo(f"dotaudit: warning: {info['path']}: {err['message']} (x{err['count']})", err=True)
    sys.exit(exit_code(report, fail_on))


def exit_code(report: dict, fail_on: str) -> int:
    if fail_on == "never":
        return EXIT_OK
    floor = SEVERITY_ORDER[fail_on]
    from .findings import severities
    return EXIT_FINDINGS if any(SEVERITY_ORDER.get(sev, 0) >= floor for sev in severities(report["findings"])) \
        else EXIT_OK


def _write(report: dict, fmt: str, output: str | None, **opts) -> None:
    from . import report as formatters

    def emit(fh) -> None:
        formatters.write(report, fmt, fh, **opts)

    if output and output != "-":
        tmp = output + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                emit(fh)
            os.replace(tmp, output)
        except OSError as exc:
            _die(EXIT_USAGE, f"cannot write {output}: {exc.strerror or exc}")
    else:
        try:
            emit(sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@main.command()
def schema() -> None:
    """Print the JSON Schema of the report."""
    from .report.schema import schema_text
    click.echo(schema_text(), nl=False)


@main.command(epilog=FORMATS_HELP + "\n\n" + EXIT_HELP)
@click.argument("report_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-f", "--format", "fmts", type=_FORMAT_CHOICE, multiple=True,
              help="Output format, repeatable (default: text).")
@click.option("-o", "--output", type=click.Path(writable=True, allow_dash=True),
              help="Output file, or directory with several --format (default: stdout).")
@click.option("--fail-on", type=click.Choice([f.value for f in FailOn]), default="never", show_default=True,
              help="Exit 1 when a finding has at least this severity (junit fails test cases at this "
                   "severity, at high when never).")
@_output_options
def report(report_file, fmts, output, fail_on, redact, redact_key, ocsf_class):
    """Re-render a saved JSON report without the packets.

    \b
      dotaudit report report.json -f html -o report.html
      dotaudit report report.json -f md -f junit -o out/ --redact
    """
    try:
        with (sys.stdin if report_file == "-" else open(report_file, encoding="utf-8")) as fh:
            data = json.load(fh)
    except OSError as exc:
        _die(EXIT_INPUT, f"{report_file}: cannot read: {exc.strerror or exc}")
    except json.JSONDecodeError as exc:
        _die(EXIT_INPUT, f"{report_file}: not a JSON report: {exc.msg} at line {exc.lineno}")
    if not isinstance(data, dict) or "schema_version" not in data:
        _die(EXIT_INPUT, f"{report_file}: not a dotaudit JSON report (no schema_version)")
    formats = list(dict.fromkeys(fmts)) or ["text"]
    if len(formats) > 1 and (not output or output == "-"):
        _die(EXIT_USAGE, "several --format values need -o DIRECTORY")
    rules = _rules_for_report(data) if "junit" in formats else None
    _write_outputs(data, formats, output, rules=rules, fail_on=fail_on, ocsf_class=ocsf_class, redact=redact,
                   redact_key=redact_key)
    sys.exit(exit_code(data, fail_on))


def _rules_for_report(data: dict):
    """The built-in pack minus the report's disabled rules (junit lists every rule), or None."""
    from .rules.loader import RuleError, load_rules

    disabled = (data.get("policy") or {}).get("disabled_rules") or ()
    try:
        known = {r.name for r in load_rules()}
        return load_rules(disabled=[d for d in disabled if d in known])
    except RuleError:
        return None


from .live_cli import live_command  # noqa: E402
from .merge import merge_command  # noqa: E402
from .rules.cli import rules_group  # noqa: E402

main.add_command(rules_group)
main.add_command(merge_command)
main.add_command(live_command)


if __name__ == "__main__":  # pragma: no cover
    main()
