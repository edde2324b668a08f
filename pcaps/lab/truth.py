"""Read a lab capture with tshark and write its ground truth (<case>.truth.json).

Facts come from the capture (tshark decodes 853 and 8853 as TLS); what cannot be seen on the
wire (queries inside TLS) comes from a second tshark pass with the TLS key log that the lab
clients/servers wrote, or, when no key log exists for a flow (the unbound stub), from what the
scenario did. Findings are then derived from these facts with the rule definitions written in
pcaps/README.md. Also importable by tests (tshark_frames, cipher names).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

FIELDS = [
    "frame.number", "frame.time_epoch", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.stream", "udp.stream",
    "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "tcp.flags.syn", "tcp.flags.ack",
    "tcp.flags.reset", "tcp.flags.fin", "tcp.len", "tcp.options.tfo.request", "tcp.options.tfo.cookie",
    "tls.record.content_type", "tls.record.opaque_type", "tls.record.length", "tls.handshake.type", "tls.handshake.version",
    "tls.handshake.extensions.supported_version", "tls.handshake.ciphersuite",
    "tls.handshake.extensions_server_name", "tls.handshake.extensions_alpn_str",
    "tls.handshake.session_id", "tls.handshake.extension.type", "tls.handshake.extension.len",
    "tls.handshake.random", "tls.handshake.comp_method", "tls.alert_message.level",
    "tls.alert_message.desc", "tls.handshake.certificate", "dns.flags.response", "dns.opt.code",
]
TLS_PORTS = (853, 8853)
VERSION_NAMES = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
                 0x0304: "TLS 1.3"}
ALERTS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 40: "handshake_failure",
          42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
          45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter",
          48: "unknown_ca", 49: "access_denied", 50: "decode_error", 51: "decrypt_error",
          70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
          86: "inappropriate_fallback", 90: "user_canceled", 109: "missing_extension",
          110: "unsupported_extension", 112: "unrecognized_name", 116: "certificate_required",
          120: "no_application_protocol"}
DOWNGRADE = {"444f574e47524401": "TLS 1.2", "444f574e47524400": "TLS 1.1 or below"}


def tshark_frames(pcap: Path, keylog: Path | None = None) -> list[dict]:
    """One dict per frame: field -> list of strings (tshark -T json -e)."""
    argv = ["tshark", "-n", "-r", str(pcap), "-T", "json"]
    for port in TLS_PORTS:
        argv += ["-d", f"tcp.port=={port},tls", "-d", f"tls.port=={port},dns"]
    if keylog is not None and keylog.exists():
        argv += ["-o", f"tls.keylog_file:{keylog}"]
    for f in FIELDS:
        argv += ["-e", f]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [pkt["_source"]["layers"] for pkt in json.loads(out or "[]")]


def cipher_names() -> dict[int, str]:
    """IANA names of every suite the local OpenSSL knows (openssl ciphers -stdname)."""
    out = subprocess.run(["openssl", "ciphers", "-stdname", "-V", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
                         check=True, capture_output=True, text=True).stdout
    names = {0x1304: "TLS_AES_128_CCM_SHA256", 0x1305: "TLS_AES_128_CCM_8_SHA256"}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0].startswith("0x"):
            hi, lo = parts[0].split(",")
            names[int(hi, 16) << 8 | int(lo, 16)] = parts[2]
    return names


def _ints(layer: dict, key: str) -> list[int]:
    out = []
    for v in layer.get(key, []):
        for item in str(v).split(","):
            item = item.strip()
            if item:
                out.append(int(item, 0) if item.startswith("0x") else int(item))
    return out


def _first(layer: dict, key: str):
    v = layer.get(key)
    return v[0] if v else None


def _ip(layer: dict) -> str:
    return _first(layer, "ip.src") or _first(layer, "ipv6.src")


# ------------------------------------------------------------------ certificates
def describe_cert(der: bytes, ca_pem: Path) -> tuple[dict, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    cert = x509.load_der_x509_certificate(der)
    key = cert.public_key()
    key_type = "RSA" if isinstance(key, rsa.RSAPublicKey) else "EC" if isinstance(
        key, ec.EllipticCurvePublicKey) else type(key).__name__
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n.value) for n in san_ext]
    except x509.ExtensionNotFound:
        sans = []
    self_signed = cert.subject == cert.issuer and _signed_by(cert, key)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key_type": key_type,
        "key_bits": key.key_size,
        "signature_algorithm": cert.signature_algorithm_oid._name,
        "self_signed": self_signed,
        "sans": sans,
    }, cert


def _signed_by(cert, public_key) -> bool:
    """Signature check that, unlike a validator, accepts SHA-1 (weakness is judged separately)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                              cert.signature_hash_algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes,
                              ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def judge_cert(cert, info: dict, ca_pem: Path, when: float, name: str | None, server_ip: str) -> dict:
    """What a validating client would say about the leaf, at capture time."""
    from cryptography import x509

    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    now = dt.datetime.fromtimestamp(when, dt.timezone.utc)
    trusted = cert.issuer == ca.subject and _signed_by(cert, ca.public_key())
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    match = None
    if name:
        match = any(_name_matches(name, s) for s in info["sans"])
    weak_key = (info["key_type"] == "RSA" and info["key_bits"] < 2048) or (
        info["key_type"] == "EC" and info["key_bits"] < 256)
    weak_sig = any(h in info["signature_algorithm"].lower() for h in ("sha1", "md5", "md2"))
    return {
        "expired": now > na,
        "not_yet_valid": now < nb,
        "expires_soon": nb <= now <= na and (na - now).days < 30,
        "self_signed": info["self_signed"],
        "untrusted": not trusted,
        "name_mismatch": match is False,
        "weak_key": weak_key,
        "weak_signature": weak_sig,
    }


