"""Command line: ``dotaudit audit|schema|report|rules``.

Exit codes (also in ``--help`` and the README):
  0  no finding at or above --fail-on
  1  findings at or above --fail-on
  2  usage error (bad option, bad policy or rule file)
  3  unreadable input (not a capture, cannot be opened)
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum

import click

from . import __version__

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INPUT = 3

SEVERITY_ORDER = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


class OutputFormat(str, Enum):
    JSON = "json"
    TEXT = "text"


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
  3  unreadable input (not a capture, cannot be opened)"""


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
    try:
        from .rules.policy import PolicyError, load_policy
    except ImportError:
        return None
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
        try:
            policy = policy.model_copy(update=updates)
        except AttributeError:
            for k, v in updates.items():
                setattr(policy, k, v)
    return policy


@main.command(epilog=EXIT_HELP)
@click.argument("captures", nargs=-1, required=True, metavar="CAPTURE...")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, allow_dash=True),
              help="Write the report here (default: stdout).")
@click.option("-f", "--format", "fmt", type=click.Choice([f.value for f in OutputFormat]), default=None,
              help="Report format (default: text on a terminal, json otherwise or with -o).")
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
def audit(captures, output, fmt, policy, rule_dirs, disable, fail_on, at, trust_anchors, all_flows, no_rules,
          progress):
    """Audit capture files (pcap, pcapng, optionally gzip-compressed; '-' reads stdin).

    Several captures give one report. Examples:

    \b
      dotaudit audit capture.pcapng -o report.json
      dotaudit audit a.pcap b.pcapng.gz -o report.json
      tcpdump -i eth0 -w - port 53 or port 853 | dotaudit audit - -o report.json
    """
    from .capture.pcap import CaptureError
    from .pipeline import apply_rules, assemble, finalize_summary, options_from_policy, run_files, stderr_is_tty

    if captures.count("-") > 1:
        _die(EXIT_USAGE, "stdin ('-') can be read only once")
    pol = _load_policy(policy, trust_anchors, at)
    if pol is not None and disable:
        try:
            pol = pol.model_copy(update={"disabled_rules": list(pol.disabled_rules) + list(disable)})
        except AttributeError:
            pass
    rules = None
    if not no_rules:
        try:
            from .rules.loader import RuleError, load_rules
        except ImportError:
            rules = None
        else:
            try:
                disabled = set(disable) | set(getattr(pol, "disabled_rules", ()) or ())
                rules = load_rules(rule_dirs, disabled)
            except RuleError as exc:
                _die(EXIT_USAGE, str(exc))
    try:
        options = options_from_policy(pol, all_flows=all_flows)
    except ValueError as exc:
        _die(EXIT_USAGE, f"--at: {exc}")
    if progress is None:
        progress = stderr_is_tty()
    try:
        infos, collector, table = run_files(list(captures), options, progress=progress)
    except CaptureError as exc:
        _die(EXIT_INPUT, str(exc))
    except KeyboardInterrupt:
        _die(130, "interrupted")
    report = assemble(infos, collector, table)
    if not no_rules:
        apply_rules(report, policy=pol, rules=rules)
    finalize_summary(report)
    if fmt is None:
        fmt = "json" if (output and output != "-") or not sys.stdout.isatty() else "text"
    _write(report, fmt, output)
    for info in report["inputs"]:
        for err in info["errors"]:
            click.echo(f"dotaudit: warning: {info['path']}: {err['message']} (x{err['count']})", err=True)
    sys.exit(exit_code(report, fail_on))


def exit_code(report: dict, fail_on: str) -> int:
    if fail_on == "never":
        return EXIT_OK
    floor = SEVERITY_ORDER[fail_on]
    return EXIT_FINDINGS if any(SEVERITY_ORDER.get(f["severity"], 0) >= floor for f in report["findings"]) \
        else EXIT_OK


def _write(report: dict, fmt: str, output: str | None) -> None:
    from .report import json as json_report
    from .report import text as text_report

    def emit(fh) -> None:
        if fmt == "json":
            json_report.write(report, fh)
        else:
            fh.write(text_report.render(report))

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


@main.command(epilog=EXIT_HELP)
@click.argument("report_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-f", "--format", "fmt", type=click.Choice([f.value for f in OutputFormat]), default="text",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--fail-on", type=click.Choice([f.value for f in FailOn]), default="never", show_default=True)
def report(report_file, fmt, output, fail_on):
    """Re-render a saved JSON report without the packets."""
    try:
        with (sys.stdin if report_file == "-" else open(report_file, encoding="utf-8")) as fh:
            data = json.load(fh)
    except OSError as exc:
        _die(EXIT_INPUT, f"{report_file}: cannot read: {exc.strerror or exc}")
    except json.JSONDecodeError as exc:
        _die(EXIT_INPUT, f"{report_file}: not a JSON report: {exc.msg} at line {exc.lineno}")
    if not isinstance(data, dict) or "schema_version" not in data:
        _die(EXIT_INPUT, f"{report_file}: not a dotaudit JSON report (no schema_version)")
    _write(data, fmt, output)
    sys.exit(exit_code(data, fail_on))


try:  # the rule engine's own commands
    from .rules.cli import rules_group
except ImportError:  # pragma: no cover - only while the engine is being built
    rules_group = None
if rules_group is not None:
    main.add_command(rules_group)


if __name__ == "__main__":  # pragma: no cover
    main()
