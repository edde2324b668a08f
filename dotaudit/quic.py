"""Content classification of QUIC flows: decrypt the client's Initial packet and read its ClientHello.

A QUIC client's first flight is protected with keys derived from nothing but the Destination
Connection ID it chose and a salt published for its version (RFC 9001 section 5.2, RFC 9369
section 3.3). Any on-path observer can therefore remove the Initial packet protection and read the
TLS ClientHello carried in its CRYPTO frames -- the ALPN list ("doq", "doq-i0x", "h3", ...) and
the server name -- which is how dotaudit recognises DNS-over-QUIC (RFC 9250) and DoH over HTTP/3
independently of the port.

stdlib + cryptography only. Every public function returns None / leaves state untouched on
malformed, truncated, or hostile input instead of raising.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "QuicInitial",
    "QuicSniffer",
    "client_hello_alpn_sni",
    "initial_salt",
    "parse_client_initial",
]

# --------------------------------------------------------------------------------------------
# Versions and their published Initial salts

VERSION_1 = 0x00000001
VERSION_2 = 0x6B3343CF

_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")  # RFC 9001 s5.2, drafts 33/34
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")  # RFC 9369 s3.3.1
_SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")  # draft-ietf-quic-tls-29..32
_SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")  # draft-ietf-quic-tls-23..28

_SALTS: dict[int, bytes] = {VERSION_1: _SALT_V1, VERSION_2: _SALT_V2}
for _d in range(23, 29):
    _SALTS[0xFF000000 | _d] = _SALT_D23
for _d in range(29, 33):
    _SALTS[0xFF000000 | _d] = _SALT_D29
for _d in (33, 34):
    _SALTS[0xFF000000 | _d] = _SALT_V1
del _d

# Long-header packet type (bits 0x30 of the first byte): RFC 9000 s17.2 / RFC 9369 s3.2.
_TYPES_V1 = {"initial": 0, "0rtt": 1, "handshake": 2, "retry": 3}
_TYPES_V2 = {"initial": 1, "0rtt": 2, "handshake": 3, "retry": 0}

_MAX_CID = 20
_MAX_CRYPTO = 1 << 16  # ignore CRYPTO data beyond 64 KiB: no sane ClientHello is that big
_TAG_LEN = 16


def initial_salt(version: int) -> bytes | None:
    """The published Initial salt of ``version``, or None for a version we cannot decrypt."""
    return _SALTS.get(version)


def _packet_types(version: int) -> dict[str, int]:
    return _TYPES_V2 if version == VERSION_2 else _TYPES_V1


# --------------------------------------------------------------------------------------------
# Key schedule (RFC 9001 s5.1-5.2, RFC 8446 s7.1)
#
# HKDF-Expand with an output no longer than the hash (<= 32 bytes for SHA-256) is a single
# HMAC(prk, info || 0x01) block (RFC 5869 s2.3); the stdlib's one-shot hmac.digest computes it
# without building HKDF objects, which is the hot path on a gateway.


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"  # empty context
    return hmac.digest(secret, info + b"\x01", "sha256")[:length]


@dataclass(frozen=True, slots=True)
class _Keys:
    aead: AESGCM
    iv: bytes
    hp: Cipher


def _client_key_material(version: int, dcid: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(key, iv, hp) protecting the client's Initial packets, or None for an unknown version."""
    salt = _SALTS.get(version)
    if salt is None:
        return None
    initial_secret = hmac.digest(salt, dcid, "sha256")  # HKDF-Extract
    client_secret = _expand_label(initial_secret, b"client in", 32)
    prefix = b"quicv2 " if version == VERSION_2 else b"quic "
    return (
        _expand_label(client_secret, prefix + b"key", 16),
        _expand_label(client_secret, prefix + b"iv", 12),
        _expand_label(client_secret, prefix + b"hp", 16),
    )


def _client_keys(version: int, dcid: bytes, cache: dict) -> _Keys | None:
    k = (version, dcid)
    if k in cache:
        return cache[k]
    material = _client_key_material(version, dcid)
    keys = None
    if material is not None:
        key, iv, hp = material
        keys = _Keys(AESGCM(key), iv, Cipher(algorithms.AES(hp), modes.ECB()))
    if len(cache) >= 4:  # per call / per flow, never grows with traffic
        cache.clear()
    cache[k] = keys
    return keys


