"""Per-flow TLS analyzer: fed both directions of one TCP flow, it describes the session.

Handshake messages are parsed once; after the handshake only record headers are read.
Nothing here raises out of the public methods: malformed input is counted (``malformed``),
the last problem is kept (``error``), and analysis goes on. docs/tls.md documents every
field of ``summary()`` and the ``history`` letters.
"""

from __future__ import annotations

from .certs import TrustConfig, certificate_facts, validate_chain
from .ciphers import (
    CT_ALERT,
    CT_APPLICATION_DATA,
    CT_CHANGE_CIPHER_SPEC,
    CT_HANDSHAKE,
    CT_HEARTBEAT,
    HS_CERTIFICATE,
    HS_CERTIFICATE_REQUEST,
    HS_CERTIFICATE_STATUS,
    HS_CERTIFICATE_VERIFY,
    HS_CLIENT_HELLO,
    HS_CLIENT_KEY_EXCHANGE,
    HS_FINISHED,
    HS_HELLO_REQUEST,
    HS_HELLO_RETRY_REQUEST,
    HS_NEW_SESSION_TICKET,
    HS_SERVER_HELLO,
    HS_SERVER_HELLO_DONE,
    HS_SERVER_KEY_EXCHANGE,
    SCSV_FALLBACK,
    alert_name,
    cipher_info,
    cipher_name,
    cipher_weaknesses,
    group_name,
    is_grease,
    signature_scheme_name,
    ssl2_cipher_name,
    ssl2_cipher_weaknesses,
    version_name,
)
from .fingerprint import ja3, ja3s, ja4
from .handshake import (
    ClientHello,
    ServerHello,
    ssl2_hello_len,
    looks_like_tls,
    parse_certificate_list,
    parse_client_hello,
    parse_server_hello,
    parse_server_key_exchange,
    parse_ssl2_client_hello,
    parse_ssl2_server_hello,
)
from .records import BAD_HEADER, RecordReader

MAX_APP_RECORDS = 4096
MAX_SIZES = 64
MAX_ALERTS = 32
MAX_HISTORY = 128

WEAKNESS_ORDER = ("null", "export", "anon", "rc4", "des", "3des", "cbc", "no_pfs", "md5",
                  "sha1_mac", "unknown")

FRAME_KEYS = ("client_hello", "server_hello", "certificate", "server_hello_done_or_finished",
              "first_app_data_c2s", "first_app_data_s2c", "first_alert")

# Keys every summary has (the flows[].tls contract; docs/tls.md lists more).
SUMMARY_KEYS = (
    "version", "client_version", "versions_offered", "cipher", "ciphers_offered",
    "offered_weaknesses", "fallback_scsv", "sni", "alpn_offered", "alpn", "groups_offered",
    "key_share_groups", "signature_algorithms", "selected_group", "compression_offered",
    "compression", "session_id_offered", "session_ticket_offered", "psk_offered",
    "early_data_offered", "early_data_accepted", "hello_retry_request", "downgrade_sentinel",
    "renegotiation_info", "extended_master_secret", "resumed", "resumption",
    "server_key_exchange", "certificates", "cert_validation", "alerts", "established",
    "handshake_complete", "history", "failure", "not_tls", "malformed", "error", "app_data",
    "app_record_sizes", "frames", "ts", "ja3", "ja3_string", "ja4", "ja3s",
)

# direction modes
_FIRST, _RECORDS, _SSL2, _STOPPED = 0, 1, 2, 3

_CLIENT_LETTERS = {
    HS_CLIENT_HELLO: "C", HS_CERTIFICATE: "T", HS_CLIENT_KEY_EXCHANGE: "K",
    HS_CERTIFICATE_VERIFY: "V", HS_FINISHED: "F",
}
_SERVER_LETTERS = {
    HS_SERVER_HELLO: "s", HS_CERTIFICATE: "t", HS_SERVER_KEY_EXCHANGE: "k",
    HS_CERTIFICATE_REQUEST: "q", HS_SERVER_HELLO_DONE: "d", HS_NEW_SESSION_TICKET: "n",
    HS_CERTIFICATE_STATUS: "p", HS_HELLO_REQUEST: "z", HS_HELLO_RETRY_REQUEST: "r",
    HS_FINISHED: "f",
}


