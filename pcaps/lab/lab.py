#!/usr/bin/env python3
"""Regenerate every lab capture under pcaps/ and its <case>.truth.json. Run via make.sh (root).

    sudo pcaps/lab/make.sh               # all scenarios
    sudo pcaps/lab/make.sh dot/tls10     # only some (area/case)
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netlab  # noqa: E402
import truth  # noqa: E402
from netlab import CLI, GW, RES, Lab, nsx  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LABDIR = REPO / "pcaps" / "lab"
STATE = Path(os.environ.get("DALAB_STATE") or Path.home() / ".local/state/dotaudit-lab")
SCENARIOS: dict[str, tuple] = {}
NAMES = ["www.lab.test", "mail.lab.test", "ftp.lab.test", "api.lab.test", "db.lab.test"]


def scenario(case: str, description: str, ns: str = CLI, iface: str = "dalab-c0"):
    def deco(fn):
        SCENARIOS[case] = (fn, description, ns, iface)
        return fn
    return deco


class Run:
    """One scenario: runs the commands, keeps their symbolic form for the truth file."""

    def __init__(self, lab: Lab, case: str):
        self.lab, self.case = lab, case
        self.keylog = lab.work / f"keys-{case.replace('/', '_')}.log"
        self.commands: list[str] = []
        self.server_proc = None
        self.env = dict(os.environ, SSLKEYLOGFILE=str(self.keylog))

    def sym(self, argv: list[str]) -> str:
        text = " ".join(argv).replace(str(self.keylog), "$KEYLOG")
        text = text.replace(str(self.lab.work / "pki"), "$PKI").replace(str(self.lab.work), "$WORK")
        return text.replace(str(LABDIR), "pcaps/lab")

    def run(self, argv: list[str], ns: str = CLI, ok=(0,), timeout: float = 20, stdin: bytes | None = None,
            record: bool = True) -> subprocess.CompletedProcess:
        if record:
            self.commands.append(f"[{ns}] " + self.sym(argv))
        proc = subprocess.run(nsx(ns, *argv), input=stdin, capture_output=True, timeout=timeout,
                              env=self.env)
        if ok is not None and proc.returncode not in ok:
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.decode()[-800:]}"
                               f"{proc.stdout.decode(errors='replace')[-800:]}")
        return proc

    def kdig(self, server: str, *opts: str, names=NAMES[:1], ns: str = CLI, ok=(0,), port: int | None = None):
        argv = ["kdig", f"@{server}"] + (["-p", str(port)] if port else []) + list(opts)
        for name in names:
            argv += [name, "A"]
        return self.run(argv, ns=ns, ok=ok, timeout=30)

    def strict(self) -> list[str]:
        return [f"+tls-ca={self.lab.work / 'ca.pem'}", "+tls-hostname=dns.lab.test"]

    def sclient(self, connect: str, *opts: str, names=NAMES[:1], pad: bool = True, ns: str = CLI,
                wait: float = 1.0):
        """openssl s_client fed with RFC 7858 framed queries on stdin, closed after `wait`."""
        frames = subprocess.run([sys.executable, str(LABDIR / "pyclient.py"), "--emit-frames",
                                 *([] if pad else ["--no-pad"]), *names], check=True,
                                capture_output=True).stdout
        argv = ["openssl", "s_client", "-connect", connect, "-nocommands", "-keylogfile",
                str(self.keylog), *opts]
        self.commands.append(f"[{ns}] " + self.sym(argv) + f"  < RFC 7858 frames: {' '.join(names)}"
                             + ("" if pad else " (no padding)"))
        proc = subprocess.Popen(nsx(ns, *argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=self.env)
        time.sleep(0.05)  # s_client sends stdin data once its handshake is done
        try:
            proc.stdin.write(frames)
            proc.stdin.flush()
            time.sleep(wait)
        except BrokenPipeError:
            pass
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        out = proc.stdout.read()
        proc.wait(timeout=15)
        return proc.returncode, out

    def pyclient(self, *args: str, ns: str = CLI, ok=(0,)):
        argv = ["python3", str(LABDIR / "pyclient.py"), "--keylog", str(self.keylog), *args]
        return self.run(argv, ns=ns, ok=ok)

    def server(self, *args: str, cert: str = "valid", addr: str = "10.53.0.10", port: int = 853):
        pem, key = self.lab.certs[cert]
        argv = ["python3", str(LABDIR / "dotserver.py"), "--addr", addr, "--port", str(port),
                "--cert", str(pem), "--key", str(key), "--keylog", str(self.keylog), *args]
        self.commands.append(f"[{RES}] " + self.sym(argv))
        self.server_proc = self.lab.spawn(nsx(RES, *argv), "dotserver.log")
        self.lab.wait_listen(RES, addr, port)

    def close(self):
        if self.server_proc is not None:
            self.lab.stop(self.server_proc)


def strict_meta(**kw) -> dict:
    return {"validation": "strict", "auth_name": "dns.lab.test", **kw}


# ------------------------------------------------------------------------ dot/
@scenario("dot/tls13-multi-query", "kdig (GnuTLS) validates the resolver certificate against the lab CA "
          "and sends three EDNS-padded queries over one TLS 1.3 connection to unbound (+keepopen), then closes.")
def _(r: Run):
    r.kdig("10.53.0.1", *r.strict(), "+padding", "+keepopen", names=NAMES[:3])
    return [strict_meta(queries=3)]


@scenario("dot/tls13-no-padding", "kdig sends three queries without the EDNS(0) padding option over one "
          "TLS 1.3 connection to unbound; query record sizes follow the name lengths.")
def _(r: Run):
    r.kdig("10.53.0.1", *r.strict(), "+nopadding", "+keepopen", names=NAMES[:3])
    return [strict_meta(queries=3)]


@scenario("dot/tls12-ecdhe-gcm", "openssl s_client limited to TLS 1.2 and ECDHE-RSA-AES128-GCM-SHA256, SNI "
          "dns.lab.test, validating against the lab CA, sends two padded queries to unbound.")
def _(r: Run):
    r.sclient("10.53.0.1:853", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", "-servername",
              "dns.lab.test", "-CAfile", str(r.lab.work / "ca.pem"), "-verify_return_error",
              "-verify_hostname", "dns.lab.test", names=NAMES[:2])
    return [strict_meta(queries=2)]


@scenario("dot/tls12-static-rsa-cbc", "openssl s_client limited to TLS 1.2 and AES128-SHA (static RSA key "
          "exchange, CBC) against unbound, which lists AES128-SHA in tls-ciphers; two padded queries.")
def _(r: Run):
    r.sclient("10.53.0.1:853", "-tls1_2", "-cipher", "AES128-SHA", "-servername", "dns.lab.test",
              "-CAfile", str(r.lab.work / "ca.pem"), "-verify_return_error", names=NAMES[:2])
    return [strict_meta(queries=2)]


for _ver, _flag in (("1.0", "-tls1"), ("1.1", "-tls1_1")):
    def _legacy(r: Run, ver=_ver, flag=_flag):
        r.server("--min", ver, "--max", ver, "--seclevel0")
        r.sclient("10.53.0.10:853", flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "dns.lab.test",
                  "-CAfile", str(r.lab.work / "ca.pem"), names=NAMES[:2])
        return [strict_meta(queries=2)]
    scenario(f"dot/tls1{_ver[-1]}", f"openssl s_client -{_flag[1:]} at security level 0 against a Python ssl "
             f"DoT server (dotserver.py) allowing only TLS {_ver}; valid lab certificate, two padded queries.")(_legacy)


@scenario("dot/tls13-one-query-per-connection", "Five separate kdig runs, one query each, to unbound over "
          "TLS 1.3: five TCP connections, five full handshakes (each kdig process starts without a session).")
def _(r: Run):
    for name in NAMES:
        r.kdig("10.53.0.1", *r.strict(), "+padding", names=[name])
    return [strict_meta(queries=1) for _ in NAMES]


def _resume(r: Run, version_flag: str, *extra: str):
    sess = r.lab.work / f"sess-{r.case.replace('/', '_')}.pem"
    common = [version_flag, *extra, "-servername", "dns.lab.test", "-CAfile", str(r.lab.work / "ca.pem")]
    r.sclient("10.53.0.10:853", *common, "-sess_out", str(sess), names=NAMES[:1])
    time.sleep(0.3)
    r.sclient("10.53.0.10:853", *common, "-sess_in", str(sess), names=NAMES[1:2])
    return [strict_meta(queries=1), strict_meta(queries=1)]


@scenario("dot/tls12-resumption-ticket", "Two openssl s_client connections (TLS 1.2) to the Python DoT server: "
          "the first gets a session ticket (-sess_out), the second resumes with it (-sess_in): abbreviated "
          "handshake without Certificate.")
def _(r: Run):
    r.server("--max", "1.2")
    return _resume(r, "-tls1_2")


@scenario("dot/tls12-resumption-session-id", "As tls12-resumption-ticket, but the server has tickets disabled "
          "(OP_NO_TICKET) and the client sends -no_ticket: the second connection resumes by session id.")
def _(r: Run):
    r.server("--max", "1.2", "--no-tickets")
    return _resume(r, "-tls1_2", "-no_ticket")


@scenario("dot/tls13-resumption-psk", "Two openssl s_client connections (TLS 1.3) to the Python DoT server; the "
          "second resumes with the NewSessionTicket of the first (pre_shared_key in the ServerHello).")
def _(r: Run):
    r.server()
    return _resume(r, "-tls1_3")


@scenario("dot/tls13-tfo", "net.ipv4.tcp_fastopen=3 in both namespaces; unbound (built with "
          "--enable-tfo-server) listens with TCP_FASTOPEN. The Python ssl client connects twice with "
          "TCP_FASTOPEN_CONNECT: the first SYN asks for a TFO cookie, the second SYN carries the cookie and "
          "the TLS 1.3 ClientHello. (kdig 3.2.6 +fastopen +tls aborts with a double free in this lab.)")
def _(r: Run):
    ca = str(r.lab.work / "ca.pem")
    r.pyclient("--server", "10.53.0.1", "--sni", "dns.lab.test", "--ca", ca, "--tfo", NAMES[0])
    time.sleep(0.3)
    r.pyclient("--server", "10.53.0.1", "--sni", "dns.lab.test", "--ca", ca, "--tfo", NAMES[1])
    return [strict_meta(queries=1), strict_meta(queries=1)]


@scenario("dot/ipv6", "kdig validates and queries unbound over DoT on IPv6 (fd53::2 -> [fd53::1]:853), TLS 1.3.")
def _(r: Run):
    r.kdig("fd53::1", *r.strict(), "+padding", "+keepopen", names=NAMES[:2])
    return [strict_meta(queries=2)]


@scenario("dot/no-sni", "kdig +tls to an IP address (opportunistic profile, no certificate validation, no "
          "+tls-hostname/+tls-sni): the ClientHello has no server_name extension; one padded query, TLS 1.3.")
def _(r: Run):
    r.kdig("10.53.0.1", "+tls", "+padding", names=NAMES[:1])
    return [{"validation": "opportunistic", "queries": 1}]


@scenario("dot/dig-tls", "BIND dig +tls with +tls-ca (lab CA) and +tls-hostname=dns.lab.test queries "
          "unbound over TLS 1.3. dig 9.18 sends no SNI even with +tls-hostname, and does not pad queries by "
          "default (+padding=0).")
def _(r: Run):
    r.run(["dig", "@10.53.0.1", "+tls", f"+tls-ca={r.lab.work / 'ca.pem'}", "+tls-hostname=dns.lab.test",
           "+tries=1", "www.lab.test", "A"])
    return [strict_meta(queries=1, padding=False,
                        notes="dig writes no TLS key log: the query count is what dig did; no padding is "
                              "confirmed by size: the client's query record is 72 bytes (55 bytes of "
                              "plaintext), while a 128-byte padded query would need at least 147.")]


# ----------------------------------------------------------------------- cert/
CERT_CASES = {
    "expired": "a certificate that expired 35 days before the capture",
    "self-signed": "a self-signed certificate for dns.lab.test",
    "wrong-name": "a lab-CA certificate for wrong.example.test (SNI is dns.lab.test)",
    "weak-key": "a lab-CA certificate with an RSA-1024 key",
    "sha1": "a lab-CA certificate signed with sha1WithRSAEncryption",
    "not-yet-valid": "a lab-CA certificate valid only from 30 days after the capture",
}
for _cert, _what in CERT_CASES.items():
    def _abort(r: Run, cert=_cert):
        r.server("--max", "1.2", "--seclevel0", cert=cert)
        rc, _out = r.sclient("10.53.0.10:853", "-tls1_2", "-cipher", "DEFAULT:@SECLEVEL=2", "-servername",
                             "dns.lab.test", "-CAfile", str(r.lab.work / "ca.pem"), "-verify_return_error",
                             "-verify_hostname", "dns.lab.test", names=NAMES[:1])
        return [strict_meta(queries=0, responses=0, failure="alert", established=False)]

    def _ignored(r: Run, cert=_cert):
        r.server("--max", "1.2", "--seclevel0", cert=cert)
        r.kdig("10.53.0.10", "+tls", "+tls-sni=dns.lab.test", "+padding", names=NAMES[:1])
        return [{"validation": "opportunistic", "auth_name": "dns.lab.test", "queries": 1}]
    if _cert != "not-yet-valid":
        scenario(f"cert/{_cert}-abort", f"The Python DoT server (TLS 1.2 max) presents {_what}. openssl s_client "
                 "(TLS 1.2, security level 2, -verify_return_error, lab CA, hostname dns.lab.test) rejects it "
                 "and sends a fatal alert before any query.")(_abort)
    scenario(f"cert/{_cert}-ignored", f"The Python DoT server (TLS 1.2 max) presents {_what}. kdig +tls "
             "(opportunistic profile, no validation) with SNI dns.lab.test completes the handshake and "
             "sends a padded query anyway.")(_ignored)


@scenario("cert/tls13-valid", "kdig validates a valid lab-CA certificate from unbound over TLS 1.3; the "
          "Certificate message is encrypted, so nothing about the certificate is observable.")
def _(r: Run):
    r.kdig("10.53.0.1", *r.strict(), "+padding", names=NAMES[:1])
    return [strict_meta(queries=1)]


# ------------------------------------------------------------------ handshake/
@scenario("handshake/version-mismatch-alert", "openssl s_client offers only TLS 1.3; the Python DoT server "
          "allows only TLS 1.2 and answers the ClientHello with a fatal protocol_version alert.")
def _(r: Run):
    r.server("--min", "1.2", "--max", "1.2")
    r.sclient("10.53.0.10:853", "-tls1_3", "-servername", "dns.lab.test", names=NAMES[:1])
    return [strict_meta(queries=0, responses=0, failure="alert", established=False)]


@scenario("handshake/cipher-mismatch-alert", "openssl s_client (TLS 1.2) offers only AES128-SHA; the Python DoT "
          "server accepts only ECDHE-RSA-AES256-GCM-SHA384 and sends a fatal handshake_failure alert.")
def _(r: Run):
    r.server("--max", "1.2", "--ciphers", "ECDHE-RSA-AES256-GCM-SHA384")
    r.sclient("10.53.0.10:853", "-tls1_2", "-cipher", "AES128-SHA", "-servername", "dns.lab.test",
              names=NAMES[:1])
    return [strict_meta(queries=0, responses=0, failure="alert", established=False)]


@scenario("handshake/port-closed-rst", "kdig +tls to 10.53.0.5, a resolver address with nothing listening on "
          "853: the SYN is answered with RST,ACK; kdig gives up (+retry=0).")
def _(r: Run):
    r.kdig("10.53.0.5", "+tls", "+retry=0", "+timeout=2", ok=None)
    return [{"queries": 0, "responses": 0, "failure": "reset", "established": False}]


@scenario("handshake/syn-unanswered", "kdig +tls to 10.53.0.6:853; the client has a permanent neighbour entry "
          "for 10.53.0.6 pointing to a MAC nobody owns, so the SYN goes out on the wire and is never "
          "answered: SYN and its retransmission, then kdig times out after 2 s.")
def _(r: Run):
    r.kdig("10.53.0.6", "+tls", "+retry=0", "+timeout=2", ok=None)
    return [{"queries": 0, "responses": 0, "failure": "timeout", "established": False}]


@scenario("handshake/not-tls-on-853", "kdig +tls connects to 10.53.0.10:853 where a plain TCP server answers "
          "the ClientHello with an HTTP/1.1 400 banner in cleartext and closes; kdig fails.")
def _(r: Run):
    r.server("--mode", "http")
    r.kdig("10.53.0.10", "+tls", "+tls-sni=dns.lab.test", "+retry=0", "+timeout=2", ok=None)
    return [{"queries": 0, "responses": 0, "failure": "not_tls", "established": False,
             "notes": "Client side is a genuine DoT ClientHello on 853 (class dot); the server bytes are "
                      "HTTP, not TLS, so dot-not-tls fires. An auditor may prefer class "
                      "tls-on-853-not-dns or other for the flow; the finding is what matters."}]


@scenario("handshake/server-silent-after-hello", "kdig +tls connects to 10.53.0.10:853; the server accepts "
          "TCP, reads the ClientHello and never answers; kdig times out after 2 s and closes (FIN).")
def _(r: Run):
    r.server("--mode", "silent")
    r.kdig("10.53.0.10", "+tls", "+tls-sni=dns.lab.test", "+retry=0", "+timeout=2", ok=None)
    return [{"queries": 0, "responses": 0, "failure": "timeout", "established": False}]


# ----------------------------------------------------------------------- leak/
@scenario("leak/fallback-after-dot-failure", "kdig +tls to 10.53.0.5:853 is refused (RST); one second later "
          "the same client asks the same resolver in cleartext over UDP/53 (dig).")
def _(r: Run):
    r.kdig("10.53.0.5", "+tls", "+retry=0", "+timeout=2", ok=None)
    time.sleep(1.0)
    r.run(["dig", "@10.53.0.5", "+tries=1", "www.lab.test", "A"])
    return [{"queries": 0, "responses": 0, "failure": "reset", "established": False}, {}]


@scenario("leak/plaintext-remote-and-local-stub", "Captured on all interfaces of the client namespace: dig "
          "asks the remote resolver 10.53.0.1 over UDP/53 (a leak), then asks the local unbound stub on "
          "127.0.0.53 (loopback, not a leak), which forwards over DoT (TLS 1.3, validated) to 10.53.0.1.",
          iface="any")
def _(r: Run):
    r.run(["dig", "@10.53.0.1", "+tries=1", "www.lab.test", "A"])
    time.sleep(0.3)
    r.run(["dig", "@127.0.0.53", "+tries=1", "mail.lab.test", "A"])
    time.sleep(0.5)
    return [{}, {}, strict_meta(queries=1, padding=True,
                                notes="unbound stub forwarding over DoT: no key log, DNS counts and "
                                      "padding are what the stub did (pad-queries: yes by default).")]


@scenario("leak/do53-tcp", "kdig +tcp +keepopen sends three plaintext queries over one TCP/53 connection "
          "to 10.53.0.1.")
def _(r: Run):
    r.kdig("10.53.0.1", "+tcp", "+keepopen", names=NAMES[:3])
    return [{}]


@scenario("leak/padding-in-cleartext", "dig +padding=128 sends a plaintext UDP/53 query carrying the EDNS(0) "
          "padding option to 10.53.0.1 (padding without encryption).")
def _(r: Run):
    r.run(["dig", "@10.53.0.1", "+tries=1", "+padding=128", "www.lab.test", "A"])
    return [{}]


# ----------------------------------------------------------------------- port/
@scenario("port/dot-nonstandard-port", "openssl s_client offering ALPN \"dot\" connects to unbound's "
          "tls-additional-port 8853 (TLS 1.3, validated) and sends one padded query.")
def _(r: Run):
    r.sclient("10.53.0.1:8853", "-alpn", "dot", "-servername", "dns.lab.test", "-CAfile",
              str(r.lab.work / "ca.pem"), "-verify_return_error", names=NAMES[:1])
    return [strict_meta(queries=1)]


@scenario("port/dns-nonstandard-port", "dig sends a plaintext query to unbound on UDP port 5300.")
def _(r: Run):
    r.run(["dig", "@10.53.0.1", "-p", "5300", "+tries=1", "www.lab.test", "A"])
    return [{"class": "dns-nonstandard-port",
             "notes": "Plaintext DNS to a non-local resolver on a non-standard port: dns-nonstandard-port "
                      "fires; dns-plaintext-query is written for class do53 and is not listed, although "
                      "the query is just as readable."}]


# -------------------------------------------------------------------- gateway/
@scenario("gateway/mixed", "Captured on the router namespace's upstream link (dalab-gw, 10.53.100.2): four "
          "client namespaces behind it. 10.53.101.2: kdig validated DoT TLS 1.3, two queries. 10.53.102.2: "
          "openssl s_client TLS 1.0 to the legacy Python DoT server 10.53.0.10. 10.53.103.2: dig plaintext "
          "UDP/53. 10.53.104.2: kdig +tls refused by RST at 10.53.0.5, then dig over UDP/53 to it.",
          ns=GW, iface="dalab-g0")
def _(r: Run):
    r.server("--min", "1.0", "--max", "1.0", "--seclevel0")
    h1, h2, h3, h4 = netlab.GW_CLIENTS
    r.kdig("10.53.0.1", *r.strict(), "+padding", "+keepopen", names=NAMES[:2], ns=h1)
    r.sclient("10.53.0.10:853", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "dns.lab.test",
              "-CAfile", str(r.lab.work / "ca.pem"), names=NAMES[2:3], ns=h2)
    r.run(["dig", "@10.53.0.1", "+tries=1", "db.lab.test", "A"], ns=h3)
    r.kdig("10.53.0.5", "+tls", "+retry=0", "+timeout=2", ok=None, ns=h4)
    time.sleep(1.0)
    r.run(["dig", "@10.53.0.5", "+tries=1", "www.lab.test", "A"], ns=h4)
    return [strict_meta(queries=2), strict_meta(queries=1), {},
            {"queries": 0, "responses": 0, "failure": "reset", "established": False}, {}]


# ------------------------------------------------------------------------ main
def tool_versions() -> dict:
    def first(argv, line=0):
        out = subprocess.run(argv, capture_output=True, text=True)
        return (out.stdout + out.stderr).strip().splitlines()[line]
    return {
        "unbound": first(["unbound", "-V"]).split()[-1],
        "kdig": first(["kdig", "--version"]).split()[-1],
        "dig": first(["dig", "-v"]).split()[1],
        "openssl": first(["openssl", "version"]).split()[1],
        "gnutls": first(["dpkg-query", "-W", "-f", "${Version}", "libgnutls30"]),
        "python": sys.version.split()[0],
        "python_openssl": ssl.OPENSSL_VERSION.split()[1],
        "tcpdump": first(["tcpdump", "--version"]).split()[-1],
        "tshark": first(["tshark", "--version"]).split()[2],
    }


def main(argv: list[str]) -> int:
    selected = argv or list(SCENARIOS)
    unknown = [c for c in selected if c not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios: {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="dalab."))
    lab = Lab(work, REPO, STATE)
    tools = tool_versions()
    failed = []
    try:
        lab.make_certs()
        lab.net_up()
        lab.start_unbound()
        for case in selected:
            fn, description, ns, iface = SCENARIOS[case]
            out = REPO / "pcaps" / f"{case}.pcap"
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = work / (case.replace("/", "_") + ".pcap")
            print(f"== {case}", flush=True)
            r = Run(lab, case)
            cap = None
            try:
                cap = lab.capture_start(ns, iface, tmp)
                metas = fn(r)
                lab.capture_stop(cap)
                cap = None
                info = {"scenario": case.split("/", 1)[1], "description": description,
                        "commands": r.commands, "tools": tools,
                        "capture": {"namespace": ns, "interface": iface, "filter": netlab.CAP_FILTER}}
                doc = truth.build(tmp, r.keylog, metas, info, work / "ca.pem")
            except Exception as exc:  # noqa: BLE001 - report and go on with the next scenario
                print(f"   FAILED: {exc}", flush=True)
                failed.append(case)
                continue
            finally:
                if cap is not None:
                    lab.capture_stop(cap)
                r.close()
            shutil.copy(tmp, out)
            os.chmod(out, 0o644)
            Path(str(out)[:-5] + ".truth.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            print(f"   {doc['packets']} packets, {len(doc['flows'])} flows, findings: "
                  f"{sorted({f['rule_id'] for f in doc['findings']})}", flush=True)
    finally:
        lab.stop_all()
        lab.net_down()
        if not os.environ.get("DALAB_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept work dir {work}")
    if failed:
        print(f"FAILED scenarios: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
