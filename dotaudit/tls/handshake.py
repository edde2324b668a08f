"""Parsers for TLS handshake messages (ClientHello, ServerHello, ServerKeyExchange,
Certificate) and the fast first-bytes checks the flow pipeline calls.

Pure stdlib, bytes in, small slotted objects out. Parsers raise ``ValueError`` on malformed
input (the session catches it and counts it); the public first-bytes functions never raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ciphers import (
    DOWNGRADE_TLS11,
    DOWNGRADE_TLS12,
    EXT_ALPN,
    EXT_EARLY_DATA,
    EXT_EC_POINT_FORMATS,
    EXT_EXTENDED_MASTER_SECRET,
    EXT_KEY_SHARE,
    EXT_KEY_SHARE_DRAFT,
    EXT_PRE_SHARED_KEY,
    EXT_RENEGOTIATION_INFO,
    EXT_SERVER_NAME,
    EXT_SESSION_TICKET,
    EXT_SIGNATURE_ALGORITHMS,
    EXT_SUPPORTED_GROUPS,
    EXT_SUPPORTED_VERSIONS,
    HRR_RANDOM,
    HS_CLIENT_HELLO,
    is_grease,
)
from .records import MAX_RECORD_LEN

PEEK_CAP = 16384 + 5


class _Reader:
    """Bounds-checked big-endian reader over a bytes object."""

    __slots__ = ("b", "p", "end")

    def __init__(self, b: bytes, p: int = 0, end: int | None = None) -> None:
        self.b = b
        self.p = p
        self.end = len(b) if end is None else end

    def u8(self) -> int:
        if self.p + 1 > self.end:
            raise ValueError("truncated u8")
        v = self.b[self.p]
        self.p += 1
        return v

    def u16(self) -> int:
        p = self.p
        if p + 2 > self.end:
            raise ValueError("truncated u16")
        self.p = p + 2
        return (self.b[p] << 8) | self.b[p + 1]

    def u24(self) -> int:
        p = self.p
        if p + 3 > self.end:
            raise ValueError("truncated u24")
        self.p = p + 3
        return (self.b[p] << 16) | (self.b[p + 1] << 8) | self.b[p + 2]

    def take(self, n: int) -> bytes:
        p = self.p
        if n < 0 or p + n > self.end:
            raise ValueError("truncated vector")
        self.p = p + n
        return self.b[p:p + n]

    def left(self) -> int:
        return self.end - self.p


def _u16_list(data: bytes, prefix: int = 2) -> list[int]:
    """A vector of uint16 with a ``prefix``-byte length."""
    if len(data) < prefix:
        raise ValueError("truncated list")
    n = int.from_bytes(data[:prefix], "big")
    if n > len(data) - prefix or n % 2:
        raise ValueError("bad u16 list length")
    body = data[prefix:prefix + n]
    return [(body[i] << 8) | body[i + 1] for i in range(0, n, 2)]


def _parse_sni(data: bytes) -> str | None:
    r = _Reader(data)
    total = r.u16()
    r.end = min(r.end, r.p + total)
    while r.left() >= 3:
        kind = r.u8()
        name = r.take(r.u16())
        if kind == 0:
            return name.decode("ascii", "replace").rstrip(".").lower()
    return None


def _parse_alpn(data: bytes) -> tuple[str, ...]:
    r = _Reader(data)
    total = r.u16()
    r.end = min(r.end, r.p + total)
    out = []
    while r.left() >= 1:
        out.append(r.take(r.u8()).decode("utf-8", "backslashreplace"))
    return tuple(out)


def _alpn_raw_first(data: bytes) -> bytes | None:
    try:
        r = _Reader(data)
        r.u16()
        return r.take(r.u8())
    except ValueError:
        return None


@dataclass(slots=True)
class ClientHello:
    version: int
    random: bytes = b""
    session_id: bytes = b""
    ciphers: list[int] = field(default_factory=list)  # raw, GREASE included, wire order
    compression: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)  # types, wire order, GREASE included
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    alpn_first_raw: bytes | None = None
    groups: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)
    signature_algorithms: list[int] = field(default_factory=list)
    supported_versions: list[int] = field(default_factory=list)
    key_share_groups: list[int] = field(default_factory=list)
    session_ticket_len: int | None = None  # None = extension absent
    psk: bool = False
    early_data: bool = False
    renegotiation_info: bool = False
    extended_master_secret: bool = False
    ssl2: bool = False  # SSLv2-compatible CLIENT-HELLO (ciphers are 3-byte specs)
    truncated_extensions: bool = False


@dataclass(slots=True)
class ServerHello:
    version: int
    random: bytes = b""
    session_id: bytes = b""
    cipher: int = 0
    compression: int = 0
    extensions: list[int] = field(default_factory=list)
    selected_version: int | None = None
    key_share_group: int | None = None
    psk: bool = False
    alpn: str | None = None
    renegotiation_info: bool = False
    extended_master_secret: bool = False
    session_ticket: bool = False
    hello_retry: bool = False
    ssl2: bool = False

    @property
    def negotiated_version(self) -> int:
        return self.selected_version or self.version

    @property
    def tls13(self) -> bool:
        v = self.negotiated_version
        return v == 0x0304 or (v >> 8) == 0x7F

    @property
    def downgrade_sentinel(self) -> str | None:
        tail = self.random[-8:]
        if tail == DOWNGRADE_TLS12:
            return "tls12"
        if tail == DOWNGRADE_TLS11:
            return "tls11"
        return None


def parse_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello handshake body (without the 4-byte handshake header)."""
    r = _Reader(body)
    ch = ClientHello(version=r.u16())
    ch.random = r.take(32)
    ch.session_id = r.take(r.u8())
    if len(ch.session_id) > 32:
        raise ValueError("session id longer than 32")
    n = r.u16()
    if n % 2:
        raise ValueError("odd cipher suite vector")
    cs = r.take(n)
    ch.ciphers = [(cs[i] << 8) | cs[i + 1] for i in range(0, n, 2)]
    ch.compression = list(r.take(r.u8()))
    if r.left() == 0:
        return ch  # no extensions (SSL 3.0 style)
    ext_len = r.u16()
    if ext_len > r.left():
        ch.truncated_extensions = True
        ext_len = r.left()
    r.end = r.p + ext_len
    exts = ch.extensions
    while r.left() >= 4:
        et = r.u16()
        el = r.u16()
        if el > r.left():
            ch.truncated_extensions = True
            exts.append(et)
            break
        data = r.take(el)
        exts.append(et)
        try:
            _client_ext(ch, et, data)
        except (ValueError, IndexError):
            ch.truncated_extensions = True
    return ch


