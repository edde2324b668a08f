"""Find, parse (pySigma), validate and compile rule files.

The built-in pack lives in the repository's top-level ``rules/<area>/<name>.yml``. User
directories add rules; a name (or UUID) that clashes with another rule is an error.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import re
import sys
import uuid
from pathlib import Path
from typing import Collection, Iterable, Optional, Sequence

import yaml
from pydantic import ValidationError

from dotaudit.rules.model import AREAS, CATEGORIES, LEVEL_TO_SEVERITY, Rule, RuleExtras

# pySigma and the compiler (which imports it) are imported where rules are parsed or built: an
# audit that only checks the cache, or runs without rules, never needs them (about 50 ms).

NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
RULE_SUFFIXES = (".yml", ".yaml")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster
SIGMA_KEYS = {
    "title", "id", "name", "related", "taxonomy", "status", "description", "license", "author",
    "references", "date", "modified", "logsource", "detection", "fields", "falsepositives",
    "level", "tags", "scope",
}
EXTRA_KEYS = set(RuleExtras.model_fields)


class RuleError(ValueError):
    """A rule file is invalid, or the set of rules is inconsistent (one line, names the file)."""


def builtin_rules_dir() -> Path:
    """The shipped pack: ``$DOTAUDIT_RULES_DIR``, the copy inside the installed package, or the
    repository's top-level ``rules/``."""
    env = os.environ.get("DOTAUDIT_RULES_DIR")
    if env:
        return Path(env)
    packaged = Path(__file__).resolve().parents[1] / "_rules"   # in the wheel (pyproject force-include)
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "rules"      # a source checkout


def repo_root() -> Path:
    """The directory rule ``tests:`` paths (pcaps/...) are relative to."""
    return builtin_rules_dir().parent


