"""``dotaudit live`` on a veth pair inside a network namespace, fed by tcpreplay.

Each test creates its own namespace with both ends of a veth pair in it (nothing touches the
host's interfaces), replays a capture from pcaps/ on one end while ``dotaudit live`` listens on
the other, stops it with SIGTERM and compares its report with ``dotaudit audit`` of the same
capture: the same flows by class and the same findings (rule ids).  Certificates are judged at
the capture's own first timestamp in both runs (``--at``), because a live capture is stamped now.

Needs root, ``ip netns`` and tcpreplay; skipped with the reason otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dotaudit.capture.pcap import open_capture, read_packets

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
CA = ROOT / "pcaps" / "lab" / "ca.pem"
CLI = [sys.executable, "-c", "import sys; from dotaudit.cli import main; sys.exit(main())"]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, CAP_NET_RAW)"
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    name = f"dalv-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode:
        return f"ip netns does not work here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


_SKIP = _why_not()
if _SKIP:
    pytestmark = [pytest.mark.live, pytest.mark.skip(reason=_SKIP)]


@pytest.fixture
def netns():
    """(namespace, sender, listener): a veth pair, both ends up, inside a fresh namespace."""
    ns = f"dalv-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def ip(*a):
            subprocess.run(["ip", "-n", ns, *a], check=True)
        ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
        for dev in ("va", "vb"):
            ip("link", "set", dev, "mtu", "9000")   # lab captures hold frames above 1500 bytes
            ip("link", "set", dev, "up")
        yield ns, "va", "vb"
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _in_ns(ns: str, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def _first_ts(path: Path) -> float:
    stream, _h, info = open_capture(str(path))
    for ts, *_ in read_packets(stream, info):
        return ts
    raise AssertionError("empty capture")


def _to_ethernet(src: Path, dst: Path) -> Path:
    """Rewrite a Linux cooked (SLL2) capture as Ethernet frames, which a veth can carry."""
    stream, _h, info = open_capture(str(src))
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for ts, lt, data, _wl in read_packets(stream, info):
        if lt == 276:      # SLL2: protocol(2) reserved(2) ifindex(4) arphrd(2) pkttype(1) halen(1) addr(8)
            proto, payload = data[0:2], data[20:]
        elif lt == 113:    # SLL: pkttype(2) arphrd(2) halen(2) addr(8) protocol(2)
            proto, payload = data[14:16], data[16:]
        else:
            raise AssertionError(f"unexpected link type {lt}")
        frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + proto + payload
        sec = int(ts)
        out.append(struct.pack("<IIII", sec, int(round((ts - sec) * 1e6)), len(frame), len(frame)) + frame)
    dst.write_bytes(b"".join(out))
    return dst


def _vlan_dns(dst: Path) -> Path:
    """A DNS query and answer on VLAN 100 (the default filter's vlan clause)."""
    from scapy.all import DNS, DNSQR, DNSRR, IP, UDP, Dot1Q, Ether, wrpcap
    t = 1_700_000_000.0
    q = Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02") / Dot1Q(vlan=100) / IP(
        src="10.99.0.2", dst="10.99.0.53") / UDP(sport=40123, dport=53) / DNS(id=7, rd=1, qd=DNSQR(qname="example.com"))
    r = Ether(src="02:00:00:00:01:02", dst="02:00:00:00:01:01") / Dot1Q(vlan=100) / IP(
        src="10.99.0.53", dst="10.99.0.2") / UDP(sport=53, dport=40123) / DNS(
        id=7, qr=1, rd=1, ra=1, qd=DNSQR(qname="example.com"), an=DNSRR(rrname="example.com", rdata="192.0.2.1"))
    q.time, r.time = t, t + 0.01
    wrpcap(str(dst), [q, r])
    return dst


def _summary(report: dict):
    flows = sorted((f["class"], f["transport"], f["server"]["ip"], f["server"]["port"], tuple(f.get("vlan") or ()))
                   for f in report["flows"])
    return flows, sorted(f["rule_id"] for f in report["findings"])


