"""Per-packet path: raw frame bytes -> IP -> TCP/UDP -> bidirectional flow.

Everything here runs once per packet, so it works on bytes with ``struct`` and builds no
object for a packet.  Flows that cannot carry name resolution are decided early and from then
on only counted (``Mode.OTHER``); flows on DNS/DoT ports, or whose first payload looks like DNS
or a DoT/DoH ClientHello, are reassembled and analysed (``Mode.DEEP``).
"""

from __future__ import annotations

import struct
from typing import Callable

from ..capture.linktypes import locate_ip
from ..dns.collector import DnsCollector, DnsTcpFramer
from ..dns.wire import looks_like_query
from .flow import (COUNT, DEEP, OTHER, SNIFF, Flow, UDP_SERVICE_PORTS, TCP_DEEP_PORTS, classify_hint_tcp,
                   classify_hint_udp)
from .fragments import Defragmenter
from . import known

_TCP = struct.Struct("!HHIIBB")
_EMPTY: dict = {}
_IP4 = struct.Struct("!BxHHHxB2x4s4s")
_UDP = struct.Struct("!HH")

PROTO_TCP = 6
PROTO_UDP = 17

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

IPV6_EXT = frozenset((0, 43, 60, 51, 135, 139, 140))
IPV6_FRAG = 44
IPV6_EXT_OR_FRAG = IPV6_EXT | {IPV6_FRAG}

SWEEP_MASK = 8191            # sweep idle flows every 8192 packets
# Idle timeouts (capture time).  DNS over UDP is transactional: once every query is answered a
# flow is over after a short pause; UDP with queries still pending waits for late answers.
TIMEOUT_UDP = 30.0
TIMEOUT_UDP_OTHER = 10.0      # an uninteresting UDP flow that comes back is simply counted again
TIMEOUT_UDP_DNS_DONE = 2.0
TIMEOUT_UDP_DNS_PENDING = 10.0
TIMEOUT_TCP_OPEN = 300.0
TIMEOUT_TCP_CLOSED = 5.0
MAX_FLOWS = 250_000


class Stats:
    __slots__ = ("packets", "non_ip", "decode_errors", "truncated_l4", "fragments", "reassembled", "other_l4",
                 "flows", "evicted", "expired")

    def __init__(self) -> None:
        for s in self.__slots__:
            setattr(self, s, 0)

    def to_json(self) -> dict:
        return {s: getattr(self, s) for s in self.__slots__}