# --------------------------------------------------------------------------------------------
# Wire helpers


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """RFC 9000 s16 variable-length integer at ``pos`` -> (value, next pos); IndexError if short."""
    first = buf[pos]
    n = 1 << (first >> 6)
    if pos + n > len(buf):
        raise IndexError("truncated varint")
    value = first & 0x3F
    for i in range(1, n):
        value = (value << 8) | buf[pos + i]
    return value, pos + n


def _unprotect(data: bytes, start: int, pn_offset: int, end: int, keys: _Keys) -> bytes | None:
    """Remove header and payload protection of the long-header packet data[start:end]."""
    sample = data[pn_offset + 4 : pn_offset + 4 + 16]
    if len(sample) != 16:
        return None
    enc = keys.hp.encryptor()
    mask = enc.update(sample)
    first = data[start] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    payload_start = pn_offset + pn_len
    if end - payload_start < _TAG_LEN:
        return None
    pn_bytes = bytes(b ^ m for b, m in zip(data[pn_offset:payload_start], mask[1 : 1 + pn_len]))
    header = bytes((first,)) + data[start + 1 : pn_offset] + pn_bytes
    # First client Initials use small packet numbers (expected 0), so the truncated value is the
    # packet number (RFC 9000 appendix A.3 with largest_pn = -1).
    pn = int.from_bytes(pn_bytes, "big")
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    try:
        return keys.aead.decrypt(nonce, data[payload_start:end], header)
    except InvalidTag:
        return None


def _crypto_frames(payload: bytes) -> list[tuple[int, bytes]] | None:
    """CRYPTO frame (offset, data) of a decrypted Initial payload; PADDING/PING/ACK skipped.

    Parsing stops at CONNECTION_CLOSE or at a frame type not allowed in Initial packets
    (RFC 9000 s12.4); what was collected before is kept.
    """
    out: list[tuple[int, bytes]] = []
    pos, n = 0, len(payload)
    try:
        while pos < n:
            ftype = payload[pos]
            if ftype == 0x00:  # PADDING: skip the whole run
                stripped = len(payload[pos:].lstrip(b"\x00"))
                pos = n - stripped
                continue
            if ftype == 0x01:  # PING
                pos += 1
            elif ftype in (0x02, 0x03):  # ACK / ACK_ECN
                pos += 1
                _, pos = _varint(payload, pos)  # largest acknowledged
                _, pos = _varint(payload, pos)  # ack delay
                count, pos = _varint(payload, pos)
                _, pos = _varint(payload, pos)  # first range
                if count > n:
                    break
                for _ in range(count):
                    _, pos = _varint(payload, pos)  # gap
                    _, pos = _varint(payload, pos)  # range length
                if ftype == 0x03:
                    for _ in range(3):
                        _, pos = _varint(payload, pos)
            elif ftype == 0x06:  # CRYPTO
                offset, pos = _varint(payload, pos + 1)
                length, pos = _varint(payload, pos)
                if pos + length > n:
                    break
                if offset + length <= _MAX_CRYPTO:
                    out.append((offset, payload[pos : pos + length]))
                pos += length
            else:  # CONNECTION_CLOSE (0x1c) or anything not allowed in an Initial
                break
    except IndexError:
        pass
    return out


@dataclass(frozen=True, slots=True)
class _Parsed:
    version: int
    dcid: bytes
    scid: bytes
    segments: list[tuple[int, bytes]]