def _name_matches(name: str, san: str) -> bool:
    name, san = name.lower().rstrip("."), san.lower().rstrip(".")
    if san.startswith("*."):
        return name.split(".", 1)[-1] == san[2:] and name.count(".") == san.count(".")
    return name == san


# ------------------------------------------------------------------------ flows
def flows_from(frames: list[dict], dec_frames: list[dict]) -> list[dict]:
    flows: dict[tuple, dict] = {}
    for layer, dec in zip(frames, dec_frames):
        if "tcp.stream" in layer:
            key = ("tcp", _first(layer, "tcp.stream"))
            sport, dport = int(_first(layer, "tcp.srcport")), int(_first(layer, "tcp.dstport"))
        elif "udp.stream" in layer:
            key = ("udp", _first(layer, "udp.stream"))
            sport, dport = int(_first(layer, "udp.srcport")), int(_first(layer, "udp.dstport"))
        else:
            continue
        fl = flows.get(key)
        if fl is None:
            fl = flows[key] = {"transport": key[0], "frames": [], "first_frame": int(_first(layer, "frame.number"))}
            syn_only = _first(layer, "tcp.flags.syn") in ("1", "True") and _first(layer, "tcp.flags.ack") in ("0", "False")
            if key[0] == "tcp" and not syn_only:
                # capture started mid-connection: server is the lower (well-known) port
                if sport < dport:
                    sport, dport = dport, sport
            fl["client"] = {"ip": _ip(layer), "port": sport}
            fl["server_port"] = dport
        fl["frames"].append((layer, dec))
    out = []
    for fl in sorted(flows.values(), key=lambda f: f["first_frame"]):
        c_ip, c_port = fl["client"]["ip"], fl["client"]["port"]
        server_ip = None
        for layer, _ in fl["frames"]:
            if _ip(layer) != c_ip or int(_first(layer, "tcp.srcport") or _first(layer, "udp.srcport")) != c_port:
                server_ip = _ip(layer)
                break
        if server_ip is None:  # never answered: read the destination from the first frame
            first = fl["frames"][0][0]
            server_ip = _first(first, "ip.dst") or _first(first, "ipv6.dst")
        fl["server"] = {"ip": server_ip, "port": fl["server_port"]}
        out.append(fl)
    return out


def _from_client(fl: dict, layer: dict) -> bool:
    port = _first(layer, "tcp.srcport") or _first(layer, "udp.srcport")
    return _ip(layer) == fl["client"]["ip"] and int(port) == fl["client"]["port"]


