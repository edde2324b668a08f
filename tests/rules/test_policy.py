"""Policy file parsing: defaults, every key, one-line errors naming the key."""

import pytest

from dotaudit.rules.policy import Policy, PolicyError, load_policy


def write(tmp_path, text, name="policy.yml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults():
    p = load_policy(None)
    assert p.is_local_resolver("127.0.0.53") and p.is_local_resolver("::1")
    assert not p.is_local_resolver("192.0.2.1")
    assert p.is_approved_resolver("9.9.9.9") and not p.is_listed_resolver("9.9.9.9")
    assert (p.profile, p.fallback_window_s, p.cert_expiry_warning_days) == ("rfc9325", 10, 30)
    assert (p.min_rsa_bits, p.min_ec_bits, p.system_trust, p.reference_time) == (2048, 256, True, "capture")


def test_example_policy_loads():
    from pathlib import Path
    p = load_policy(str(Path(__file__).resolve().parents[2] / "examples" / "policy.yml"))
    assert p.is_approved_resolver("9.9.9.9") and not p.is_approved_resolver("8.8.8.8")
    assert p.is_local_resolver("10.0.0.53")


def test_full_policy(tmp_path):
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    p = load_policy(write(tmp_path, """
local_resolvers: [10.0.0.0/8, "fd00::/8"]
approved_resolvers: [9.9.9.9]
trust_anchors: [ca.pem]
system_trust: false
reference_time: 2024-05-01
profile: mozilla-modern
fallback_window_s: 5
cert_expiry_warning_days: 14
disabled_rules: [doq-observed]
max_tls_handshake_ms: 300
max_query_rtt_ms: 100
min_rsa_bits: 3072
min_ec_bits: 384
"""))
    assert p.is_local_resolver("10.1.2.3") and p.is_local_resolver("fd00::53")
    assert p.is_approved_resolver("9.9.9.9") and not p.is_approved_resolver("1.1.1.1")
    assert p.trust_anchor_paths() == [tmp_path / "ca.pem"]
    assert p.reference_datetime(0).year == 2024
    assert p.version_in_profile("TLS 1.2") is False


def test_empty_file_is_defaults(tmp_path):
    assert load_policy(write(tmp_path, "")) == Policy(source=str(tmp_path / "policy.yml"))


@pytest.mark.parametrize("text,needle", [
    ("local_resolver: [10.0.0.1]\n", "unknown policy key 'local_resolver'"),
    ("profile: mozilla-old\n", "'profile'"),
    ("local_resolvers: [not-an-ip]\n", "'local_resolvers'"),
    ("approved_resolvers: [10.0.0.0/33]\n", "'approved_resolvers'"),
    ("reference_time: yesterday\n", "'reference_time'"),
    ("fallback_window_s: -1\n", "'fallback_window_s'"),
    ("min_rsa_bits: lots\n", "'min_rsa_bits'"),
    ("trust_anchors: [missing.pem]\n", "'trust_anchors': file not found"),
    ("system_trust: perhaps\n", "'system_trust'"),
    ("- a\n- b\n", "mapping"),
    ("a: [\n", "not valid YAML"),
    ("source: x\n", "unknown policy key 'source'"),
])
def test_errors_name_the_key(tmp_path, text, needle):
    with pytest.raises(PolicyError) as exc:
        load_policy(write(tmp_path, text))
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg


def test_missing_file():
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy("does/not/exist.yml")


def test_reference_time_now_and_capture():
    import datetime as dt
    assert Policy().reference_datetime(1_700_000_000).year == 2023
    assert Policy(reference_time="now").reference_datetime(0).year >= 2024
    assert Policy(reference_time="2030-01-01T00:00:00Z").reference_datetime(None) == dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
