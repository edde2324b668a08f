"""Correlators: cross-flow facts and policy facts, written onto each flow dict before rules run.

Rules stay field matches; anything that needs more than one flow, or the policy, is computed
here, in Python, once per capture:

``flow["correlations"]``
    fallback_after_dot_failure   bool: a plaintext DNS query from this client within
                                 ``fallback_window_s`` after the client's failed DoT attempt
    fallback_dot_flow_id         id of that failed DoT flow (None otherwise)
    fallback_delay_s             seconds from the end of the failed attempt to this query
    full_handshakes_to_server    non-resumed full TLS handshakes by this client to this server
    resumed_handshakes_to_server resumed (abbreviated / PSK) handshakes by this client to this server
    queries_per_connection       DNS queries on this connection (parsed, or inferred from
                                 client application-data records for DoT)
    single_query_connections_to_server   connections by this client to this server carrying
                                 exactly one query
    padding_inferred             are the client's record sizes consistent with RFC 8467 block
                                 padding (128) given the suite's AEAD overhead? None: unknown
    padding_inferred_responses   the same for server records (468)
    multicast_nonlocal_qnames    names asked over mDNS/LLMNR/NBNS that are not link-local
    multicast_nonlocal_count

``flow["policy"]``
    local_resolver, approved_resolver (True when the approved list is empty),
    approved_resolver_listed, cipher_in_profile, version_in_profile, cert_expiring_soon,
    cert_weak_key, cert_chain_anchored, tls_handshake_slow, query_rtt_slow
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Any, Optional

from dotaudit.rules.policy import Policy

CROSS_FACTS = ("fallback_after_dot_failure", "fallback_dot_flow_id", "fallback_delay_s",
               "full_handshakes_to_server", "resumed_handshakes_to_server", "single_query_connections_to_server")
"""The correlations that depend on other flows (the rest depend on the flow and the policy)."""
DOT_CLASSES = frozenset({"dot", "dot-nonstandard-port", "tls-on-853-not-dns"})
PLAINTEXT_CLASSES = frozenset({"do53", "dns-nonstandard-port"})
MULTICAST_CLASSES = frozenset({"mdns", "llmnr", "nbns"})
QUERY_BLOCK = 128
RESPONSE_BLOCK = 468
MAX_MESSAGES_PER_RECORD = 4
"""A record may carry several pipelined DNS messages, each with its 2-byte length prefix."""
LINK_LOCAL_REVERSE = ("254.169.in-addr.arpa", "8.e.f.ip6.arpa", "9.e.f.ip6.arpa",
                      "a.e.f.ip6.arpa", "b.e.f.ip6.arpa")


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def _ip(side: Any) -> Optional[str]:
    return side.get("ip") if isinstance(side, dict) else None


def is_dot_attempt(flow: dict) -> bool:
    cls = flow.get("class")
    if cls in DOT_CLASSES:
        return True
    return flow.get("transport") == "tcp" and _get(flow, "server", "port") == 853 and cls in (None, "other")


def is_failed_dot(flow: dict) -> bool:
    """A DoT attempt that never got to an established TLS session."""
    if not is_dot_attempt(flow) or _get(flow, "tcp", "midstream"):
        return False
    tls = flow.get("tls")
    if isinstance(tls, dict) and (tls.get("established") or tls.get("handshake_complete")):
        return False
    return True


def is_resumed_handshake(flow: dict) -> bool:
    tls = flow.get("tls")
    if not isinstance(tls, dict) or not tls.get("resumed"):
        return False
    return bool(tls.get("established") or tls.get("handshake_complete"))


def is_full_handshake(flow: dict) -> bool:
    tls = flow.get("tls")
    if not isinstance(tls, dict) or tls.get("resumed"):
        return False
    return bool(tls.get("established") or tls.get("handshake_complete"))


MIN_DNS_PLAINTEXT = 2 + 12
"""The smallest record that can carry a DNS message: length prefix + header. Smaller
application-data records are TLS 1.3 alerts (close_notify: 2 bytes) or key updates."""


def dns_records(sizes: Any, version: Optional[str], cipher: Any) -> Optional[list[int]]:
    """Record sizes that can hold a DNS message (drops encrypted alerts); None if unknown."""
    if not isinstance(sizes, list):
        return None
    overhead = aead_overhead(version, cipher)
    sizes = [s for s in sizes if isinstance(s, int)]
    if overhead is None:
        return sizes
    return [s for s in sizes if s - overhead >= MIN_DNS_PLAINTEXT]


def queries_on(flow: dict) -> Optional[int]:
    dns = flow.get("dns")
    if isinstance(dns, dict) and isinstance(dns.get("queries"), int):
        return dns["queries"]
    tls = flow.get("tls") if isinstance(flow.get("tls"), dict) else {}
    recs = dns_records(_get(tls, "app_record_sizes", "c2s"), tls.get("version"), tls.get("cipher"))
    if recs is not None and (recs or not _get(tls, "app_data", "c2s", "records")):
        return len(recs)
    records = _get(flow, "tls", "app_data", "c2s", "records")
    if isinstance(records, int):
        return records
    sizes = _get(flow, "tls", "app_record_sizes", "c2s")
    if isinstance(sizes, list):
        return len(sizes)
    return None


# -- padding inference ------------------------------------------------------------------------


def aead_overhead(version: Optional[str], cipher: Any) -> Optional[int]:
    """Bytes a record's length adds to its plaintext (DNS bytes) for the negotiated suite.

    TLS 1.3: 1 inner content-type byte + tag (16; 8 for CCM_8). TLS 1.2: GCM and CCM carry an
    8-byte explicit nonce + tag; ChaCha20-Poly1305 only the 16-byte tag. CBC (MAC and block
    padding) and unknown suites: None."""
    name = cipher.get("name") if isinstance(cipher, dict) else None
    if not isinstance(name, str) or not isinstance(version, str) or not version:
        return None
    return _suite_overhead(version, name)


@lru_cache(maxsize=256)
def _suite_overhead(version: str, name: str) -> Optional[int]:
    name = name.upper()
    tag = 8 if "CCM_8" in name else 16
    if version == "TLS 1.3":
        return 1 + tag
    if version not in ("TLS 1.2", "TLS 1.1", "TLS 1.0"):
        return None
    if "CHACHA20" in name:
        return 16
    if "_GCM_" in name or "_CCM" in name:
        return 8 + tag
    return None


def _block_consistent(plain: int, block: int) -> bool:
    for n in range(1, MAX_MESSAGES_PER_RECORD + 1):
        rest = plain - 2 * n
        if rest < block * n:
            return False
        if rest % block == 0:
            return True
    return False


def padding_consistent(sizes: Any, version: Optional[str], cipher: Any, block: int) -> Optional[bool]:
    """Are all record sizes consistent with block padding? None when it cannot be told.

    A size is the record's length field (ciphertext, without the 5-byte header); sizes that
    include the header are accepted too (one reading must fit every record). In TLS 1.3 a
    leading record the size of the client's Finished (36 or 52 bytes of plaintext) is skipped."""
    if not isinstance(sizes, list) or not sizes:
        return None
    overhead = aead_overhead(version, cipher)
    if overhead is None:
        return None
    sizes = [s for s in sizes if isinstance(s, int) and s - overhead >= MIN_DNS_PLAINTEXT]
    if not sizes:
        return None
    for header in (0, 5):
        recs = sizes
        if version == "TLS 1.3" and len(recs) > 1 and recs[0] - header - overhead in (36, 52):
            recs = recs[1:]
        if all(_block_consistent(s - header - overhead, block) for s in set(recs)):
            return True
    return False


