"""Network namespaces, certificates, daemons and captures for the dotaudit capture lab.

Everything runs on loopback or inside network namespaces joined by veth pairs that this module
creates and deletes itself. No route leaves the lab: the namespaces have no default route
towards the host, and unbound answers from local data only.

Topology (all names prefixed dalab-):

    dalab-cli  dalab-c0 10.53.0.2/24 fd53::2/64 ---- dalab-r0 10.53.0.1 .5 .10 /24    dalab-res
               lo 127.0.0.53 (local stub)                 fd53::1 fd53::10 /64
                                                     dalab-r1 10.53.100.1/24
    dalab-h1..4 10.53.10N.2/24 -- dalab-gN 10.53.10N.1  dalab-gw  dalab-g0 10.53.100.2/24

    10.53.0.1   unbound: Do53 on 53 and 5300, DoT on 853 and 8853 (valid certificate)
    10.53.0.5   unbound Do53 only, nothing on 853 (RST)
    10.53.0.6   nobody: static neighbour entry to an unused MAC (SYN never answered)
    10.53.0.10  per-scenario Python TLS server (dotserver.py): legacy TLS, bad certificates...
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

RES, CLI, GW = "dalab-res", "dalab-cli", "dalab-gw"
GW_CLIENTS = ["dalab-h1", "dalab-h2", "dalab-h3", "dalab-h4"]
ALL_NS = [RES, CLI, GW, *GW_CLIENTS]
CAP_FILTER = "net 10.53.0.0/16 or net fd53::/16 or host 127.0.0.53"


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, text=True, capture_output=True, **kw)


def nsx(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


class Lab:
    def __init__(self, work: Path, repo: Path, state: Path):
        self.work, self.repo, self.state = work, repo, state
        self.procs: list[subprocess.Popen] = []
        self.certs: dict[str, tuple[Path, Path]] = {}

    # ----------------------------------------------------------------- network
    def net_up(self) -> None:
        self.net_down()
        for ns in ALL_NS:
            sh("ip", "netns", "add", ns)
            sh(*nsx(ns, "ip", "link", "set", "lo", "up"))
            for key, val in [("net.ipv4.tcp_fastopen", "3"), ("net.ipv4.conf.all.rp_filter", "0"),
                             ("net.ipv4.conf.default.rp_filter", "0"),
                             ("net.ipv6.conf.all.accept_dad", "0"),
                             ("net.ipv6.conf.default.accept_dad", "0")]:
                sh(*nsx(ns, "sysctl", "-qw", f"{key}={val}"))
        self._veth("dalab-c0", CLI, "dalab-r0", RES)
        self._addr(CLI, "dalab-c0", "10.53.0.2/24", "fd53::2/64")
        self._addr(RES, "dalab-r0", "10.53.0.1/24", "10.53.0.5/24", "10.53.0.10/24", "fd53::1/64", "fd53::10/64")
        sh(*nsx(CLI, "ip", "addr", "add", "127.0.0.53/8", "dev", "lo"))
        # gateway: router namespace between four clients and the resolver namespace
        self._veth("dalab-g0", GW, "dalab-r1", RES)
        self._addr(GW, "dalab-g0", "10.53.100.2/24")
        self._addr(RES, "dalab-r1", "10.53.100.1/24")
        sh(*nsx(GW, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        sh(*nsx(GW, "ip", "route", "add", "10.53.0.0/24", "via", "10.53.100.1"))
        for n, ns in enumerate(GW_CLIENTS, start=1):
            self._veth(f"dalab-h{n}", ns, f"dalab-g{n}", GW)
            self._addr(ns, f"dalab-h{n}", f"10.53.10{n}.2/24")
            self._addr(GW, f"dalab-g{n}", f"10.53.10{n}.1/24")
            sh(*nsx(ns, "ip", "route", "add", "10.53.0.0/16", "via", f"10.53.10{n}.1"))
            sh(*nsx(RES, "ip", "route", "add", f"10.53.10{n}.0/24", "via", "10.53.100.2"))
        # 10.53.0.6 is a black hole: a permanent neighbour entry with a MAC nobody owns, so the
        # SYN leaves the client on the wire and the resolver side drops it (PACKET_OTHERHOST)
        sh(*nsx(CLI, "ip", "neigh", "add", "10.53.0.6", "lladdr", "02:00:00:00:05:06", "dev",
                "dalab-c0", "nud", "permanent"))

    def _veth(self, a: str, ns_a: str, b: str, ns_b: str) -> None:
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", ns_a)
        sh("ip", "link", "set", b, "netns", ns_b)
        # no offloads: the capture then shows the segments as they are on the wire
        for ns, dev in ((ns_a, a), (ns_b, b)):
            if shutil.which("ethtool"):
                sh(*nsx(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"),
                   check=False)
            sh(*nsx(ns, "ip", "link", "set", dev, "up"))

    def _addr(self, ns: str, dev: str, *addrs: str) -> None:
        for addr in addrs:
            extra = ["nodad"] if ":" in addr else []
            sh(*nsx(ns, "ip", "addr", "add", addr, "dev", dev, *extra))

    def net_down(self) -> None:
        for ns in ALL_NS:
            sh("ip", "netns", "del", ns, check=False)

    # ------------------------------------------------------------ processes
    def spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        out = open(self.work / log, "ab")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)

    def wait_listen(self, ns: str, addr: str, port: int, proto: str = "t", timeout: float = 10) -> None:
        needle = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = sh(*nsx(ns, "ss", f"-{proto}ln"), check=False).stdout
            if needle in out:
                return
            time.sleep(0.1)
        raise RuntimeError(f"nothing listening on {needle} in {ns}")

    # ---------------------------------------------------------- certificates
    def make_certs(self) -> None:
        """Throwaway CA (reused if its key is kept in the state dir) and server certificates."""
        d = self.work / "pki"
        (d / "newcerts").mkdir(parents=True)
        (d / "index.txt").write_text("")
        (d / "serial").write_text("1000\n")
        (d / "ca.cnf").write_text(f"""[ ca ]
