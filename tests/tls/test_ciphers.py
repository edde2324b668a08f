from __future__ import annotations

import pytest

from dotaudit.tls.ciphers import (
    VERSION_NAMES,
    cipher_info,
    group_name,
    iana_cipher_names,
    is_grease,
    mozilla_profiles,
    signature_scheme_name,
    version_name,
)


@pytest.mark.parametrize(
    "code,name,kex,auth,enc,mode,mac,weak",
    [
        (0x1301, "TLS_AES_128_GCM_SHA256", "ECDHE", "any", "AES_128", "GCM", "AEAD", []),
        (0x1303, "TLS_CHACHA20_POLY1305_SHA256", "ECDHE", "any", "CHACHA20", "POLY1305", "AEAD", []),
        (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE", "RSA", "AES_128", "GCM", "AEAD", []),
        (0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE", "RSA", "CHACHA20", "POLY1305", "AEAD", []),
        (0xC013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE", "RSA", "AES_128", "CBC", "SHA", ["cbc", "sha1_mac"]),
        (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA", "RSA", "RSA", "AES_256", "CBC", "SHA", ["cbc", "no_pfs", "sha1_mac"]),
        (0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256", "RSA", "RSA", "AES_128", "GCM", "AEAD", ["no_pfs"]),
        (0x0005, "TLS_RSA_WITH_RC4_128_SHA", "RSA", "RSA", "RC4_128", "STREAM", "SHA", ["rc4", "no_pfs", "sha1_mac"]),
        (0x0004, "TLS_RSA_WITH_RC4_128_MD5", "RSA", "RSA", "RC4_128", "STREAM", "MD5", ["rc4", "no_pfs", "md5"]),
        (0x0003, "TLS_RSA_EXPORT_WITH_RC4_40_MD5", "RSA", "RSA", "RC4_40", "STREAM", "MD5", ["export", "rc4", "no_pfs", "md5"]),
        (0x000A, "TLS_RSA_WITH_3DES_EDE_CBC_SHA", "RSA", "RSA", "3DES_EDE", "CBC", "SHA", ["3des", "cbc", "no_pfs", "sha1_mac"]),
        (0x0009, "TLS_RSA_WITH_DES_CBC_SHA", "RSA", "RSA", "DES", "CBC", "SHA", ["des", "cbc", "no_pfs", "sha1_mac"]),
        (0x0001, "TLS_RSA_WITH_NULL_MD5", "RSA", "RSA", "NULL", None, "MD5", ["null", "no_pfs", "md5"]),
        (0x0034, "TLS_DH_anon_WITH_AES_128_CBC_SHA", "DHE", "anon", "AES_128", "CBC", "SHA", ["anon", "cbc", "sha1_mac"]),
        (0x0031, "TLS_DH_RSA_WITH_AES_128_CBC_SHA", "DH", "RSA", "AES_128", "CBC", "SHA", ["cbc", "no_pfs", "sha1_mac"]),
        (0xC031, "TLS_ECDH_RSA_WITH_AES_128_GCM_SHA256", "ECDH", "RSA", "AES_128", "GCM", "AEAD", ["no_pfs"]),
        (0x0000, "TLS_NULL_WITH_NULL_NULL", "NULL", "NULL", "NULL", None, None, ["null", "anon"]),
        (0xC0B4, "TLS_SHA256_SHA256", "ECDHE", "any", "NULL", None, "SHA256", ["null"]),
    ],
)
def test_cipher_info_derived_from_name(code, name, kex, auth, enc, mode, mac, weak):
    info = cipher_info(code)
    assert info["id"] == code and info["hex"] == f"0x{code:04x}"
    assert (info["name"], info["kex"], info["auth"], info["enc"], info["mode"], info["mac"]) == (
        name, kex, auth, enc, mode, mac)
    assert info["weaknesses"] == weak


def test_unknown_and_grease_and_scsv():
    assert cipher_info(0x1234)["name"] == "UNKNOWN_0x1234"
    assert cipher_info(0x1234)["weaknesses"] == ["unknown"]
    assert cipher_info(0x0A0A)["weaknesses"] == []
    assert cipher_info(0x5600)["name"] == "TLS_FALLBACK_SCSV"
    assert cipher_info(0x00FF)["name"] == "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"


def test_mozilla_profiles():
    assert cipher_info(0x1301)["profiles"] == ["modern", "intermediate"]
    assert cipher_info(0xC02F)["profiles"] == ["intermediate"]
    assert cipher_info(0x0035)["profiles"] == []
    assert set(mozilla_profiles()) >= {"modern", "intermediate"}


def test_every_registry_suite_derives_without_error():
    names = iana_cipher_names()
    assert len(names) > 300
    vocab = {"null", "export", "anon", "rc4", "des", "3des", "cbc", "no_pfs", "md5", "sha1_mac", "unknown"}
    for code in names:
        info = cipher_info(code)
        assert set(info["weaknesses"]) <= vocab
        if "_CBC_" in info["name"]:
            assert "cbc" in info["weaknesses"], info
        if info["mac"] == "AEAD":
            assert "sha1_mac" not in info["weaknesses"]


def test_result_is_a_fresh_dict():
    a = cipher_info(0x1301)
    a["weaknesses"].append("x")
    assert cipher_info(0x1301)["weaknesses"] == []


def test_names():
    assert VERSION_NAMES[0x0304] == "TLS 1.3"
    assert version_name(0x7F1C) == "TLS 1.3 draft 28"
    assert version_name(0x9999) == "0x9999"
    assert group_name(29) == "x25519" and group_name(0x11EC) == "X25519MLKEM768"
    assert signature_scheme_name(0x0403) == "ecdsa_secp256r1_sha256"
    assert signature_scheme_name(0x0202) == "dsa_sha1"
    assert is_grease(0xFAFA) and not is_grease(0x0A1A)
