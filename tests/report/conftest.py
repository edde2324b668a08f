"""Fixtures of the report tests: ``--update-golden``, the hostile-name capture, headless Chromium.

``python -m pytest tests/report --update-golden`` rewrites the example reports in ``reports/``
(the goldens) instead of comparing them; review the diff before committing.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

HOSTILE_QNAME = "<script>alert(1)</script>.evil.test"
HOSTILE_SNI = "<img src=x onerror=alert(1)>"
HOSTILE_ALPN = "<script>"


@pytest.fixture(scope="session")
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden", default=False))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def build_hostile_pcap(path: Path) -> Path:
    """A plaintext DNS query for a <script> name and a DoT ClientHello with a hostile SNI and ALPN."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.tls.extensions import ProtocolName, ServerName, TLS_Ext_ALPN, TLS_Ext_ServerName, \
        TLS_Ext_SupportedVersion_CH
    from scapy.layers.tls.handshake import TLSClientHello
    from scapy.layers.tls.record import TLS
    from scapy.utils import wrpcap

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    qname = HOSTILE_QNAME.encode()
    query = eth / IP(src="10.66.0.2", dst="10.66.0.53") / UDP(sport=40001, dport=53) / DNS(
        id=0x1234, rd=1, qd=DNSQR(qname=qname, qtype="A"))
    answer = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / IP(src="10.66.0.53", dst="10.66.0.2") / \
        UDP(sport=53, dport=40001) / DNS(id=0x1234, qr=1, rd=1, ra=1, qd=DNSQR(qname=qname, qtype="A"),
                                       an=DNSRR(rrname=qname, type="A", rdata="192.0.2.1", ttl=60))
    c, s = "10.66.0.2", "10.66.0.10"
    hello = TLS(msg=[TLSClientHello(
        version=0x0303, ciphers=[0x1301, 0xC02F],
        ext=[TLS_Ext_ServerName(servernames=[ServerName(servername=HOSTILE_SNI.encode())]),
             TLS_Ext_ALPN(protocols=[ProtocolName(protocol=HOSTILE_ALPN.encode())]),
             TLS_Ext_SupportedVersion_CH(versions=[0x0304, 0x0303])])])
    payload = bytes(hello)
    syn = eth / IP(src=c, dst=s) / TCP(sport=40002, dport=853, flags="S", seq=1000)
    synack = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / IP(src=s, dst=c) / TCP(
        sport=853, dport=40002, flags="SA", seq=5000, ack=1001)
    ack = eth / IP(src=c, dst=s) / TCP(sport=40002, dport=853, flags="A", seq=1001, ack=5001)
    data = eth / IP(src=c, dst=s) / TCP(sport=40002, dport=853, flags="PA", seq=1001, ack=5001) / payload
    rst = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / IP(src=s, dst=c) / TCP(
        sport=853, dport=40002, flags="R", seq=5001, ack=1001 + len(payload))
    pkts = [query, answer, syn, synack, ack, data, rst]
    t0 = 1_700_000_000.0
    for n, p in enumerate(pkts):
        p.time = t0 + n * 0.01
    wrpcap(str(path), pkts)
    return path


@pytest.fixture(scope="session")
def hostile_pcap(tmp_path_factory) -> Path:
    return build_hostile_pcap(tmp_path_factory.mktemp("hostile") / "hostile.pcap")


@pytest.fixture(scope="session")
def browser_context():
    """A persistent headless Chromium context (Debian's /usr/bin/chromium through playwright)."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed (make apt-deps installs it: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    profile = tempfile.mkdtemp(prefix="dotaudit-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900}, offline=True)
        try:
            yield ctx
        finally:
            ctx.close()
    shutil.rmtree(profile, ignore_errors=True)