# -- multicast names --------------------------------------------------------------------------


def is_link_local_name(name: str) -> bool:
    n = name.lower().rstrip(".")
    if not n or "." not in n:
        return True  # single label (NetBIOS names, LLMNR host names)
    if n == "local" or n.endswith(".local"):
        return True
    return n.endswith(LINK_LOCAL_REVERSE)


# -- trust anchors by name -----------------------------------------------------------------------


@lru_cache(maxsize=16)
def anchor_subjects(anchors: tuple[str, ...], system_trust: bool) -> frozenset[str]:
    """RFC 4514 subjects of the policy's trust anchors (and of the system store)."""
    try:
        from dotaudit.tls.certs import _load_pem_file, _system_anchors
    except ImportError:  # pragma: no cover - the TLS analyzer ships with the rules
        return frozenset()
    certs = list(_system_anchors()) if system_trust else []
    for path in anchors:
        try:
            certs.extend(_load_pem_file(path))
        except (OSError, ValueError):
            continue
    return frozenset(c.subject.rfc4514_string() for c in certs)


def policy_anchor_subjects(policy: Policy) -> frozenset[str]:
    """``anchor_subjects`` of the policy's trust anchors and system_trust (loaded once: 5-10 ms
    with the system store)."""
    return anchor_subjects(tuple(getattr(policy, "trust_anchors", ()) or ()),
                           bool(getattr(policy, "system_trust", True)))


