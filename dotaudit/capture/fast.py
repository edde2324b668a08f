"""The optional C fast paths, loaded with ctypes: the record scanner (``_scan.c``) and the DNS
wire walker (``../dns/_wire.c``), built into one library.

``pip install`` compiles it (hatch_build.py); a source checkout compiles it on first use into
the user's cache directory when a C compiler is there.  Without it dotaudit runs the same
analysis in pure Python, only slower: ``DOTAUDIT_NO_FAST=1`` forces that path (the tests compare
both).  See _scan.c for what the scanner does and why the results are identical.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "_scan.c", HERE.parent / "dns" / "_wire.c")
SOURCE = SOURCES[0]
LIBNAME = "_dotaudit_scan.so"
CFLAGS = ["-O2", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math"]
BATCH = 4096          # records handed back to Python per call, at most

_lib = None
_tried = False


def compile_library(out: Path, sources=SOURCES) -> bool:
    """Compile the library to ``out`` with the system C compiler; False if there is none or it fails."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc or not all(src.exists() for src in sources):
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=str(out.parent))
    os.close(fd)
    try:
        r = subprocess.run([cc, *CFLAGS, "-o", tmp, *map(str, sources)], capture_output=True)
        if r.returncode != 0:
            return False
        os.replace(tmp, out)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cache_path() -> Path:
    digest = hashlib.sha256(b"".join(src.read_bytes() for src in SOURCES) + " ".join(CFLAGS).encode()).hexdigest()[:16]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dotaudit" / f"scan-{digest}-{sys.implementation.cache_tag}.so"


def _load():
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("DOTAUDIT_NO_FAST"):
        return None
    candidates = [HERE / LIBNAME]
    if all(src.exists() for src in SOURCES):
        try:   # a source checkout whose C changed since the last install: not that build
            if candidates[0].exists() and candidates[0].stat().st_mtime < max(src.stat().st_mtime for src in SOURCES):
                candidates.pop(0)
        except OSError:
            pass
        candidates.append(_cache_path())
    lib = None
    for path in candidates:
        if not path.exists() and path.parent != HERE:
            try:
                if not compile_library(path):
                    continue
            except OSError:
                continue
        if path.exists():
            try:
                lib = ctypes.CDLL(str(path))
                break
            except OSError:
                continue
    if lib is None:
        return None
    vp, i64, u64, dbl, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_double, ctypes.c_int32
    ci = ctypes.c_int
    sig = {
        "sc_new": (vp, [i32]),
        "sc_free": (None, [vp]),
        "sc_lts": (vp, [vp]),
        "sc_closed": (vp, [vp]),
        "sc_lseq": (vp, [vp]),
        "sc_count": (u64, [vp]),
        "sc_mute": (ci, [vp, ci, ctypes.c_char_p, ci, i32]),
        "sc_unmute": (None, [vp, ci, ctypes.c_char_p, ci]),
        "sc_reset": (None, [vp, dbl, u64]),
        "sc_account": (None, [vp, dbl, u64]),
        "sc_frames": (u64, [vp]),
        "sc_bytes": (u64, [vp]),
        "sc_lo": (dbl, [vp]),
        "sc_hi": (dbl, [vp]),
        "sc_last": (dbl, [vp]),
        "sc_muted_packets": (u64, [vp]),
        "sc_expired": (i64, [vp, dbl, dbl, dbl, vp, i64]),
        "dns_parse": (ci, [ctypes.c_char_p, i64, vp, vp]),
        "sc_scan_pcap": (i64, [vp, ctypes.c_char_p, i64, i64, ci, ci, ctypes.c_uint32, ci, vp, vp, i64, vp]),
        "sc_scan_pcapng": (i64, [vp, ctypes.c_char_p, i64, i64, ci, ci, vp, vp, vp, vp, ci, vp, vp, i64, vp]),
    }
    try:
        for name, (res, args) in sig.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
    except AttributeError:
        return None
    _lib = lib
    return lib


def available() -> bool:
    return _load() is not None


def library():
    """The loaded library, or None (pure-Python paths)."""
    return _load()


def _view(ptr: int, ctype, n: int, fmt: str) -> memoryview:
    return memoryview((ctype * n).from_address(ptr)).cast("B").cast(fmt)