class FlowTable:
    """Bidirectional flow table with idle timeouts and a cap on live flows."""

    def __init__(self, on_finished: Callable[[Flow], None], *, max_flows: int = MAX_FLOWS,
                 count_other: bool = False):
        """``count_other``: keep packet and byte counters of uninteresting flows too (--all-flows)."""
        # key: source address + destination address + the 4 port bytes, as on the wire
        self.tcp: dict[bytes, tuple[Flow, bool]] = {}
        self.udp: dict[bytes, tuple[Flow, bool]] = {}
        self.live: dict[tuple, Flow] = {}
        self.fast_other = not count_other
        self.on_finished = on_finished
        self.max_flows = max_flows
        self.stats = Stats()
        self.defrag = Defragmenter()
        self.input = 0
        self.frame = 0
        # the C scanner (capture/fast.py), when the reader uses one: flows in OTHER mode are
        # muted there, and their last timestamp and FIN/RST live in its arrays
        self.scanner = None
        self.muted: dict[int, Flow] = {}
        self.unmuted: dict[tuple, Flow] = {}   # live flows the sweep visits in Python (live order)

    def attach_scanner(self, scanner) -> None:
        self.scanner = scanner
        max_flows = self.max_flows
        live = self.live
        # a batch must not create enough flows to evict one the scanner still mutes
        scanner.room = lambda: max_flows - len(live) - 1

    def _mute(self, flow: Flow) -> None:
        if flow.proto == 17 and flow.dns is not None and flow.dns.queries:
            return   # its idle timeout depends on DNS state the scanner does not keep
        sc = self.scanner
        fid = sc.mute(flow.proto, flow.ckey, flow.skey)
        if fid < 0:
            return
        flow.slot = fid
        self.unmuted.pop((flow.proto, flow.ckey), None)
        sc.lts[fid] = flow.last_ts
        sc.lseq[fid] = (self.input << 40) | self.frame
        sc.closed[fid] = 1 if flow.closed else 0
        self.muted[fid] = flow

    def _touch(self, flow: Flow, ts: float) -> None:
        """A packet of a muted flow that reached Python: newer than what the scanner noted?"""
        sc = self.scanner
        fid = flow.slot
        if flow.closed:
            sc.closed[fid] = 1
        seq = (self.input << 40) | self.frame
        if seq > sc.lseq[fid]:
            sc.lts[fid] = ts
            sc.lseq[fid] = seq

    def _sync(self, flow: Flow) -> None:
        sc = self.scanner
        fid = flow.slot
        flow.last_ts = sc.lts[fid]
        if sc.closed[fid]:
            flow.closed = True

    # ------------------------------------------------------------------ per packet
    def packet(self, ts: float, linktype: int, data: bytes, frame: int) -> None:
        """Account one captured frame (``frame`` is its 1-based number in the current input)."""
        self.frame = frame
        if not frame & SWEEP_MASK:
            self.sweep(ts)
        if linktype == 1 and self.fast_other:
            # Fast path: a packet of a flow already known to be uninteresting (Ethernet, maybe
            # one 802.1Q tag, IPv4 without options or IPv6 without extension headers, not a
            # fragment) costs one lookup and a timestamp.  Its key bytes are contiguous on
            # the wire: addresses then ports.
            try:
                off = 18 if data[12] == 0x81 and data[13] == 0 else 14
                et = (data[off - 2] << 8) | data[off - 1]
                if et == 0x0800:
                    if data[off] == 0x45 and not (data[off + 6] & 0x3F or data[off + 7]):
                        proto = data[off + 9]
                        hit = (self.tcp if proto == 6 else self.udp if proto == 17 else _EMPTY).get(
                            data[off + 12:off + 24])
                        if hit is not None and hit[0].mode is OTHER:
                            flow = hit[0]
                            flow.last_ts = ts
                            if proto == 6 and data[off + 33] & 0x05:  # FIN or RST
                                flow.closed = True
                            if flow.slot >= 0:
                                self._touch(flow, ts)
                            return
                elif et == 0x86DD:
                    proto = data[off + 6]
                    hit = (self.tcp if proto == 6 else self.udp if proto == 17 else _EMPTY).get(
                        data[off + 8:off + 44])
                    if hit is not None and hit[0].mode is OTHER:
                        flow = hit[0]
                        flow.last_ts = ts
                        if proto == 6 and data[off + 53] & 0x05:
                            flow.closed = True
                        if flow.slot >= 0:
                            self._touch(flow, ts)
                        return
            except IndexError:
                pass
        if linktype == 1 and len(data) >= 34 and data[12] == 8 and data[13] == 0:
            ver, off, vlans = 4, 14, ()
        else:
            loc = locate_ip(linktype, data)
            if loc is None:
                self.stats.non_ip += 1
                return
            ver, off, vlans = loc
        n = len(data)
        if ver == 4:
            if off + 20 > n:
                self.stats.decode_errors += 1
                return
            vihl, tot, ident, fr, proto, src, dst = _IP4.unpack_from(data, off)
            ihl = (vihl & 0x0F) << 2
            if vihl >> 4 != 4 or ihl < 20:
                self.stats.decode_errors += 1
                return
            end = off + tot
            if end > n or tot < ihl:
                if tot < ihl and tot != 0:
                    self.stats.decode_errors += 1
                    return
                end = n  # cut by the snap length (or TSO length 0): use what we have
            l4 = off + ihl
            iplen = end - off
            fr &= 0x3FFF
            if fr:
                st = self.stats
                st.fragments += 1
                whole = self.defrag.add4(ts, src, dst, ident, proto, fr, data[l4:end])
                if whole is None:
                    return
                st.reassembled += 1
                data = whole
                l4 = 0
                end = len(whole)
                iplen = end + ihl
        else:
            if off + 40 > n:
                self.stats.decode_errors += 1
                return
            plen = (data[off + 4] << 8) | data[off + 5]
            end = off + 40 + plen
            if end > n or plen == 0:
                end = n
            nh = data[off + 6]
            src = data[off + 8:off + 24]
            dst = data[off + 24:off + 40]
            l4 = off + 40
            iplen = end - off
            frag = None
            if nh in IPV6_EXT_OR_FRAG:
                nh, l4, frag = _ipv6_extensions(data, nh, l4, end)
                if nh is None:
                    self.stats.decode_errors += 1
                    return
            if frag is not None:
                st = self.stats
                st.fragments += 1
                fo, ident = frag
                whole = self.defrag.add6(ts, src, dst, ident, nh, fo, data[l4:end])
                if whole is None:
                    return
                st.reassembled += 1
                iplen = l4 - 8 - off + len(whole)  # the datagram without its Fragment header
                data = whole
                end = len(whole)
                l4 = 0
                if nh in IPV6_EXT:
                    nh, l4, _ = _ipv6_extensions(data, nh, 0, end)
                    if nh is None:
                        self.stats.decode_errors += 1
                        return
            proto = nh
        if proto == PROTO_TCP:
            if l4 + 20 > end:
                self.stats.truncated_l4 += 1
                return
            sport, dport, seq, ack, doff, flags = _TCP.unpack_from(data, l4)
            hl = (doff >> 4) << 2
            if hl < 20:
                self.stats.decode_errors += 1
                return
            key = src + dst + data[l4:l4 + 4]
            hit = self.tcp.get(key)
            if hit is None:
                flow, from_client = self._new_tcp(key, ts, flags, sport, dport, src, dst, ver, vlans)
            else:
                flow, from_client = hit
            flow.last_ts = ts
            flow.last_frame = frame
            if from_client:
                flow.pk_c += 1
                flow.by_c += iplen
            else:
                flow.pk_s += 1
                flow.by_s += iplen
            if flow.mode is OTHER:
                if flags & 0x05:  # FIN or RST: let an uninteresting flow expire soon
                    flow.closed = True
                if flow.slot >= 0:
                    self._touch(flow, ts)
                return
            flow.tcp_packet(from_client, seq, ack, flags, data[l4 + hl:end], data, l4, hl, frame, ts)
            if flow.mode is OTHER and self.scanner is not None:
                self._mute(flow)
        elif proto == PROTO_UDP:
            if l4 + 8 > end:
                self.stats.truncated_l4 += 1
                return
            sport, dport = _UDP.unpack_from(data, l4)
            key = src + dst + data[l4:l4 + 4]
            hit = self.udp.get(key)
            if hit is None:
                flow, from_client = self._new_udp(key, ts, sport, dport, src, dst, ver, vlans, data[l4 + 8:end])
            else:
                flow, from_client = hit
            flow.last_ts = ts
            flow.last_frame = frame
            if from_client:
                flow.pk_c += 1
                flow.by_c += iplen
            else:
                flow.pk_s += 1
                flow.by_s += iplen
            if flow.mode is OTHER or flow.mode is COUNT:
                if flow.slot >= 0:
                    self._touch(flow, ts)
                elif flow.mode is OTHER and self.scanner is not None:
                    self._mute(flow)   # new, or decided before the scanner could take it
                return
            flow.udp_packet(from_client, data[l4 + 8:end], frame, ts)
            if flow.mode is OTHER and self.scanner is not None:
                self._mute(flow)
        else:
            self.stats.other_l4 += 1

    # ------------------------------------------------------------------ flow creation
    def _register(self, flow: Flow, ckey: bytes, skey: bytes) -> None:
        if len(self.live) >= self.max_flows:
            self._evict()
        table = self.tcp if flow.proto == 6 else self.udp
        table[ckey] = (flow, True)
        table[skey] = (flow, False)
        self.live[(flow.proto, ckey)] = flow
        self.unmuted[(flow.proto, ckey)] = flow
        flow.ckey = ckey
        flow.skey = skey
        self.stats.flows += 1
        flow.id = self.stats.flows   # in order of each flow's first packet, across inputs

    def _new_tcp(self, key, ts, flags, sport, dport, src, dst, ver, vlans):
        rkey = dst + src + key[-2:] + key[-4:-2]
        syn = flags & TCP_SYN
        ack = flags & TCP_ACK
        if syn and not ack:
            from_client = True
        elif syn and ack:
            from_client = False
        else:  # mid-stream: the client is the side on the ephemeral port
            from_client = _client_side(sport, dport, TCP_DEEP_PORTS)
        if from_client:
            flow = Flow(6, ver, src, sport, dst, dport, vlans, self.input, ts, self.frame)
            ckey, skey = key, rkey
        else:
            flow = Flow(6, ver, dst, dport, src, sport, vlans, self.input, ts, self.frame)
            ckey, skey = rkey, key
        flow.midstream = not syn
        hint = classify_hint_tcp(flow.sport, flow.cport, flow.sip)
        flow.hint = hint
        if hint is not None:
            flow.make_deep()
        else:
            flow.mode = SNIFF
        self._register(flow, ckey, skey)
        return flow, from_client

    def _new_udp(self, key, ts, sport, dport, src, dst, ver, vlans, payload):
        rkey = dst + src + key[-2:] + key[-4:-2]
        from_client = _client_side(sport, dport, UDP_SERVICE_PORTS)
        if from_client:
            flow = Flow(17, ver, src, sport, dst, dport, vlans, self.input, ts, self.frame)
            ckey, skey = key, rkey
        else:
            flow = Flow(17, ver, dst, dport, src, sport, vlans, self.input, ts, self.frame)
            ckey, skey = rkey, key
        hint = classify_hint_udp(flow.sport, flow.cport, flow.sip)
        quic_initial = from_client and len(payload) >= 1200 and payload[0] & 0xC0 == 0xC0
        if hint is None and from_client and payload and looks_like_query(payload) is not None:
            hint = "dns-nonstandard-port"
        flow.hint = hint
        if hint is not None and hint != "doh":
            flow.make_deep()
            if hint == "doq" and quic_initial:
                flow.start_quic_sniff()
        elif hint is None and quic_initial:
            flow.mode = SNIFF  # QUIC on another port: DoQ or DoH3 only if its ClientHello says so
            flow.start_quic_sniff()
        else:
            flow.mode = COUNT if hint == "doh" else OTHER
            flow.cls = hint or "other"
        self._register(flow, ckey, skey)
        return flow, from_client

    # ------------------------------------------------------------------ expiry
    def _finish(self, flow: Flow, reason: str) -> None:
        if flow.slot >= 0:
            self._sync(flow)
            self.scanner.unmute(flow.slot, flow.proto, flow.ckey, flow.skey)
            del self.muted[flow.slot]
            flow.slot = -1
        table = self.tcp if flow.proto == 6 else self.udp
        table.pop(flow.ckey, None)
        table.pop(flow.skey, None)
        self.live.pop((flow.proto, flow.ckey), None)
        self.unmuted.pop((flow.proto, flow.ckey), None)
        if flow.ended is None:
            flow.ended = reason
        self.on_finished(flow)

    def sweep(self, now: float) -> None:
        cut_udp = now - TIMEOUT_UDP
        cut_udp_other = now - TIMEOUT_UDP_OTHER
        cut_dns_done = now - TIMEOUT_UDP_DNS_DONE
        cut_dns_pending = now - TIMEOUT_UDP_DNS_PENDING
        cut_open = now - TIMEOUT_TCP_OPEN
        cut_closed = now - TIMEOUT_TCP_CLOSED
        done = []
        muted_done = None
        if self.muted:
            # muted flows: the scanner knows their last timestamp and FIN/RST (OTHER-mode rules)
            muted = self.muted
            muted_done = [muted[fid] for fid in self.scanner.expired(cut_udp_other, cut_closed, cut_open)]
        for flow in self.unmuted.values():
            lt = flow.last_ts
            if flow.proto == 17:
                dns = flow.dns
                if dns is not None and dns.queries:
                    if lt < (cut_dns_pending if dns.pending else cut_dns_done):
                        done.append(flow)
                elif lt < (cut_udp_other if flow.mode is OTHER else cut_udp):
                    done.append(flow)
            elif flow.closed:
                if lt < cut_closed:
                    done.append(flow)
            elif lt < cut_open:
                done.append(flow)
        if muted_done:
            done += muted_done
            done.sort(key=_flow_id)   # the live table's order: flows are registered in id order
        for flow in done:
            self.stats.expired += 1
            self._finish(flow, flow.end_reason("idle"))
        self.defrag.expire(now)

    def _evict(self) -> None:
        """The table is full: finish the least recently created tenth (dict order), counted."""
        n = max(1, self.max_flows // 10)
        victims = []
        for flow in self.live.values():
            victims.append(flow)
            if len(victims) >= n:
                break
        for flow in victims:
            self.stats.evicted += 1
            self._finish(flow, "evicted")

    def finish_all(self) -> None:
        for flow in list(self.live.values()):
            self._finish(flow, flow.end_reason("end_of_capture"))
        self.defrag.expire(float("inf"))

    def new_input(self, index: int) -> None:
        """Frame numbers restart with each file; flows may continue across files."""
        self.input = index
        self.frame = 0


def _ipv6_extensions(data: bytes, nh: int, l4: int, end: int):
    """Walk IPv6 extension headers from ``l4``: (next header, offset of the transport header,
    fragment) or (None, ...) when a header runs past the packet.  The walk stops after a Fragment
    header: what follows it is the fragmentable part, walked again in the reassembled datagram.
    ``fragment`` is (offset field, identification) or None."""
    while nh in IPV6_EXT_OR_FRAG:
        if l4 + 8 > end:
            return None, l4, None
        if nh == IPV6_FRAG:
            return data[l4], l4 + 8, (((data[l4 + 2] << 8) | data[l4 + 3]), data[l4 + 4:l4 + 8])
        ext_len = ((data[l4 + 1] + 2) << 2) if nh == 51 else ((data[l4 + 1] + 1) << 3)  # AH counts 4-octet units
        nh = data[l4]
        l4 += ext_len
    return nh, l4, None


def _flow_id(flow: Flow) -> int:
    return flow.id


def _client_side(sport: int, dport: int, service_ports) -> bool:
    """For a first packet without SYN: is its sender the client?"""
    if dport in service_ports and sport not in service_ports:
        return True
    if sport in service_ports and dport not in service_ports:
        return False
    if dport < 1024 <= sport:
        return True
    if sport < 1024 <= dport:
        return False
    return sport >= dport
