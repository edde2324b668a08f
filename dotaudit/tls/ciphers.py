"""TLS wire-code constants and cipher-suite facts.

Everything about a cipher suite is derived from its IANA name (``data/tls-parameters-4.csv``),
never from a hand-kept list of codes; Mozilla profile membership comes from
``data/mozilla-server-side-tls-6.0.json``. See docs/tls.md for the vocabulary.
"""

from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).resolve().parent.parent / "data"

VERSION_NAMES = {
    0x0002: "SSL 2.0",
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}

# Record content types (RFC 8446 5.1, RFC 6520).
CT_CHANGE_CIPHER_SPEC = 20
CT_ALERT = 21
CT_HANDSHAKE = 22
CT_APPLICATION_DATA = 23
CT_HEARTBEAT = 24

# Handshake message types (IANA "TLS HandshakeType").
HS_HELLO_REQUEST = 0
HS_CLIENT_HELLO = 1
HS_SERVER_HELLO = 2
HS_HELLO_VERIFY_REQUEST = 3
HS_NEW_SESSION_TICKET = 4
HS_END_OF_EARLY_DATA = 5
HS_HELLO_RETRY_REQUEST = 6  # TLS 1.3 drafts before -22
HS_ENCRYPTED_EXTENSIONS = 8
HS_CERTIFICATE = 11
HS_SERVER_KEY_EXCHANGE = 12
HS_CERTIFICATE_REQUEST = 13
HS_SERVER_HELLO_DONE = 14
HS_CERTIFICATE_VERIFY = 15
HS_CLIENT_KEY_EXCHANGE = 16
HS_FINISHED = 20
HS_CERTIFICATE_STATUS = 22
HS_KEY_UPDATE = 24

# Extension types (IANA "TLS ExtensionType Values").
EXT_SERVER_NAME = 0
EXT_STATUS_REQUEST = 5
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_ENCRYPT_THEN_MAC = 22
EXT_EXTENDED_MASTER_SECRET = 23
EXT_SESSION_TICKET = 35
EXT_PRE_SHARED_KEY = 41
EXT_EARLY_DATA = 42
EXT_SUPPORTED_VERSIONS = 43
EXT_PSK_KEY_EXCHANGE_MODES = 45
EXT_KEY_SHARE = 51
EXT_KEY_SHARE_DRAFT = 40  # TLS 1.3 drafts before -23
EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D
EXT_RENEGOTIATION_INFO = 0xFF01

SCSV_EMPTY_RENEGOTIATION_INFO = 0x00FF
SCSV_FALLBACK = 0x5600

# SHA-256("HelloRetryRequest"), RFC 8446 4.1.3; and the downgrade sentinels.
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
DOWNGRADE_TLS12 = b"DOWNGRD\x01"
DOWNGRADE_TLS11 = b"DOWNGRD\x00"

# Alert descriptions (IANA "TLS Alerts").
ALERT_NAMES = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 21: "decryption_failed",
    22: "record_overflow", 30: "decompression_failure", 40: "handshake_failure",
    41: "no_certificate", 42: "bad_certificate", 43: "unsupported_certificate",
    44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 60: "export_restriction", 70: "protocol_version",
    71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
    90: "user_canceled", 100: "no_renegotiation", 109: "missing_extension",
    110: "unsupported_extension", 111: "certificate_unobtainable", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 114: "bad_certificate_hash_value",
    115: "unknown_psk_identity", 116: "certificate_required", 120: "no_application_protocol",
    121: "ech_required",
}

# Supported groups (IANA "TLS Supported Groups").
GROUP_NAMES = {
    1: "sect163k1", 2: "sect163r1", 3: "sect163r2", 4: "sect193r1", 5: "sect193r2",
    6: "sect233k1", 7: "sect233r1", 8: "sect239k1", 9: "sect283k1", 10: "sect283r1",
    11: "sect409k1", 12: "sect409r1", 13: "sect571k1", 14: "sect571r1", 15: "secp160k1",
    16: "secp160r1", 17: "secp160r2", 18: "secp192k1", 19: "secp192r1", 20: "secp224k1",
    21: "secp224r1", 22: "secp256k1", 23: "secp256r1", 24: "secp384r1", 25: "secp521r1",
    26: "brainpoolP256r1", 27: "brainpoolP384r1", 28: "brainpoolP512r1", 29: "x25519",
    30: "x448", 31: "brainpoolP256r1tls13", 32: "brainpoolP384r1tls13",
    33: "brainpoolP512r1tls13", 256: "ffdhe2048", 257: "ffdhe3072", 258: "ffdhe4096",
    259: "ffdhe6144", 260: "ffdhe8192", 512: "MLKEM512", 513: "MLKEM768", 514: "MLKEM1024",
    0x11EB: "SecP256r1MLKEM768", 0x11EC: "X25519MLKEM768", 0x11ED: "SecP384r1MLKEM1024",
    0x6399: "X25519Kyber768Draft00", 0x639A: "SecP256r1Kyber768Draft00",
    0xFF01: "arbitrary_explicit_prime_curves", 0xFF02: "arbitrary_explicit_char2_curves",
}

