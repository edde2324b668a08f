#!/usr/bin/env python3
"""Small DNS-over-TLS client for the lab scenarios where a client must misbehave.

Real TLS (Python's ssl module, i.e. OpenSSL). With --insecure it skips certificate validation
and sends its queries anyway (the opportunistic profile of RFC 8310 done carelessly); with
--ca it validates like a strict client and aborts on a bad certificate.
Also builds the framed queries that feed `openssl s_client` (--emit-frames).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import struct
import sys
import time

import dns.message
import dns.rcode

VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
QUERY_PAD = 128  # RFC 8467 recommended client block size


def frame(name: str, pad: bool, qid: int) -> bytes:
    query = dns.message.make_query(name, "A", use_edns=0, pad=QUERY_PAD if pad else 0)
    query.id = qid
    wire = query.to_wire()
    return struct.pack("!H", len(wire)) + wire


def recv_exact(conn, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


class BioTLS:
    """Minimal blocking TLS-over-MemoryBIO socket (ssl.wrap_socket refuses a TFO socket)."""

    def __init__(self, ctx: ssl.SSLContext, raw: socket.socket, sni: str | None):
        self.raw, self.inc, self.out = raw, ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=sni)
        self._call(self.obj.do_handshake)

    def _flush(self):
        data = self.out.read()
        if data:
            self.raw.sendall(data)

    def _call(self, fn, *a):
        while True:
            try:
                result = fn(*a)
                self._flush()
                return result
            except ssl.SSLWantReadError:
                self._flush()
                data = self.raw.recv(65536)
                if not data:
                    self.inc.write_eof()
                else:
                    self.inc.write(data)

    def sendall(self, data: bytes):
        self._call(self.obj.write, data)

    def recv(self, size: int) -> bytes:
        return self._call(self.obj.read, size)

    def unwrap(self):
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def close(self):
        self.raw.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--server")
    ap.add_argument("--port", type=int, default=853)
    ap.add_argument("--sni")
    ap.add_argument("--ca", help="validate the certificate against this CA file")
    ap.add_argument("--insecure", action="store_true", help="do not validate the certificate")
    ap.add_argument("--min", dest="tls_min", choices=VERSIONS)
    ap.add_argument("--max", dest="tls_max", choices=VERSIONS)
    ap.add_argument("--ciphers")
    ap.add_argument("--alpn", action="append")
    ap.add_argument("--no-pad", action="store_true")
    ap.add_argument("--keylog")
    ap.add_argument("--tfo", action="store_true", help="TCP Fast Open (TCP_FASTOPEN_CONNECT)")
    ap.add_argument("--emit-frames", action="store_true", help="write framed queries to stdout")
    ap.add_argument("names", nargs="+")
    args = ap.parse_args()

    if args.emit_frames:
        for i, name in enumerate(args.names):
            sys.stdout.buffer.write(frame(name, not args.no_pad, 0x5300 + i))
        return 0

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if args.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(args.ca)
    if args.tls_min:
        ctx.minimum_version = VERSIONS[args.tls_min]
    if args.tls_max:
        ctx.maximum_version = VERSIONS[args.tls_max]
    if args.ciphers:
        ctx.set_ciphers(args.ciphers)
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn)
    if args.keylog:
        ctx.keylog_filename = args.keylog

    family = socket.AF_INET6 if ":" in args.server else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_STREAM)
    raw.settimeout(5)
    if args.tfo:
        raw.setsockopt(socket.IPPROTO_TCP, 30, 1)  # TCP_FASTOPEN_CONNECT (Linux >= 4.11)
    raw.connect((args.server, args.port))
    try:
        # with TCP_FASTOPEN_CONNECT the SYN leaves with the first write, so drive TLS over BIOs
        tls = BioTLS(ctx, raw, args.sni) if args.tfo else ctx.wrap_socket(raw, server_hostname=args.sni)
    except ssl.SSLError as exc:
        print(f"handshake aborted: {exc}", file=sys.stderr)
        raw.close()
        return 2
    for i, name in enumerate(args.names):
        tls.sendall(frame(name, not args.no_pad, 0x5300 + i))
        (length,) = struct.unpack("!H", recv_exact(tls, 2))
        reply = dns.message.from_wire(recv_exact(tls, length))
        print(f"{name}: {dns.rcode.to_text(reply.rcode())} {len(reply.answer)} answers")
    time.sleep(0.1)
    try:
        tls.unwrap()
    except (ssl.SSLError, OSError):
        pass
    tls.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
