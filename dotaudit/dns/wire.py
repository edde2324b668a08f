"""DNS message facts straight from the wire format (RFC 1035, 6891, 7830, 7828, 7873, 7871).

dnspython (``dns.message.from_wire``) is the reference parser, but it builds every record: it
costs 55-130 us a message, which on a gateway capture is most of the audit's time.  The auditor
needs only the header, the question and the OPT record, so this module walks the message once,
validating every length and compression pointer, and builds no record objects (about 3-6 us).
``tests/dns/test_wire.py`` keeps dnspython as the oracle on real and hypothesis-made messages.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

OPT = 41
EDNS_ECS = 8
EDNS_COOKIE = 10
EDNS_KEEPALIVE = 11
EDNS_PADDING = 12

QTYPE_NAMES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT", 17: "RP",
    18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 32: "NIMLOC", 33: "SRV", 35: "NAPTR", 36: "KX",
    37: "CERT", 39: "DNAME", 41: "OPT", 42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 49: "DHCID", 50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA",
    55: "HIP", 59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB",
    65: "HTTPS", 99: "SPF", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR",
    252: "AXFR", 255: "ANY", 256: "URI", 257: "CAA",
}
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
               6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS"}
OPCODE_NAMES = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO"}


def qtype_name(t: int) -> str:
    return QTYPE_NAMES.get(t) or f"TYPE{t}"


def rcode_name(r: int) -> str:
    return RCODE_NAMES.get(r) or f"RCODE{r}"


def opcode_name(o: int) -> str:
    return OPCODE_NAMES.get(o) or f"OPCODE{o}"


class DnsMessage(NamedTuple):
    """The facts of one DNS message that the auditor records."""

    id: int
    qr: bool                 # True for a response
    opcode: int
    rcode: int               # extended with the OPT record's upper bits when present
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int
    qname: str | None        # lowercase, no trailing dot, "" for the root; None without a question
    qtype: int | None
    qclass: int | None
    edns: bool
    udp_size: int | None
    do_bit: bool
    padding: int | None      # length of the EDNS padding option, None when absent
    keepalive: bool
    cookie: bool
    ecs: bool
    more_qnames: tuple = ()  # names of questions after the first (mDNS asks several at once)


class DnsFormatError(ValueError):
    """The bytes are not a well-formed DNS message."""


_SAFE = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*/"
_SPECIAL = frozenset(b'"().;\\@$')


def _escape(label: bytes) -> str:
    """Presentation format (RFC 1035 5.1, as dnspython writes it): names come from the network."""
    out = []
    for c in label:
        if c in _SPECIAL:
            out.append("\\" + chr(c))
        elif 0x20 < c < 0x7F:
            out.append(chr(c))
        else:
            out.append("\\%03d" % c)
    return "".join(out)


def _skip_name(w: bytes, p: int, n: int) -> int:
    """Return the offset after the name at ``p`` (compression pointers end it)."""
    hops = 0
    while True:
        if p >= n:
            raise DnsFormatError("name runs past the end")
        ln = w[p]
        if ln == 0:
            return p + 1
        if ln & 0xC0 == 0xC0:
            if p + 1 >= n:
                raise DnsFormatError("truncated pointer")
            return p + 2
        if ln & 0xC0:
            raise DnsFormatError("bad label type")
        p += 1 + ln
        hops += 1
        if hops > 127:
            raise DnsFormatError("too many labels")


def _read_name(w: bytes, p: int, n: int) -> tuple[str, int]:
    """Decode the name at ``p``; return (text, offset after the name in place)."""
    labels: list[str] = []
    end = -1
    jumps = 0
    total = 0
    while True:
        if p >= n:
            raise DnsFormatError("name runs past the end")
        ln = w[p]
        if ln == 0:
            if end < 0:
                end = p + 1
            break
        if ln & 0xC0 == 0xC0:
            if p + 1 >= n:
                raise DnsFormatError("truncated pointer")
            target = ((ln & 0x3F) << 8) | w[p + 1]
            if end < 0:
                end = p + 2
            jumps += 1
            if jumps > 64 or target >= n:
                raise DnsFormatError("bad compression pointer")
            p = target
            continue
        if ln & 0xC0:
            raise DnsFormatError("bad label type")
        if p + 1 + ln > n:
            raise DnsFormatError("label runs past the end")
        total += ln + 1
        if total > 255:
            raise DnsFormatError("name longer than 255 octets")
        label = w[p + 1:p + 1 + ln]
        labels.append(label.decode("ascii") if not label.translate(None, _SAFE) else _escape(label))
        p += 1 + ln
    return ".".join(labels).lower(), end


def _parse_py(w: bytes) -> DnsMessage:
    """The Python walker: every message (``parse`` uses the C one for the common case)."""
    n = len(w)
    if n < 12:
        raise DnsFormatError("shorter than a DNS header")
    mid = (w[0] << 8) | w[1]
    flags = (w[2] << 8) | w[3]
    qd = (w[4] << 8) | w[5]
    an = (w[6] << 8) | w[7]
    ns = (w[8] << 8) | w[9]
    ar = (w[10] << 8) | w[11]
    p = 12
    qname = None
    qtype = qclass = None
    more = ()
    for i in range(qd):
        name, p = _read_name(w, p, n)
        if p + 4 > n:
            raise DnsFormatError("truncated question")
        if i == 0:
            qname = name
            qtype = (w[p] << 8) | w[p + 1]
            qclass = (w[p + 2] << 8) | w[p + 3]
        else:
            more += (name,)
        p += 4
    for _ in range(an + ns):
        p = _skip_name(w, p, n)
        if p + 10 > n:
            raise DnsFormatError("truncated resource record")
        rdlen = (w[p + 8] << 8) | w[p + 9]
        p += 10 + rdlen
        if p > n:
            raise DnsFormatError("rdata runs past the end")
    edns = False
    udp_size = None
    do_bit = keepalive = cookie = ecs = False
    padding = None
    rcode = flags & 0xF
    for _ in range(ar):
        if p < n and w[p] == 0:  # root owner, the OPT record's
            q = p + 1
        else:
            q = _skip_name(w, p, n)
        if q + 10 > n:
            raise DnsFormatError("truncated resource record")
        rtype = (w[q] << 8) | w[q + 1]
        rdlen = (w[q + 8] << 8) | w[q + 9]
        rd = q + 10
        end = rd + rdlen
        if end > n:
            raise DnsFormatError("rdata runs past the end")
        if rtype == OPT:
            if edns:
                raise DnsFormatError("more than one OPT record")
            edns = True
            udp_size = (w[q + 2] << 8) | w[q + 3]
            rcode |= w[q + 4] << 4
            do_bit = bool(w[q + 6] & 0x80)
            o = rd
            while o + 4 <= end:
                code = (w[o] << 8) | w[o + 1]
                olen = (w[o + 2] << 8) | w[o + 3]
                if o + 4 + olen > end:
                    raise DnsFormatError("EDNS option runs past the OPT record")
                if code == EDNS_PADDING:
                    padding = olen
                elif code == EDNS_KEEPALIVE:
                    keepalive = True
                elif code == EDNS_COOKIE:
                    cookie = True
                elif code == EDNS_ECS:
                    ecs = True
                o += 4 + olen
            if o != end:
                raise DnsFormatError("trailing bytes in the OPT record")
        p = end
    if p != n:
        raise DnsFormatError("trailing bytes after the last record")
    return DnsMessage(mid, bool(flags & 0x8000), (flags >> 11) & 0xF, rcode, flags, qd, an, ns, ar,
                      qname, qtype, qclass, edns, udp_size, do_bit, padding, keepalive, cookie, ecs, more)


def _c_walker():
    """``parse`` backed by the C walker (dns/_wire.c), or None without the C library."""
    from array import array

    from ..capture import fast

    lib = fast.library()
    if lib is None:
        return None
    out = array("q", bytes(8 * 17))
    name = bytearray(256)
    out_p = out.buffer_info()[0]
    name_p = (ctypes.c_char * 256).from_buffer(name)
    name_addr = ctypes.addressof(name_p)
    c_parse = lib.dns_parse
    py_parse = _parse_py
    msg = DnsMessage

    def parse_c(w: bytes) -> DnsMessage:
        status = c_parse(w, len(w), out_p, name_addr)
        if status == 0:
            (mid, flags, qd, an, ns, ar, qlen, qtype, qclass, edns, udp_size, do_bit, padding, keepalive,
             cookie, ecs, rcode) = out
            return msg(mid, flags >= 0x8000, (flags >> 11) & 0xF, rcode, flags, qd, an, ns, ar,
                       name[:qlen].decode("ascii") if qlen >= 0 else None, None if qtype < 0 else qtype,
                       None if qclass < 0 else qclass, edns == 1, None if udp_size < 0 else udp_size,
                       do_bit == 1, None if padding < 0 else padding, keepalive == 1, cookie == 1, ecs == 1, ())
        if status == 1:
            raise DnsFormatError("malformed DNS message")
        return py_parse(w)

    return parse_c


parse_c = _c_walker()
parse = parse_c or _parse_py
"""Parse a DNS message; raise DnsFormatError when it is not one (C walker when built)."""


def looks_like_query(w: bytes) -> DnsMessage | None:
    """Strict check for DNS on a port that is not DNS's: one question, a standard query, no answers.

    Used to sniff the first datagram or the first TCP message of flows on unknown ports, where a
    false positive would call random traffic DNS; so every field must be plausible.
    """
    try:
        m = parse(w)
    except DnsFormatError:
        return None
    if m.qr or m.opcode != 0 or m.qdcount != 1 or m.ancount or m.nscount or m.arcount > 2:
        return None
    if m.qclass not in (1, 3, 4, 255) or not m.qtype or m.qtype in (0, 41):
        return None
    if m.flags & 0x0040:  # Z bit must be zero
        return None
    name = m.qname or ""
    if name and not all(0x20 < ord(c) < 0x7F for c in name):
        return None
    return m