default_ca = lab
[ lab ]
dir = {d}
database = {d}/index.txt
new_certs_dir = {d}/newcerts
serial = {d}/serial
default_md = sha256
policy = pol
copy_extensions = none
unique_subject = no
[ pol ]
commonName = supplied
organizationName = optional
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = x
[ v3_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
""")
        self.state.mkdir(parents=True, exist_ok=True)
        ca_key, ca_pub = self.state / "ca.key", self.repo / "pcaps/lab/ca.pem"
        if not (ca_key.exists() and ca_pub.exists() and self._pair(ca_key, ca_pub)):
            sh("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
               "-out", str(ca_key))
            os.chmod(ca_key, 0o600)
            sh("openssl", "req", "-new", "-x509", "-key", str(ca_key), "-days", "3650", "-sha256",
               "-subj", "/O=dotaudit lab/CN=dotaudit lab CA", "-config", str(d / "ca.cnf"),
               "-extensions", "v3_ca", "-out", str(ca_pub))
        shutil.copy(ca_pub, self.work / "ca.pem")
        today = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

        def stamp(delta_days: int) -> str:
            return (today + dt.timedelta(days=delta_days)).strftime("%Y%m%d%H%M%SZ")

        specs = {
            # name: (CN / SAN DNS, key, start, end, md, issuer)
            "valid": ("dns.lab.test", "rsa:2048", -1, 365, "sha256", "ca"),
            "expired": ("dns.lab.test", "rsa:2048", -400, -35, "sha256", "ca"),
            "not-yet-valid": ("dns.lab.test", "rsa:2048", 30, 395, "sha256", "ca"),
            "self-signed": ("dns.lab.test", "rsa:2048", -1, 365, "sha256", "self"),
            "wrong-name": ("wrong.example.test", "rsa:2048", -1, 365, "sha256", "ca"),
            "weak-key": ("dns.lab.test", "rsa:1024", -1, 365, "sha256", "ca"),
            "sha1": ("dns.lab.test", "rsa:2048", -1, 365, "sha1", "ca"),
        }
        for name, (cn, key, start, end, md, issuer) in specs.items():
            key_path, csr, pem, ext = (d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem",
                                       d / f"{name}.ext")
            ips = "IP:10.53.0.1,IP:10.53.0.10,IP:fd53::1,IP:fd53::10" if cn == "dns.lab.test" else ""
            san = f"DNS:{cn}" + (f",{ips}" if ips else "")
            ext.write_text(f"[ req ]\ndistinguished_name = dn\nprompt = no\n[ dn ]\nCN = x\n"
                           f"[ e ]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,"
                           f"keyEncipherment\nextendedKeyUsage = serverAuth\nsubjectAltName = {san}\n")
            sh("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
               f"rsa_keygen_bits:{key.split(':')[1]}", "-out", str(key_path))
            subj = f"/O=dotaudit lab/CN={cn}"
            if issuer == "self":
                sh("openssl", "req", "-new", "-x509", "-key", str(key_path), "-subj", subj,
                   "-days", str(end), f"-{md}", "-config", str(ext), "-extensions", "e",
                   "-out", str(pem))
            else:
                sh("openssl", "req", "-new", "-key", str(key_path), "-subj", subj,
                   "-config", str(d / "ca.cnf"), "-out", str(csr))
                sh("openssl", "ca", "-batch", "-config", str(d / "ca.cnf"), "-cert", str(ca_pub),
                   "-keyfile", str(ca_key), "-in", str(csr), "-out", str(pem), "-notext",
                   "-startdate", stamp(start), "-enddate", stamp(end), "-md", md,
                   "-extfile", str(ext), "-extensions", "e")
            self.certs[name] = (pem, key_path)

    @staticmethod
    def _pair(key: Path, pem: Path) -> bool:
        a = sh("openssl", "pkey", "-in", str(key), "-pubout", check=False).stdout
        b = sh("openssl", "x509", "-in", str(pem), "-noout", "-pubkey", check=False).stdout
        return bool(a) and a == b

    # --------------------------------------------------------------- unbound
    def start_unbound(self) -> None:
        pem, key = self.certs["valid"]
        w = self.work
        common = f"""  username: ""
  chroot: ""
  directory: "{w}"
  use-syslog: no
  verbosity: 1
  do-ip6: yes
  module-config: "iterator"
  access-control: 0.0.0.0/0 allow
  access-control: ::/0 allow
  hide-identity: yes
  hide-version: yes
"""
        zone = """  local-zone: "." static
  local-data: "dns.lab.test. 300 IN A 10.53.0.1"
  local-data: "dns.lab.test. 300 IN AAAA fd53::1"
  local-data: "www.lab.test. 300 IN A 192.0.2.10"
  local-data: "mail.lab.test. 300 IN A 192.0.2.25"
  local-data: "ftp.lab.test. 300 IN A 192.0.2.21"
  local-data: "api.lab.test. 300 IN A 192.0.2.80"
  local-data: "db.lab.test. 300 IN A 192.0.2.54"
  local-data: "www.example.com. 300 IN A 192.0.2.80"
"""
        (w / "unbound-res.conf").write_text(f"""server:
{common}  pidfile: "{w}/unbound-res.pid"
  logfile: "{w}/unbound-res.log"
  interface: 10.53.0.1@53
  interface: 10.53.0.1@853
  interface: 10.53.0.1@8853
  interface: 10.53.0.1@5300
  interface: 10.53.0.5@53
  interface: fd53::1@53
  interface: fd53::1@853
  tls-port: 853
  tls-additional-port: 8853
  tls-service-key: "{key}"
  tls-service-pem: "{pem}"
  tls-ciphers: "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:AES128-SHA"
  tcp-idle-timeout: 10000
{zone}remote-control:
  control-enable: no
""")
        # local stub on 127.0.0.53 in the client namespace, forwarding over DoT
        (w / "unbound-stub.conf").write_text(f"""server:
{common}  pidfile: "{w}/unbound-stub.pid"
  logfile: "{w}/unbound-stub.log"
  interface: 127.0.0.53@53
  do-not-query-localhost: no
  local-zone: "test." nodefault
  tls-cert-bundle: "{w}/ca.pem"
  access-control: 127.0.0.0/8 allow
forward-zone:
  name: "."
  forward-tls-upstream: yes
  forward-addr: 10.53.0.1@853#dns.lab.test
remote-control:
  control-enable: no
""")
        self.spawn(nsx(RES, "unbound", "-d", "-c", str(w / "unbound-res.conf")), "unbound-res.out")
        self.wait_listen(RES, "10.53.0.1", 853)
        self.wait_listen(RES, "fd53::1", 853)
        self.wait_listen(RES, "10.53.0.1", 5300, "u")
        self.spawn(nsx(CLI, "unbound", "-d", "-c", str(w / "unbound-stub.conf")), "unbound-stub.out")
        self.wait_listen(CLI, "127.0.0.53", 53, "u")

    # --------------------------------------------------------------- capture
    def capture_start(self, ns: str, iface: str, path: Path) -> subprocess.Popen:
        argv = nsx(ns, "tcpdump", "-i", iface, "-s", "0", "-U", "--immediate-mode", "-n", "-w", str(path), CAP_FILTER)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        self.procs.append(proc)
        line = ""
        for _ in range(5):
            line = proc.stderr.readline()
            if "listening on" in line:
                break
        else:
            raise RuntimeError(f"tcpdump did not start: {line}")
        time.sleep(0.2)
        return proc

    def capture_stop(self, proc: subprocess.Popen) -> None:
        time.sleep(0.5)
        self.stop(proc, signal.SIGINT)