def analyse_flow(fl: dict, ca_pem: Path, names: dict[int, str], meta: dict) -> dict:
    frames = fl["frames"]
    t = lambda layer: float(_first(layer, "frame.time_epoch"))  # noqa: E731
    syn = synack = None
    rst_from = []
    client_data_frames = 0
    tfo = None
    for layer, _ in frames:
        flags = (_first(layer, "tcp.flags.syn"), _first(layer, "tcp.flags.ack"))
        is_c = _from_client(fl, layer)
        if flags[0] in ("1", "True") and flags[1] in ("0", "False") and syn is None:
            syn = layer
            if "tcp.options.tfo.cookie" in layer and int(_first(layer, "tcp.len") or 0) > 0:
                tfo = "data_in_syn"
            elif "tcp.options.tfo.request" in layer or "tcp.options.tfo.cookie" in layer:
                tfo = "cookie_request"
        if flags[0] in ("1", "True") and flags[1] in ("1", "True") and synack is None and not is_c:
            synack = layer
        if _first(layer, "tcp.flags.reset") in ("1", "True"):
            rst_from.append("client" if is_c else "server")
        if is_c and int(_first(layer, "tcp.len") or 0) > 0:
            client_data_frames += 1
    # TLS, from the undecrypted pass (what anyone can observe)
    ch = sh = None
    cert_layer = None
    alerts = []
    client_app = []
    server_ccs = client_ccs = False
    enc_alert_frames = set()
    for layer, dec in frames:
        types = _ints(layer, "tls.handshake.type")
        is_c = _from_client(fl, layer)
        if 1 in types and ch is None and is_c:
            ch = layer
        if 2 in types and sh is None and not is_c:
            sh = layer
        if 11 in types and not is_c and cert_layer is None:
            cert_layer = layer
        ctypes = _ints(layer, "tls.record.content_type") + _ints(layer, "tls.record.opaque_type")
        if 20 in ctypes:
            if is_c:
                client_ccs = True
            else:
                server_ccs = True
        if 23 in ctypes and is_c:
            client_app.append(layer)
        descs = _ints(layer, "tls.alert_message.desc")
        levels = _ints(layer, "tls.alert_message.level")
        for lvl, desc in zip(levels, descs):
            alerts.append({"frame": int(_first(layer, "frame.number")), "from": "client" if is_c else "server",
                           "level": lvl, "description": desc, "name": ALERTS.get(desc, str(desc)),
                           "encrypted": False})
        if 21 in ctypes and not descs:
            enc_alert_frames.add(int(_first(layer, "frame.number")))
        # encrypted alerts recovered from the decrypted pass (TLS 1.3 alerts are record type 23)
        if dec is not None and not descs:
            for lvl, desc in zip(_ints(dec, "tls.alert_message.level"), _ints(dec, "tls.alert_message.desc")):
                alerts.append({"frame": int(_first(layer, "frame.number")),
                               "from": "client" if is_c else "server", "level": lvl,
                               "description": desc, "name": ALERTS.get(desc, str(desc)), "encrypted": True})
                enc_alert_frames.discard(int(_first(layer, "frame.number")))
    for frame in sorted(enc_alert_frames):
        alerts.append({"frame": frame, "from": None, "level": None, "description": None, "name": None,
                       "encrypted": True})

    rec: dict = {"transport": fl["transport"], "client": fl["client"], "server": fl["server"],
                 "first_frame": fl["first_frame"], "packets": len(frames)}
    tls = None
    if ch is not None or fl["server"]["port"] in TLS_PORTS and fl["transport"] == "tcp":
        tls = {"version": None, "cipher": None, "cipher_id": None, "sni": None, "alpn_offered": [],
               "established": False, "resumed": False, "resumption": None, "alerts": alerts,
               "certificates": [], "client_versions": [], "client_offers": [],
               "downgrade_sentinel": None, "compression": None}
        if ch is not None:
            tls["sni"] = _first(ch, "tls.handshake.extensions_server_name")
            tls["alpn_offered"] = list(ch.get("tls.handshake.extensions_alpn_str", []))
            sv = _ints(ch, "tls.handshake.extensions.supported_version")
            legacy = _ints(ch, "tls.handshake.version")
            tls["client_versions"] = [VERSION_NAMES.get(v, hex(v)) for v in (sv or legacy[:1])
                                      if (v & 0x0f0f) == v]  # drop GREASE
            tls["client_offers"] = [names.get(c, hex(c)) for c in _ints(ch, "tls.handshake.ciphersuite")
                                    if (c & 0x0f0f) != 0x0a0a]
        if sh is not None:
            sv = _ints(sh, "tls.handshake.extensions.supported_version")
            ver = sv[0] if sv else _ints(sh, "tls.handshake.version")[0]
            tls["version"] = VERSION_NAMES.get(ver, hex(ver))
            cid = _ints(sh, "tls.handshake.ciphersuite")[0]
            tls["cipher_id"] = cid
            tls["cipher"] = names.get(cid, hex(cid))
            rnd = (_first(sh, "tls.handshake.random") or "").replace(":", "")
            tls["downgrade_sentinel"] = DOWNGRADE.get(rnd[-16:])
            comp = _ints(sh, "tls.handshake.comp_method")
            tls["compression"] = comp[0] if comp else 0
            ext = _ints(sh, "tls.handshake.extension.type")
            if tls["version"] == "TLS 1.3":
                tls["certificates"] = "not_observable"
                if 41 in ext:
                    tls["resumed"], tls["resumption"] = True, "psk"
            elif cert_layer is None and server_ccs:
                tls["resumed"] = True
                ch_ext = list(zip(_ints(ch, "tls.handshake.extension.type"),
                                  _ints(ch, "tls.handshake.extension.len")))
                ticket = any(tp == 35 and ln > 0 for tp, ln in ch_ext)
                tls["resumption"] = "ticket" if ticket else "session_id"
        if cert_layer is not None:
            certs = []
            for i, hexder in enumerate(cert_layer.get("tls.handshake.certificate", [])):
                info, cert = describe_cert(bytes.fromhex(hexder.replace(":", "")), ca_pem)
                if i == 0:
                    name = tls["sni"] or meta.get("auth_name")
                    info["validation"] = judge_cert(cert, info, ca_pem, t(cert_layer), name,
                                                    fl["server"]["ip"])
                certs.append(info)
            tls["certificates"] = certs
        # established: Finished in both directions (visible in the decrypted pass), else CCS+data
        fin_c = fin_s = False
        for layer, dec in frames:
            if dec is not None and 20 in _ints(dec, "tls.handshake.type"):
                if _from_client(fl, layer):
                    fin_c = True
                else:
                    fin_s = True
        if fin_c and fin_s:
            tls["established"] = True
        elif sh is not None and not any(a["level"] == 2 and not a["encrypted"] for a in alerts):
            if tls["version"] == "TLS 1.3":
                tls["established"] = bool(client_app)
            else:
                tls["established"] = client_ccs and server_ccs and bool(client_app)
        if meta.get("established") is not None and meta["established"] != tls["established"]:
            print(f"  warning: established={tls['established']} but scenario says {meta['established']}")
            tls["established"] = meta["established"]
        rec["tls"] = tls
    # DNS: plaintext pass, else decrypted pass, else what the scenario did
    q = r = 0
    padded = False
    source = None
    for layer, dec in frames:
        src = layer if "dns.flags.response" in layer else (dec if dec is not None and "dns.flags.response" in dec else None)
        if src is None:
            continue
        source = "capture" if src is layer else "decrypted"
        for flag in src["dns.flags.response"]:
            if flag in ("1", "True"):
                r += 1
            else:
                q += 1
                if 12 in _ints(src, "dns.opt.code"):
                    padded = True
    if source is None and (meta.get("queries") is not None):
        q, r, padded, source = meta["queries"], meta.get("responses", meta["queries"]), meta.get("padding", False), "scenario"
    rec["dns"] = {"queries": q, "responses": r, "padding": padded, "source": source}
    if meta.get("queries") is not None and meta["queries"] != q:
        print(f"  warning: flow {fl['first_frame']}: {q} queries seen, scenario sent {meta['queries']}")
    rec["tcp"] = {"tfo": tfo, "rst_from": rst_from[0] if rst_from else None} if fl["transport"] == "tcp" else None
    rtt = (t(synack) - t(syn)) * 1000 if syn is not None and synack is not None else None
    hs = None
    if tls is not None and ch is not None and client_app:
        hs = (t(client_app[0]) - t(ch)) * 1000
    rec["timing"] = {"tcp_rtt_ms": None if rtt is None else round(rtt, 3),
                     "tls_handshake_ms": None if hs is None else round(hs, 3)}
    rec["class"] = meta.get("class") or default_class(rec)
    rec["failure"] = meta.get("failure")
    if rec.get("tls") is None:
        rec["tls"] = None
    return rec


