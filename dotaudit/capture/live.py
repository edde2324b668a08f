"""Live packet sources for ``dotaudit live``: libpcap with a kernel BPF filter, or tshark.

Both yield raw frames, nothing else: ``next()`` returns ``(ts, data, wirelen)`` or ``None`` when
no packet arrived within the read timeout (so the service loop can run its timers and notice
signals), and ``stats()`` returns the capture counters ``{received, kernel_drops, if_drops}``.

``PcapSource`` (the default engine) calls libpcap through the ctypes prototypes scapy already
declares (``scapy.libs.winpcapy``), but copies each packet with ``ctypes.string_at`` instead of
scapy's ``_PcapWrapper_libpcap.next`` (which builds a list of ints per packet), and builds no
scapy object: the frames go straight to the raw-bytes flow table (DESIGN.md decisions 1 and 3).

``TsharkSource`` runs ``tshark -i IFACE -f BPF -w -`` and reads its pcapng output with dotaudit's
own streaming reader.  It is a cross-check engine: tshark/dumpcap capture into a pipe, which is
slower and buffers more; drop counters come from the pcapng interface statistics block, which
tshark writes only when it stops.

Errors are ``LiveError`` with an exit code: 2 for a usage error (no such interface, bad BPF
expression), 3 when the interface cannot be opened (no CAP_NET_RAW, or any other open failure).
"""

from __future__ import annotations

import ctypes
import queue
import select
import shutil
import subprocess
import threading
import time
from typing import Optional

from .pcap import CaptureError, CaptureInfo, read_packets

# Ports of DNS and its relatives; VLAN-tagged DNS/DoT; IP fragments (the first fragment of a
# large DNS answer matches "port 53", the later ones carry no port: the defragmenter needs them).
# DoH over HTTP/3 (udp 443) is not in the default: on a gateway it is all QUIC web traffic.
# DoQ uses udp 853 (RFC 9250), already matched; the draft port 784 is not.
DEFAULT_FILTER = ("port 53 or port 853 or port 5353 or port 5355 or port 137"
                  " or (ip[6:2] & 0x3fff != 0) or (ip6[6] == 44)"
                  " or (vlan and (port 53 or port 853))")
SNAPLEN = 262144
BUFFER_BYTES = 32 << 20
READ_TIMEOUT_MS = 200

EXIT_USAGE = 2
EXIT_OPEN = 3

# libpcap status codes (pcap/pcap.h)
PCAP_ERROR_NO_SUCH_DEVICE = -5
PCAP_ERROR_PERM_DENIED = -8
PCAP_ERROR_IFACE_NOT_UP = -9
PCAP_WARNING_PROMISC_NOTSUP = 2