# Signature schemes (RFC 8446 4.2.3); TLS 1.2 hash/signature pairs are named generically.
SIGNATURE_SCHEME_NAMES = {
    0x0401: "rsa_pkcs1_sha256", 0x0501: "rsa_pkcs1_sha384", 0x0601: "rsa_pkcs1_sha512",
    0x0403: "ecdsa_secp256r1_sha256", 0x0503: "ecdsa_secp384r1_sha384",
    0x0603: "ecdsa_secp521r1_sha512", 0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384", 0x0806: "rsa_pss_rsae_sha512", 0x0807: "ed25519",
    0x0808: "ed448", 0x0809: "rsa_pss_pss_sha256", 0x080A: "rsa_pss_pss_sha384",
    0x080B: "rsa_pss_pss_sha512", 0x081A: "ecdsa_brainpoolP256r1tls13_sha256",
    0x081B: "ecdsa_brainpoolP384r1tls13_sha384", 0x081C: "ecdsa_brainpoolP512r1tls13_sha512",
    0x0201: "rsa_pkcs1_sha1", 0x0203: "ecdsa_sha1", 0x0904: "mldsa44", 0x0905: "mldsa65",
    0x0906: "mldsa87",
}
_LEGACY_HASH = {1: "md5", 2: "sha1", 3: "sha224", 4: "sha256", 5: "sha384", 6: "sha512"}
_LEGACY_SIG = {1: "rsa", 2: "dsa", 3: "ecdsa"}

# SSL 2.0 cipher kinds (3-byte codes of the SSLv2 CLIENT-HELLO, draft-hickman-netscape-ssl-00).
SSL2_CIPHER_NAMES = {
    0x010080: "SSL2_RC4_128_WITH_MD5",
    0x020080: "SSL2_RC4_128_EXPORT40_WITH_MD5",
    0x030080: "SSL2_RC2_128_CBC_WITH_MD5",
    0x040080: "SSL2_RC2_128_CBC_EXPORT40_WITH_MD5",
    0x050080: "SSL2_IDEA_128_CBC_WITH_MD5",
    0x060040: "SSL2_DES_64_CBC_WITH_MD5",
    0x0700C0: "SSL2_DES_192_EDE3_CBC_WITH_MD5",
}

COMPRESSION_NAMES = {0: "null", 1: "DEFLATE", 64: "LZS"}


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE value (0x?a?a with equal bytes)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def version_name(v: int | None) -> str | None:
    if v is None:
        return None
    name = VERSION_NAMES.get(v)
    if name:
        return name
    if v >> 8 == 0x7F:
        return f"TLS 1.3 draft {v & 0xFF}"
    return f"0x{v:04x}"


def group_name(g: int) -> str:
    return GROUP_NAMES.get(g) or (f"GREASE_0x{g:04x}" if is_grease(g) else f"0x{g:04x}")


def signature_scheme_name(s: int) -> str:
    name = SIGNATURE_SCHEME_NAMES.get(s)
    if name:
        return name
    h, sig = s >> 8, s & 0xFF
    if h in _LEGACY_HASH and sig in _LEGACY_SIG:
        return f"{_LEGACY_SIG[sig]}_{_LEGACY_HASH[h]}"
    return f"0x{s:04x}"


def alert_name(desc: int | None) -> str | None:
    if desc is None:
        return None
    return ALERT_NAMES.get(desc, f"unknown_{desc}")


# --------------------------------------------------------------------------- registry data


