"""Certificate facts and chain validation, with ``cryptography`` doing all the X.509 work.

Verification uses ``cryptography.x509.verification`` (web-PKI policy); nothing is checked by
hand. Results are cached: servers present the same chain on every connection.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import ssl
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.verification import (
    Criticality,
    DNSName,
    ExtensionPolicy,
    IPAddress,
    PolicyBuilder,
    Store,
)

_FALLBACK_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class TrustConfig:
    """Where trust anchors come from.

    anchors: PEM files (bundles allowed) whose certificates are trusted in addition to, or
    instead of, the system bundle. system_trust: also trust the system CA bundle.
    """

    anchors: tuple[str, ...] = ()
    system_trust: bool = True


def _iso(t: dt.datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _load_pem_file(path: str) -> list[x509.Certificate]:
    data = Path(path).read_bytes()
    try:
        with warnings.catch_warnings():  # old roots with non-positive serials
            warnings.simplefilter("ignore")
            return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        out = []
        marker = b"-----END CERTIFICATE-----"
        for chunk in data.split(marker):
            if b"-----BEGIN CERTIFICATE-----" in chunk:
                try:
                    out.append(x509.load_pem_x509_certificate(chunk + marker))
                except ValueError:
                    continue
        return out


@lru_cache(maxsize=1)
def _system_anchors() -> tuple[x509.Certificate, ...]:
    paths = ssl.get_default_verify_paths()
    for cand in (paths.cafile, paths.openssl_cafile, _FALLBACK_BUNDLE):
        if cand and Path(cand).is_file():
            try:
                return tuple(_load_pem_file(cand))
            except OSError:
                continue
    return ()


@lru_cache(maxsize=16)
def _store(trust: TrustConfig) -> tuple[Store | None, str | None]:
    certs: list[x509.Certificate] = []
    err = None
    if trust.system_trust:
        certs.extend(_system_anchors())
    for path in trust.anchors:
        try:
            certs.extend(_load_pem_file(path))
        except OSError as exc:
            err = f"cannot read trust anchor file {path}: {exc.strerror}"
    if not certs:
        return None, err or "no trust anchors"
    return Store(certs), err


@lru_cache(maxsize=16)
def _anchor_windows(trust: TrustConfig) -> dict[bytes, list[tuple[float, float]]]:
    """Validity windows of the trust anchors, by subject (DER)."""
    certs: list[x509.Certificate] = []
    if trust.system_trust:
        certs.extend(_system_anchors())
    for path in trust.anchors:
        try:
            certs.extend(_load_pem_file(path))
        except OSError:
            continue
    out: dict[bytes, list[tuple[float, float]]] = {}
    for c in certs:
        out.setdefault(c.subject.public_bytes(), []).append(
            (c.not_valid_before_utc.timestamp(), c.not_valid_after_utc.timestamp()))
    return out


@lru_cache(maxsize=4096)
def load_certificate(der: bytes) -> x509.Certificate | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return x509.load_der_x509_certificate(der)
    except Exception:
        return None


def _key_facts(cert: x509.Certificate) -> tuple[str, int | None, str | None]:
    try:
        key = cert.public_key()
    except Exception:
        return "unknown", None, None
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.key_size, key.curve.name
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, None
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, None
    return type(key).__name__, None, None


@lru_cache(maxsize=4096)
def _cert_facts_cached(der: bytes) -> tuple:
    sha = hashlib.sha256(der).hexdigest()
    cert = load_certificate(der)
    if cert is None:
        return (("error", "certificate does not parse"), ("sha256", sha))
    facts: dict = {}
    try:
        _fill_facts(cert, facts, sha)
    except Exception as exc:  # cryptography parses lazily: a damaged field fails on first use
        facts["error"] = f"certificate field does not parse ({type(exc).__name__})"
        facts.setdefault("sha256", sha)
        facts.setdefault("sans", [])
    return tuple(facts.items())


def _fill_facts(cert: x509.Certificate, facts: dict, sha: str) -> None:
    try:
        facts["subject"] = cert.subject.rfc4514_string()
    except Exception:
        facts["subject"] = None
    try:
        facts["issuer"] = cert.issuer.rfc4514_string()
    except Exception:
        facts["issuer"] = None
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans.extend(ext.get_values_for_type(x509.DNSName))
        sans.extend(str(ip) for ip in ext.get_values_for_type(x509.IPAddress))
    except Exception:
        pass
    facts["sans"] = sans
    facts["serial"] = format(cert.serial_number, "x")
    facts["not_before"] = _iso(cert.not_valid_before_utc)
    facts["not_after"] = _iso(cert.not_valid_after_utc)
    kt, bits, curve = _key_facts(cert)
    facts["key_type"] = kt
    facts["key_bits"] = bits
    facts["curve"] = curve
    oid = cert.signature_algorithm_oid
    facts["signature_algorithm"] = getattr(oid, "_name", None) or oid.dotted_string
    try:
        h = cert.signature_hash_algorithm
        facts["signature_hash"] = h.name if h is not None else None
    except Exception:
        facts["signature_hash"] = None
    try:
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        facts["spki_sha256"] = hashlib.sha256(spki).hexdigest()
    except Exception:
        facts["spki_sha256"] = None
    facts["sha256"] = sha
    self_issued = cert.subject == cert.issuer
    self_signed = False
    if self_issued:
        try:
            cert.verify_directly_issued_by(cert)
            self_signed = True
        except Exception:
            self_signed = False
    facts["self_issued"] = self_issued
    facts["self_signed"] = self_signed
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        facts["is_ca"] = bool(bc.ca)
    except Exception:
        facts["is_ca"] = None


def certificate_facts(der: bytes) -> dict:
    """JSON-ready facts about one DER certificate (a fresh dict; ``error`` if unparsable)."""
    d = dict(_cert_facts_cached(bytes(der)))
    if "sans" in d:
        d["sans"] = list(d["sans"])
    return d


def _short(exc: Exception) -> str:
    msg = str(exc)
    cut = msg.find(" (encountered processing")
    if cut > 0:
        msg = msg[:cut]
    if msg.startswith("validation failed: "):
        msg = msg[len("validation failed: "):]
    m = re.search(r"Forbidden signature algorithm.*params: (\w+)", msg)
    if m:
        msg = f"forbidden signature algorithm {m.group(1)}"
    if "all candidates exhausted with no interior errors" in msg:
        msg = "no chain to a trust anchor"
    return msg


def _subject_for(name: str):
    try:
        import ipaddress

        return IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return DNSName(name)


@lru_cache(maxsize=1)
def _name_only_policies() -> tuple[ExtensionPolicy, ExtensionPolicy]:
    """Extension policies that check nothing but what the verifier insists on, so that a
    verification against the leaf itself answers only the name question."""
    ca = ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, Criticality.AGNOSTIC, None)
    ee = ExtensionPolicy.permit_all().require_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    return ca, ee


def _verify(store: Store, when: dt.datetime, leaf, inter, name: str | None,
            name_only: bool = False):
    """-> (ok, chain_length, error). name None => client-verifier (no name) policy."""
    try:
        builder = PolicyBuilder().store(store).time(when)
        if name_only:
            ca_pol, ee_pol = _name_only_policies()
            builder = builder.extension_policies(ca_policy=ca_pol, ee_policy=ee_pol)
        if name is None:
            res = builder.build_client_verifier().verify(leaf, inter)
            return True, len(res.chain), None
        chain = builder.build_server_verifier(_subject_for(name)).verify(leaf, inter)
        return True, len(chain), None
    except Exception as exc:  # VerificationError, or ValueError on odd names
        return False, 0, _short(exc)


@lru_cache(maxsize=2048)
def _validate_cached(ders: tuple[bytes, ...], name: str | None, when_ts: float,
                     trust: TrustConfig) -> tuple:
    certs = [load_certificate(d) for d in ders]
    leaf = certs[0]
    if leaf is None:
        return (False, "leaf certificate does not parse", None, 0)
    inter = [c for c in certs[1:] if c is not None]
    when = dt.datetime.fromtimestamp(when_ts, dt.timezone.utc)
    store, store_err = _store(trust)
    # the name used only to exercise the chain: the SNI, else the leaf's first SAN
    chain_name = name
    sans = dict(_cert_facts_cached(ders[0])).get("sans") or []
    if chain_name is None and sans:
        chain_name = "x" + sans[0][1:] if sans[0].startswith("*.") else sans[0]
    name_match = None
    if store is None:
        trusted, chain_len, err = False, 0, store_err
    else:
        trusted, chain_len, err = _verify(store, when, leaf, inter, chain_name)
        if trusted and name is not None:
            name_match = True
        elif not trusted and name is not None and err and "subjectAltName" in err:
            name_match = False
            alt = sans[0] if sans else None
            if alt and alt.startswith("*."):
                alt = "x" + alt[1:]
            if alt:
                trusted, chain_len, err2 = _verify(store, when, leaf, inter, alt)
                if not trusted:
                    err = err2
            else:
                trusted = False
    if name is not None and name_match is None:
        # decide the name question alone: the leaf as its own anchor, inside its validity
        nb = leaf.not_valid_before_utc
        na = leaf.not_valid_after_utc
        mid = nb + (na - nb) / 2 if na > nb else nb
        ok, _, e2 = _verify(Store([leaf]), mid, leaf, [], name, name_only=True)
        if ok:
            name_match = True
        elif e2 and "subjectAltName" in e2:  # no matching SAN, or no SAN at all
            name_match = False
    return (trusted, err, name_match, chain_len)


def validate_chain(ders: list[bytes], sni: str | None, reference_time: float,
                   trust: TrustConfig | None = None) -> dict:
    """The ``cert_validation`` object for a certificate chain as sent (leaf first)."""
    trust = trust or TrustConfig()
    ders_t = tuple(bytes(d) for d in ders)
    leaf = load_certificate(ders_t[0]) if ders_t else None
    out = {
        "trusted": False, "valid": False, "error": None, "name_checked": sni, "name_match": None,
        "expired": False, "not_yet_valid": False, "expires_in_days": None,
        "reference_time": reference_time, "chain_length": 0,
    }
    if leaf is None:
        out["error"] = "leaf certificate does not parse" if ders_t else "no certificate"
        return out
    na = leaf.not_valid_after_utc.timestamp()
    nb = leaf.not_valid_before_utc.timestamp()
    out["expired"] = reference_time > na
    out["not_yet_valid"] = reference_time < nb
    out["expires_in_days"] = round((na - reference_time) / 86400.0, 3)
    # The verifier uses the time only for validity windows: inside the intersection of the
    # chain's windows every instant gives the same answer, so cache on one canonical instant.
    lo, hi = nb, na
    for d in ders_t[1:]:
        c = load_certificate(d)
        if c is not None:
            lo = max(lo, c.not_valid_before_utc.timestamp())
            hi = min(hi, c.not_valid_after_utc.timestamp())
    # The anchor the verifier would end at has a validity window too: intersect the windows of
    # every trusted certificate whose subject is the issuer of the last certificate sent.
    top = None
    for d in reversed(ders_t):
        top = load_certificate(d)
        if top is not None:
            break
    if top is not None:
        for a_nb, a_na in _anchor_windows(trust).get(top.issuer.public_bytes(), ()):
            lo, hi = max(lo, a_nb), min(hi, a_na)
    when = float(int(lo) + 1) if lo < reference_time < hi and lo + 1 < hi else float(reference_time)
    trusted, err, name_match, chain_len = _validate_cached(ders_t, sni, when, trust)
    if err == "no chain to a trust anchor" and top is not None:
        # say which anchor is missing: an old capture may chain to a root since removed
        err = f"no chain to a trust anchor: {top.issuer.rfc4514_string()} is not in the trust store"
    out.update(trusted=trusted, error=err, name_match=name_match, chain_length=chain_len)
    out["valid"] = bool(trusted and name_match is not False)
    return out
