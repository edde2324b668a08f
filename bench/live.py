"""Benchmark ``dotaudit live``: replay a gen_mix capture over a veth with tcpreplay.

    python bench/live.py [--pcap PATH] [--steps-pcap PATH] [--pps 200000,100000,50000,25000]

For each run a fresh network namespace holds both ends of a veth pair (nothing touches the host's
interfaces): ``dotaudit live`` listens on one end with the default BPF filter, tcpreplay sends
the capture on the other (``--topspeed`` first, then ``--pps`` steps), SIGTERM stops it, and the
final report gives the packets seen and the kernel drops; the peak RSS is the live process's
``ru_maxrss``.  The sustained rate is the fastest step without kernel drops.

Needs root, ``ip netns`` and tcpreplay.  Make a capture with
``python ../shared/bench/gen_mix.py -n 1000000 --pcap /tmp/mix-1m.pcap``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from dotaudit.cli import main; sys.exit(main())"]


def run(pcap: str, tcpreplay_rate: list[str], *, limit: int | None = None, engine: str = "libpcap",
        buffer_mib: int = 32) -> dict:
    ns = f"dalb-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    tmp = tempfile.mkdtemp(prefix="dotaudit-bench-")
    out = os.path.join(tmp, "live.json")
    try:
        for a in (["link", "add", "va", "type", "veth", "peer", "name", "vb"],
                  ["link", "set", "va", "mtu", "9000"], ["link", "set", "vb", "mtu", "9000"],
                  ["link", "set", "va", "up"], ["link", "set", "vb", "up"]):
            subprocess.run(["ip", "-n", ns, *a], check=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *CLI, "live", "-i", "vb", "-o", out, "--interval",
                                 "3600", "--engine", engine, "--buffer-size", str(buffer_mib)],
                                stderr=subprocess.PIPE, text=True, cwd=ROOT)
        line = proc.stderr.readline()
        assert "capturing on" in line, line + proc.stderr.read()
        cmd = ["ip", "netns", "exec", ns, "tcpreplay", "-q", "-i", "va", *tcpreplay_rate]
        if limit:
            cmd += ["--limit", str(limit)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd + [pcap], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        sent = None
        for ln in r.stdout.splitlines():
            if "Actual:" in ln:
                sent = ln.strip()
        time.sleep(1.0)
        t1 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        _o, err = proc.communicate(timeout=600)
        stop = time.perf_counter() - t1
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with open(out) as fh:
            rep = json.load(fh)
        cap = rep["stats"]["capture"]
        return {"rate": " ".join(tcpreplay_rate), "tcpreplay": sent, "replay_s": round(wall, 2),
                "stop_s": round(stop, 2), "matched": rep["inputs"][0]["packets"], "received": cap["received"],
                "kernel_drops": cap["kernel_drops"], "if_drops": cap["if_drops"],
                "flows": len(rep["flows"]), "findings": len(rep["findings"]),
                "peak_rss_mib": round(rss / 1024, 1) if rss > before else None, "engine": engine,
                "sent_pps": round((limit or 0) / wall) if limit else None}
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pcap", default="/tmp/bench/mix-1m.pcap")
    ap.add_argument("--steps-pcap", default="/tmp/bench/mix-100k.pcap", help="capture for the --pps steps")
    ap.add_argument("--pps", default="400000,200000,100000,50000", help="tcpreplay --pps steps (wire packets/s)")
    ap.add_argument("--engine", default="libpcap", choices=["libpcap", "tshark"])
    ap.add_argument("--skip-topspeed", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/live.py: needs root (network namespaces)")
    print(f"cores: {os.cpu_count()}  load: {os.getloadavg()}", flush=True)
    results = []
    if not args.skip_topspeed:
        res = run(args.pcap, ["--topspeed"], engine=args.engine)
        print(json.dumps(res), flush=True)
        results.append(res)
    n = int(subprocess.run(["capinfos", "-c", "-M", "-T", args.steps_pcap], capture_output=True, text=True)
            .stdout.strip().splitlines()[-1].split("\t")[-1])
    for pps in [int(x) for x in args.pps.split(",") if x]:
        res = run(args.steps_pcap, ["--pps", str(pps)], limit=n, engine=args.engine)
        print(json.dumps(res), flush=True)
        results.append(res)
    clean = [r for r in results if r["kernel_drops"] == 0 and r["rate"] != "--topspeed"]
    if clean:
        best = max(clean, key=lambda r: r["sent_pps"] or 0)
        print(f"sustained without kernel drops: {best['rate']} (~{best['sent_pps']} wire packets/s, "
              f"{best['matched']} matched by the filter)")
    print(f"peak RSS: {max((r['peak_rss_mib'] or 0) for r in results)} MiB")


if __name__ == "__main__":
    main()