def _client_ext(ch: ClientHello, et: int, data: bytes) -> None:
    if et == EXT_SERVER_NAME:
        if data:
            ch.sni = _parse_sni(data)
    elif et == EXT_ALPN:
        ch.alpn = _parse_alpn(data)
        ch.alpn_first_raw = _alpn_raw_first(data)
    elif et == EXT_SUPPORTED_GROUPS:
        ch.groups = _u16_list(data)
    elif et == EXT_EC_POINT_FORMATS:
        if data:
            ch.point_formats = list(data[1:1 + data[0]])
    elif et == EXT_SIGNATURE_ALGORITHMS:
        ch.signature_algorithms = _u16_list(data)
    elif et == EXT_SUPPORTED_VERSIONS:
        ch.supported_versions = _u16_list(data, 1)
    elif et == EXT_KEY_SHARE or et == EXT_KEY_SHARE_DRAFT:
        r = _Reader(data)
        total = r.u16()
        r.end = min(r.end, r.p + total)
        while r.left() >= 4:
            ch.key_share_groups.append(r.u16())
            r.take(r.u16())
    elif et == EXT_SESSION_TICKET:
        ch.session_ticket_len = len(data)
    elif et == EXT_PRE_SHARED_KEY:
        ch.psk = True
    elif et == EXT_EARLY_DATA:
        ch.early_data = True
    elif et == EXT_RENEGOTIATION_INFO:
        ch.renegotiation_info = True
    elif et == EXT_EXTENDED_MASTER_SECRET:
        ch.extended_master_secret = True


