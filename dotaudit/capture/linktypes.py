"""Link layers: from a captured frame to the start of its IP packet.

``locate_ip(linktype, data)`` returns ``(ip_version, offset, vlans)`` or ``None`` when the frame
carries no IPv4/IPv6 packet (ARP, LLC, ...).  Only struct-free slicing and ``int.from_bytes``:
this runs for every packet.
"""

from __future__ import annotations

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_OLD = 12        # DLT_RAW on some BSDs, written by old tools
LINKTYPE_RAW_OLD2 = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_LINUX_SLL2 = 276

LINKTYPE_NAMES = {
    LINKTYPE_NULL: "null",
    LINKTYPE_ETHERNET: "ethernet",
    LINKTYPE_RAW_OLD: "raw",
    LINKTYPE_RAW_OLD2: "raw",
    LINKTYPE_RAW: "raw",
    LINKTYPE_LOOP: "loop",
    LINKTYPE_LINUX_SLL: "linux-sll",
    LINKTYPE_IPV4: "ipv4",
    LINKTYPE_IPV6: "ipv6",
    LINKTYPE_NFLOG: "nflog",
    LINKTYPE_LINUX_SLL2: "linux-sll2",
}
KNOWN_LINKTYPES = frozenset(LINKTYPE_NAMES)

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
ETH_PPPOE_SESSION = 0x8864
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

# BSD address families seen in DLT_NULL / DLT_LOOP headers
AF_IPV4 = frozenset((2,))
AF_IPV6 = frozenset((10, 24, 28, 30))

NFULA_PAYLOAD = 9

NO_VLAN: tuple[int, ...] = ()


def _ethertype(etype: int, data: bytes, off: int, vlans: tuple[int, ...]):
    """Follow VLAN tags (802.1Q, 802.1ad, QinQ) and PPPoE from an ethertype at ``off``."""
    n = len(data)
    while etype in ETH_VLAN_TYPES:
        if off + 4 > n:
            return None
        vlans = vlans + (((data[off] << 8) | data[off + 1]) & 0x0FFF,)
        etype = (data[off + 2] << 8) | data[off + 3]
        off += 4
    if etype == ETH_IPV4:
        return 4, off, vlans
    if etype == ETH_IPV6:
        return 6, off, vlans
    if etype == ETH_PPPOE_SESSION and off + 8 <= n:
        proto = (data[off + 6] << 8) | data[off + 7]
        if proto == PPP_IPV4:
            return 4, off + 8, vlans
        if proto == PPP_IPV6:
            return 6, off + 8, vlans
    return None


def _raw(data: bytes, off: int = 0):
    if len(data) <= off:
        return None
    v = data[off] >> 4
    if v == 4 or v == 6:
        return v, off, NO_VLAN
    return None


def _null(data: bytes, big_endian: bool | None):
    if len(data) < 4:
        return None
    if big_endian is None:  # DLT_NULL: host byte order of the capturing machine
        af = data[0] if data[0] else data[3]
    else:
        af = data[3]
    if af in AF_IPV4:
        return 4, 4, NO_VLAN
    if af in AF_IPV6:
        return 6, 4, NO_VLAN
    return _raw(data, 4)


def _nflog(data: bytes):
    n = len(data)
    if n < 4:
        return None
    family = data[0]
    off = 4
    while off + 4 <= n:
        tlv_len = data[off] | (data[off + 1] << 8)  # host (little) endian on every common platform
        tlv_type = data[off + 2] | (data[off + 3] << 8)
        if tlv_len < 4:
            return None
        if tlv_type & 0x7FFF == NFULA_PAYLOAD:
            start = off + 4
            if family == 2:
                return 4, start, NO_VLAN
            if family == 10:
                return 6, start, NO_VLAN
            return _raw(data, start)
        off += (tlv_len + 3) & ~3
    return None


def locate_ip(linktype: int, data: bytes):
    """Return (ip_version, offset of the IP header, vlan ids) or None."""
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        etype = (data[12] << 8) | data[13]
        return _ethertype(etype, data, 14, NO_VLAN)
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return None
        return _ethertype((data[14] << 8) | data[15], data, 16, NO_VLAN)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        return _ethertype((data[0] << 8) | data[1], data, 20, NO_VLAN)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW_OLD, LINKTYPE_RAW_OLD2):
        return _raw(data)
    if linktype == LINKTYPE_NULL:
        return _null(data, None)
    if linktype == LINKTYPE_LOOP:
        return _null(data, True)
    if linktype == LINKTYPE_NFLOG:
        return _nflog(data)
    return None