def rule_files(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise RuleError(f"rules directory not found: {d}")
    return sorted(p for p in d.rglob("*") if p.suffix in RULE_SUFFIXES and p.is_file())


def _fail(path: Path | str, msg: str) -> RuleError:
    return RuleError(f"{path}: {msg}")


def _extras_error(path: Path, err: ValidationError) -> RuleError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    if first.get("type") == "extra_forbidden":
        return _fail(path, f"unknown attribute {loc!r}")
    if first.get("type") == "missing":
        return _fail(path, f"missing attribute {loc!r}")
    return _fail(path, f"attribute {loc!r}: {first.get('msg', 'invalid')}")


def _parse(text: str, path: Path) -> tuple[dict, "SigmaRule"]:
    """YAML and pySigma: the slow half of reading a rule, which the cache saves."""
    from sigma.exceptions import SigmaError
    from sigma.rule import SigmaRule

    try:
        raw = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise _fail(path, f"{where}not valid YAML") from None
    if not isinstance(raw, dict):
        raise _fail(path, "a rule file holds one YAML mapping (one rule per file)")
    for key in ("title", "name", "id", "level", "logsource", "detection", "status"):
        if key not in raw:
            raise _fail(path, f"missing Sigma field {key!r}")
    try:
        sigma = SigmaRule.from_dict(raw)
    except SigmaError as exc:
        raise _fail(path, f"Sigma: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pySigma raises assorted errors on odd input
        raise _fail(path, f"Sigma: {type(exc).__name__}: {exc}") from None
    return raw, sigma


def _build(raw: dict, sigma: "SigmaRule", trees: Optional[list], text: str, path: Path,
           area: Optional[str]) -> tuple[Rule, list]:
    """Check a parsed rule and compile it; with the parsed condition ``trees`` (made here when
    None), which the cache keeps."""
    from sigma.exceptions import SigmaError

    from dotaudit.rules.compiler import CompileError, combine_trees, compile_template, compile_tree, make_getter

    name = raw["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _fail(path, f"name {name!r} is not kebab-case")
    if path.suffix in RULE_SUFFIXES and path.stem != name:
        raise _fail(path, f"name {name!r} differs from the file name {path.stem!r}")
    try:
        rule_uuid = str(uuid.UUID(str(raw["id"])))
    except ValueError:
        raise _fail(path, f"id {raw['id']!r} is not a UUID") from None
    level = sigma.level.name.lower() if sigma.level else None
    if level not in LEVEL_TO_SEVERITY:
        raise _fail(path, f"level {raw.get('level')!r} is not one of {', '.join(LEVEL_TO_SEVERITY)}")
    status = sigma.status.name.lower() if sigma.status else "experimental"
    ls = sigma.logsource
    if ls.product != "dotaudit" or ls.category not in CATEGORIES or ls.service:
        raise _fail(path, "logsource must be {product: dotaudit, category: flow|capture}")

    extra = {k: v for k, v in raw.items() if k not in SIGMA_KEYS}
    try:
        extras = RuleExtras(**extra)
    except ValidationError as exc:
        raise _extras_error(path, exc) from None

    try:
        if trees is None:
            trees = [c.parse() for c in sigma.detection.parsed_condition]
        condition = combine_trees(trees)
        match, classes, match_indexed = compile_tree(condition)
        render, placeholders = compile_template(extras.message)
        for key in placeholders:
            if key != "count":
                make_getter(key.split(":", 1)[1] if key.startswith("sum:") else key)
        evidence_getters = tuple((f, make_getter(f)) for f in extras.evidence.fields)
        related = make_getter(extras.related_flows) if extras.related_flows else None
    except CompileError as exc:
        raise _fail(path, str(exc)) from None
    except SigmaError as exc:
        raise _fail(path, f"Sigma condition: {exc}") from None

    references = tuple(str(r) for r in (sigma.references or ()))
    rule = Rule(
        name=name,
        uuid=rule_uuid,
        title=sigma.title,
        status=status,
        level=level,
        severity=LEVEL_TO_SEVERITY[level],
        description=" ".join((sigma.description or "").split()),
        references=references,
        category=ls.category,
        extras=extras,
        match=match,
        match_indexed=match_indexed,
        classes=classes,
        path=str(path),
        area=area,
        sigma=sigma,
        source_text=text,
        render_message=render,
        evidence_getters=evidence_getters,
        related_getter=related,
        condition=condition,
    )
    return rule, trees


def parse_rule(text: str, path: Path | str = "<rule>", area: Optional[str] = None) -> Rule:
    """Parse one Sigma rule's YAML text and compile it. Raises :class:`RuleError`."""
    path = Path(path) if not isinstance(path, Path) else path
    raw, sigma = _parse(text, path)
    return _build(raw, sigma, None, text, path, area)[0]


def _read(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(p, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _fail(p, "not UTF-8 text") from None


def load_rule_file(path: str | Path) -> Rule:
    p = Path(path)
    return parse_rule(_read(p), p, area=p.parent.name)


# -- the cache of parsed rules --------------------------------------------------------------------
#
# YAML and pySigma take most of the time a rule pack takes to load (about 40 ms of an audit's
# start for the built-in pack).  What they make of a directory's files is kept, pickled, in the
# user's cache directory, under a digest of the files (names and contents) and of the code that
# reads them; any change is another digest.  Only a file this user owns and nobody else can
# write is read back; a cache that cannot be read or written is skipped without a word.

CACHE_FORMAT = 2   # 2: the (name, UUID) of each rule, pickled ahead of the parsed rules
CACHE_KEEP = 8


def cache_dir() -> Optional[Path]:
    """``$DOTAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/dotaudit`` or ``~/.cache/dotaudit``;
    None when ``DOTAUDIT_NO_CACHE`` is set."""
    if os.environ.get("DOTAUDIT_NO_CACHE"):
        return None
    if os.environ.get("DOTAUDIT_CACHE_DIR"):
        return Path(os.environ["DOTAUDIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dotaudit"


@functools.cache
def _code_digest() -> bytes:
    """What the cache's validity depends on besides the rule files: this code and pySigma."""
    import sigma
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256(f"{CACHE_FORMAT}:{sys.version}".encode())
    try:
        h.update(version("pysigma").encode())
    except PackageNotFoundError:
        h.update(str(getattr(sigma, "__file__", "")).encode())
    here = Path(__file__).resolve().parent
    for name in ("loader.py", "compiler.py", "model.py"):
        try:
            h.update((here / name).read_bytes())
        except OSError:
            h.update(name.encode())
    return h.digest()


def _cache_file(files: list[Path], texts: list[str]) -> Optional[Path]:
    d = cache_dir()
    if d is None:
        return None
    h = hashlib.sha256(_code_digest())
    for f, text in zip(files, texts):
        for part in (f.parent.name, f.name, text):
            b = part.encode("utf-8", "surrogateescape")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return d / f"rules-{h.hexdigest()[:40]}.pickle"


def _cache_read(path: Path, n: int, header_only: bool = False) -> Optional[list]:
    """The parsed rules (or, ``header_only``, their (name, UUID) pairs) of a cache file made for
    ``n`` rule files; None when there is no such file this user can trust."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None
            header = pickle.load(fh)
            entries = header if header_only else pickle.load(fh)
    except Exception:   # noqa: BLE001 - missing, unreadable or stale: parse the files
        return None
    ok = isinstance(entries, list) and len(entries) == n and isinstance(header, list) and len(header) == n
    return entries if ok else None


def _cache_write(path: Path, entries: list, header: list) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(header, fh, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump(entries, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except Exception:   # noqa: BLE001 - a read-only home, a full disk, an odd value: no cache
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return
    _prune(path.parent)


def _prune(directory: Path) -> None:
    """Keep the CACHE_KEEP newest rule caches (each edit of a rule directory makes another)."""
    try:
        caches = sorted(directory.glob("rules-*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in caches[CACHE_KEEP:]:
            old.unlink()
    except OSError:
        pass


def _dir_cache(directory: str | Path) -> tuple[list[Path], list[str], Optional[Path]]:
    """A rule directory's files, their texts and the cache file they would have."""
    files = rule_files(directory)
    texts = [_read(p) for p in files]
    return files, texts, _cache_file(files, texts)


def load_dir(directory: str | Path) -> list[Rule]:
    files, texts, cache = _dir_cache(directory)
    entries = _cache_read(cache, len(files)) if cache is not None else None
    if entries is not None:
        try:
            return [_build(raw, sigma, trees, text, p, p.parent.name)[0]
                    for (raw, sigma, trees), text, p in zip(entries, texts, files)]
        except Exception:   # noqa: BLE001 - a cache that does not fit: parse the files
            pass
    rules, entries = [], []
    for p, text in zip(files, texts):
        raw, sigma = _parse(text, p)
        rule, trees = _build(raw, sigma, None, text, p, p.parent.name)
        rules.append(rule)
        entries.append((raw, sigma, trees))
    if cache is not None:
        _cache_write(cache, entries, [(r.name, r.uuid) for r in rules])
    return rules


def _check_set(rules: Iterable[tuple[str, str, str]], disabled: Collection[str]) -> None:
    """Names and UUIDs unique, every disabled name known; ``rules``: (name, UUID, path)."""
    names: dict[str, str] = {}
    uuids: dict[str, str] = {}
    for name, rule_uuid, path in rules:
        if name in names:
            raise RuleError(f"{path}: rule name {name!r} is already defined in {names[name]}")
        if rule_uuid in uuids:
            raise RuleError(f"{path}: rule id {rule_uuid} is already used by {uuids[rule_uuid]}")
        names[name] = path
        uuids[rule_uuid] = path
    unknown = sorted(set(disabled) - names.keys())
    if unknown:
        raise RuleError(f"cannot disable unknown rule {unknown[0]!r}")


def load_rules(extra_dirs: Sequence[str] = (), disabled: Collection[str] = ()) -> list[Rule]:
    """The built-in pack plus the rules in ``extra_dirs``, minus ``disabled`` names.

    Raises :class:`RuleError` on an invalid file, a name or UUID clash, or a disabled name
    that matches no rule (a typo would otherwise silently keep a rule on)."""
    rules = load_dir(builtin_rules_dir())
    for d in extra_dirs:
        rules.extend(load_dir(d))
    _check_set(((r.name, r.uuid, r.path) for r in rules), disabled)
    off = set(disabled)
    return [r for r in rules if r.name not in off]


def rules_cached(extra_dirs: Sequence[str] = (), disabled: Collection[str] = ()) -> bool:
    """Will ``load_rules(extra_dirs, disabled)`` load every directory from its cache (so the
    files are known to be valid)?  Checks what ``load_rules`` checks of the set (names,
    UUIDs, disabled names) from the caches' headers, and raises the same RuleError; False
    when a directory has no cache this user can trust (then only loading the rules tells).
    An audit asks before it starts and, on True, leaves the loading to the judge process."""
    found: list[tuple[str, str, str]] = []
    for d in (builtin_rules_dir(), *extra_dirs):
        files, _texts, cache = _dir_cache(d)
        header = _cache_read(cache, len(files), header_only=True) if cache is not None else None
        if header is None:
            return False
        found += [(name, rule_uuid, str(p)) for (name, rule_uuid), p in zip(header, files)]
    _check_set(found, disabled)
    return True


def lint_dirs(dirs: Sequence[str | Path], *, builtin: bool = True) -> tuple[list[Rule], list[str]]:
    """Load every rule file, collecting problems instead of stopping at the first.

    Checks: Sigma schema (pySigma), dotaudit attributes, kebab-case name == file name, UUID,
    unique names and UUIDs, the area directory (built-in pack), and that a ``stable`` rule has
    at least one must-fire (``expect`` > 0) and one must-not-fire (``expect: 0``) test."""
    problems: list[str] = []
    rules: list[Rule] = []
    all_dirs = ([builtin_rules_dir()] if builtin else []) + [Path(d) for d in dirs]
    for d in all_dirs:
        try:
            files = rule_files(d)
        except RuleError as exc:
            problems.append(str(exc))
            continue
        for f in files:
            try:
                rule = load_rule_file(f)
            except RuleError as exc:
                problems.append(str(exc))
                continue
            rules.append(rule)
            if builtin and Path(d) == builtin_rules_dir() and rule.area not in AREAS:
                problems.append(f"{f}: area directory {rule.area!r} is not one of {', '.join(AREAS)}")
            if rule.status == "stable":
                expects = [t.expect for t in rule.tests]
                if not any(e > 0 for e in expects):
                    problems.append(f"{f}: stable rule has no must-fire test (expect > 0)")
                if not any(e == 0 for e in expects):
                    problems.append(f"{f}: stable rule has no must-not-fire test (expect: 0)")
            if not rule.references:
                problems.append(f"{f}: no references")
    seen: dict[str, Rule] = {}
    seen_ids: dict[str, Rule] = {}
    for rule in rules:
        if rule.name in seen:
            problems.append(f"{rule.path}: rule name {rule.name!r} is already defined in {seen[rule.name].path}")
        if rule.uuid in seen_ids:
            problems.append(f"{rule.path}: rule id {rule.uuid} is already used by {seen_ids[rule.uuid].path}")
        seen.setdefault(rule.name, rule)
        seen_ids.setdefault(rule.uuid, rule)
    return rules, problems