class _Dir:
    __slots__ = ("mode", "first", "reader", "hs_buf", "encrypted", "ccs", "finished",
                 "app_records", "app_bytes", "sizes", "gaps", "not_tls", "seen")

    def __init__(self) -> None:
        self.mode = _FIRST
        self.first = b""
        self.reader: RecordReader | None = None
        self.hs_buf = bytearray()
        self.encrypted = False
        self.ccs = False
        self.finished = False
        self.app_records = 0
        self.app_bytes = 0
        self.sizes: list[int] = []
        self.gaps = 0
        self.not_tls = False
        self.seen = False


class TlsSession:
    """TLS analysis of one TCP flow. See docs/tls.md."""

    def __init__(self, max_buffer: int = 262144) -> None:
        self.max_buffer = max_buffer
        self._c = _Dir()
        self._s = _Dir()
        self._first_dir: bool | None = None  # from_client of the first bytes seen
        self.ch: ClientHello | None = None
        self.ch2: ClientHello | None = None
        self.sh: ServerHello | None = None
        self.hrr: ServerHello | None = None
        self.tls13 = False
        self.certs_der: list[bytes] | None = None
        self.ske: dict | None = None
        self.server_msgs: set[int] = set()
        self.client_cert = False
        self.cert_request = False
        self.ocsp_stapled = False
        self.new_session_ticket = False
        self.alerts: list[dict] = []
        self.alerts_total = 0
        self.alert_before_established = False
        self.history: list[str] = []
        self.history_truncated = False
        self.frames: dict[str, int | None] = dict.fromkeys(FRAME_KEYS)
        self.ts: dict[str, float | None] = dict.fromkeys(FRAME_KEYS)
        self.malformed = 0
        self.error: str | None = None
        self.handshake_complete = False
        self.client_finished_ts: float | None = None     # the client's Finished (encrypted or not)
        self.client_finished_frame: int | None = None
        self.server_flight_records = 0
        self.early_data_records = 0
        self.encrypted_handshake_records = 0
        self.unexpected_records = 0
        self.ccs_compat = 0
        self.heartbeats = 0
        self.app_records: list[tuple[float, int, bool, int]] = []
        self.app_records_dropped = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._frame = 0
        self._ts = 0.0

    # ------------------------------------------------------------------ public feeding API

    @property
    def is_tls(self) -> bool | None:
        """None until bytes are seen; then whether the first bytes (client's if any) are TLS."""
        d = self._c if self._c.seen else (self._s if self._s.seen else None)
        if d is None:
            return None
        if d.not_tls:
            return False
        if d.mode == _FIRST:
            return None
        if d.reader is not None and d.reader.records == 0 and d.reader.resync:
            return None  # started with a gap and no record boundary found yet
        return True

    def feed(self, from_client: bool, data: bytes, frame: int, ts: float) -> None:
        if not data:
            return
        try:
            self._frame = frame
            self._ts = ts
            if self.first_ts is None:
                self.first_ts = ts
            self.last_ts = ts
            self._feed(from_client, bytes(data))
        except Exception as exc:  # hostile bytes must never escape
            self._bad(f"internal error {type(exc).__name__}: {exc}", from_client)
            (self._c if from_client else self._s).mode = _STOPPED

    def gap(self, from_client: bool) -> None:
        try:
            d = self._c if from_client else self._s
            d.gaps += 1
            self._hist("G" if from_client else "g", collapse=True)
            if d.mode == _RECORDS and d.reader is not None:
                d.reader.lost()
                d.hs_buf.clear()
            elif d.mode == _FIRST:
                # the start of this direction is lost: look for a record boundary instead of
                # judging the first bytes (which are mid-record)
                d.first = b""
                d.mode = _RECORDS
                d.reader = RecordReader()
                d.reader.lost()
                d.seen = True
            elif d.mode == _SSL2:
                d.mode = _STOPPED
        except Exception as exc:  # pragma: no cover - defensive
            self._bad(f"internal error {type(exc).__name__}: {exc}", from_client)

    # ------------------------------------------------------------------ internals

    def _bad(self, msg: str, from_client: bool | None = None) -> None:
        self.malformed += 1
        side = "" if from_client is None else (" (client)" if from_client else " (server)")
        self.error = msg + side
        if from_client is not None:
            self._hist("M" if from_client else "m", collapse=True)

    def _hist(self, letter: str, collapse: bool = False) -> None:
        h = self.history
        if collapse and h and h[-1] == letter:
            return
        if len(h) >= MAX_HISTORY:
            self.history_truncated = True
            return
        h.append(letter)

    def _mark(self, key: str) -> None:
        if self.frames[key] is None:
            self.frames[key] = self._frame
            self.ts[key] = self._ts

    def _feed(self, from_client: bool, data: bytes) -> None:
        d = self._c if from_client else self._s
        if d.mode == _STOPPED:
            return
        if self._first_dir is None:
            self._first_dir = from_client
        d.seen = True
        if d.mode == _FIRST:
            buf = d.first + data
            if len(buf) < 6 and looks_like_tls(buf):
                d.first = buf
                return  # undecided: wait for more bytes
            d.first = b""
            if not looks_like_tls(buf):
                d.not_tls = True
                d.mode = _STOPPED
                self._hist("I" if from_client else "i")
                return
            if buf[0] & 0x80:
                d.mode = _SSL2
                data = buf
            else:
                d.mode = _RECORDS
                d.reader = RecordReader()
                data = buf
        if d.mode == _SSL2:
            self._ssl2(d, from_client, data)
            return
        reader = d.reader
        for ct, ver, ln, body in reader.feed(data):
            if ct == CT_APPLICATION_DATA:
                self._app(d, from_client, ln)
            elif ct == CT_HANDSHAKE:
                self._handshake_record(d, from_client, body)
            elif ct == CT_CHANGE_CIPHER_SPEC:
                self._ccs(d, from_client)
            elif ct == CT_ALERT:
                self._alert(d, from_client, body)
            elif ct == CT_HEARTBEAT:
                self.heartbeats += 1
                self._hist("B" if from_client else "b", collapse=True)
            elif ct == BAD_HEADER:
                self._bad("record header not TLS", from_client)
        if reader.dead and d.mode != _STOPPED:
            d.mode = _STOPPED
            self._bad("lost record framing; stopped parsing", from_client)

    def _ssl2(self, d: _Dir, from_client: bool, data: bytes) -> None:
        buf = d.first + data
        if from_client:
            total = ssl2_hello_len(buf)
            if total is None:
                d.mode = _STOPPED
                self._bad("bad SSLv2 CLIENT-HELLO", True)
                return
            if len(buf) < total:
                if len(buf) > self.max_buffer:
                    d.mode = _STOPPED
                    self._bad("SSLv2 CLIENT-HELLO too long", True)
                    return
                d.first = buf
                return
            d.first = b""
            try:
                self.ch = parse_ssl2_client_hello(buf[:total])
                self._mark("client_hello")
                self._hist("C")
            except (ValueError, IndexError) as exc:
                self._bad(f"SSLv2 CLIENT-HELLO: {exc}", True)
            # the server picks: an SSL 3.0/TLS server answers with TLS records
            rest = buf[total:]
            d.mode = _RECORDS
            d.reader = RecordReader()
            if rest:
                self._feed(True, rest)
            return
        # server side: an SSLv2 SERVER-HELLO; the rest of the stream is SSLv2 (not parsed)
        if len(buf) < 2:
            d.first = buf
            return
        total = 2 + (((buf[0] & 0x7F) << 8) | buf[1])
        if len(buf) < total and len(buf) <= self.max_buffer:
            d.first = buf
            return
        d.first = b""
        d.mode = _STOPPED
        try:
            self.sh = parse_ssl2_server_hello(buf[:total])
            self._mark("server_hello")
            self._hist("s")
        except (ValueError, IndexError) as exc:
            self._bad(f"SSLv2 SERVER-HELLO: {exc}", False)

    def _handshake_record(self, d: _Dir, from_client: bool, body: bytes) -> None:
        if d.encrypted:
            self.encrypted_handshake_records += 1
            if not d.finished:
                d.finished = True
                self._hist("F" if from_client else "f")
                if from_client:
                    self.client_finished_ts = self._ts
                    self.client_finished_frame = self._frame
                if not from_client:
                    self._mark("server_hello_done_or_finished")
                if self._c.finished and self._s.finished:
                    self.handshake_complete = True
            else:
                self._hist("E" if from_client else "e", collapse=True)
            return
        buf = d.hs_buf
        buf += body
        while len(buf) >= 4:
            mlen = (buf[1] << 16) | (buf[2] << 8) | buf[3]
            if mlen > self.max_buffer:
                self._bad(f"handshake message of {mlen} bytes over the buffer cap", from_client)
                buf.clear()
                return
            if len(buf) < 4 + mlen:
                return
            mtype = buf[0]
            msg = bytes(buf[4:4 + mlen])
            del buf[:4 + mlen]
            try:
                self._handshake_msg(d, from_client, mtype, msg)
            except (ValueError, IndexError) as exc:
                self._bad(f"handshake type {mtype}: {exc}", from_client)
            if d.encrypted:  # a ServerHello switched keys: anything left is not plaintext
                if buf:
                    buf.clear()
                return

    def _handshake_msg(self, d: _Dir, from_client: bool, mtype: int, msg: bytes) -> None:
        if from_client:
            self._hist(_CLIENT_LETTERS.get(mtype, "O"))
            if mtype == HS_CLIENT_HELLO:
                ch = parse_client_hello(msg)
                if self.ch is None:
                    self.ch = ch
                    self._mark("client_hello")
                elif self.ch2 is None:
                    self.ch2 = ch
            elif mtype == HS_CERTIFICATE:
                self.client_cert = True
            return
        self.server_msgs.add(mtype)
        if mtype == HS_SERVER_HELLO or mtype == HS_HELLO_RETRY_REQUEST:
            sh = parse_server_hello(msg)
            if sh.hello_retry or mtype == HS_HELLO_RETRY_REQUEST:
                sh.hello_retry = True
                self.hrr = sh
                self._hist("r")
                return
            self._hist("s")
            if self.sh is None:
                self.sh = sh
                self._mark("server_hello")
                if sh.tls13:
                    self.tls13 = True
                    self._s.encrypted = True
                    self._c.encrypted = True
            return
        self._hist(_SERVER_LETTERS.get(mtype, "o"))
        if mtype == HS_CERTIFICATE:
            if self.certs_der is None:
                self.certs_der = parse_certificate_list(msg)
                self._mark("certificate")
        elif mtype == HS_SERVER_KEY_EXCHANGE:
            kex = cipher_info(self.sh.cipher)["kex"] if self.sh is not None else None
            if self.ske is None:
                self.ske = parse_server_key_exchange(msg, kex)
        elif mtype == HS_CERTIFICATE_REQUEST:
            self.cert_request = True
        elif mtype == HS_SERVER_HELLO_DONE:
            self._mark("server_hello_done_or_finished")
        elif mtype == HS_NEW_SESSION_TICKET:
            self.new_session_ticket = True
        elif mtype == HS_CERTIFICATE_STATUS:
            self.ocsp_stapled = True

    def _ccs(self, d: _Dir, from_client: bool) -> None:
        if self.tls13 or self.sh is None:
            self.ccs_compat += 1  # TLS 1.3 middlebox-compatibility record
            return
        d.ccs = True
        d.encrypted = True
        if d.hs_buf:
            self._bad("partial handshake message before ChangeCipherSpec", from_client)
            d.hs_buf.clear()
        self._hist("X" if from_client else "x")

    def _app(self, d: _Dir, from_client: bool, ln: int) -> None:
        if self.tls13:
            if from_client:
                if not self._c.finished:
                    if self.server_flight_records:
                        self._c.finished = True
                        self.handshake_complete = True
                        self.client_finished_ts = self._ts
                        self.client_finished_frame = self._frame
                        self._hist("F")
                    else:
                        self.early_data_records += 1
                        self._hist("Y", collapse=True)
                    return
            elif not self._c.finished:
                self.server_flight_records += 1
                self.frames["server_hello_done_or_finished"] = self._frame
                self.ts["server_hello_done_or_finished"] = self._ts
                self._hist("e", collapse=True)
                return
        elif not d.ccs:
            if from_client and self.sh is None and self.ch is not None and self.ch.early_data:
                self.early_data_records += 1
                self._hist("Y", collapse=True)
            else:
                self.unexpected_records += 1
                self._hist("U" if from_client else "u", collapse=True)
            return
        # application data
        d.app_records += 1
        d.app_bytes += ln
        if len(d.sizes) < MAX_SIZES:
            d.sizes.append(ln)
        if d.app_records == 1:
            self._mark("first_app_data_c2s" if from_client else "first_app_data_s2c")
            self._hist("A" if from_client else "a")
        if len(self.app_records) < MAX_APP_RECORDS:
            self.app_records.append((self._ts, self._frame, from_client, ln))
        else:
            self.app_records_dropped += 1

    def _alert(self, d: _Dir, from_client: bool, body: bytes) -> None:
        # A plaintext alert is exactly 2 bytes with level warning(1)/fatal(2); anything else
        # (or any alert after this side's ChangeCipherSpec in TLS <= 1.2) is encrypted.
        plaintext = (len(body) == 2 and body[0] in (1, 2)
                     and (not d.encrypted or self.tls13))
        pairs: list[tuple[int | None, int | None]]
        if plaintext:
            pairs = [(body[0], body[1])]
        else:
            pairs = [(None, None)]
        established = self._c.app_records > 0 and self._s.app_records > 0
        # an encrypted alert after a completed handshake is, as far as anyone can tell,
        # close_notify: it does not make the session a failure (docs/tls.md)
        counts_as_failure = not established and not (not plaintext and self.handshake_complete)
        for level, desc in pairs:
            self.alerts_total += 1
            if counts_as_failure:
                self.alert_before_established = True
            self._mark("first_alert")
            enc = not plaintext
            self._hist(("W" if from_client else "w") if enc else ("L" if from_client else "l"))
            if len(self.alerts) < MAX_ALERTS:
                self.alerts.append({
                    "from": "client" if from_client else "server",
                    "level": level,
                    "description": desc,
                    "name": alert_name(desc) if not enc else None,
                    "encrypted": enc,
                    "frame": self._frame,
                    "ts": self._ts,
                })

    # ------------------------------------------------------------------ summary

    def summary(self, *, tcp: dict | None = None, reference_time: float | None = None,
                trust: TrustConfig | None = None, capture_end_ts: float | None = None) -> dict:
        """The ``flows[].tls`` object. Never raises; see docs/tls.md."""
        try:
            return self._summary(tcp or {}, reference_time, trust, capture_end_ts)
        except Exception as exc:  # pragma: no cover - defensive
            self._bad(f"internal error in summary {type(exc).__name__}: {exc}")
            return self._minimal_summary()

    def _minimal_summary(self) -> dict:
        out: dict = dict.fromkeys(SUMMARY_KEYS)
        out.update({
            "not_tls": bool(self._c.not_tls or self._s.not_tls), "malformed": self.malformed,
            "error": self.error, "history": "".join(self.history), "alerts": [],
            "established": False, "handshake_complete": self.handshake_complete,
            "resumed": False, "frames": dict(self.frames), "ts": dict(self.ts),
            # list-valued fields keep their type, so the report stays valid
            "alpn_offered": [], "certificates": [], "failure": None,
        })
        return out

    def _summary(self, tcp: dict, reference_time: float | None, trust: TrustConfig | None,
                 capture_end_ts: float | None) -> dict:
        ch, sh, c, s = self.ch, self.sh, self._c, self._s
        out: dict = {}
        # versions
        ver = None
        draft = None
        if sh is not None:
            if sh.ssl2:
                ver = "SSL 2.0"
            elif self.tls13:
                ver = "TLS 1.3"
                nv = sh.negotiated_version
                draft = (nv & 0xFF) if nv >> 8 == 0x7F else None
            else:
                ver = version_name(sh.negotiated_version)
        out["version"] = ver
        out["version_draft"] = draft
        out["client_version"] = version_name(ch.version) if ch else None
        if ch and ch.supported_versions:
            offered = [version_name(v) for v in ch.supported_versions if not is_grease(v)]
        elif ch:
            offered = [version_name(ch.version)]
        else:
            offered = []
        out["versions_offered"] = offered

        # ciphers
        if sh is not None and not sh.ssl2:
            out["cipher"] = cipher_info(sh.cipher)
        elif sh is not None and sh.ssl2:
            out["cipher"] = {"id": sh.cipher, "hex": f"0x{sh.cipher:06x}",
                             "name": ssl2_cipher_name(sh.cipher), "kex": "RSA", "auth": "RSA",
                             "enc": None, "mode": None, "mac": "MD5", "prf": None, "aead": False,
                             "tls13": False, "weaknesses": list(ssl2_cipher_weaknesses(sh.cipher)),
                             "profiles": []}
        else:
            out["cipher"] = None
        names: list[str] = []
        weak: set[str] = set()
        if ch:
            for code in ch.ciphers:
                if ch.ssl2:
                    names.append(ssl2_cipher_name(code))
                    weak.update(ssl2_cipher_weaknesses(code))
                elif not is_grease(code):
                    names.append(cipher_name(code))
                    weak.update(cipher_weaknesses(code))
        out["ciphers_offered"] = names
        out["offered_weaknesses"] = [w for w in WEAKNESS_ORDER if w in weak]
        out["fallback_scsv"] = (not ch.ssl2 and SCSV_FALLBACK in ch.ciphers) if ch else None

        # client hello facts
        out["sni"] = ch.sni if ch else None
        out["alpn_offered"] = list(ch.alpn) if ch else []
        if sh is None:
            out["alpn"] = None
        elif self.tls13:
            out["alpn"] = "not_observable"
        else:
            out["alpn"] = sh.alpn
        out["groups_offered"] = [group_name(g) for g in ch.groups if not is_grease(g)] if ch else []
        out["key_share_groups"] = ([group_name(g) for g in ch.key_share_groups if not is_grease(g)]
                                   if ch else [])
        out["signature_algorithms"] = ([signature_scheme_name(x) for x in ch.signature_algorithms
                                        if not is_grease(x)] if ch else [])
        sel = None
        if sh is not None and sh.key_share_group is not None:
            sel = group_name(sh.key_share_group)
        elif self.ske and self.ske.get("curve") is not None:
            sel = group_name(self.ske["curve"])
        elif self.ske and self.ske.get("kind") == "dhe":
            sel = f"ffdhe_custom_{self.ske['dh_bits']}"
        out["selected_group"] = sel
        out["compression_offered"] = list(ch.compression) if ch else []
        out["compression"] = sh.compression if sh is not None and not sh.ssl2 else None
        out["session_id_offered"] = bool(ch and ch.session_id) if ch else None
        ticket_nonempty = bool(ch and ch.session_ticket_len)
        out["session_ticket_offered"] = ticket_nonempty if ch else None
        out["session_ticket_supported"] = bool(ch and ch.session_ticket_len is not None) if ch else None
        out["psk_offered"] = bool(ch and ch.psk) if ch else None
        out["early_data_offered"] = bool(ch and ch.early_data) if ch else None
        if not ch or not ch.early_data:
            out["early_data_accepted"] = None if not ch else False
        elif self.tls13:
            out["early_data_accepted"] = "not_observable"
        else:
            out["early_data_accepted"] = False if sh is not None else None
        out["early_data_records"] = self.early_data_records
        out["hello_retry_request"] = self.hrr is not None
        out["downgrade_sentinel"] = sh.downgrade_sentinel if sh is not None and not sh.ssl2 else None
        if sh is None or sh.ssl2 or self.tls13:
            out["renegotiation_info"] = None
            out["extended_master_secret"] = None
        else:
            out["renegotiation_info"] = sh.renegotiation_info
            out["extended_master_secret"] = sh.extended_master_secret
        out["renegotiation_info_offered"] = (bool(ch.renegotiation_info or 0x00FF in ch.ciphers)
                                             if ch and not ch.ssl2 else None)
        out["extended_master_secret_offered"] = bool(ch.extended_master_secret) if ch else None

        # resumption
        resumed = False
        resumption = None
        if sh is not None and not sh.ssl2:
            if self.tls13:
                if sh.psk:
                    resumed, resumption = True, "psk"
            else:
                full_msgs = {HS_CERTIFICATE, HS_SERVER_KEY_EXCHANGE, HS_SERVER_HELLO_DONE}
                if s.ccs and not (self.server_msgs & full_msgs):
                    resumed = True
                    if ticket_nonempty:
                        resumption = "ticket"
                    elif ch is not None and ch.session_id and sh.session_id == ch.session_id:
                        resumption = "session_id"
                    # else: abbreviated without a ticket or an echoed id: resumed, how unknown
        out["resumed"] = resumed
        out["resumption"] = resumption
        if sh is None or sh.ssl2:
            kx = None
        elif self.tls13:
            if sh.psk and sh.key_share_group is None:
                kx = "psk"
            elif sh.psk:
                kx = "psk_dhe"
            else:
                g = sh.key_share_group
                kx = "dhe" if g is not None and 256 <= g <= 511 else "ecdhe"  # ffdhe* groups
        else:
            kx = (cipher_info(sh.cipher)["kex"] or "").lower() or None
        out["key_exchange"] = kx
        out["server_key_exchange"] = dict(self.ske) if self.ske else None
        if out["server_key_exchange"] and out["server_key_exchange"].get("curve") is not None:
            out["server_key_exchange"]["curve"] = group_name(out["server_key_exchange"]["curve"])

        # certificates
        if self.tls13:
            out["certificates"] = "not_observable"
            out["cert_validation"] = "not_observable"
        elif self.certs_der:
            out["certificates"] = [certificate_facts(d) for d in self.certs_der]
            ref = reference_time
            if ref is None:
                ref = self.ts["certificate"] if self.ts["certificate"] is not None else (self.first_ts or 0.0)
            out["cert_validation"] = validate_chain(self.certs_der, ch.sni if ch else None, ref, trust)
        else:
            out["certificates"] = []
            out["cert_validation"] = None
        out["certificate_request"] = self.cert_request
        out["client_certificate"] = self.client_cert
        out["ocsp_stapled"] = self.ocsp_stapled if not self.tls13 else "not_observable"
        out["new_session_ticket"] = self.new_session_ticket if not self.tls13 else "not_observable"

        # outcome
        out["alerts"] = list(self.alerts)
        out["alerts_total"] = self.alerts_total
        established = self.handshake_complete and c.app_records > 0 and s.app_records > 0
        out["established"] = established
        out["handshake_complete"] = self.handshake_complete
        hist = "".join(self.history)
        out["history"] = hist + ("+" if self.history_truncated else "")
        not_tls = c.not_tls or s.not_tls
        out["not_tls"] = not_tls
        out["not_tls_from"] = ("client" if c.not_tls else "server") if not_tls else None
        out["failure"] = self._failure(tcp, established, not_tls)
        out["malformed"] = self.malformed
        out["error"] = self.error
        out["gaps"] = {"c2s": c.gaps, "s2c": s.gaps}
        out["resyncs"] = {"c2s": c.reader.resyncs if c.reader else 0,
                          "s2c": s.reader.resyncs if s.reader else 0}
        out["app_data"] = {"c2s": {"records": c.app_records, "bytes": c.app_bytes},
                           "s2c": {"records": s.app_records, "bytes": s.app_bytes}}
        out["app_record_sizes"] = {"c2s": list(c.sizes), "s2c": list(s.sizes)}
        out["app_records_dropped"] = self.app_records_dropped
        out["unexpected_records"] = self.unexpected_records
        out["encrypted_handshake_records"] = self.encrypted_handshake_records + self.server_flight_records
        out["ccs_compat"] = self.ccs_compat
        out["heartbeats"] = self.heartbeats
        out["frames"] = dict(self.frames)
        out["ts"] = dict(self.ts)
        if capture_end_ts is not None and self.last_ts is not None:
            out["idle_at_end_s"] = round(max(0.0, capture_end_ts - self.last_ts), 6)
        else:
            out["idle_at_end_s"] = None

        # fingerprints
        if ch is not None:
            out["ja3"], out["ja3_string"] = ja3(ch)
            out["ja4"] = ja4(ch)
        else:
            out["ja3"] = out["ja3_string"] = out["ja4"] = None
        if sh is not None and not sh.ssl2:
            out["ja3s"], out["ja3s_string"] = ja3s(sh)
        else:
            out["ja3s"] = out["ja3s_string"] = None
        return out

    def _failure(self, tcp: dict, established: bool, not_tls: bool) -> str | None:
        if not_tls:
            return "not_tls"
        if self.alert_before_established:
            return "alert"
        if self.handshake_complete:
            return None
        if self.sh is not None and self.sh.ssl2:
            return "reset" if tcp.get("rst_from") else None
        if not (self._c.seen or self._s.seen):
            return None
        if tcp.get("rst_from"):
            return "reset"
        if tcp.get("fin_from"):
            return "closed"
        return "timeout"