@lru_cache(maxsize=1)
def iana_cipher_names() -> dict[int, str]:
    """code -> IANA description for every single assigned code in the vendored registry."""
    text = (_DATA / "tls-parameters-4.csv").read_text("utf-8")
    out: dict[int, str] = {}
    lines = [ln for ln in text.splitlines(keepends=True) if not ln.startswith("#")]
    for row in csv.reader(lines):
        if len(row) < 2 or not row[0].startswith("0x"):
            continue
        parts = row[0].split(",")
        if len(parts) != 2 or "-" in row[0] or "*" in row[0]:
            continue
        try:
            code = (int(parts[0], 16) << 8) | int(parts[1], 16)
        except ValueError:
            continue
        name = row[1].strip()
        if name.startswith("TLS_"):
            out[code] = name
    return out


@lru_cache(maxsize=1)
def mozilla_profiles() -> dict[str, frozenset[str]]:
    """profile name -> IANA suite names it allows (TLS 1.2 ``ciphers.iana`` + TLS 1.3 suites)."""
    data = json.loads((_DATA / "mozilla-server-side-tls-6.0.json").read_text("utf-8"))
    out: dict[str, frozenset[str]] = {}
    for prof, conf in data.get("configurations", {}).items():
        names = set(conf.get("ciphersuites") or ())
        names.update((conf.get("ciphers") or {}).get("iana") or ())
        out[prof] = frozenset(names)
    return out


_PROFILE_ORDER = ("modern", "intermediate", "old")

# Key-exchange algorithms that give no forward secrecy (static RSA/DH/ECDH, plain PSK, KRB5).
_NO_PFS_KEX = frozenset({"RSA", "DH", "ECDH", "PSK", "RSA_PSK", "KRB5"})
_MACS = frozenset({"MD5", "SHA", "SHA256", "SHA384", "SM3", "OMAC", "IMIT"})
_AEAD_MODES = frozenset({"GCM", "CCM", "CCM_8", "POLY1305", "MGM", "AEGIS"})


def _split_kex_auth(left: str) -> tuple[str | None, str | None]:
    toks = [t for t in left.split("_") if t != "EXPORT"]
    if not toks or toks == ["NULL"]:
        return "NULL", "NULL"
    if "anon" in toks:
        # anonymous (EC)DH suites send ephemeral parameters in ServerKeyExchange
        return {"DH": "DHE", "ECDH": "ECDHE"}.get(toks[0], toks[0]), "anon"
    head = toks[0]
    rest = toks[1:]
    if head == "RSA" and rest == ["PSK"]:
        return "RSA_PSK", "PSK"
    if head == "PSK" and rest == ["DHE"]:
        return "DHE", "PSK"
    if head.startswith("GOSTR"):
        return "_".join(toks), "_".join(toks)
    if head == "SRP":
        return "SRP", (rest[1] if len(rest) > 1 else "SRP")
    if not rest:
        if head == "RSA":
            return "RSA", "RSA"
        return head, head
    return head, "_".join(rest)


def _split_enc(right: str) -> tuple[str | None, str | None, str | None, bool]:
    """-> enc, mode, mac, aead from the part after ``_WITH_`` (or after ``TLS_`` for 1.3)."""
    toks = right.split("_")
    mac = None
    if len(toks) > 1 and toks[-1] in _MACS:
        mac = toks.pop()
    mode = None
    enc_toks: list[str] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t in ("CBC", "GCM", "CCM", "POLY1305", "CTR", "MGM", "CNT"):
            mode = t
            if t == "CCM" and i + 1 < len(toks) and toks[i + 1] == "8":
                mode = "CCM_8"
                i += 1
            elif t == "MGM" and i + 1 < len(toks):
                mode = f"MGM_{toks[i + 1]}"
                i += 1
            i += 1
            # a trailing key size after the mode (DES_CBC_40, RC2_CBC_40) belongs to enc
            while i < len(toks):
                enc_toks.append(toks[i])
                i += 1
            break
        enc_toks.append(t)
        i += 1
    enc = "_".join(enc_toks) or None
    if enc_toks and all(t == "NULL" for t in enc_toks):
        enc = "NULL"
    if enc and enc.startswith("CHACHA20"):
        mode = mode or "POLY1305"
    if enc and enc.startswith("AEGIS"):
        mode = "AEGIS"
    if enc and enc.startswith("RC4"):
        mode = "STREAM"
    if enc == "NULL":
        mode = None
    aead = bool(mode) and (mode in _AEAD_MODES or mode.startswith("MGM"))
    return enc, mode, mac, aead


