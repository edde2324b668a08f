#!/usr/bin/env python3
"""dotaudit against the tshark auditor, side by side in one run.

Builds gateway-style captures with the shared generator (../shared/bench/gen_mix.py, outside the
repository by default), then runs `dotaudit audit` and the tshark command of
../shared/bench/README.md alternately, several times each, and prints the median wall times,
their ratio and each command's peak RSS: of its largest process (wait4's rusage) and, since
dotaudit forks a judge process, summed over the process tree (RSS, and PSS which counts pages
shared copy-on-write once), sampled every 20 ms in one more run of dotaudit. The timed runs
are not sampled: reading /proc/PID/smaps_rollup walks a process's page tables under its mmap
lock (1-1.5 ms per process on a 90 MiB dotaudit), and 50 times a second that takes a tenth
of a CPU from the processes being timed, most when both of dotaudit's are busy.

    python bench/run.py                       # 100k and 1M packets, 3 runs each
    python bench/run.py --sizes 100000 --runs 5 --workdir /var/tmp/dotaudit-bench
    python bench/run.py --no-tshark            # dotaudit only (memory scaling check)
    python bench/run.py --rules-overhead       # also dotaudit --no-rules: what the rules add

Each row also gives the run times and the median CPU time (user + system, of dotaudit and its
judge process); with --rules-overhead, what the rules add in wall time and in CPU time. dotaudit
and dotaudit --no-rules then take turns at going first (ABBA) and write reports of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GEN = REPO.parent / "shared" / "bench" / "gen_mix.py"

TSHARK = ["tshark", "-r", "{pcap}", "-Y", "dns || tls.handshake.type || tls.alert_message", "-T", "fields",
          "-e", "frame.time_epoch", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.stream", "-e", "dns.id",
          "-e", "dns.flags.response", "-e", "dns.qry.name", "-e", "dns.qry.type", "-e", "dns.flags.rcode",
          "-e", "dns.time", "-e", "tls.handshake.type", "-e", "tls.handshake.extensions_server_name",
          "-e", "tls.handshake.extensions_alpn_str", "-e", "tls.handshake.extensions.supported_version",
          "-e", "tls.handshake.ciphersuite", "-e", "tls.alert_message.desc"]


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def _rss_pss(pid: int) -> tuple[int, int]:
    """Sum of RSS and of PSS (KiB) over the process and its descendants right now."""
    rss = pss = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


def timed(cmd: list[str], sample: bool = False) -> tuple[float, int, int, int, int, float]:
    """Run cmd with stdout discarded; return (wall seconds, peak RSS KiB of the largest process,
    exit code, peak summed RSS KiB and peak summed PSS KiB of the process tree: 0 unless
    ``sample``, CPU seconds (user + system) of the process and the children it waited for)."""
    peaks = [0, 0]
    stop = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not sample:
        _, status, usage = os.wait4(proc.pid, 0)
        return (time.perf_counter() - t0, usage.ru_maxrss, os.waitstatus_to_exitcode(status), 0, 0,
                usage.ru_utime + usage.ru_stime)

    def sample() -> None:   # dotaudit forks a judge process: sum the tree (PSS counts shared pages once)
        while not stop.is_set():
            rss, pss = _rss_pss(proc.pid)
            peaks[0], peaks[1] = max(peaks[0], rss), max(peaks[1], pss)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss, proc.returncode, peaks[0], peaks[1], usage.ru_utime + usage.ru_stime


def ensure_capture(gen: Path, workdir: Path, n: int, fmt: str) -> Path:
    path = workdir / f"mix-{n}.{fmt}"
    if not path.exists():
        flag = "--pcapng" if fmt == "pcapng" else "--pcap"
        print(f"generating {path} ({n} packets) ...", file=sys.stderr)
        subprocess.run([sys.executable, str(gen), "-n", str(n), flag, str(path)], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="packet counts, comma-separated")
    ap.add_argument("--runs", type=int, default=3,
                    help="runs of each command (alternating; with --rules-overhead the two dotaudit "
                         "commands take turns at going first)")
    ap.add_argument("--format", default="pcap", choices=["pcap", "pcapng"])
    ap.add_argument("--gen", type=Path, default=DEFAULT_GEN, help="path of gen_mix.py")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dotaudit-bench")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--rules-overhead", action="store_true",
                    help="also run dotaudit --no-rules (alternating, ABBA) and report what the rules add")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    dotaudit = shutil.which("dotaudit")
    if not dotaudit:
        print("dotaudit is not installed (pip install .)", file=sys.stderr)
        return 2
    if not args.no_tshark and not shutil.which("tshark"):
        print("tshark is not installed (apt-get install tshark), or use --no-tshark", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        pcap = ensure_capture(args.gen, args.workdir, n, args.format)
        def audit(name: str, *extra: str) -> list[str]:
            return [dotaudit, "audit", str(pcap), "-o", str(args.workdir / name), "--no-progress", "--fail-on",
                    "never", *extra]

        ours = audit(f"report-{n}.json")
        # its own report file: each run replaces (and the kernel frees) a report of its own size
        no_rules = audit(f"report-{n}-no-rules.json", "--no-rules")
        theirs = [a.replace("{pcap}", str(pcap)) for a in TSHARK]
        d_runs, t_runs, n_runs = [], [], []
        for i in range(args.runs):
            # dotaudit and dotaudit --no-rules take turns at going first (ABBA): a drift of the
            # host's speed, and what the run before left in memory, weigh on both alike
            pair = [(d_runs, ours)] + ([(n_runs, no_rules)] if args.rules_overhead else [])
            for runs, cmd in (pair if i % 2 == 0 else pair[::-1]):
                runs.append(timed(cmd))
            if not args.no_tshark:
                t_runs.append(timed(theirs))
        sampled = timed(ours, sample=True)
        for label, runs in (("dotaudit", d_runs + [sampled]), ("dotaudit --no-rules", n_runs), ("tshark", t_runs)):
            bad = [r[2] for r in runs if r[2] != 0]   # --fail-on never: anything but 0 is a failure
            if bad:
                print(f"{label} failed with exit code {bad[0]}; rerun it by hand to see why", file=sys.stderr)
                return 1
        row = {
            "packets": n,
            "format": args.format,
            "dotaudit_median_s": round(statistics.median(r[0] for r in d_runs), 3),
            "dotaudit_peak_rss_mib": round(max(r[1] for r in d_runs + [sampled]) / 1024, 1),
            "dotaudit_tree_peak_rss_mib": round(sampled[3] / 1024, 1),
            "dotaudit_tree_peak_pss_mib": round(sampled[4] / 1024, 1),
            "dotaudit_packets_per_s": round(n / statistics.median(r[0] for r in d_runs)),
            "dotaudit_runs_s": [round(r[0], 3) for r in d_runs],
            "dotaudit_cpu_median_s": round(statistics.median(r[5] for r in d_runs), 3),
        }
        if t_runs:
            row["tshark_median_s"] = round(statistics.median(r[0] for r in t_runs), 3)
            row["tshark_peak_rss_mib"] = round(max(r[1] for r in t_runs) / 1024, 1)
            row["speedup_vs_tshark"] = round(row["tshark_median_s"] / row["dotaudit_median_s"], 2)
        if n_runs:
            row["dotaudit_no_rules_median_s"] = round(statistics.median(r[0] for r in n_runs), 3)
            row["dotaudit_no_rules_runs_s"] = [round(r[0], 3) for r in n_runs]
            row["dotaudit_no_rules_cpu_median_s"] = round(statistics.median(r[5] for r in n_runs), 3)
            row["rules_overhead_pct"] = round(100 * (row["dotaudit_median_s"] / row["dotaudit_no_rules_median_s"] - 1), 1)
            # the rules' work is mostly on the second CPU: what it costs in CPU time, which a
            # busy host does not hide the way it changes the wall-clock ratio
            row["rules_cpu_overhead_pct"] = round(
                100 * (row["dotaudit_cpu_median_s"] / row["dotaudit_no_rules_cpu_median_s"] - 1), 1)
        results.append(row)
        print(json.dumps(row), flush=True)
    if len(results) > 1:
        base = results[0]["dotaudit_peak_rss_mib"]
        for r in results[1:]:
            print(f"peak RSS {r['packets']} vs {results[0]['packets']} packets: "
                  f"{r['dotaudit_peak_rss_mib'] / base:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