def default_class(rec: dict) -> str:
    port = rec["server"]["port"]
    if port == 53:
        return "do53"
    if port == 853:
        return "dot"
    if port == 8853:
        return "dot-nonstandard-port"
    return "dns-nonstandard-port" if rec["dns"]["source"] == "capture" else "other"


# --------------------------------------------------------------------- findings
def is_local(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def cipher_flags(name: str) -> list[str]:
    """Cipher rules from the IANA name (never a hand list of suites)."""
    out = []
    if name.startswith("TLS_") and "_WITH_" not in name:  # TLS 1.3 suites
        return out
    if any(k in name for k in ("_NULL_", "_EXPORT", "_anon_")) or name.endswith("_NULL"):
        out.append("dot-cipher-null-export-anon")
    if "_RC4_" in name or ("_DES_" in name and "3DES" not in name) or "_DES40_" in name:
        out.append("dot-cipher-rc4-des")
    if "3DES" in name:
        out.append("dot-cipher-3des")
    kex = name[4:name.index("_WITH_")] if "_WITH_" in name else ""
    if kex in ("RSA", "DH_RSA", "DH_DSS", "ECDH_RSA", "ECDH_ECDSA", "PSK", "RSA_PSK") or kex.startswith("DH_") and not kex.startswith("DHE"):
        out.append("dot-cipher-no-pfs")
    if "_CBC_" in name:
        out.append("dot-cipher-cbc")
    aead = any(k in name for k in ("_GCM_", "_CCM", "CHACHA20_POLY1305"))
    if not (kex.startswith("ECDHE_") and aead):
        out.append("dot-cipher-not-in-profile")
    return out


def offers_weak(tls: dict) -> bool:
    weak_version = any(v in ("SSL 3.0", "TLS 1.0", "TLS 1.1") for v in tls["client_versions"])
    weak_suite = any(set(cipher_flags(c)) & {"dot-cipher-null-export-anon", "dot-cipher-rc4-des",
                                              "dot-cipher-3des"} for c in tls["client_offers"])
    return weak_version or weak_suite


def findings_for(flows: list[dict], metas: list[dict]) -> list[dict]:
    out: list[tuple[int, str]] = []
    failed_dot: dict[str, tuple[float, float, int]] = {}  # client ip -> (first ts, last ts, flow) of its latest failed DoT
    for i, (fl, meta) in enumerate(zip(flows, metas)):
        cls, tls = fl["class"], fl["tls"]
        if cls == "do53" and not is_local(fl["server"]["ip"]):
            out.append((i, "dns-plaintext-query"))
            failed = failed_dot.get(fl["client"]["ip"])
            if failed and failed[0] <= fl["_ts"] and fl["_ts"] - failed[1] <= 10:
                # the finding names both flows: the cleartext query and the failed DoT attempt
                out += [(i, "dns-plaintext-fallback"), (failed[2], "dns-plaintext-fallback")]
        if cls == "dns-nonstandard-port":
            out.append((i, "dns-nonstandard-port"))
        if cls in ("do53", "dns-nonstandard-port") and fl["dns"]["padding"] and not is_local(fl["server"]["ip"]):
            out.append((i, "dns-padding-in-cleartext"))
        if cls == "dot-nonstandard-port":
            out.append((i, "dot-nonstandard-port"))
        if fl["failure"] is not None and cls in ("dot", "dot-nonstandard-port"):
            failed_dot[fl["client"]["ip"]] = (fl["_ts"], fl["_last_ts"], i)
        if fl["failure"] == "reset" and tls and tls["version"] is None and fl["_c2s_payload"] == 0:
            out.append((i, "dot-port-unreachable"))
        elif fl["failure"] == "reset":
            out.append((i, "dot-handshake-reset"))
        if fl["failure"] == "timeout" and fl["timing"]["tcp_rtt_ms"] is None:
            out.append((i, "dot-connect-timeout"))
        elif fl["failure"] in ("timeout", "closed"):
            out.append((i, "dot-handshake-incomplete"))
        if fl["failure"] == "not_tls":
            out.append((i, "dot-not-tls"))
        if tls is None or cls not in ("dot", "dot-nonstandard-port"):
            continue
        if any(a["level"] == 2 and not a["encrypted"] for a in tls["alerts"]):
            out.append((i, "dot-handshake-alert"))
        if tls["client_versions"] and offers_weak(tls):
            out.append((i, "dot-client-offers-weak"))
        if tls["sni"] is None and tls["client_versions"]:
            out.append((i, "dot-no-sni"))
        if tls["downgrade_sentinel"] and "TLS 1.3" in tls["client_versions"]:
            out.append((i, "dot-tls-downgrade-sentinel"))
        if tls["established"]:
            if tls["version"] in ("SSL 3.0", "TLS 1.0", "TLS 1.1"):
                out.append((i, "dot-tls-version-prohibited"))
            elif tls["version"] == "TLS 1.2":
                out.append((i, "dot-tls-version-not-1-3"))
            for rule in cipher_flags(tls["cipher"] or ""):
                out.append((i, rule))
            if tls["compression"]:
                out.append((i, "dot-tls-compression"))
            if fl["dns"]["queries"] and not fl["dns"]["padding"]:
                out.append((i, "dot-no-padding"))
        if tls["certificates"] == "not_observable":
            out.append((i, "dot-cert-not-observable"))
        elif tls["certificates"]:
            v = tls["certificates"][0]["validation"]
            for key, rule in [("expired", "dot-cert-expired"), ("not_yet_valid", "dot-cert-not-yet-valid"),
                              ("expires_soon", "dot-cert-expires-soon"), ("self_signed", "dot-cert-self-signed"),
                              ("untrusted", "dot-cert-untrusted"), ("name_mismatch", "dot-cert-name-mismatch"),
                              ("weak_key", "dot-cert-weak-key"), ("weak_signature", "dot-cert-weak-signature")]:
                if v[key]:
                    out.append((i, rule))
            if any(v.values()) and fl["_client_app_after_cert"]:
                out.append((i, "dot-cert-error-ignored"))
    # cross-flow: one query per connection / full handshakes, repeatedly (>= 3) to one server
    groups: dict[tuple, list[int]] = {}
    for i, fl in enumerate(flows):
        if fl["class"] in ("dot", "dot-nonstandard-port") and fl["tls"] and fl["tls"]["established"]:
            groups.setdefault((fl["client"]["ip"], fl["server"]["ip"], fl["server"]["port"]), []).append(i)
    for idx in groups.values():
        single = [i for i in idx if flows[i]["dns"]["queries"] == 1]
        if len(single) >= 3:
            out += [(i, "dot-no-connection-reuse") for i in single]
        if len(idx) >= 3 and not any(flows[i]["tls"]["resumed"] for i in idx):
            out += [(i, "dot-no-session-resumption") for i in idx]
    return [{"flow": i, "rule_id": r} for i, r in sorted(set(out))]


RULE_NOTES = {
    "dot-client-offers-weak": "Fires because the ClientHello lists TLS 1.0 and/or TLS 1.1 in supported_versions "
        "(the defaults of GnuTLS 3.7 and OpenSSL 3.0 on Debian 12) or a NULL/EXPORT/anon/RC4/DES/3DES suite. "
        "Offering CBC, static-RSA or SHA-1-MAC suites alone is not counted: RFC 8996 and RFC 7465 forbid offering "
        "TLS 1.0/1.1 and RC4 (MUST NOT), RFC 9325 4.1 forbids NULL/EXPORT/anon/DES/3DES, while CBC and static RSA are "
        "only not recommended for negotiation (judged on the negotiated suite by dot-cipher-cbc/-no-pfs) and are "
        "offered by every default OpenSSL/GnuTLS/Python client.",
    "dot-cert-not-observable": "Listed once per TLS 1.3 flow; an auditor that de-duplicates per server would "
        "raise it once per client/server pair.",
    "dot-no-connection-reuse": "Cross-flow fact: >= 3 established DoT connections from one client to one "
        "server address and port that each carry exactly one query; those flows are listed. Two are not enough: "
        "a server may close an idle connection (RFC 7766 6.2.3) and the client must then reconnect once.",
    "dot-no-session-resumption": "Cross-flow fact over >= 3 established DoT connections from one client to one "
        "server, none resumed; every flow of the group is listed (the first full handshake included). A client "
        "that resumed at least once there supports resumption (RFC 7858 3.4), and a resuming client makes two "
        "connections at least, so two connections never fire.",
    "dot-handshake-alert": "A fatal alert in cleartext during the handshake, from either side (a client "
        "rejecting the certificate counts).",
    "dot-port-unreachable": "The flow has no payload: it is classed dot by port 853 alone, because that is what "
        "the client attempted.",
    "dot-connect-timeout": "The flow has no payload: it is classed dot by port 853 alone, because that is what "
        "the client attempted.",
    "dot-cert-untrusted": "Trust anchor: pcaps/lab/ca.pem only. A self-signed leaf is both self-signed and "
        "untrusted (no path to an anchor, RFC 5280 6.1). A lab-CA leaf that is expired, not yet valid or SHA-1-signed "
        "is reported by its own rule, not as untrusted.",
    "dot-cert-weak-signature": "The leaf is signed by the lab CA with SHA-1, so it chains to the trust anchor "
        "(dot-cert-untrusted does not fire: one cause, one finding); validators at OpenSSL security level >= 1 and "
        "the web-PKI policy reject it, which this rule reports.",
    "dot-tls-version-not-1-3": "Version and cipher rules are judged on established sessions only (as the rule "
        "example in STYLE.md requires tls.established); aborted handshakes still show tls.version.",
    "dns-plaintext-fallback": "Do53 to a non-local resolver from the same client within 10 s after the end of "
        "its latest failed DoT attempt (any server). The finding lists both flows: the cleartext query and the "
        "failed DoT attempt it fell back from.",
}


def build(pcap: Path, keylog: Path | None, metas: list[dict], info: dict, ca_pem: Path) -> dict:
    frames = tshark_frames(pcap)
    dec = tshark_frames(pcap, keylog) if keylog is not None and keylog.exists() else [None] * len(frames)
    names = cipher_names()
    raw = flows_from(frames, dec)
    if len(raw) != len(metas):
        raise RuntimeError(f"{pcap}: {len(raw)} flows in the capture, scenario describes {len(metas)}")
    flows = []
    for fl, meta in zip(raw, metas):
        rec = analyse_flow(fl, ca_pem, names, meta)
        rec["_ts"] = float(_first(fl["frames"][0][0], "frame.time_epoch"))
        rec["_last_ts"] = float(_first(fl["frames"][-1][0], "frame.time_epoch"))
        rec["_c2s_payload"] = sum(int(_first(layer, "tcp.len") or 0) for layer, _ in fl["frames"]
                                  if _from_client(fl, layer))
        after = False
        seen_cert = False
        for layer, _ in fl["frames"]:
            if 11 in _ints(layer, "tls.handshake.type") and not _from_client(fl, layer):
                seen_cert = True
            if seen_cert and _from_client(fl, layer) and 23 in (
                    _ints(layer, "tls.record.content_type") + _ints(layer, "tls.record.opaque_type")):
                after = True
        rec["_client_app_after_cert"] = after
        if meta.get("notes"):
            rec["notes"] = meta["notes"]
        flows.append(rec)
    findings = findings_for(flows, metas)
    for rec in flows:
        for k in [k for k in rec if k.startswith("_")]:
            del rec[k]
    truth = dict(info)
    truth["packets"] = len(frames)
    truth["flows"] = flows
    truth["findings"] = findings
    notes = sorted({f"{f['rule_id']}: {RULE_NOTES[f['rule_id']]}" for f in findings if f["rule_id"] in RULE_NOTES})
    if any(fl["tls"] and fl["tls"]["version"] == "TLS 1.2" and not fl["tls"]["established"] for fl in flows):
        notes.append(RULE_NOTES["dot-tls-version-not-1-3"].replace("Version", "dot-tls-version-not-1-3 and cipher rules: version", 1))
    if any(fl["tls"] and fl["tls"]["downgrade_sentinel"] and "TLS 1.3" not in fl["tls"]["client_versions"]
           for fl in flows):
        notes.append("dot-tls-downgrade-sentinel: the server random carries the RFC 8446 downgrade sentinel "
                     "because the server supports TLS 1.3 and the client offered only TLS 1.2; not a downgrade "
                     "attack, so the rule does not fire.")
    if notes:
        truth["notes"] = notes
    return truth