class Scanner:
    """One per flow table: the muted-flow set and the per-input totals.

    While the reader yields a record, ``frame`` is its frame number and ``hi`` the latest
    timestamp of the input up to it (muted records included).
    """

    def __init__(self, max_ids: int):
        lib = _load()
        if lib is None:
            raise RuntimeError("the C scanner is not available")
        self.lib = lib
        self.max_ids = max_ids
        self.h = lib.sc_new(max_ids)
        if not self.h:
            raise MemoryError("cannot allocate the scanner")
        self.lts = _view(lib.sc_lts(self.h), ctypes.c_double, max_ids, "d")
        self.closed = _view(lib.sc_closed(self.h), ctypes.c_uint8, max_ids, "B")
        self.lseq = _view(lib.sc_lseq(self.h), ctypes.c_uint64, max_ids, "Q")
        self.out = array("q", bytes(16 * BATCH))
        self.his = array("d", bytes(8 * BATCH))
        self._out_p = self.out.buffer_info()[0]
        self._his_p = self.his.buffer_info()[0]
        self._nout = ctypes.c_int64(0)
        self._nout_p = ctypes.addressof(self._nout)
        self.next_id = 0
        self.free: list[int] = []
        self.frame = 0
        self.hi = 0.0
        self.room = lambda: BATCH     # the flow table narrows this when it is nearly full
        self.mute_enabled = 1

    def close(self) -> None:
        if self.h:
            self.lts = self.closed = self.lseq = None  # type: ignore[assignment]
            self.lib.sc_free(self.h)
            self.h = None

    # -- muted flows
    def mute(self, proto: int, ckey: bytes, skey: bytes) -> int:
        """Mute both directions of a flow; its id, or -1 if the scanner cannot take it."""
        if self.free:
            fid = self.free.pop()
        elif self.next_id < self.max_ids:
            fid = self.next_id
            self.next_id += 1
        else:
            return -1
        lib = self.lib
        if not lib.sc_mute(self.h, proto, ckey, len(ckey), fid):
            self.free.append(fid)
            return -1
        if not lib.sc_mute(self.h, proto, skey, len(skey), fid):
            lib.sc_unmute(self.h, proto, ckey, len(ckey))
            self.free.append(fid)
            return -1
        self.closed[fid] = 0
        return fid

    def unmute(self, fid: int, proto: int, ckey: bytes, skey: bytes) -> None:
        lib = self.lib
        lib.sc_unmute(self.h, proto, ckey, len(ckey))
        lib.sc_unmute(self.h, proto, skey, len(skey))
        self.free.append(fid)

    def expired(self, cut_udp: float, cut_closed: float, cut_open: float) -> set[int]:
        """Ids of muted flows idle past their timeout (see sc_expired)."""
        cap = 2 * max(self.muted_count(), 1)
        out = array("i", bytes(4 * cap))
        k = self.lib.sc_expired(self.h, cut_udp, cut_closed, cut_open, out.buffer_info()[0], cap)
        return set(out[:k])

    def muted_count(self) -> int:
        return self.lib.sc_count(self.h)

    # -- per input
    def reset(self, input_index: int) -> None:
        self.lib.sc_reset(self.h, float("inf"), input_index)
        self.mute_enabled = 1
        self.frame = 0
        self.hi = 0.0

    def account(self, ts: float, wirelen: int) -> None:
        """A record the Python reader yields itself: count it and set ``frame``/``hi``."""
        lib = self.lib
        lib.sc_account(self.h, ts, wirelen)
        self.frame = lib.sc_frames(self.h)
        self.hi = lib.sc_hi(self.h)

    def totals(self) -> tuple[int, int, float, float, int]:
        lib = self.lib
        return (lib.sc_frames(self.h), lib.sc_bytes(self.h), lib.sc_lo(self.h), lib.sc_hi(self.h),
                lib.sc_muted_packets(self.h))

    def frames(self) -> int:
        return self.lib.sc_frames(self.h)

    def last(self) -> float:
        return self.lib.sc_last(self.h)

    # -- scanning
    def scan_pcap(self, buf: bytes, pos: int, swap: bool, nsec: bool, limit: int) -> tuple[int, int]:
        cap = min(BATCH, max(1, self.room()))
        pos = self.lib.sc_scan_pcap(self.h, buf, len(buf), pos, int(swap), int(nsec), limit, self.mute_enabled,
                                    self._out_p, self._his_p, cap, self._nout_p)
        return pos, self._nout.value

    def scan_pcapng(self, buf: bytes, pos: int, swap: bool, ifaces) -> tuple[int, int]:
        cap = min(BATCH, max(1, self.room()))
        div, off, mute, ok = ifaces
        pos = self.lib.sc_scan_pcapng(self.h, buf, len(buf), pos, int(swap), len(div) if div else 0,
                                      div.buffer_info()[0], off.buffer_info()[0], mute.buffer_info()[0],
                                      ok.buffer_info()[0], self.mute_enabled, self._out_p, self._his_p, cap,
                                      self._nout_p)
        return pos, self._nout.value