def chain_anchored(certs: Any, policy: Policy) -> Optional[bool]:
    """Does the chain as sent name a trust anchor (by subject or issuer)? None without a chain.

    Names only, no signature and no dates: it tells a chain that does not lead to any anchor
    (unknown CA, self-signed leaf) from one that does but fails validation for a reason that has
    its own rule (expired, not yet valid, SHA-1/MD5 signature)."""
    if not isinstance(certs, list) or not certs:
        return None
    subjects = policy_anchor_subjects(policy)
    for cert in certs:
        if isinstance(cert, dict) and (cert.get("subject") in subjects or cert.get("issuer") in subjects):
            return True
    return False


# -- the correlators --------------------------------------------------------------------------


MEMO_MAX = 65536
"""Entries of a Correlator's memo of per-resolver policy facts before it starts over."""


def _resolver_facts(server_ip: Optional[str], policy: Policy, memo: Optional[dict]) -> tuple:
    """(local, approved, listed) for one server address; ``memo`` remembers them by address."""
    facts = memo.get(server_ip) if memo is not None else None
    if facts is None:
        facts = (policy.is_local_resolver(server_ip), policy.is_approved_resolver(server_ip),
                 policy.is_listed_resolver(server_ip))
        if memo is not None:
            if len(memo) >= MEMO_MAX:
                memo.clear()
            memo[server_ip] = facts
    return facts


def _policy_facts(flow: dict, policy: Policy, memo: Optional[dict] = None) -> dict:
    server_ip = _ip(flow.get("server"))
    tls = flow.get("tls") if isinstance(flow.get("tls"), dict) else {}
    version = tls.get("version")
    local, approved, listed = _resolver_facts(server_ip, policy, memo)
    facts: dict[str, Any] = {
        "local_resolver": local,
        "approved_resolver": approved,
        "approved_resolver_listed": listed,
        "cipher_in_profile": policy.cipher_in_profile(tls.get("cipher"), version) if tls else None,
        "version_in_profile": policy.version_in_profile(version) if tls else None,
        "profile": policy.profile,
        "cert_expiring_soon": None,
        "cert_weak_key": None,
        "cert_weak_key_detail": None,
        "cert_chain_anchored": None,
        "tls_handshake_slow": None,
        "query_rtt_slow": None,
    }
    validation = tls.get("cert_validation")
    if isinstance(validation, dict):
        days = validation.get("expires_in_days")
        if isinstance(days, (int, float)) and not validation.get("expired"):
            facts["cert_expiring_soon"] = 0 <= days <= policy.cert_expiry_warning_days
    certs = tls.get("certificates")
    if isinstance(certs, list) and certs:
        weak = []
        for i, cert in enumerate(certs):
            if not isinstance(cert, dict):
                continue
            kind = str(cert.get("key_type") or "").upper()
            bits = cert.get("key_bits")
            if not isinstance(bits, int):
                continue
            if kind in ("RSA", "DSA", "DH") and bits < policy.min_rsa_bits:
                weak.append(f"certificate {i}: {kind} {bits} bits < {policy.min_rsa_bits}")
            elif kind in ("EC", "ECDSA", "ECDH") and bits < policy.min_ec_bits:
                weak.append(f"certificate {i}: {kind} {bits} bits < {policy.min_ec_bits}")
        facts["cert_weak_key"] = bool(weak)
        facts["cert_weak_key_detail"] = weak or None
        if isinstance(validation, dict) and validation.get("trusted") is False:
            facts["cert_chain_anchored"] = chain_anchored(certs, policy)
        elif isinstance(validation, dict) and validation.get("trusted") is True:
            facts["cert_chain_anchored"] = True
    timing = flow.get("timing") if isinstance(flow.get("timing"), dict) else {}
    hs = timing.get("tls_handshake_ms")
    if policy.max_tls_handshake_ms is not None and isinstance(hs, (int, float)):
        facts["tls_handshake_slow"] = hs > policy.max_tls_handshake_ms
    rtts = timing.get("query_rtt_ms")
    if policy.max_query_rtt_ms is not None and isinstance(rtts, list) and rtts:
        facts["query_rtt_slow"] = any(isinstance(r, (int, float)) and r > policy.max_query_rtt_ms for r in rtts)
    return facts