class LiveError(Exception):
    """One clear line for the user, and the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _pcap():
    try:
        from scapy.libs import winpcapy as w
    except (ImportError, OSError) as exc:  # libpcap missing
        raise LiveError(f"libpcap is not available ({exc}); install libpcap0.8 or use --engine tshark",
                        EXIT_OPEN) from None
    return w


def _text(b) -> str:
    if b is None:
        return ""
    if isinstance(b, (bytes, bytearray)):
        return bytes(b).split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return str(b)


def interface_exists(iface: str) -> bool:
    if iface == "any":
        return True
    try:
        import socket
        socket.if_nametoindex(iface)
        return True
    except OSError:
        return False


def check_filter(expr: str, linktype: int = 1, snaplen: int = SNAPLEN) -> None:
    """Compile ``expr`` without opening anything; LiveError(2) if libpcap rejects it."""
    w = _pcap()
    dead = w.pcap_open_dead(linktype, snaplen)
    if not dead:
        raise LiveError("libpcap: pcap_open_dead failed", EXIT_OPEN)
    prog = w.bpf_program()
    try:
        if w.pcap_compile(dead, ctypes.byref(prog), ctypes.create_string_buffer(expr.encode()), 1, 0xFFFFFFFF) < 0:
            raise LiveError(f"bad capture filter {expr!r}: {_text(w.pcap_geterr(dead))}", EXIT_USAGE)
        w.pcap_freecode(ctypes.byref(prog))
    finally:
        w.pcap_close(dead)


class PcapSource:
    """A live libpcap handle with a kernel BPF filter."""

    engine = "libpcap"

    def __init__(self, iface: str, bpf: str = DEFAULT_FILTER, *, snaplen: int = SNAPLEN, promisc: bool = True,
                 buffer_bytes: int = BUFFER_BYTES, timeout_ms: int = READ_TIMEOUT_MS):
        w = self._w = _pcap()
        self.iface = iface
        self.filter = bpf
        check_filter(bpf, snaplen=snaplen)
        if not interface_exists(iface):  # before opening: a typo is a usage error even without privileges
            raise LiveError(f"no such interface: {iface}", EXIT_USAGE)
        errbuf = ctypes.create_string_buffer(256)
        handle = w.pcap_create(iface.encode(), errbuf)
        if not handle:
            raise LiveError(f"cannot open interface {iface}: {_text(errbuf.raw)}", EXIT_OPEN)
        w.pcap_set_snaplen(handle, snaplen)
        w.pcap_set_promisc(handle, 1 if promisc else 0)
        w.pcap_set_timeout(handle, timeout_ms)
        w.pcap_set_buffer_size(handle, buffer_bytes)
        status = w.pcap_activate(handle)
        if status < 0:
            detail = _text(w.pcap_geterr(handle)) or _text(w.pcap_statustostr(status))
            w.pcap_close(handle)
            if status == PCAP_ERROR_NO_SUCH_DEVICE or (not interface_exists(iface)
                                                       and status != PCAP_ERROR_PERM_DENIED):
                raise LiveError(f"no such interface: {iface}", EXIT_USAGE)
            if status == PCAP_ERROR_PERM_DENIED:
                raise LiveError(f"no permission to capture on {iface} (needs root or CAP_NET_RAW): {detail}",
                                EXIT_OPEN)
            if status == PCAP_ERROR_IFACE_NOT_UP:
                raise LiveError(f"interface {iface} is down", EXIT_USAGE)
            raise LiveError(f"cannot capture on {iface}: {detail}", EXIT_OPEN)
        self.handle = handle
        prog = w.bpf_program()
        if w.pcap_compile(handle, ctypes.byref(prog), ctypes.create_string_buffer(bpf.encode()), 1,
                          0xFFFFFFFF) < 0 or w.pcap_setfilter(handle, ctypes.byref(prog)) < 0:
            detail = _text(w.pcap_geterr(handle))
            self.close()
            raise LiveError(f"bad capture filter {bpf!r}: {detail}", EXIT_USAGE)
        w.pcap_freecode(ctypes.byref(prog))
        # Non-blocking reads plus poll() on the selectable fd: with TPACKET_V3 a blocking read
        # never times out while no packet arrives, and the service must run its timers.
        errbuf2 = ctypes.create_string_buffer(256)
        w.pcap_setnonblock(handle, 1, errbuf2)
        self._poll = select.poll()
        self._poll.register(w.pcap_get_selectable_fd(handle), select.POLLIN)
        self._timeout_ms = timeout_ms
        self.linktype = w.pcap_datalink(handle)
        self._hdr = ctypes.POINTER(w.pcap_pkthdr)()
        self._data = ctypes.POINTER(ctypes.c_ubyte)()
        self._next_ex = w.pcap_next_ex
        self._hdr_ref = ctypes.byref(self._hdr)
        self._data_ref = ctypes.byref(self._data)
        self._stat = w.pcap_stat()
        self._last = {"received": 0, "kernel_drops": 0, "if_drops": 0}

    def next(self) -> Optional[tuple[float, bytes, int]]:
        rc = self._next_ex(self.handle, self._hdr_ref, self._data_ref)
        if rc == 0:  # nothing buffered: wait (bounded) for the kernel to hand over a block
            self._poll.poll(self._timeout_ms)
            rc = self._next_ex(self.handle, self._hdr_ref, self._data_ref)
        if rc == 1:
            h = self._hdr.contents
            return h.ts.tv_sec + h.ts.tv_usec * 1e-6, ctypes.string_at(self._data, h.caplen), h.len
        if rc == 0:
            return None
        if rc == -2:  # pcap_breakloop
            return None
        raise LiveError(f"capture on {self.iface} failed: {_text(self._w.pcap_geterr(self.handle))}", EXIT_OPEN)

    def stats(self) -> dict:
        """Counters since the capture started (libpcap's are 32-bit: kept monotonic here)."""
        if self.handle is not None and self._w.pcap_stats(self.handle, ctypes.byref(self._stat)) == 0:
            s = self._stat
            for key, value in (("received", s.ps_recv), ("kernel_drops", s.ps_drop), ("if_drops", s.ps_ifdrop)):
                prev = self._last[key]
                low = prev & 0xFFFFFFFF
                value = int(value)
                self._last[key] = prev - low + value + (1 << 32 if value < low else 0)
        return dict(self._last)

    def stop(self) -> None:
        """Nothing to stop: the kernel keeps buffering until ``close()``."""

    def drain(self):
        """Packets already captured (incl. a block the kernel retires within one read timeout)."""
        if self.handle is None:
            return
        while True:
            pkt = self.next()
            if pkt is None:
                return
            yield pkt

    def close(self) -> None:
        if getattr(self, "handle", None) is not None:
            self.stats()  # keep the last counters for the final report
            self._w.pcap_close(self.handle)
            self.handle = None


class TsharkSource:
    """``tshark -i IFACE -f BPF -w -`` read by dotaudit's pcapng reader (slow; for cross-checks)."""

    engine = "tshark"

    def __init__(self, iface: str, bpf: str = DEFAULT_FILTER, *, snaplen: int = SNAPLEN, promisc: bool = True,
                 buffer_bytes: int = BUFFER_BYTES, timeout_ms: int = READ_TIMEOUT_MS, startup_timeout: float = 15.0):
        check_filter(bpf, snaplen=snaplen)
        if not interface_exists(iface):
            raise LiveError(f"no such interface: {iface}", EXIT_USAGE)
        exe = shutil.which("tshark")
        if exe is None:
            raise LiveError("tshark is not installed (needed by --engine tshark)", EXIT_OPEN)
        self.iface = iface
        self.filter = bpf
        self.timeout = timeout_ms / 1000.0
        cmd = [exe, "-i", iface, "-f", bpf, "-s", str(snaplen), "-B", str(max(1, buffer_bytes >> 20)),
               "-w", "-", "-q"]
        if not promisc:
            cmd.insert(1, "-p")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     start_new_session=True)  # our SIGINT/SIGTERM are handled by us, not tshark
        self.info = CaptureInfo(path=f"tshark:{iface}")
        self._q: queue.Queue = queue.Queue(maxsize=65536)
        self._err: list[str] = []
        self._started = threading.Event()
        threading.Thread(target=self._stderr, daemon=True, name="dotaudit-tshark-stderr").start()
        # wait until dumpcap says it is capturing (or fails), so errors surface as one line
        deadline = time.monotonic() + startup_timeout
        while not self._started.is_set():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.1)
                self._fail()
            self._started.wait(0.05)
        self.linktype = 1
        threading.Thread(target=self._reader, daemon=True, name="dotaudit-tshark-reader").start()

    def _stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("Capturing on"):
                self._started.set()
            elif line and not line.startswith("Running as user"):
                self._err.append(line)

    def _fail(self) -> None:
        text = " ".join(self._err) or "tshark did not start"
        low = text.lower()
        try:
            self.proc.kill()
        except OSError:
            pass
        if "permission" in low or "operation not permitted" in low:
            raise LiveError(f"no permission to capture on {self.iface} (needs root or CAP_NET_RAW): {text}", EXIT_OPEN)
        if "no such device" in low:
            raise LiveError(f"no such interface: {self.iface}", EXIT_USAGE)
        if "filter" in low:
            raise LiveError(f"bad capture filter {self.filter!r}: {text}", EXIT_USAGE)
        raise LiveError(f"tshark: {text}", EXIT_OPEN)

    def _reader(self) -> None:
        try:
            for ts, linktype, data, wirelen in read_packets(self.proc.stdout, self.info):
                self.linktype = linktype
                self._q.put((ts, data, wirelen, linktype))
        except CaptureError:
            pass
        finally:
            self._q.put(None)

    def next(self) -> Optional[tuple[float, bytes, int]]:
        try:
            item = self._q.get(timeout=self.timeout)
        except queue.Empty:
            return None
        if item is None:
            self._q.put(None)
            if self.proc.poll() is not None and not getattr(self, "_closing", False):
                raise LiveError(f"tshark stopped: {' '.join(self._err) or 'exit ' + str(self.proc.returncode)}",
                                EXIT_OPEN)
            return None
        ts, data, wirelen, self.linktype = item
        return ts, data, wirelen

    def stats(self) -> dict:
        received = self.info.records
        return {"received": received, "kernel_drops": 0, "if_drops": self.info.interface_drops}

    def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop tshark and let the reader consume what it wrote (incl. the statistics block)."""
        self._closing = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def drain(self):
        """Packets still queued after ``stop()``."""
        while True:
            try:
                item = self._q.get(timeout=2.0)
            except queue.Empty:
                return
            if item is None:
                self._q.put(None)
                return
            ts, data, wirelen, self.linktype = item
            yield ts, data, wirelen


def open_source(engine: str, iface: str, bpf: str, **kw):
    if engine == "tshark":
        return TsharkSource(iface, bpf, **kw)
    return PcapSource(iface, bpf, **kw)


__all__ = ["DEFAULT_FILTER", "LiveError", "PcapSource", "TsharkSource", "check_filter", "open_source",
           "interface_exists"]