def parse_ssl2_client_hello(record: bytes) -> ClientHello:
    """Parse a whole SSLv2-format CLIENT-HELLO record (2-byte header with the top bit set)."""
    if len(record) < 2 or not record[0] & 0x80:
        raise ValueError("not an SSLv2 record")
    ln = ((record[0] & 0x7F) << 8) | record[1]
    r = _Reader(record, 2, min(len(record), 2 + ln))
    if r.u8() != 1:
        raise ValueError("not an SSLv2 CLIENT-HELLO")
    ch = ClientHello(version=r.u16(), ssl2=True)
    cs_len = r.u16()
    sid_len = r.u16()
    chal_len = r.u16()
    if cs_len % 3:
        raise ValueError("bad SSLv2 cipher spec length")
    cs = r.take(cs_len)
    ch.ciphers = [(cs[i] << 16) | (cs[i + 1] << 8) | cs[i + 2] for i in range(0, cs_len, 3)]
    ch.session_id = r.take(sid_len)
    ch.random = r.take(chal_len)
    return ch


def parse_ssl2_server_hello(record: bytes) -> ServerHello:
    """Parse an SSLv2 SERVER-HELLO record; ``cipher`` is the first 3-byte spec (or 0)."""
    if len(record) < 2 or not record[0] & 0x80:
        raise ValueError("not an SSLv2 record")
    ln = ((record[0] & 0x7F) << 8) | record[1]
    r = _Reader(record, 2, min(len(record), 2 + ln))
    if r.u8() != 4:
        raise ValueError("not an SSLv2 SERVER-HELLO")
    r.u8()  # session id hit
    r.u8()  # certificate type
    sh = ServerHello(version=r.u16(), ssl2=True)
    cert_len = r.u16()
    cs_len = r.u16()
    r.u16()  # connection id length
    r.take(cert_len)
    cs = r.take(cs_len) if cs_len >= 3 else b""
    if len(cs) >= 3:
        sh.cipher = (cs[0] << 16) | (cs[1] << 8) | cs[2]
    return sh


def parse_server_hello(body: bytes) -> ServerHello:
    """Parse a ServerHello (or HelloRetryRequest) handshake body."""
    r = _Reader(body)
    sh = ServerHello(version=r.u16())
    draft = sh.version >> 8 == 0x7F and (sh.version & 0xFF) < 22
    sh.random = r.take(32)
    if not draft:
        sh.session_id = r.take(r.u8())
    sh.cipher = r.u16()
    if not draft:
        sh.compression = r.u8()
    sh.hello_retry = sh.random == HRR_RANDOM
    if r.left() < 2:
        return sh
    ext_len = r.u16()
    r.end = min(r.end, r.p + ext_len)
    while r.left() >= 4:
        et = r.u16()
        data = r.take(r.u16())
        sh.extensions.append(et)
        if et == EXT_SUPPORTED_VERSIONS and len(data) >= 2:
            sh.selected_version = (data[0] << 8) | data[1]
        elif (et == EXT_KEY_SHARE or et == EXT_KEY_SHARE_DRAFT) and len(data) >= 2:
            sh.key_share_group = (data[0] << 8) | data[1]
        elif et == EXT_PRE_SHARED_KEY:
            sh.psk = True
        elif et == EXT_ALPN:
            names = _parse_alpn(data)
            sh.alpn = names[0] if names else None
        elif et == EXT_RENEGOTIATION_INFO:
            sh.renegotiation_info = True
        elif et == EXT_EXTENDED_MASTER_SECRET:
            sh.extended_master_secret = True
        elif et == EXT_SESSION_TICKET:
            sh.session_ticket = True
    return sh


