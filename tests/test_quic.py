"""QUIC Initial decryption and ClientHello extraction (dotaudit.quic)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dotaudit.quic import (
    QuicInitial,
    QuicSniffer,
    _client_key_material,
    client_hello_alpn_sni,
    initial_salt,
    parse_client_initial,
)

REPO = Path(__file__).resolve().parents[1]
DOQ_PCAP = REPO / "pcaps/public/ntop_nDPI/tests/cfgs/default/pcap/doq.pcapng"

V1, V2, DRAFT_23, DRAFT_29, DRAFT_32, DRAFT_34 = 1, 0x6B3343CF, 0xFF000017, 0xFF00001D, 0xFF000020, 0xFF000022
RFC_DCID = bytes.fromhex("8394c8f03e515708")

# ---------------------------------------------------------------------------------------------
# RFC 9001 Appendix A.2 (client Initial, v1) and RFC 9369 Appendix A.2 (same packet, QUIC v2):
# unprotected payload = one CRYPTO frame (offset 0, 241 bytes: the ClientHello) + 917 PADDING.

RFC_CLIENT_PAYLOAD = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868"
    "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578"
    "616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba"
    "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400"
    "0d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000"
    "75300901100f088394c8f03e51570806048000ffff"
) + bytes(917)
RFC_CLIENT_HELLO = RFC_CLIENT_PAYLOAD[4 : 4 + 241]

RFC9001_CLIENT_INITIAL = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212"
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5"
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec"
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3"
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c"
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8"
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74"
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a"
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632"
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964"
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff"
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198"
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73"
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f"
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade"
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047"
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4"
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0"
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0"
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400"
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9"
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4"
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241"
    "e221af44860018ab0856972e194cd934"
)

RFC9369_CLIENT_INITIAL = bytes.fromhex(
    "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485"
    "dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04"
    "9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d"
    "250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a"
    "12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500"
    "cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68"
    "18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33"
    "12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3"
    "d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd"
    "6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520"
    "bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045"
    "636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f"
    "ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12"
    "16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5"
    "4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4"
    "fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b"
    "8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7"
    "14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9"
    "9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91"
    "abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd"
    "80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db"
    "848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18"
    "d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15"
    "c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc"
    "7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61"
    "f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710"
    "10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b"
    "3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e"
    "06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce"
    "8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1"
    "34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1"
    "e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd"
    "5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3"
    "8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89"
    "d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53"
    "6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19"
    "9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b"
    "a18b2faa745b6fe189cf772a9f84cbfc"
)

# RFC 9001 Appendix A.3: the server's Initial (server keys) -- must not decrypt as a client Initial.
RFC9001_SERVER_INITIAL = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a"
    "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3"
    "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
    "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4"
    "2158407dd074ee"
)


# ---------------------------------------------------------------------------------------------
# Builders: the decryption path reversed (RFC 9001 s5.3-5.4), and a small ClientHello writer


def varint(v: int) -> bytes:
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return struct.pack("!H", 0x4000 | v)
    if v < 0x40000000:
        return struct.pack("!I", 0x80000000 | v)
    return struct.pack("!Q", 0xC000000000000000 | v)


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def build_initial(
    payload: bytes,
    *,
    version: int = V1,
    dcid: bytes = RFC_DCID,
    key_dcid: bytes | None = None,
    scid: bytes = b"\x11\x22\x33\x44",
    token: bytes = b"",
    pn: int = 0,
    pn_len: int = 4,
    pad_to: int = 1200,
) -> bytes:
    """A protected client Initial packet carrying the frames in ``payload`` (PADDING appended)."""
    key, iv, hp = _client_key_material(version, key_dcid or dcid)
    ptype = 1 if version == V2 else 0
    head_len = 7 + len(dcid) + len(scid) + len(varint(len(token))) + len(token) + 2 + pn_len
    payload = payload + bytes(max(0, pad_to - head_len - len(payload) - 16))
    if len(payload) + pn_len < 4:  # room for the header protection sample
        payload += bytes(4 - pn_len - len(payload))
    length = pn_len + len(payload) + 16
    first = 0xC0 | (ptype << 4) | (pn_len - 1)
    header = (
        bytes([first])
        + struct.pack("!I", version)
        + bytes([len(dcid)]) + dcid
        + bytes([len(scid)]) + scid
        + varint(len(token)) + token
        + struct.pack("!H", 0x4000 | length)
        + pn.to_bytes(pn_len, "big")
    )
    nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(key).encrypt(nonce, payload, header)
    pn_offset = len(header) - pn_len
    sample = sealed[4 - pn_len : 4 - pn_len + 16]
    mask = Cipher(algorithms.AES(hp), modes.ECB()).encryptor().update(sample)
    out = bytearray(header + sealed)
    out[0] ^= mask[0] & 0x0F
    for i in range(pn_len):
        out[pn_offset + i] ^= mask[1 + i]
    return bytes(out)


def long_packet(ptype_bits: int, body: bytes, *, version: int = V1, dcid: bytes = RFC_DCID) -> bytes:
    """An opaque (not decryptable) long-header packet with a Length field, e.g. 0-RTT/Handshake."""
    return (
        bytes([0xC0 | (ptype_bits << 4)])
        + struct.pack("!I", version)
        + bytes([len(dcid)]) + dcid
        + b"\x00"
        + varint(len(body)) + body
    )


def ext(etype: int, body: bytes) -> bytes:
    return struct.pack("!HH", etype, len(body)) + body


def client_hello(
    alpn: tuple[bytes, ...] = (b"doq",), sni: bytes | None = b"dns.example.net", key_share_len: int = 32
) -> bytes:
    exts = b""
    if sni is not None:
        entry = b"\x00" + struct.pack("!H", len(sni)) + sni
        exts += ext(0, struct.pack("!H", len(entry)) + entry)
    # a large key_share *before* ALPN, as post-quantum hybrids (X25519MLKEM768, 0x11ec) make it
    share = struct.pack("!HH", 0x11EC, key_share_len) + bytes(range(256)) * (key_share_len // 256) + bytes(
        key_share_len % 256
    )
    exts += ext(51, struct.pack("!H", len(share)) + share)
    if alpn:
        lst = b"".join(bytes([len(a)]) + a for a in alpn)
        exts += ext(16, struct.pack("!H", len(lst)) + lst)
    exts += ext(43, b"\x02\x03\x04")
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack("!H", len(exts)) + exts
    return b"\x01" + len(body).to_bytes(3, "big") + body


# ---------------------------------------------------------------------------------------------
# RFC vectors


def test_salts_and_key_schedule_match_rfc_appendix_a1():
    assert initial_salt(V1).hex() == "38762cf7f55934b34d179ae6a4c80cadccbb7f0a"
    assert initial_salt(DRAFT_29) == initial_salt(DRAFT_32)
    assert initial_salt(DRAFT_34) == initial_salt(V1)
    assert initial_salt(0xFF00000F) is None and initial_salt(0x0A0A0A0A) is None
    key, iv, hp = _client_key_material(V1, RFC_DCID)  # RFC 9001 A.1
    assert (key.hex(), iv.hex(), hp.hex()) == (
        "1f369613dd76d5467730efcbe3b1a22d",
        "fa044b2f42a3fd3b46fb255c",
        "9f50449e04a0e810283a1e9933adedd2",
    )
    key, iv, hp = _client_key_material(V2, RFC_DCID)  # RFC 9369 A.1
    assert (key.hex(), iv.hex(), hp.hex()) == (
        "8b1a0bc121284290a29e0971b5cd045d",
        "91f73e2351d8fa91660e909f",
        "45b95e15235d6f45a6b19cbcb0294ba9",
    )


@pytest.mark.parametrize(
    "packet,version", [(RFC9001_CLIENT_INITIAL, V1), (RFC9369_CLIENT_INITIAL, V2)], ids=["rfc9001", "rfc9369"]
)
def test_rfc_client_initial_vector(packet, version):
    assert len(packet) == 1200
    init = parse_client_initial(packet)
    assert init == QuicInitial(version, RFC_DCID, b"", RFC_CLIENT_HELLO, True)
    assert client_hello_alpn_sni(init.crypto) == (("alpn",), "example.com")


def test_rfc_vector_tampered_or_truncated_is_rejected():
    for i in (30, 600, 1199):  # payload byte, tag byte
        bad = bytearray(RFC9001_CLIENT_INITIAL)
        bad[i] ^= 0x01
        assert parse_client_initial(bytes(bad)) is None
    assert parse_client_initial(RFC9001_CLIENT_INITIAL[:-1]) is None  # Length exceeds datagram
    # same bytes labelled with another version: other salt, other keys
    relabelled = RFC9001_CLIENT_INITIAL[:1] + struct.pack("!I", DRAFT_29) + RFC9001_CLIENT_INITIAL[5:]
    assert parse_client_initial(relabelled) is None


def test_server_initial_is_not_a_client_initial():
    assert parse_client_initial(RFC9001_SERVER_INITIAL) is None


def test_accepts_bytearray_and_memoryview():
    assert parse_client_initial(bytearray(RFC9001_CLIENT_INITIAL)).complete
    assert parse_client_initial(memoryview(RFC9001_CLIENT_INITIAL)).complete


# ---------------------------------------------------------------------------------------------
# Real capture: DoQ (draft-32, ALPN doq-i00) on UDP/784


def _udp_payloads(path: Path) -> list[tuple[int, int, bytes]]:
    from scapy.layers.inet import UDP
    from scapy.utils import PcapNgReader

    out = []
    with PcapNgReader(str(path)) as reader:
        for pkt in reader:
            if UDP in pkt:
                u = pkt[UDP]
                out.append((u.sport, u.dport, bytes(u.payload)))
    return out


@pytest.fixture(scope="module")
def doq_datagrams():
    if not DOQ_PCAP.exists():
        pytest.skip("public capture missing: pcaps/public/ntop_nDPI/tests/cfgs/default/pcap/doq.pcapng")
    return _udp_payloads(DOQ_PCAP)


def test_doq_pcap_client_initial(doq_datagrams):
    sport, dport, first = doq_datagrams[0]
    assert dport == 784
    init = parse_client_initial(first)
    assert init is not None and init.complete
    assert init.version == DRAFT_32
    assert init.dcid.hex() == "70b1896db29b3e5a" and init.scid.hex() == "4e2fe3b9882631f9"
    alpn, sni = client_hello_alpn_sni(init.crypto)
    assert alpn == ("doq-i00",)
    assert any(a == "doq" or a.startswith("doq-") for a in alpn)
    assert sni is None  # tshark: the hello has no server_name extension
    # nothing else in the capture is a decryptable client Initial (server Initial+Handshake,
    # 1-RTT packets, plaintext DNS on 784)
    assert all(parse_client_initial(d) is None for _, _, d in doq_datagrams[1:])


def test_doq_pcap_sniffer(doq_datagrams):
    sniffer = QuicSniffer()
    for sport, dport, d in doq_datagrams:
        if dport == 784:
            sniffer.feed(d)
            if sniffer.done:
                break
    assert sniffer.done and sniffer.complete
    assert sniffer.version == DRAFT_32
    assert sniffer.alpn == ("doq-i00",) and sniffer.sni is None


# ---------------------------------------------------------------------------------------------
# Self-built packets


@pytest.mark.parametrize("version", [V1, V2, DRAFT_23, DRAFT_29, DRAFT_32, 0xFF000021, DRAFT_34])
@pytest.mark.parametrize("pn_len", [1, 2, 3, 4])
def test_roundtrip_versions_and_packet_number_lengths(version, pn_len):
    hello = client_hello(alpn=(b"doq", b"h3"), sni=b"resolver.example")
    pkt = build_initial(crypto_frame(0, hello), version=version, pn=pn_len * 3, pn_len=pn_len, token=b"tok" * pn_len)
    init = parse_client_initial(pkt)
    assert init is not None
    assert (init.version, init.dcid, init.scid, init.crypto, init.complete) == (
        version, RFC_DCID, b"\x11\x22\x33\x44", hello, True
    )
    assert client_hello_alpn_sni(init.crypto) == (("doq", "h3"), "resolver.example")


def test_v1_packet_type_bits_are_not_v2_initial():
    # a v2 packet whose type bits say Initial-in-v1 (0b00) is a v2 Retry: not classified
    pkt = bytearray(build_initial(crypto_frame(0, client_hello()), version=V2))
    pkt[0] = (pkt[0] & 0xCF) | 0x00
    assert parse_client_initial(bytes(pkt)) is None


def test_out_of_order_crypto_frames_with_ping_ack_padding():
    hello = client_hello(alpn=(b"doq",), sni=b"a.example")
    a, b, c = hello[:50], hello[50:120], hello[120:]
    frames = (
        b"\x01"  # PING
        + crypto_frame(120, c)
        + b"\x00\x00\x00"  # PADDING
        + b"\x02" + varint(5) + varint(10) + varint(1) + varint(0) + varint(0) + varint(1)  # ACK, 1 range
        + crypto_frame(0, a)
        + b"\x03" + varint(1) + varint(0) + varint(0) + varint(1) + varint(0) + varint(0) + varint(0)  # ACK_ECN
        + crypto_frame(40, hello[40:70])  # overlap
        + crypto_frame(50, b)
    )
    init = parse_client_initial(build_initial(frames))
    assert init.crypto == hello and init.complete
    assert client_hello_alpn_sni(init.crypto) == (("doq",), "a.example")


def test_gap_in_crypto_stream_keeps_prefix_only():
    hello = client_hello()
    init = parse_client_initial(build_initial(crypto_frame(0, hello[:30]) + crypto_frame(60, hello[60:])))
    assert init.crypto == hello[:30] and not init.complete


def test_coalesced_packets_only_initial_matters():
    hello = client_hello(alpn=(b"h3",), sni=b"doh.example")
    initial = build_initial(crypto_frame(0, hello), pad_to=0)
    zero_rtt = long_packet(1, b"\xaa" * 40)
    handshake = long_packet(2, b"\xbb" * 30)
    dgram = initial + zero_rtt + handshake + b"\x40" + bytes(64)  # trailing short-header-looking junk
    init = parse_client_initial(dgram)
    assert init.crypto == hello and init.complete
    # two Initials of one connection coalesced: their CRYPTO data is merged
    two = build_initial(crypto_frame(0, hello[:100]), pad_to=0, pn=0) + build_initial(
        crypto_frame(100, hello[100:]), pad_to=0, pn=1
    )
    assert parse_client_initial(two).crypto == hello
    # a datagram starting with a non-Initial long header packet is not a client Initial
    assert parse_client_initial(zero_rtt + initial) is None


@pytest.mark.parametrize(
    "dgram",
    [
        b"",
        b"\xc0",
        b"\x40" + RFC_DCID + bytes(40),  # short header
        b"\x80\x00\x00\x00\x00\x08" + RFC_DCID + b"\x00\x00\x00\x00\x01",  # version negotiation
        b"\xc0\x0a\x0a\x0a\x0a" + RFC9001_CLIENT_INITIAL[5:],  # greased / unknown version
        b"\xc0\x51\x30\x35\x30" + RFC9001_CLIENT_INITIAL[5:],  # gQUIC Q050: salt not known here
        b"\xf0\x00\x00\x00\x01\x08" + RFC_DCID + b"\x00" + bytes(40),  # Retry
        b"\xc0\x00\x00\x00\x01\x15" + bytes(60),  # DCID longer than 20
    ],
)
def test_not_classified(dgram):
    assert parse_client_initial(dgram) is None


def test_sniffer_reassembles_hello_across_two_datagrams():
    # ~1.3 kB post-quantum key share pushes ALPN into the second Initial / second datagram
    hello = client_hello(alpn=(b"doq",), sni=b"dns.example.net", key_share_len=1216)
    assert len(hello) > 1300
    d1 = build_initial(crypto_frame(0, hello[:1100]), pn=0)
    d2 = build_initial(crypto_frame(1100, hello[1100:]), pn=1)
    first = parse_client_initial(d1)
    assert first.crypto == hello[:1100] and not first.complete
    assert client_hello_alpn_sni(first.crypto) is None  # incomplete
    assert client_hello_alpn_sni(first.crypto, allow_partial=True) == ((), "dns.example.net")
    second = parse_client_initial(d2)
    assert second.crypto == b"" and not second.complete  # offset 1100.., nothing from 0

    s = QuicSniffer()
    s.feed(d1)
    assert not s.done and s.version == V1
    s.feed(d2)
    assert s.done and s.complete
    assert (s.alpn, s.sni, s.version) == (("doq",), "dns.example.net", V1)
    s.feed(b"garbage after done")  # ignored
    assert s.alpn == ("doq",)

    # out of order datagrams, and a non-QUIC datagram in between
    s = QuicSniffer()
    s.feed(d2)
    s.feed(b"\x00" * 20)
    assert not s.done
    s.feed(d1)
    assert s.done and s.complete and s.alpn == ("doq",)


def test_sniffer_keeps_original_dcid_keys_after_server_changes_cid():
    hello = client_hello(alpn=(b"h3",), sni=b"doh.example", key_share_len=1216)
    d1 = build_initial(crypto_frame(0, hello[:1100]), dcid=RFC_DCID, pn=0)
    # retransmission after the server's Initial: new DCID in the header, original DCID's keys
    d2 = build_initial(crypto_frame(1100, hello[1100:]), dcid=b"\x99" * 8, key_dcid=RFC_DCID, pn=1)
    assert parse_client_initial(d2) is None
    s = QuicSniffer()
    s.feed(d1)
    s.feed(d2)
    assert s.done and s.complete and s.dcid == RFC_DCID
    assert (s.alpn, s.sni) == (("h3",), "doh.example")


def test_sniffer_gives_up_after_four_datagrams_with_partial_result():
    hello = client_hello(alpn=(b"doq",), sni=b"x.example", key_share_len=1216)
    d1 = build_initial(crypto_frame(0, hello[:1100]))
    s = QuicSniffer()
    for _ in range(3):
        s.feed(d1)  # duplicates: nothing new
        assert not s.done
    s.feed(b"\x01\x02")
    assert s.done and not s.complete
    assert (s.alpn, s.sni, s.version) == ((), "x.example", V1)

    s = QuicSniffer()
    for _ in range(4):
        s.feed(b"not quic")
    assert s.done and s.version is None and s.alpn == () and s.sni is None


# ---------------------------------------------------------------------------------------------
# ClientHello parser


def test_client_hello_parser():
    assert client_hello_alpn_sni(client_hello(alpn=(), sni=None)) == ((), None)
    assert client_hello_alpn_sni(client_hello(alpn=(b"doq", b"doq-i03"), sni=b"r.example")) == (
        ("doq", "doq-i03"),
        "r.example",
    )
    assert client_hello_alpn_sni(b"") is None
    assert client_hello_alpn_sni(b"\x02\x00\x00\x04abcd") is None  # ServerHello
    assert client_hello_alpn_sni(RFC_CLIENT_HELLO[:-1]) is None
    assert client_hello_alpn_sni(RFC_CLIENT_HELLO[:70], allow_partial=True) == ((), "example.com")
    assert client_hello_alpn_sni(RFC_CLIENT_HELLO[:110], allow_partial=True) == (("alpn",), "example.com")
    # no extensions block at all (legal before TLS 1.3)
    bare = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    assert client_hello_alpn_sni(b"\x01" + len(bare).to_bytes(3, "big") + bare) == ((), None)
    # non-ASCII server name is escaped, not raised
    assert client_hello_alpn_sni(client_hello(sni=b"caf\xc3\xa9.example"))[1] == "caf\\xc3\\xa9.example"


# ---------------------------------------------------------------------------------------------
# Hostile input

_HYP = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@_HYP
@given(st.binary(max_size=1500))
def test_random_datagrams_never_raise(data):
    assert parse_client_initial(data) is None or isinstance(parse_client_initial(data), QuicInitial)
    QuicSniffer().feed(data)
    client_hello_alpn_sni(data)
    client_hello_alpn_sni(b"\x01" + data, allow_partial=True)


@_HYP
@given(
    st.sampled_from([V1, V2, DRAFT_29, DRAFT_32, DRAFT_23]),
    st.integers(0, 20),
    st.integers(0, 20),
    st.binary(max_size=400),
)
def test_random_long_headers_never_raise(version, dcil, scil, rest):
    first = 0xD0 if version == V2 else 0xC0
    dgram = bytes([first]) + struct.pack("!I", version) + bytes([dcil]) + bytes(dcil) + bytes([scil]) + rest
    assert parse_client_initial(dgram) is None


@_HYP
@given(st.integers(0, 1199), st.integers(1, 255), st.integers(0, 1199))
def test_mutated_and_truncated_vector_never_raises(pos, xor, cut):
    data = bytearray(RFC9001_CLIENT_INITIAL)
    data[pos] ^= xor
    parse_client_initial(bytes(data))
    assert parse_client_initial(RFC9001_CLIENT_INITIAL[:cut]) is None


@_HYP
@given(st.binary(max_size=600), st.binary(max_size=300))
def test_decryptable_garbage_frames_never_raise(frames, hello_tail):
    # valid protection around hostile plaintext: exercises the frame and ClientHello parsers
    pkt = build_initial(frames + crypto_frame(0, b"\x01\x00\x01\x00" + hello_tail), pad_to=0)
    init = parse_client_initial(pkt)
    assert init is not None
    client_hello_alpn_sni(init.crypto, allow_partial=True)
    s = QuicSniffer()
    s.feed(pkt)
    s.feed(pkt[:-3])