def _parse(data: bytes, cache: dict, fallback_dcid: bytes | None = None) -> _Parsed | None:
    """Decrypt every client Initial coalesced in ``data`` (RFC 9000 s12.2).

    ``fallback_dcid``: the flow's original DCID, whose keys keep protecting the client's Initials
    after the server picked a new connection ID (RFC 9001 s5.2).
    """
    n = len(data)
    pos = 0
    result: _Parsed | None = None
    segments: list[tuple[int, bytes]] = []
    first_packet = True
    try:
        while pos + 7 <= n:
            start = pos
            first = data[pos]
            if not first & 0x80:  # short header: the rest of the datagram is 1-RTT
                break
            version = int.from_bytes(data[pos + 1 : pos + 5], "big")
            if version not in _SALTS:  # version negotiation (0), unknown or greased version
                break
            dcil = data[pos + 5]
            if dcil > _MAX_CID:
                break
            pos += 6
            dcid = data[pos : pos + dcil]
            pos += dcil
            scil = data[pos]
            if scil > _MAX_CID:
                break
            scid = data[pos + 1 : pos + 1 + scil]
            pos += 1 + scil
            if len(scid) != scil or pos > n:
                break
            types = _packet_types(version)
            ptype = (first >> 4) & 0x03
            if ptype == types["retry"]:  # never sent by a client; has no Length field
                break
            if first_packet and ptype != types["initial"]:
                return None
            if ptype == types["initial"]:
                token_len, pos = _varint(data, pos)
                pos += token_len
            length, pos = _varint(data, pos)
            pn_offset, end = pos, pos + length
            if end > n:
                break
            pos = end
            if ptype != types["initial"]:
                first_packet = False
                continue
            if result is not None and (version != result.version or dcid != result.dcid):
                continue  # coalesced packets share one connection (RFC 9000 s12.2)
            payload = None
            keys = _client_keys(version, dcid, cache)
            if keys is not None:
                payload = _unprotect(data, start, pn_offset, end, keys)
            if payload is None and fallback_dcid is not None and fallback_dcid != dcid:
                keys = _client_keys(version, fallback_dcid, cache)
                if keys is not None:
                    payload = _unprotect(data, start, pn_offset, end, keys)
            if payload is None:
                if first_packet:
                    return None
                continue
            first_packet = False
            if result is None:
                result = _Parsed(version, dcid, scid, segments)
            segments.extend(_crypto_frames(payload) or ())
    except (IndexError, ValueError):
        pass
    return result


def _assemble(segments: list[tuple[int, bytes]]) -> bytes:
    """The CRYPTO stream contiguous from offset 0 (overlaps tolerated, first copy wins)."""
    buf = bytearray()
    for offset, chunk in sorted(segments, key=lambda s: s[0]):
        if offset > len(buf):
            break  # gap
        tail = offset + len(chunk) - len(buf)
        if tail > 0:
            buf += chunk[len(chunk) - tail :]
    return bytes(buf)


def _hello_complete(crypto: bytes) -> bool:
    return len(crypto) >= 4 and len(crypto) >= 4 + int.from_bytes(crypto[1:4], "big")


# --------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True, slots=True)
class QuicInitial:
    version: int  # e.g. 0x00000001, 0x6b3343cf (v2), 0xff00001d (draft-29), 0xff000020 (draft-32)
    dcid: bytes
    scid: bytes
    crypto: bytes  # CRYPTO stream bytes contiguous from offset 0 (may be a partial ClientHello)
    complete: bool  # crypto holds the whole handshake message (4-byte header length satisfied)


def parse_client_initial(datagram: bytes) -> QuicInitial | None:
    """Decrypt the client Initial packet(s) at the start of a UDP payload.

    None when the datagram does not start with a long-header Initial of a version whose Initial
    salt is known (v1, v2, drafts 23-34), or when its protection cannot be removed (wrong keys:
    server Initials, Retry-derived keys, corrupt packets).
    """
    try:
        data = bytes(datagram)
    except (TypeError, ValueError):
        return None
    parsed = _parse(data, {})
    if parsed is None:
        return None
    crypto = _assemble(parsed.segments)
    return QuicInitial(parsed.version, parsed.dcid, parsed.scid, crypto, _hello_complete(crypto))


