"""JA3, JA3S and JA4 fingerprints of parsed hellos.

JA3 (salesforce/ja3): MD5 of "SSLVersion,Ciphers,Extensions,EllipticCurves,PointFormats",
decimal values joined by "-", GREASE removed. JA3S: MD5 of "SSLVersion,Cipher,Extensions".
JA4 (FoxIO-LLC/ja4, technical_details/JA4.md): "t" + version + d/i + counts + ALPN chars,
then sha256[:12] of the sorted cipher list and of the sorted extension list (without SNI and
ALPN) "_" signature algorithms in wire order.
"""

from __future__ import annotations

import hashlib

from .ciphers import EXT_ALPN, EXT_SERVER_NAME, EXT_SUPPORTED_VERSIONS, is_grease
from .handshake import ClientHello, ServerHello

_JA4_VERSIONS = {
    0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
    0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3",
}


def ja3_string(ch: ClientHello) -> str:
    def j(vals):
        return "-".join(str(v) for v in vals if not is_grease(v))

    return ",".join((
        str(ch.version), j(ch.ciphers), j(ch.extensions), j(ch.groups),
        "-".join(str(v) for v in ch.point_formats),
    ))


def ja3(ch: ClientHello) -> tuple[str, str]:
    """-> (md5 hex, JA3 string)."""
    s = ja3_string(ch)
    return hashlib.md5(s.encode(), usedforsecurity=False).hexdigest(), s


def ja3s(sh: ServerHello) -> tuple[str, str]:
    s = f"{sh.version},{sh.cipher},{'-'.join(str(e) for e in sh.extensions)}"
    return hashlib.md5(s.encode(), usedforsecurity=False).hexdigest(), s


def _alnum(b: int) -> bool:
    return 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A


def _ja4_alpn(first: bytes | None) -> str:
    if not first:
        return "00"
    a, z = first[0], first[-1]
    if _alnum(a) and _alnum(z):
        return chr(a) + chr(z)
    h = first.hex()
    return h[0] + h[-1]


def _sha12(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:12]


def ja4_parts(ch: ClientHello, transport: str = "t") -> tuple[str, str, str]:
    """-> (JA4_a, raw sorted cipher list, raw extension+sigalg string) (the JA4_r pieces)."""
    sv = [v for v in ch.supported_versions if not is_grease(v)]
    ver = max(sv) if sv and EXT_SUPPORTED_VERSIONS in ch.extensions else ch.version
    vcode = _JA4_VERSIONS.get(ver, "00")
    ciphers = [c for c in ch.ciphers if not is_grease(c)]
    exts = [e for e in ch.extensions if not is_grease(e)]
    sni = "d" if EXT_SERVER_NAME in exts else "i"
    a = f"{transport}{vcode}{sni}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}"
    a += _ja4_alpn(ch.alpn_first_raw)
    width = 6 if ch.ssl2 else 4
    b = ",".join(sorted(f"{c:0{width}x}" for c in ciphers))
    ext_sorted = ",".join(sorted(f"{e:04x}" for e in exts if e not in (EXT_SERVER_NAME, EXT_ALPN)))
    sigs = ",".join(f"{s:04x}" for s in ch.signature_algorithms if not is_grease(s))
    c = f"{ext_sorted}_{sigs}" if sigs else ext_sorted
    return a, b, c


def ja4(ch: ClientHello, transport: str = "t") -> str:
    a, b, c = ja4_parts(ch, transport)
    hb = _sha12(b) if b else "000000000000"
    hc = _sha12(c) if c else "000000000000"
    return f"{a}_{hb}_{hc}"