def parse_server_key_exchange(body: bytes, kex: str | None) -> dict | None:
    """{kind, curve (group code), dh_bits, rsa_bits} from a ServerKeyExchange body."""
    r = _Reader(body)
    if kex in ("ECDHE", "ECDH"):
        if r.u8() != 3:  # named_curve
            return {"kind": "ecdhe", "curve": None, "dh_bits": None, "explicit_curve": True}
        return {"kind": "ecdhe", "curve": r.u16(), "dh_bits": None}
    if kex in ("DHE", "DH"):
        p = r.take(r.u16()).lstrip(b"\x00")
        return {"kind": "dhe", "curve": None, "dh_bits": int.from_bytes(p, "big").bit_length()}
    if kex == "RSA":  # RSA_EXPORT temporary key
        m = r.take(r.u16()).lstrip(b"\x00")
        return {"kind": "rsa", "curve": None, "dh_bits": None,
                "rsa_bits": int.from_bytes(m, "big").bit_length()}
    return None


def parse_certificate_list(body: bytes) -> list[bytes]:
    """DER certificates of a TLS <= 1.2 Certificate message, leaf first."""
    r = _Reader(body)
    total = r.u24()
    r.end = min(r.end, r.p + total)
    out = []
    while r.left() >= 3:
        out.append(r.take(r.u24()))
    return out


# --------------------------------------------------------------------------- first-bytes checks


@dataclass(frozen=True, slots=True)
class ClientHelloPeek:
    complete: bool
    needed: int
    sni: str | None
    alpn: tuple[str, ...]


def ssl2_hello_len(buf: bytes) -> int | None:
    """Total length of an SSLv2 CLIENT-HELLO record starting ``buf``, or None if not one."""
    if len(buf) < 5 or not buf[0] & 0x80 or buf[2] != 1:
        return None
    ver = (buf[3] << 8) | buf[4]
    if ver != 0x0002 and not (buf[3] == 3 and buf[4] <= 4):
        return None
    ln = ((buf[0] & 0x7F) << 8) | buf[1]
    if ln < 9:
        return None
    return 2 + ln


def looks_like_tls(buf: bytes) -> bool:
    """The first bytes of a direction look like a TLS record (or an SSLv2 CLIENT-HELLO)."""
    try:
        n = len(buf)
        if n == 0:
            return False
        b0 = buf[0]
        if b0 & 0x80:
            return ssl2_hello_len(buf) is not None or (
                n >= 3 and buf[2] == 4 and n >= 7 and buf[5] in (0, 3)  # SSLv2 SERVER-HELLO
            )
        if not 20 <= b0 <= 23:
            return False
        if n >= 2 and buf[1] != 3:
            return False
        if n >= 3 and buf[2] > 4:
            return False
        if n >= 5:
            ln = (buf[3] << 8) | buf[4]
            if ln > MAX_RECORD_LEN or (ln == 0 and b0 != 23):
                return False
            if b0 == 22 and n >= 6 and buf[5] not in (1, 2, 11, 12, 13, 14, 4):
                return False
            if b0 == 21 and ln == 2 and n >= 6 and buf[5] not in (1, 2):
                return False
        return True
    except Exception:  # pragma: no cover - defensive: never raise to the pipeline
        return False


def peek_client_hello(buf: bytes) -> ClientHelloPeek | None:
    """Quick look at the first client bytes of a flow. See docs/tls.md."""
    try:
        return _peek(buf)
    except Exception:  # pragma: no cover - defensive
        return None


