"""`rules lint|list|show|test` and the loader's pack-level checks."""

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dotaudit.rules.cli import rules_group
from dotaudit.rules.loader import RuleError, builtin_rules_dir, lint_dirs, load_rules
from dotaudit.rules.model import AREAS

PACK = builtin_rules_dir()


def test_shipped_pack_lints_clean():
    rules, problems = lint_dirs([])
    assert problems == []
    assert len(rules) >= 41


def test_pack_layout_and_metadata():
    rules = load_rules()
    for r in rules:
        path = Path(r.path)
        assert path.parent.parent == PACK and path.parent.name in AREAS and path.stem == r.name
        assert r.references and r.remediation and r.description
        if r.name.startswith(("dot-cert-",)) and r.name != "dot-cert-not-observable":
            assert r.observability == "observed"
        for t in r.tests:
            assert t.pcap.startswith("pcaps/")


def test_cli_lint_list_show():
    runner = CliRunner()
    res = runner.invoke(rules_group, ["lint"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(rules_group, ["list"])
    assert res.exit_code == 0 and "dns-plaintext-query" in res.output
    res = runner.invoke(rules_group, ["show", "dot-cipher-no-pfs"])
    assert res.exit_code == 0 and "name: dot-cipher-no-pfs" in res.output
    res = runner.invoke(rules_group, ["show", "nope"])
    assert res.exit_code == 1 and "no rule named" in res.output


def _user_rule(tmp_path, name="my-rule", status="stable", tests=True, body_name=None):
    d = tmp_path / "user"
    d.mkdir(exist_ok=True)
    src = (PACK / "resolver" / "doq-observed.yml").read_text()
    src = src.replace("name: doq-observed", f"name: {body_name or name}")
    src = src.replace("id: ", "id: 0", 1).replace("id: 0", "id: ", 1)
    import uuid
    lines = [f"id: {uuid.uuid4()}" if l.startswith("id: ") else l for l in src.splitlines()]
    src = "\n".join(lines) + "\n"
    src = src.replace("status: stable", f"status: {status}")
    if not tests:
        src = src[: src.index("tests:")]
    (d / f"{name}.yml").write_text(src)
    return d


def test_user_rules_add_and_clash(tmp_path):
    d = _user_rule(tmp_path)
    assert "my-rule" in {r.name for r in load_rules([str(d)])}
    clash = _user_rule(tmp_path / "x", name="doq-observed") if (tmp_path / "x").mkdir() is None else None
    with pytest.raises(RuleError, match="already defined"):
        load_rules([str(clash)])


def test_lint_catches_problems(tmp_path):
    d = _user_rule(tmp_path, name="file-name", body_name="other-name")
    _, problems = lint_dirs([d])
    assert any("differs from the file name" in p for p in problems)
    d2 = _user_rule(tmp_path / "b" if (tmp_path / "b").mkdir() is None else None, name="untested", tests=False)
    _, problems = lint_dirs([d2])
    assert any("must-fire" in p for p in problems) and any("must-not-fire" in p for p in problems)
    res = CliRunner().invoke(rules_group, ["lint", "--rules", str(d2)])
    assert res.exit_code == 1


def test_disable_unknown_rule_is_an_error():
    with pytest.raises(RuleError, match="unknown rule 'dot-nope'"):
        load_rules(disabled=["dot-nope"])


def test_cli_test_runs_or_skips():
    res = CliRunner().invoke(rules_group, ["test", "--rule", "doq-observed"])
    assert "doq-observed" in res.output and ("passed" in res.output)
    assert res.exit_code in (0, 1)