def _offline(pcap: Path, at: str) -> dict:
    r = subprocess.run(CLI + ["audit", str(pcap), "-f", "json", "--fail-on", "never", "--trust-anchor", str(CA),
                              "--at", at], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _start_live(ns: str, iface: str, out: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(_in_ns(ns, CLI + ["live", "-i", iface, "-o", str(out), "--interval", "1", *extra]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stderr.readline()  # "dotaudit: capturing on ..." once the handle is active
    assert "capturing on" in line, line + proc.stderr.read()
    return proc


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err
    return err


CAPTURES = ["gateway/mixed.pcap", "dot/tls12-static-rsa-cbc.pcap", "leak/plaintext-remote-and-local-stub.pcap",
            "vlan"]


@pytest.mark.parametrize("name", CAPTURES)
def test_live_replay_matches_offline_audit(name, netns, tmp_path):
    ns, tx, rx = netns
    if name == "vlan":
        pcap = _vlan_dns(tmp_path / "vlan.pcap")
    else:
        pcap = ROOT / "pcaps" / name
        stream, _h, info = open_capture(str(pcap))
        if next(read_packets(stream, info))[1] != 1:
            original = pcap
            pcap = _to_ethernet(pcap, tmp_path / "ether.pcap")
            at0 = dt.datetime.fromtimestamp(_first_ts(pcap), dt.timezone.utc).isoformat()
            assert _summary(_offline(original, at0)) == _summary(_offline(pcap, at0))  # the rewrite changes nothing
    at = dt.datetime.fromtimestamp(_first_ts(pcap), dt.timezone.utc).isoformat()
    out = tmp_path / "live.json"
    proc = _start_live(ns, rx, out, "--trust-anchor", str(CA), "--at", at)
    try:
        r = subprocess.run(_in_ns(ns, ["tcpreplay", "-q", "-i", tx, str(pcap)]), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        time.sleep(0.8)  # the kernel hands a partly filled block over after the 200 ms read timeout
    finally:
        err = _stop(proc)
    live = json.loads(out.read_text())
    offline = _offline(pcap, at)
    assert _summary(live) == _summary(offline), err
    assert live["summary"]["flows_by_class"] == offline["summary"]["flows_by_class"]
    assert live["inputs"][0]["format"] == "live" and live["stats"]["capture"]["kernel_drops"] == 0
    assert live["live"]["final"] is True and "final report" in err
    if name == "vlan":
        assert _summary(live)[0] == [("do53", "udp", "10.99.0.53", 53, (100,))]


def test_sighup_writes_the_period_and_starts_a_new_one(netns, tmp_path):
    ns, tx, rx = netns
    pcap = ROOT / "pcaps" / "gateway" / "mixed.pcap"
    out = tmp_path / "live.json"
    proc = _start_live(ns, rx, out, "--archive", "--interval", "60")
    try:
        subprocess.run(_in_ns(ns, ["tcpreplay", "-q", "--topspeed", "-i", tx, str(pcap)]), capture_output=True,
                       check=True, timeout=60)
        time.sleep(0.8)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not [p for p in tmp_path.iterdir() if p.name.startswith("live.") and p.name != "live.json"]:
            assert time.monotonic() < deadline, "no archived period report after SIGHUP"
            time.sleep(0.1)
    finally:
        _stop(proc)
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("live.") and p.name != "live.json"]
    old = json.loads(archived[0].read_text())
    new = json.loads(out.read_text())
    assert old["live"]["period"] == 0 and new["live"]["period"] == 1
    assert old["inputs"][0]["packets"] == 48 and new["inputs"][0]["packets"] == 0


def test_no_privilege_is_one_line_and_exit_3(netns, tmp_path):
    ns, _tx, rx = netns
    if shutil.which("capsh") is None:
        pytest.skip("capsh (libcap2-bin) is not installed")
    cmd = " ".join(f"'{a}'" for a in CLI + ["live", "-i", rx, "-o", str(tmp_path / "r.json")])
    r = subprocess.run(_in_ns(ns, ["capsh", "--drop=cap_net_raw", "--", "-c", cmd]), capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dotaudit: error: no permission to capture on vb"), r.stderr
    assert not (tmp_path / "r.json").exists()


def test_missing_interface_in_namespace_is_exit_2(netns, tmp_path):
    ns, _tx, _rx = netns
    r = subprocess.run(_in_ns(ns, CLI + ["live", "-i", "eth0", "-o", str(tmp_path / "r.json")]),
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip() == "dotaudit: error: no such interface: eth0"