@lru_cache(maxsize=None)
def _cipher_info_cached(code: int) -> tuple:
    names = iana_cipher_names()
    name = names.get(code)
    hexcode = f"0x{code:04x}"
    if name is None:
        if is_grease(code):
            return (code, hexcode, f"GREASE_{hexcode}", None, None, None, None, None, (), (),
                    False, None)
        return (code, hexcode, f"UNKNOWN_{hexcode}", None, None, None, None, None, ("unknown",),
                (), False, None)
    if name.endswith("_SCSV"):
        return (code, hexcode, name, None, None, None, None, None, (), (), False, None)
    body = name[4:]  # strip TLS_
    tls13 = "_WITH_" not in body
    if tls13:
        kex, auth = "ECDHE", "any"
        enc, mode, mac, aead = _split_enc(body)
        if body.startswith(("SHA256_", "SHA384_")):  # RFC 9150 integrity-only suites
            enc, mode, mac, aead = "NULL", None, body.split("_")[0], False
    else:
        left, right = body.split("_WITH_", 1)
        kex, auth = _split_kex_auth(left)
        enc, mode, mac, aead = _split_enc(right)
    prf = None
    if aead:
        prf, mac = mac, "AEAD"
    weak: list[str] = []
    if enc == "NULL" or kex == "NULL":
        weak.append("null")
    if "EXPORT" in name or (enc and (enc.endswith("_40") or enc.startswith("DES40"))):
        weak.append("export")
    if auth in ("anon", "NULL"):
        weak.append("anon")
    if enc and enc.startswith("RC4"):
        weak.append("rc4")
    if enc and enc.startswith("DES"):
        weak.append("des")
    if enc and enc.startswith("3DES"):
        weak.append("3des")
    if mode == "CBC":
        weak.append("cbc")
    if kex in _NO_PFS_KEX:
        weak.append("no_pfs")
    if mac == "MD5":
        weak.append("md5")
    if mac == "SHA":
        weak.append("sha1_mac")
    profs = mozilla_profiles()
    ordered = [p for p in _PROFILE_ORDER if p in profs] + sorted(set(profs) - set(_PROFILE_ORDER))
    member = tuple(p for p in ordered if name in profs[p])
    return (code, hexcode, name, kex, auth, enc, mode, mac, tuple(weak), member, tls13, prf)


def cipher_info(code: int) -> dict:
    """Facts about one cipher suite code; a fresh dict each call (callers may mutate it)."""
    t = _cipher_info_cached(int(code) & 0xFFFF)
    return {
        "id": t[0],
        "hex": t[1],
        "name": t[2],
        "kex": t[3],
        "auth": t[4],
        "enc": t[5],
        "mode": t[6],
        "mac": t[7],
        "prf": t[11],
        "aead": t[7] == "AEAD",
        "tls13": t[10],
        "weaknesses": list(t[8]),
        "profiles": list(t[9]),
    }


@lru_cache(maxsize=None)
def cipher_name(code: int) -> str:
    return _cipher_info_cached(code & 0xFFFF)[2]


@lru_cache(maxsize=None)
def cipher_weaknesses(code: int) -> tuple[str, ...]:
    return _cipher_info_cached(code & 0xFFFF)[8]


def ssl2_cipher_name(spec: int) -> str:
    """Name of a 3-byte SSLv2 cipher spec; 0x00XXXX specs are TLS suites."""
    if spec >> 16 == 0:
        return cipher_name(spec & 0xFFFF)
    return SSL2_CIPHER_NAMES.get(spec, f"SSL2_UNKNOWN_0x{spec:06x}")


def ssl2_cipher_weaknesses(spec: int) -> tuple[str, ...]:
    if spec >> 16 == 0:
        return cipher_weaknesses(spec & 0xFFFF)
    name = SSL2_CIPHER_NAMES.get(spec)
    if name is None:
        return ("unknown",)
    weak = []
    if "EXPORT" in name:
        weak.append("export")
    if "RC4" in name:
        weak.append("rc4")
    if "_DES_64" in name:
        weak.append("des")
    if "EDE3" in name:
        weak.append("3des")
    if "CBC" in name:
        weak.append("cbc")
    weak += ["no_pfs", "md5"]
    return tuple(weak)