def _peek(buf: bytes) -> ClientHelloPeek | None:
    n = len(buf)
    if n == 0:
        return None
    if buf[0] & 0x80:
        total = ssl2_hello_len(buf)
        if total is None:
            return None
        total = min(total, PEEK_CAP)
        return ClientHelloPeek(n >= total, total, None, ())
    if buf[0] != 22 or (n >= 2 and buf[1] != 3) or (n >= 3 and buf[2] > 4):
        return None
    if n < 5:
        return ClientHelloPeek(False, 5, None, ())
    rec_len = (buf[3] << 8) | buf[4]
    if rec_len == 0 or rec_len > MAX_RECORD_LEN:
        return None
    if n >= 6 and buf[5] != HS_CLIENT_HELLO:
        return None
    if n < 9:
        return ClientHelloPeek(False, min(5 + rec_len, PEEK_CAP), None, ())
    hs_len = (buf[6] << 16) | (buf[7] << 8) | buf[8]
    if hs_len + 4 <= rec_len:
        end = 5 + rec_len
        if n < end:
            return ClientHelloPeek(False, min(end, PEEK_CAP), None, ())
        body = buf[9:9 + hs_len]
        done_at = end
    else:
        # the hello spans several handshake records: gather their bodies
        need = hs_len + 4
        parts = []
        got = 0
        pos = 0
        while got < need:
            if n < pos + 5:
                est = pos + 5 + (need - got)
                return ClientHelloPeek(False, min(est, PEEK_CAP), None, ())
            if buf[pos] != 22:
                return None
            ln = (buf[pos + 3] << 8) | buf[pos + 4]
            if n < pos + 5 + ln:
                est = pos + 5 + ln + (need - got - ln if need - got > ln else 0)
                if need - got > ln:
                    est += 5
                return ClientHelloPeek(False, min(est, PEEK_CAP), None, ())
            parts.append(buf[pos + 5:pos + 5 + ln])
            got += ln
            pos += 5 + ln
            if pos >= PEEK_CAP:
                break
        body = b"".join(parts)[4:need]
        done_at = pos
    done_at = min(done_at, PEEK_CAP)
    sni, alpn = _sni_alpn(body)
    return ClientHelloPeek(True, done_at, sni, alpn)


def _sni_alpn(body: bytes) -> tuple[str | None, tuple[str, ...]]:
    """SNI and ALPN of a ClientHello body, skipping everything else (the fast path)."""
    n = len(body)
    try:
        p = 34  # version + random
        p += 1 + body[p]  # session id
        p += 2 + ((body[p] << 8) | body[p + 1])  # cipher suites
        p += 1 + body[p]  # compression methods
        if p + 2 > n:
            return None, ()
        end = min(n, p + 2 + ((body[p] << 8) | body[p + 1]))
        p += 2
        sni = None
        alpn: tuple[str, ...] = ()
        while p + 4 <= end:
            et = (body[p] << 8) | body[p + 1]
            el = (body[p + 2] << 8) | body[p + 3]
            p += 4
            if et == EXT_SERVER_NAME and el:
                # same answer as parse_client_hello: the last server_name extension counts
                ln = (body[p + 3] << 8) | body[p + 4] if el >= 5 else -1
                if (el >= 5 and body[p + 2] == 0 and 3 + ln <= ((body[p] << 8) | body[p + 1])
                        and 5 + ln <= el):
                    sni = body[p + 5:p + 5 + ln].decode("ascii", "replace").rstrip(".").lower()
                else:  # unusual layout: the careful parser decides
                    try:
                        sni = _parse_sni(body[p:p + el])
                    except (ValueError, IndexError):
                        sni = None
            elif et == EXT_ALPN and el >= 2:
                q = p + 2
                stop = min(p + el, q + ((body[p] << 8) | body[p + 1]))
                names = []
                while q < stop:
                    ln = body[q]
                    if q + 1 + ln > stop:
                        break
                    names.append(body[q + 1:q + 1 + ln].decode("utf-8", "backslashreplace"))
                    q += 1 + ln
                alpn = tuple(names)
            p += el
        return sni, alpn
    except IndexError:
        return None, ()


def grease_free(values: list[int]) -> list[int]:
    return [v for v in values if not is_grease(v)]
