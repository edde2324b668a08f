"""Compiler semantics: modifiers, list fields, null, conditions (factory flows and tiny dicts)."""

import textwrap

import pytest

from dotaudit.rules.compiler import make_getter
from dotaudit.rules.engine import _generate
from dotaudit.rules.loader import RuleError, parse_rule
from tests.factories import make_do53_flow, make_flow, make_tls12_flow

HEAD = """\
title: t
name: t
id: 11111111-2222-4333-8444-555555555555
status: experimental
level: low
logsource: {product: dotaudit, category: flow}
remediation: r
observability: observed
evidence: {fields: [class], expected: e}
message: m
"""


def rule(detection: str):
    return parse_rule(HEAD + "detection:\n" + textwrap.indent(textwrap.dedent(detection), "  "))


def m(detection: str, flow: dict) -> bool:
    """The rule's closure on ``flow``, checked against the engine's generated matchers."""
    r = rule(detection)
    full = r.match(flow)
    assert _generate((), [r])(flow) == ([r] if full else [])
    if r.classes is not None and flow.get("class") in r.classes:
        assert r.match_indexed(flow) == full
        assert _generate([r], ())(flow) == ([r] if full else [])
    return full


@pytest.mark.parametrize("path,expected", [
    ("class", "dot"),
    ("tls.version", "TLS 1.3"),
    ("tls.cipher.name", "TLS_AES_128_GCM_SHA256"),
    ("tls.app_data.c2s.records", 4),
    ("tls.alerts.name", None),
    ("dns.qnames", None),
    ("nope.deeper.still", None),
    ("tls.version.x", None),
])
def test_getter(path, expected):
    assert make_getter(path)(make_flow()) == expected


def test_getter_lists_and_index():
    f = make_tls12_flow()
    f["tls"]["alerts"] = [{"name": "a"}, {"name": "b"}, {"other": 1}]
    assert make_getter("tls.alerts.name")(f) == ["a", "b"]
    assert make_getter("tls.certificates.0.self_signed")(f) is False
    assert make_getter("tls.certificates.1.self_signed")(f) is True
    assert make_getter("tls.certificates.5.self_signed")(f) is None
    assert make_getter("tls.certificates.key_bits")(f) == [256, 256]
    assert make_getter("tls.certificates.0.key_bits")(make_flow()) is None  # "not_observable"


def test_plain_equality_is_case_insensitive_and_typed():
    f = make_flow()
    assert m("s: {class: DOT}\ncondition: s", f)
    assert m("s: {tls.version: tls 1.3}\ncondition: s", f)
    assert m("s: {server.port: 853}\ncondition: s", f)
    assert not m("s: {server.port: 53}\ncondition: s", f)
    assert m("s: {tls.established: true}\ncondition: s", f)
    assert not m("s: {tls.established: false}\ncondition: s", f)
    # true never equals 1, 1 never equals true
    assert not m("s: {tls.app_data.c2s.records: true}\ncondition: s", make_flow(tls__app_data__c2s__records=1))
    assert not m("s: {tls.established: 1}\ncondition: s", f)


def test_value_list_is_or_and_list_field_is_any():
    f = make_flow(dns={"qnames": ["a.example", "b.local"]})
    assert m("s: {class: [do53, dot]}\ncondition: s", f)
    assert not m("s: {class: [do53, doh]}\ncondition: s", f)
    assert m("s: {dns.qnames: b.local}\ncondition: s", f)
    assert m("s: {dns.qnames|endswith: .local}\ncondition: s", f)
    assert not m("s: {dns.qnames|endswith: .corp}\ncondition: s", f)
    assert m("s: {dns.qnames|contains|all: [a.ex, b.lo]}\ncondition: s", f)
    assert not m("s: {dns.qnames|contains|all: [a.ex, c.lo]}\ncondition: s", f)


def test_string_modifiers_and_wildcards():
    f = make_tls12_flow("rsa-cbc")
    assert m("s: {tls.cipher.name|contains: _cbc_}\ncondition: s", f)
    assert m("s: {tls.cipher.name|startswith: TLS_RSA_}\ncondition: s", f)
    assert m("s: {tls.cipher.name|endswith: _SHA}\ncondition: s", f)
    assert m("s: {tls.cipher.name: 'TLS_*_CBC_SH?'}\ncondition: s", f)
    assert not m("s: {tls.cipher.name: 'TLS_*_GCM_*'}\ncondition: s", f)
    assert m("s: {tls.cipher.name|contains: [RC4, CBC]}\ncondition: s", f)
    assert not m("s: {tls.cipher.name|cased: tls_rsa_with_aes_128_cbc_sha}\ncondition: s", f)
    assert m("s: {tls.cipher.name|cased: TLS_RSA_WITH_AES_128_CBC_SHA}\ncondition: s", f)