def _u8_vec(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    n = buf[pos]
    if pos + 1 + n > end:
        raise IndexError
    return buf[pos + 1 : pos + 1 + n], pos + 1 + n


def _u16(buf: bytes, pos: int) -> int:
    if pos + 2 > len(buf):
        raise IndexError
    return (buf[pos] << 8) | buf[pos + 1]


def _text(b: bytes) -> str:
    return b.decode("ascii", "backslashreplace")


def client_hello_alpn_sni(
    crypto: bytes, *, allow_partial: bool = False
) -> tuple[tuple[str, ...], str | None] | None:
    """(ALPN protocol names, SNI host name) of a TLS ClientHello handshake message.

    ``crypto`` starts with the handshake header (type 1, 3-byte length). None if it is not a
    ClientHello, or if the message is incomplete and ``allow_partial`` is false. With
    ``allow_partial`` the extensions present in the available bytes are reported.
    """
    try:
        buf = bytes(crypto)
        if len(buf) < 4 or buf[0] != 0x01:
            return None
        end = 4 + int.from_bytes(buf[1:4], "big")
        if end > len(buf):
            if not allow_partial:
                return None
            end = len(buf)
        pos = 4 + 2 + 32  # legacy_version, random
        if pos > end:
            return None
        _, pos = _u8_vec(buf, pos, end)  # legacy_session_id
        pos += 2 + _u16(buf, pos)  # cipher_suites
        if pos >= end:
            return None
        _, pos = _u8_vec(buf, pos, end)  # legacy_compression_methods
    except IndexError:
        return None
    alpn: tuple[str, ...] = ()
    sni: str | None = None
    if pos + 2 > end:  # no extensions block (or cut before it)
        return alpn, sni
    ext_end = min(end, pos + 2 + _u16(buf, pos))
    pos += 2
    while pos + 4 <= ext_end:
        etype, elen = _u16(buf, pos), _u16(buf, pos + 2)
        body_start, body_end = pos + 4, pos + 4 + elen
        pos = body_end
        if body_end > ext_end:
            break  # truncated extension
        body = buf[body_start:body_end]
        try:
            if etype == 0 and sni is None and len(body) >= 2:  # server_name (RFC 6066 s3)
                lend = min(len(body), 2 + _u16(body, 0))
                p = 2
                while p + 3 <= lend:
                    name_type, nlen = body[p], _u16(body, p + 1)
                    name = body[p + 3 : p + 3 + nlen]
                    p += 3 + nlen
                    if p > lend:
                        break
                    if name_type == 0:
                        sni = _text(name)
                        break
            elif etype == 16 and not alpn and len(body) >= 2:  # ALPN (RFC 7301 s3.1)
                lend = min(len(body), 2 + _u16(body, 0))
                names = []
                p = 2
                while p < lend:
                    name, p = _u8_vec(body, p, lend)
                    if name:
                        names.append(_text(name))
                alpn = tuple(names)
        except IndexError:
            continue
    return alpn, sni


class QuicSniffer:
    """Feed client datagrams of one flow until the ClientHello is complete.

    ClientHellos with post-quantum key shares span 2+ Initial packets (often in separate
    datagrams). CRYPTO data of at most 4 datagrams is kept; after that the flow is classified
    from whatever part of the hello was seen (``complete`` stays False).
    """

    MAX_DATAGRAMS = 4

    __slots__ = ("done", "alpn", "sni", "version", "complete", "dcid", "_seen", "_segments", "_keys")

    def __init__(self) -> None:
        self.done: bool = False
        self.alpn: tuple[str, ...] = ()
        self.sni: str | None = None
        self.version: int | None = None
        self.complete: bool = False  # the whole ClientHello was reassembled
        self.dcid: bytes | None = None  # the client's original Destination Connection ID
        self._seen = 0
        self._segments: list[tuple[int, bytes]] = []
        self._keys: dict = {}  # per-flow key cache, at most a few entries

    def feed(self, datagram: bytes) -> None:
        if self.done:
            return
        self._seen += 1
        try:
            data = bytes(datagram)
        except (TypeError, ValueError):
            data = b""
        parsed = _parse(data, self._keys, self.dcid)
        if parsed is not None and (self.version is None or parsed.version == self.version):
            if self.version is None:
                self.version, self.dcid = parsed.version, parsed.dcid
            self._segments.extend(parsed.segments)
            crypto = _assemble(self._segments)
            if _hello_complete(crypto):
                self._finish(crypto, complete=True)
                return
        if self._seen >= self.MAX_DATAGRAMS:
            self._finish(_assemble(self._segments), complete=False)

    def finish(self) -> None:
        """The flow ended: report from whatever part of the ClientHello was seen."""
        if not self.done:
            self._finish(_assemble(self._segments), complete=False)

    def _finish(self, crypto: bytes, *, complete: bool) -> None:
        self.done = True
        self.complete = complete
        hello = client_hello_alpn_sni(crypto, allow_partial=not complete)
        if hello is not None:
            self.alpn, self.sni = hello
        self._segments = []
        self._keys = {}
