"""The cache of parsed rules (rules/loader.py): a hit gives the same rules without YAML or
pySigma, any change of a file is a miss, and a cache that cannot be trusted or read is skipped."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dotaudit.pipeline import audit
from dotaudit.rules import loader
from dotaudit.rules.loader import RuleError, builtin_rules_dir, load_dir, load_rules

ROOT = Path(__file__).resolve().parents[2]
CAPTURE = ROOT / "pcaps" / "gateway" / "mixed.pcap"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("DOTAUDIT_CACHE_DIR", str(d))
    monkeypatch.delenv("DOTAUDIT_NO_CACHE", raising=False)
    return d


@pytest.fixture
def pack(tmp_path) -> Path:
    d = tmp_path / "pack"
    shutil.copytree(builtin_rules_dir(), d)
    return d


def _no_parsing(monkeypatch):
    def fail(*_a, **_k):
        raise AssertionError("parsed although cached")
    monkeypatch.setattr(loader, "_parse", fail)


def _summary(rules):
    return [(r.name, r.uuid, r.title, r.level, r.classes, r.references, r.extras, r.source_text, r.path)
            for r in rules]


def test_hit_gives_the_same_rules_without_parsing(cache, pack, monkeypatch):
    fresh = load_dir(pack)
    assert len(list(cache.glob("rules-*.pickle"))) == 1
    _no_parsing(monkeypatch)
    cached = load_dir(pack)
    assert _summary(cached) == _summary(fresh)


def test_cached_rules_judge_as_parsed_ones(cache, monkeypatch):
    fresh = audit([str(CAPTURE)], rules=load_rules())
    _no_parsing(monkeypatch)
    cached = audit([str(CAPTURE)], rules=load_rules())
    for r in (fresh, cached):
        r.pop("generated_at")
    assert fresh["findings"] and cached == fresh


def test_any_change_to_a_file_is_a_miss(cache, pack, monkeypatch):
    load_dir(pack)
    victim = next(pack.rglob("dot-no-sni.yml"))
    victim.write_text(victim.read_text() + "\n# edited\n")
    calls = []
    real = loader._parse
    monkeypatch.setattr(loader, "_parse", lambda *a: calls.append(a[1]) or real(*a))
    rules = load_dir(pack)
    assert len(calls) == len(rules)   # the whole directory parsed again ...
    assert len(list(cache.glob("rules-*.pickle"))) == 2   # ... and cached under another digest


def test_a_broken_file_is_reported_not_cached(cache, pack):
    area = next(d for d in pack.iterdir() if d.is_dir())
    (area / "dns-bad.yml").write_text("title: [unclosed\n")
    with pytest.raises(RuleError, match=r"dns-bad\.yml: line \d+: not valid YAML"):
        load_dir(pack)
    assert not list(cache.glob("rules-*.pickle"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "group-writable", "empty-list"])
def test_a_damaged_or_untrusted_cache_is_skipped(cache, pack, monkeypatch, damage):
    fresh = load_dir(pack)
    (entry,) = cache.glob("rules-*.pickle")
    if damage == "garbage":
        entry.write_bytes(b"not a pickle")
    elif damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "group-writable":
        os.chmod(entry, 0o664)
    else:
        import pickle
        entry.write_bytes(pickle.dumps([]))
    calls = []
    real = loader._parse
    monkeypatch.setattr(loader, "_parse", lambda *a: calls.append(a[1]) or real(*a))
    assert _summary(load_dir(pack)) == _summary(fresh)
    assert len(calls) == len(fresh)


def test_unwritable_cache_directory_still_loads(tmp_path, pack, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would be")
    monkeypatch.setenv("DOTAUDIT_CACHE_DIR", str(blocker / "sub"))
    assert len(load_dir(pack)) > 30


def test_no_cache_variable_turns_it_off(cache, pack, monkeypatch):
    monkeypatch.setenv("DOTAUDIT_NO_CACHE", "1")
    load_dir(pack)
    assert not cache.exists()


def test_default_directory_is_the_xdg_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("DOTAUDIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("DOTAUDIT_NO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert loader.cache_dir() == tmp_path / "xdg" / "dotaudit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert loader.cache_dir() == tmp_path / "home" / ".cache" / "dotaudit"


def test_a_file_that_is_not_utf8_is_one_clear_error(cache, pack):
    area = next(d for d in pack.iterdir() if d.is_dir())
    (area / "dns-latin1.yml").write_bytes(b"title: caf\xe9\n")
    with pytest.raises(RuleError, match=r"dns-latin1\.yml: not UTF-8 text"):
        load_dir(pack)


def test_only_the_newest_caches_are_kept(cache, pack, monkeypatch):
    monkeypatch.setattr(loader, "CACHE_KEEP", 3)
    victim = next(pack.rglob("dot-no-sni.yml"))
    text = victim.read_text()
    for i in range(5):
        victim.write_text(text + f"\n# edit {i}\n")
        load_dir(pack)
    assert len(list(cache.glob("rules-*.pickle"))) == 3
    _no_parsing(monkeypatch)
    assert load_dir(pack)   # the newest (the files as they are now) is among them


# -- an audit with every rule directory cached loads the rules in the judge process -------------


def test_rules_cached_checks_the_set_from_the_headers(cache, pack, tmp_path, monkeypatch):
    assert not loader.rules_cached([str(pack)])          # nothing cached yet: only loading tells
    with pytest.raises(RuleError, match="already defined"):
        load_rules([str(pack)])                           # a copy of the pack clashes; caches both
    _no_parsing(monkeypatch)
    with pytest.raises(RuleError, match="already defined"):
        loader.rules_cached([str(pack)])                  # the same error, from the cache headers
    assert loader.rules_cached()
    with pytest.raises(RuleError, match="cannot disable unknown rule 'no-such-rule'"):
        loader.rules_cached(disabled={"no-such-rule"})
    assert loader.rules_cached(disabled={"dns-plaintext-query"})


def _audit_cli(cache_env: dict, *args) -> tuple[int, str, dict]:
    import json
    import subprocess
    import sys
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        env = dict(os.environ, **cache_env)
        p = subprocess.run([sys.executable, "-c", "from dotaudit.cli import main; main()", "audit", str(CAPTURE),
                            "-o", str(out), "--fail-on", "never", "--no-progress", *args],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        report = json.loads(out.read_text()) if out.exists() else {}
    report.pop("generated_at", None)
    return p.returncode, p.stderr, report


@pytest.mark.parametrize("args", [(), ("--disable", "dns-plaintext-query")], ids=["pack", "disable"])
def test_audit_with_cached_rules_equals_one_that_parses_them(cache, args):
    load_rules()   # warm: the audit leaves the rules to the judge process (pipeline.LazyJudge)
    assert loader.rules_cached()
    code, err, lazy = _audit_cli({"DOTAUDIT_CACHE_DIR": str(cache)}, *args)
    assert code == 0, err
    code, err, parsed = _audit_cli({"DOTAUDIT_NO_CACHE": "1"}, *args)
    assert code == 0, err
    assert lazy["findings"] and lazy == parsed


def test_audit_with_cached_rules_still_rejects_an_unknown_disabled_name(cache):
    load_rules()
    code, err, _ = _audit_cli({"DOTAUDIT_CACHE_DIR": str(cache)}, "--disable", "no-such-rule")
    assert code == 2 and err.strip().splitlines() == ["dotaudit: error: cannot disable unknown rule 'no-such-rule'"]


def test_a_judge_process_that_cannot_load_the_rules_is_one_line_error(cache, monkeypatch):
    """The cache said the rules are valid, but the judge process fails to load them (a file
    changed in between, say): the audit stops with that one line, not a traceback."""
    from dotaudit.pipeline import LazyJudge, options_from_policy, run_files
    from dotaudit.rules.policy import Policy
    from dotaudit.sink import SinkError

    load_rules()
    monkeypatch.setattr(loader, "load_rules", lambda *a, **k: (_ for _ in ()).throw(RuleError("x.yml: broken")))
    with pytest.raises(SinkError, match="judging failed: RuleError: x.yml: broken"):
        run_files([str(CAPTURE)], options_from_policy(Policy()), judge=LazyJudge(Policy()), fork=True)
    with pytest.raises(RuleError):   # in this process, as it was raised
        LazyJudge(Policy()).get()