_BLANK_CORRELATIONS: dict[str, Any] = {
    "fallback_after_dot_failure": False,
    "fallback_dot_flow_id": None,
    "fallback_delay_s": None,
    "full_handshakes_to_server": None,
    "resumed_handshakes_to_server": None,
    "queries_per_connection": None,
    "single_query_connections_to_server": None,
    "padding_inferred": None,
    "padding_inferred_responses": None,
    "multicast_nonlocal_qnames": None,
    "multicast_nonlocal_count": None,
}
"""A flow's ``correlations`` before anything is known (annotate_local copies it)."""


class Correlator:
    """Two passes over the flows, so that they can be streamed from disk.

    ``observe`` every flow first (it keeps only small per-client and per-pair aggregates), then
    ``annotate`` every flow: it writes ``flow["correlations"]`` and ``flow["policy"]``.
    """

    def __init__(self, policy: Policy):
        self.policy = policy
        self._resolvers: dict = {}   # server address -> _resolver_facts
        self.by_client_dot_failures: dict[str, list[dict]] = defaultdict(list)
        self.full_handshakes: dict[tuple, int] = defaultdict(int)
        self.resumed_handshakes: dict[tuple, int] = defaultdict(int)
        self.single_query: dict[tuple, int] = defaultdict(int)
        self._sorted = False
        self._anchors_loaded = False

    def observe(self, flow: dict) -> None:
        if not is_dot_attempt(flow):   # what is counted here is about DoT attempts only
            return
        client, server = _ip(flow.get("client")), _ip(flow.get("server"))
        pair = (client, server, _get(flow, "server", "port"))
        if is_failed_dot(flow):
            self.by_client_dot_failures[client].append(
                {"id": flow.get("id"), "first_ts": flow.get("first_ts"), "last_ts": flow.get("last_ts")})
        if is_full_handshake(flow):
            self.full_handshakes[pair] += 1
        if is_resumed_handshake(flow):
            self.resumed_handshakes[pair] += 1
        if queries_on(flow) == 1:
            self.single_query[pair] += 1

    def annotate(self, flow: dict) -> dict:
        """Write ``flow["correlations"]`` and ``flow["policy"]`` (after every flow was observed)."""
        self.annotate_local(flow)
        self.annotate_cross(flow)
        return flow

    def annotate_local(self, flow: dict) -> dict:
        """The facts that depend on this flow and the policy only; the cross-flow ones
        (CROSS_FACTS) get the values they have when no other flow matters."""
        tls = flow.get("tls") if isinstance(flow.get("tls"), dict) else None
        corr: dict[str, Any] = _BLANK_CORRELATIONS.copy()
        cls = flow.get("class")
        queries = _get(flow, "dns", "queries")
        if is_dot_attempt(flow):
            corr["queries_per_connection"] = queries_on(flow)
        elif isinstance(queries, int):
            corr["queries_per_connection"] = queries
        if tls is not None:
            dns = flow.get("dns")
            if isinstance(dns, dict) and dns.get("padding") is not None:
                corr["padding_inferred"] = dns["padding"]
            else:
                corr["padding_inferred"] = padding_consistent(
                    _get(tls, "app_record_sizes", "c2s"), tls.get("version"), tls.get("cipher"), QUERY_BLOCK)
            corr["padding_inferred_responses"] = padding_consistent(
                _get(tls, "app_record_sizes", "s2c"), tls.get("version"), tls.get("cipher"), RESPONSE_BLOCK)
        if cls in MULTICAST_CLASSES:
            names = _get(flow, "dns", "qnames") or []
            nonlocal_names = [n for n in names if isinstance(n, str) and not is_link_local_name(n)]
            corr["multicast_nonlocal_qnames"] = nonlocal_names
            corr["multicast_nonlocal_count"] = len(nonlocal_names)
        flow["correlations"] = corr
        flow["policy"] = _policy_facts(flow, self.policy, self._resolvers)
        return flow

    def prepared(self) -> bool:
        """Are the trust anchors' subjects loaded (``prepare``)?"""
        return self._anchors_loaded

    def prepare(self) -> None:
        """Load the trust anchors' subjects now, which the first flow with an untrusted chain
        would otherwise load (a judge process does it while it waits for the first records)."""
        policy_anchor_subjects(self.policy)
        self._anchors_loaded = True

    def fallback_candidate(self, flow: dict) -> bool:
        """Can another flow make this one a fallback (plaintext queries to a non-local resolver)?"""
        queries = _get(flow, "dns", "queries")
        return (flow.get("class") in PLAINTEXT_CLASSES and isinstance(queries, int) and queries > 0
                and not _resolver_facts(_ip(flow.get("server")), self.policy, self._resolvers)[0])

    def failed_clients(self):
        """Clients with a failed DoT attempt (only their fallback candidates can change)."""
        return self.by_client_dot_failures.keys()

    def annotate_cross(self, flow: dict) -> dict:
        """Set the CROSS_FACTS of an annotated flow from every flow observed."""
        if not self._sorted:
            for failures in self.by_client_dot_failures.values():
                failures.sort(key=lambda f: f.get("first_ts") or 0.0)
            self._sorted = True
        corr = flow["correlations"]
        client, server = _ip(flow.get("client")), _ip(flow.get("server"))
        if self.fallback_candidate(flow):
            start = flow.get("first_ts")
            best = None
            window = self.policy.fallback_window_s
            for failed in self.by_client_dot_failures.get(client, ()):
                f_first, f_last = failed.get("first_ts"), failed.get("last_ts")
                if start is None or f_first is None:
                    continue
                f_last = f_last if f_last is not None else f_first
                if f_first <= start and start - f_last <= window:
                    best = failed  # the latest failure before the query wins
            if best is not None:
                corr["fallback_after_dot_failure"] = True
                corr["fallback_dot_flow_id"] = best.get("id")
                delay = start - (best.get("last_ts") if best.get("last_ts") is not None else best["first_ts"])
                corr["fallback_delay_s"] = round(max(delay, 0.0), 6)
        if is_dot_attempt(flow):
            self.annotate_pair(flow)
        return flow

    def pair_counts(self, flow: dict) -> tuple[int, int, int]:
        """Full handshakes, resumed handshakes and single-query connections of the flow's
        client -> server:port pair, over the flows observed so far."""
        pair = (_ip(flow.get("client")), _ip(flow.get("server")), _get(flow, "server", "port"))
        return (self.full_handshakes.get(pair, 0), self.resumed_handshakes.get(pair, 0),
                self.single_query.get(pair, 0))

    def annotate_pair(self, flow: dict, counts: Optional[tuple[int, int, int]] = None) -> None:
        """Set the per-pair facts of a DoT attempt (``counts``, or the pair's counts so far)."""
        full, resumed, single = self.pair_counts(flow) if counts is None else counts
        corr = flow.setdefault("correlations", {})
        corr["full_handshakes_to_server"] = full
        corr["resumed_handshakes_to_server"] = resumed
        corr["single_query_connections_to_server"] = single


def correlate(flows: list[dict], policy: Policy) -> None:
    """Add ``flow["correlations"]`` and ``flow["policy"]`` to every flow, in place."""
    c = Correlator(policy)
    for flow in flows:
        c.observe(flow)
    for flow in flows:
        c.annotate(flow)

