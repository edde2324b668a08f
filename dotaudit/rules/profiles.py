"""TLS profiles a policy can hold DoT sessions to: which versions and cipher suites each allows.

Cipher suites are judged by their IANA name (``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``), the one
stable key across analyzers. Mozilla lists are from Mozilla's server-side TLS guidelines 6.0
(https://ssl-config.mozilla.org/guidelines/6.0.json, ``configurations.*.ciphers.iana`` and
``ciphersuites``); the RFC 9325 and NIST SP 800-52r2 profiles are rules over the name.
"""

from __future__ import annotations

TLS13_SUITES = frozenset({
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
})

MOZILLA_MODERN = frozenset({
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
})

MOZILLA_INTERMEDIATE = MOZILLA_MODERN | frozenset({
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
})

VERSIONS = {
    "rfc9325": frozenset({"TLS 1.2", "TLS 1.3"}),
    "mozilla-intermediate": frozenset({"TLS 1.2", "TLS 1.3"}),
    "mozilla-modern": frozenset({"TLS 1.3"}),
    "nist-800-52r2": frozenset({"TLS 1.2", "TLS 1.3"}),
}

_BROKEN = ("_NULL_", "WITH_NULL", "_EXPORT", "_ANON_", "_RC4_", "_DES_", "_DES40_", "_3DES_", "_IDEA_")
_FORWARD_SECRET = ("TLS_ECDHE_", "TLS_DHE_")


def cipher_name(cipher: dict | None) -> str | None:
    if not isinstance(cipher, dict):
        return None
    name = cipher.get("name")
    return name.upper() if isinstance(name, str) and name else None


def is_tls13_suite(name: str) -> bool:
    return name in TLS13_SUITES or ("_WITH_" not in name and name.startswith("TLS_AES_"))


def version_in_profile(profile: str, version: str | None) -> bool | None:
    if not version:
        return None
    return version in VERSIONS[profile]


def cipher_in_profile(profile: str, cipher: dict | None, version: str | None = None) -> bool | None:
    """Whether the negotiated suite is allowed by ``profile``; None when no suite is known."""
    name = cipher_name(cipher)
    if name is None:
        return None
    if profile == "mozilla-modern":
        return name in MOZILLA_MODERN
    if profile == "mozilla-intermediate":
        return name in MOZILLA_INTERMEDIATE
    if any(marker in name for marker in _BROKEN):
        return False
    if profile == "rfc9325":
        # RFC 9325 section 4.2: forward secrecy and an AEAD; TLS 1.3 suites all qualify.
        if is_tls13_suite(name):
            return True
        aead = "_GCM_" in name or "_CHACHA20_POLY1305" in name or name.endswith("_CCM") or "_CCM_" in name
        return name.startswith(_FORWARD_SECRET) and aead
    if profile == "nist-800-52r2":
        # SP 800-52r2 section 3.3.1: (EC)DHE with AES (GCM, CCM or CBC); no ChaCha20, no static RSA.
        if is_tls13_suite(name):
            return "CHACHA20" not in name
        return name.startswith(_FORWARD_SECRET) and "_AES_" in name
    raise ValueError(f"unknown profile {profile!r}")
