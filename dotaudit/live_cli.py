"""``dotaudit live``: the click command (mounted on the main group in cli.py)."""

from __future__ import annotations

import os
import sys

import click

from .capture.live import DEFAULT_FILTER, SNAPLEN, LiveError

LIVE_EXIT_HELP = """\b
Exit codes:
  0  stopped by SIGINT/SIGTERM or --duration; the final report was written
  2  usage error: bad option, no such interface, bad BPF filter, unwritable -o
  3  cannot capture: no permission (needs root or CAP_NET_RAW), libpcap/tshark
     missing, or the capture failed while running (a final report is still written)"""


def _die(code: int, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
    click.echo(f"dotaudit: error: {message}", err=True)
    sys.exit(code)


@click.command("live", epilog=LIVE_EXIT_HELP,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-i", "--interface", "iface", required=True, metavar="IFACE", help="Interface to capture on.")
@click.option("-f", "--filter", "bpf", default=DEFAULT_FILTER, show_default=True, metavar="BPF",
              help="Kernel BPF capture filter (tcpdump syntax).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=60.0, show_default=True, metavar="SECONDS",
              help="Rewrite the report every SECONDS.")
@click.option("--duration", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
              help="Stop after SECONDS (default: run until SIGINT/SIGTERM).")
@click.option("--period", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
              help="Start a new report period every SECONDS (default: only on SIGHUP).")
@click.option("--archive", is_flag=True,
              help="Keep each finished period's final report as PATH-stem.<start>.ext next to -o.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Report file, rewritten atomically (default: the final report to stdout).")
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--policy", type=click.Path(exists=True, dir_okay=False), help="Policy file (YAML).")
@click.option("--rules", "rule_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Extra rule directory (repeatable).")
@click.option("--disable", multiple=True, metavar="RULE", help="Disable a rule by name (repeatable).")
@click.option("--no-rules", is_flag=True, help="Describe flows only; evaluate no rule.")
@click.option("--all-flows", is_flag=True, help="List flows of class 'other' in the report too.")
@click.option("--at", "at", metavar="capture|now|DATE", help="Judge certificate validity at this time.")
@click.option("--trust-anchor", "trust_anchors", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="PEM file of extra trusted CA certificates (repeatable).")
@click.option("--engine", type=click.Choice(["libpcap", "tshark"]), default="libpcap", show_default=True,
              help="Packet source; tshark is slow, for cross-checking.")
@click.option("--buffer-size", type=click.IntRange(min=1), default=32, show_default=True, metavar="MiB",
              help="Kernel capture buffer.")
@click.option("--snaplen", type=click.IntRange(min=96, max=262144), default=SNAPLEN, show_default=True)
@click.option("--no-promisc", is_flag=True, help="Do not put the interface in promiscuous mode.")
def live_command(iface, bpf, interval, duration, period, archive, output, fmt, policy, rule_dirs, disable, no_rules,
                 all_flows, at, trust_anchors, engine, buffer_size, snaplen, no_promisc):
    """Capture on an interface and audit continuously (a long-running service).

    Every --interval the report at -o is rewritten atomically with the flows that finished in
    the current period; SIGHUP starts a new period; SIGINT/SIGTERM write the final report and
    exit 0. Needs root or CAP_NET_RAW. Examples:

    \b
      dotaudit live -i eth1 -o /var/lib/dotaudit/report.json --interval 300
      dotaudit live -i eth1 --duration 60 --format text
    """
    from .capture.live import check_filter, open_source
    from .cli import judging_setup
    from .live import LiveService

    if output and output != "-":
        d = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(d) or not os.access(d, os.W_OK):
            _die(2, f"cannot write {output}: directory {d} is missing or not writable")
    try:
        check_filter(bpf, snaplen=snaplen)
    except LiveError as exc:
        _die(exc.code, str(exc))
    pol, rules, options = judging_setup(policy, trust_anchors, at, rule_dirs, disable, no_rules, all_flows)
    try:
        source = open_source(engine, iface, bpf, snaplen=snaplen, promisc=not no_promisc,
                             buffer_bytes=buffer_size << 20)
    except LiveError as exc:
        _die(exc.code, str(exc))
    except KeyboardInterrupt:
        _die(130, "interrupted")
    click.echo(f"dotaudit: capturing on {iface} ({source.engine}), filter: {bpf}", err=True)
    service = LiveService(source, options=options, policy=pol, rules=rules, evaluate_rules=not no_rules,
                          output=output, fmt=fmt, interval=interval, duration=duration, period=period,
                          archive=archive)
    try:
        code = service.run()
    except LiveError as exc:
        _die(exc.code, str(exc))
    except OSError as exc:
        _die(3, f"capture failed: {exc.strerror or exc}")
    sys.exit(code)


__all__ = ["live_command"]
