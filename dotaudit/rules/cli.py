"""``dotaudit rules list|show|lint|test`` (mounted by dotaudit/cli.py)."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import click

from dotaudit.rules.loader import RuleError, lint_dirs, load_rules, repo_root
from dotaudit.rules.model import Rule
from dotaudit.rules.policy import Policy, PolicyError, load_policy

DEFAULT_TEST_POLICY = "tests/rules/lab-policy.yml"
"""Policy for rule ``tests:`` entries that name none (trusts the lab CA), relative to the repo."""

rules_dir_option = click.option(
    "--rules", "rule_dirs", multiple=True, type=click.Path(file_okay=False),
    help="Extra rule directory (repeatable); its rules add to the built-in pack.")


def _load(rule_dirs: Sequence[str], disabled: Sequence[str] = ()) -> list[Rule]:
    try:
        return load_rules(rule_dirs, disabled)
    except RuleError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("rules")
def rules_group() -> None:
    """List, show, lint and test the Sigma rule pack.

    What YAML and pySigma make of a rule directory is cached in ~/.cache/dotaudit
    ($XDG_CACHE_HOME/dotaudit, or $DOTAUDIT_CACHE_DIR); DOTAUDIT_NO_CACHE=1 turns the cache
    off. `rules lint` always parses every file."""


@rules_group.command("list")
@rules_dir_option
def list_cmd(rule_dirs: tuple[str, ...]) -> None:
    """One line per rule: name, severity, status, title."""
    rules = sorted(_load(rule_dirs), key=lambda r: (r.area or "", r.name))
    width = max((len(r.name) for r in rules), default=10)
    for r in rules:
        click.echo(f"{r.name:<{width}}  {r.severity:<8}  {r.status:<12}  {r.title}")
    click.echo(f"{len(rules)} rules")


@rules_group.command("show")
@click.argument("name")
@rules_dir_option
def show_cmd(name: str, rule_dirs: tuple[str, ...]) -> None:
    """Print one rule's file."""
    for r in _load(rule_dirs):
        if r.name == name:
            click.echo(r.source_text.rstrip("\n"))
            return
    raise click.ClickException(f"no rule named {name!r} (see `dotaudit rules list`)")


@rules_group.command("lint")
@rules_dir_option
def lint_cmd(rule_dirs: tuple[str, ...]) -> None:
    """Validate every rule file; exit 1 on any problem."""
    rules, problems = lint_dirs(rule_dirs)
    for p in problems:
        click.echo(p, err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {len(rules)} rules", err=True)
        sys.exit(1)
    click.echo(f"{len(rules)} rules OK")


def _resolve(path: str, root: Path) -> Path:
    p = Path(path)
    if p.is_absolute():
        return p
    for base in (root, Path.cwd()):
        if (base / p).exists():
            return base / p
    return root / p


def run_rule_tests(rules: list[Rule], *, root: Optional[Path] = None, policy_path: Optional[str] = None,
                   only: Sequence[str] = ()) -> list[dict]:
    """Run every ``tests:`` entry of ``rules`` through ``dotaudit.pipeline.audit``.

    One pipeline run per (capture, policy) with all rules; returns one row per entry:
    {rule, pcap, policy, expect, got, status (pass|FAIL|skip), reason}."""
    root = root or repo_root()
    try:
        from dotaudit.pipeline import audit  # the lead's entry point
    except ImportError as exc:
        audit = None
        missing = f"dotaudit.pipeline not importable ({exc})"
    rows: list[dict] = []
    cases: dict[tuple[str, str], list[tuple[Rule, object]]] = defaultdict(list)
    for rule in rules:
        if only and rule.name not in only:
            continue
        for t in rule.tests:
            pol = t.policy or policy_path or DEFAULT_TEST_POLICY
            cases[(t.pcap, pol)].append((rule, t))
    policies: dict[str, Policy | str] = {}
    for (pcap, pol), entries in sorted(cases.items()):
        pcap_path = _resolve(pcap, root)
        reason = None
        if audit is None:
            reason = missing
        elif not pcap_path.is_file():
            reason = "capture missing"
        if reason is None and pol not in policies:
            pol_path = _resolve(pol, root)
            try:
                policies[pol] = load_policy(str(pol_path)) if pol_path.is_file() else f"policy missing: {pol}"
            except PolicyError as exc:
                policies[pol] = f"policy error: {exc}"
        if reason is None and isinstance(policies.get(pol), str):
            reason = policies[pol]
        counts: dict[str, int] = defaultdict(int)
        if reason is None:
            try:
                report = audit([str(pcap_path)], policy=policies[pol], rules=rules)
            except Exception as exc:  # noqa: BLE001 - report per case, keep going
                reason = f"pipeline error: {type(exc).__name__}: {exc}"
            else:
                for f in report.get("findings", []):
                    counts[f.get("rule_id")] += 1
        for rule, t in entries:
            if reason is not None:
                rows.append({"rule": rule.name, "pcap": pcap, "policy": t.policy, "expect": t.expect,
                             "got": None, "status": "skip", "reason": reason})
                continue
            got = counts.get(rule.name, 0)
            rows.append({"rule": rule.name, "pcap": pcap, "policy": t.policy, "expect": t.expect, "got": got,
                         "status": "pass" if got == t.expect else "FAIL", "reason": None})
    rows.sort(key=lambda r: (r["rule"], r["pcap"]))
    return rows


@rules_group.command("test")
@rules_dir_option
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help=f"Policy for entries that name none (default {DEFAULT_TEST_POLICY}).")
@click.option("--rule", "only", multiple=True, help="Only this rule (repeatable).")
@click.option("--strict", is_flag=True, help="Also fail when a case is skipped (missing capture or pipeline).")
def test_cmd(rule_dirs: tuple[str, ...], policy_path: Optional[str], only: tuple[str, ...], strict: bool) -> None:
    """Run each rule's `tests:` captures through the pipeline and compare finding counts."""
    rules = _load(rule_dirs)
    unknown = set(only) - {r.name for r in rules}
    if unknown:
        raise click.ClickException(f"no rule named {sorted(unknown)[0]!r}")
    rows = run_rule_tests(rules, policy_path=policy_path, only=only)
    wr = max((len(r["rule"]) for r in rows), default=4)
    wp = max((len(r["pcap"]) for r in rows), default=4)
    click.echo(f"{'rule':<{wr}}  {'capture':<{wp}}  expect  got   result")
    for r in rows:
        got = "-" if r["got"] is None else str(r["got"])
        extra = f"  ({r['reason']})" if r["reason"] else ""
        pol = f"  [policy {r['policy']}]" if r["policy"] else ""
        click.echo(f"{r['rule']:<{wr}}  {r['pcap']:<{wp}}  {r['expect']:>6}  {got:>4}  {r['status']}{pol}{extra}")
    failed = sum(r["status"] == "FAIL" for r in rows)
    skipped = sum(r["status"] == "skip" for r in rows)
    passed = sum(r["status"] == "pass" for r in rows)
    click.echo(f"{passed} passed, {failed} failed, {skipped} skipped")
    if failed or (strict and skipped):
        sys.exit(1)
