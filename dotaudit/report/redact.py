"""``--redact``: replace query names, SNI and certificate names by keyed hashes.

Reports that leave the team must not say which names a client resolved.  Every name is replaced
by ``redacted-`` and the first 12 hex digits of HMAC-SHA256(key, name): the same name gives the
same token within a report (and across reports made with the same ``--redact-key``), so a
reviewer can still see that two flows asked for the same name.  Without a key, a random key is
drawn per run and never written anywhere, so tokens cannot be reversed by hashing guesses.

What is redacted, in every format (they all render from the redacted report):

- ``flows[].dns.qnames``, ``flows[].tls.sni``, ``flows[].quic.sni``;
- certificate subjects, issuers and SANs (``flows[].tls.certificates[]``) and the name a
  certificate was checked against (``tls.cert_validation.name_checked``);
- the same names wherever else they appear: as a whole string value anywhere in the report, and
  inside the free text of finding messages, evidence and validation errors.

IP addresses in SANs are left alone (the flow's addresses are in the report anyway).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import re
import secrets

TOKEN_PREFIX = "redacted-"
_NAME_CHARS = r"A-Za-z0-9_.\-"
# After a name: not a name character, except a sentence's full stop.
_AFTER = r"(?![A-Za-z0-9_\-]|\.[A-Za-z0-9_\-])"


class Redactor:
    """Maps names to stable keyed tokens."""

    def __init__(self, key: str | bytes | None = None):
        if key is None:
            key = secrets.token_bytes(32)
        elif isinstance(key, str):
            key = key.encode("utf-8")
        self._key = key
        self.names: dict[str, str] = {}

    def token(self, name: str) -> str:
        if name.startswith(TOKEN_PREFIX):
            return name
        norm = name.rstrip(".").lower()
        digest = hmac.new(self._key, norm.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
        tok = TOKEN_PREFIX + digest[:12]
        self.names[name] = tok
        return tok


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# "CN=dns.lab.test,O=dotaudit lab": redact the values of name-like attributes.
_DN_ATTR = re.compile(r"((?:^|,)\s*(?:CN|commonName|DC)=)((?:\\,|[^,])*)")


def _collect(report: dict, red: Redactor) -> None:
    for flow in report.get("flows") or []:
        dns = flow.get("dns") or {}
        for q in dns.get("qnames") or []:
            if isinstance(q, str) and q:
                red.token(q)
        for sect in ("tls", "quic"):
            obj = flow.get(sect) or {}
            sni = obj.get("sni")
            if isinstance(sni, str) and sni:
                red.token(sni)
        tls = flow.get("tls") or {}
        certs = tls.get("certificates")
        if isinstance(certs, list):
            for cert in certs:
                if not isinstance(cert, dict):
                    continue
                for san in cert.get("sans") or []:
                    if isinstance(san, str) and san and not _is_ip(san):
                        red.token(san)
                for field in ("subject", "issuer"):
                    dn = cert.get(field)
                    if isinstance(dn, str):
                        for m in _DN_ATTR.finditer(dn):
                            if m.group(2):
                                red.token(m.group(2))
        val = tls.get("cert_validation")
        if isinstance(val, dict) and isinstance(val.get("name_checked"), str) and val["name_checked"]:
            red.token(val["name_checked"])
    for f in report.get("findings") or []:
        ev = f.get("evidence") or {}
        for k, v in ev.items():
            if k.endswith(("qnames", ".sni", "name_checked", ".sans")):
                for item in (v if isinstance(v, list) else [v]):
                    if isinstance(item, str) and item and not _is_ip(item):
                        red.token(item)


def redact(report: dict, key: str | bytes | None = None) -> dict:
    """Return a redacted deep copy of ``report`` (the input is left untouched)."""
    for part in ("flows", "findings"):   # stores (spill.RecordStore) hold spool files
        if hasattr(report.get(part), "to_list"):
            report = dict(report, **{part: report[part].to_list()})
    out = copy.deepcopy(report)
    red = Redactor(key)
    _collect(out, red)
    if not red.names:
        _mark(out)
        return out
    # Longest first, so "www.lab.test" is replaced before "lab.test".
    names = sorted(red.names, key=len, reverse=True)
    pattern = re.compile(
        "(?<![" + _NAME_CHARS + "])(" + "|".join(re.escape(n) for n in names) + ")" + _AFTER,
        re.IGNORECASE)
    lookup = {n.lower(): t for n, t in red.names.items()}

    def sub_text(text: str) -> str:
        exact = lookup.get(text.lower())
        if exact is not None:
            return exact
        return pattern.sub(lambda m: lookup.get(m.group(1).lower(), m.group(1)), text)

    def dn_text(text: str) -> str:
        return _DN_ATTR.sub(lambda m: m.group(1) + (red.token(m.group(2)) if m.group(2) else ""), text)

    def free(obj):
        """Free text: replace every known name inside strings (and dict keys)."""
        if isinstance(obj, dict):
            return {(sub_text(k) if isinstance(k, str) else k): free(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [free(v) for v in obj]
        if isinstance(obj, str):
            return sub_text(obj)
        return obj

    def names(value):
        if isinstance(value, list):
            return [names(v) for v in value]
        if isinstance(value, str) and value and not _is_ip(value):
            return red.token(value)
        return value

    def flow_walk(obj):
        if isinstance(obj, dict):
            res = {}
            for k, v in obj.items():
                if k in ("subject", "issuer") and isinstance(v, str):
                    res[k] = dn_text(v)
                elif k in ("sni", "sans", "name_checked") or k.endswith("qnames"):
                    res[k] = names(v)
                elif k in ("cert_validation", "error", "detail", "message"):
                    res[k] = free(v)
                else:
                    res[k] = flow_walk(v)
            return res
        if isinstance(obj, list):
            return [flow_walk(v) for v in obj]
        return obj

    out["flows"] = [flow_walk(f) for f in out.get("flows") or []]
    findings = []
    for f in out.get("findings") or []:
        f = dict(f)
        for k in ("message", "evidence", "title"):
            if k in f:
                f[k] = free(f[k])
        findings.append(f)
    out["findings"] = findings
    # Statistics may be keyed by resolver name: only dotted names, as substrings.
    if out.get("stats"):
        dotted = [n for n in red.names if "." in n.strip(".") and len(n) >= 4]
        if dotted:
            pat2 = re.compile("(?<![" + _NAME_CHARS + "])(" + "|".join(
                re.escape(n) for n in sorted(dotted, key=len, reverse=True)) + ")" + _AFTER,
                re.IGNORECASE)

            def st(obj):
                if isinstance(obj, dict):
                    return {(pat2.sub(lambda m: lookup[m.group(1).lower()], k) if isinstance(k, str) else k): st(v)
                            for k, v in obj.items()}
                if isinstance(obj, list):
                    return [st(v) for v in obj]
                if isinstance(obj, str):
                    return pat2.sub(lambda m: lookup[m.group(1).lower()], obj)
                return obj
            out["stats"] = st(out["stats"])
    _mark(out)
    return out


def _mark(report: dict) -> None:
    """Say so in the summary (the top level of the schema is closed)."""
    summary = report.get("summary")
    if isinstance(summary, dict):
        summary["redacted"] = True


def is_redacted(report: dict) -> bool:
    return bool((report.get("summary") or {}).get("redacted"))