def test_regex_cidr_and_compare():
    f = make_flow()
    assert m("s: {tls.sni|re: '^dns\\.lab\\.'}\ncondition: s", f)
    assert not m("s: {tls.sni|re: '^lab'}\ncondition: s", f)
    assert m("s: {server.ip|cidr: 198.51.100.0/24}\ncondition: s", f)
    assert not m("s: {server.ip|cidr: 10.0.0.0/8}\ncondition: s", f)
    assert not m("s: {server.ip|cidr: '2001:db8::/32'}\ncondition: s", f)
    assert m("s: {server.ip|cidr: '2001:db8::/32'}\ncondition: s", make_flow(server__ip="2001:db8::53"))
    assert m("s: {tls.app_data.c2s.records|gt: 3}\ncondition: s", f)
    assert not m("s: {tls.app_data.c2s.records|gt: 4}\ncondition: s", f)
    assert m("s: {tls.app_data.c2s.records|gte: 4}\ncondition: s", f)
    assert m("s: {tls.app_data.c2s.records|lt: 5}\ncondition: s", f)
    assert not m("s: {tls.app_data.c2s.records|lte: 3}\ncondition: s", f)
    assert not m("s: {tls.version|gt: 1}\ncondition: s", f)  # strings never compare
    assert m("s: {tls.app_record_sizes.c2s|gt: 100}\ncondition: s", f)  # any element


def test_null_and_exists():
    f = make_flow(tls__sni=None)
    assert m("s: {tls.sni: null}\ncondition: s", f)
    assert m("s: {tls.missing_field: null}\ncondition: s", f)
    assert not m("s: {tls.version: null}\ncondition: s", f)
    assert m("s: {tls.version|exists: true}\ncondition: s", f)
    assert not m("s: {tls.sni|exists: true}\ncondition: s", f)
    assert m("s: {tls.sni|exists: false}\ncondition: s", f)
    assert m("s: {tls.cipher.name: null}\ncondition: s", make_do53_flow())  # tls is null


def test_conditions():
    f = make_flow()
    assert m("a: {class: dot}\nb: {transport: udp}\ncondition: a and not b", f)
    assert not m("a: {class: dot}\nb: {transport: tcp}\ncondition: a and not b", f)
    assert m("a: {class: doh}\nb: {transport: tcp}\ncondition: a or b", f)
    assert m("sel_a: {class: doh}\nsel_b: {transport: tcp}\ncondition: 1 of sel_*", f)
    assert not m("sel_a: {class: doh}\nsel_b: {transport: tcp}\ncondition: all of sel_*", f)
    assert m("sel_a: {class: dot}\nsel_b: {transport: tcp}\ncondition: all of them", f)
    assert m("a: {class: dot}\nb: {transport: udp}\nc: {tls.version: TLS 1.3}\ncondition: a and (b or c)", f)
    # a selection map is AND, a list of maps is OR
    assert not m("s: {class: dot, transport: udp}\ncondition: s", f)
    assert m("s:\n  - class: do53\n  - transport: tcp\ncondition: s", f)


def test_class_prefilter_and_indexed_predicate():
    r = rule("a: {class: [dot, dot-nonstandard-port], tls.established: true}\ncondition: a")
    assert r.classes >= {"dot", "dot-nonstandard-port"}
    f = make_flow(tls__established=False)
    assert not r.match(f) and not r.match_indexed(f)
    r2 = rule("a: {class: dot}\nb: {class: doh}\ncondition: a or b")
    assert r2.classes >= {"dot", "doh"}
    r3 = rule("a: {class: dot}\nb: {transport: udp}\ncondition: a or b")
    assert r3.classes is None
    r4 = rule("a: {class: dot}\ncondition: not a")
    assert r4.classes is None and r4.match(make_do53_flow()) and not r4.match(make_flow())


def test_unsupported_constructs_are_errors():
    with pytest.raises(RuleError, match="keyword"):
        rule("kw: [foo, bar]\ncondition: kw")
    with pytest.raises(RuleError):
        rule("s: {class: dot}\ncondition: s and missing")


def test_bad_rules_name_the_problem():
    good = HEAD + "detection:\n  s: {class: dot}\n  condition: s\n"
    with pytest.raises(RuleError, match="unknown attribute 'remediaton'"):
        parse_rule(good + "remediaton: x\n")
    with pytest.raises(RuleError, match="not a UUID|Sigma"):
        parse_rule(good.replace("11111111-2222-4333-8444-555555555555", "nope"))
    with pytest.raises(RuleError, match="logsource"):
        parse_rule(good.replace("category: flow", "category: process_creation"))
    with pytest.raises(RuleError, match="kebab"):
        parse_rule(good.replace("name: t", "name: Bad_Name"))
    with pytest.raises(RuleError, match="observability"):
        parse_rule(good.replace("observability: observed", "observability: maybe"))


def test_contains_answers_stay_right_when_remembered(monkeypatch):
    """Several ``contains`` needles on a list field (offered suites) keep each string's answer;
    repeats, values of other types and a memo that starts over give the same answers."""
    from dotaudit.rules import compiler

    monkeypatch.setattr(compiler, "MEMO_SIZE", 3)
    det = "s: {tls.ciphers_offered|contains: [_RC4_, _3DES_]}\ncondition: s"
    r = rule(det)
    suites = ["TLS_AES_128_GCM_SHA256", "TLS_RSA_WITH_RC4_128_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
              "TLS_CHACHA20_POLY1305_SHA256", "tls_rsa_with_rc4_128_md5"]
    for _ in range(3):
        for s in suites:
            want = "rc4" in s.lower() or "3des" in s.lower()
            f = make_flow(tls__ciphers_offered=["TLS_AES_256_GCM_SHA384", s])
            assert r.match(f) is want and m(det, f) is want
    assert not r.match(make_flow(tls__ciphers_offered=[4865, None, {"name": "RC4"}]))
