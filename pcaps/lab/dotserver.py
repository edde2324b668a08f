#!/usr/bin/env python3
"""Tiny DNS-over-TLS (RFC 7858) server for the dotaudit capture lab.

Real TLS (Python's ssl module, i.e. OpenSSL) with full control over what the lab needs and
unbound does not offer: TLS 1.0/1.1, a cipher list, certificates that an unmodified OpenSSL
refuses to load at its default security level, tickets on/off. Answers every A query with a
fixed address from local data (no upstream, no network).

Modes:
  dot     TLS, then 2-byte length framed DNS messages (RFC 7858 / RFC 1035 4.2.2)
  http    accepts TCP and answers with a plaintext HTTP banner (not TLS)
  silent  accepts TCP, reads the ClientHello and never answers
"""

from __future__ import annotations

import argparse
import socket
import ssl
import struct
import sys
import threading

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
ANSWER_A = "192.0.2.53"
RESPONSE_PAD = 468  # RFC 8467 recommended server block size


def answer(wire: bytes) -> bytes:
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query, recursion_available=True, pad=RESPONSE_PAD)
    for question in query.question:
        if question.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(question.name, 300, "IN", "A", ANSWER_A))
    if not response.answer:
        response.set_rcode(dns.rcode.NOERROR)
    return response.to_wire()


def recv_exact(conn, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve_dot(conn: socket.socket, ctx: ssl.SSLContext) -> None:
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError) as exc:
        print(f"handshake failed: {exc}", file=sys.stderr, flush=True)
        conn.close()
        return
    try:
        while True:
            (length,) = struct.unpack("!H", recv_exact(tls, 2))
            reply = answer(recv_exact(tls, length))
            tls.sendall(struct.pack("!H", len(reply)) + reply)
    except (EOFError, ssl.SSLError, OSError):
        pass
    finally:
        try:
            tls.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass
        tls.close()


def serve_http(conn: socket.socket) -> None:
    try:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nServer: lab\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\n\r\n")
    finally:
        conn.close()


def serve_silent(conn: socket.socket) -> None:
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, default=853)
    ap.add_argument("--mode", choices=["dot", "http", "silent"], default="dot")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--min", dest="tls_min", choices=VERSIONS, default="1.2")
    ap.add_argument("--max", dest="tls_max", choices=VERSIONS, default="1.3")
    ap.add_argument("--ciphers", default="DEFAULT", help="OpenSSL cipher string (TLS <= 1.2)")
    ap.add_argument("--seclevel0", action="store_true", help="append :@SECLEVEL=0")
    ap.add_argument("--no-tickets", action="store_true")
    ap.add_argument("--keylog")
    args = ap.parse_args()

    ctx = None
    if args.mode == "dot":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = VERSIONS[args.tls_min]
        ctx.maximum_version = VERSIONS[args.tls_max]
        ctx.set_ciphers(args.ciphers + (":@SECLEVEL=0" if args.seclevel0 else ""))
        if args.no_tickets:
            ctx.options |= ssl.OP_NO_TICKET
            ctx.num_tickets = 0
        if args.keylog:
            ctx.keylog_filename = args.keylog
        ctx.load_cert_chain(args.cert, args.key)

    family = socket.AF_INET6 if ":" in args.addr else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.addr, args.port))
    srv.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        if args.mode == "dot":
            target, targs = serve_dot, (conn, ctx)
        elif args.mode == "http":
            target, targs = serve_http, (conn,)
        else:
            target, targs = serve_silent, (conn,)
        threading.Thread(target=target, args=targs, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
